"""Install anywhere, proved: runs the README's Install commands as written, each set in
a fresh folder outside this checkout, against the sdist and wheel of `make dist`.

- Go host (README block `install: go`): a fresh venv with the wheel, cgo flags from
  cpexrt-config, examples/install/main.go built as a module of its own (go.mod's
  replace points at this checkout's sdk-go source; nothing built here is used), run.
  Then: the binary's rpath names the venv and not this checkout; a CGO_ENABLED=0 build
  fails with the one error of sdk-go/nocgo.go, and a build without the cgo flags with
  sdk-go/cgo.go's; a C host links through the installed cpex.pc; mypy --strict passes
  on the installed package and on the Python host program against it (py.typed), from
  outside the repository.
- Python host (README block `install: python`): a fresh venv with the sdist (libcpex
  built at install time), examples/install/host.py run.

Both print the same answers, the plugins running on the venv's Python."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "install"
# Variables a developer's shell or the Makefile may hold that a fresh machine has not.
SCRUBBED = (
    "CGO_CFLAGS",
    "CGO_LDFLAGS",
    "CGO_CPPFLAGS",
    "PKG_CONFIG_PATH",
    "VIRTUAL_ENV",
    "PYTHONPATH",
    "PYTHONHOME",
    "CPEX_LIBRARY",
)


def readme_block(name: str) -> str:
    """The sh block after `<!-- install: name -->` in the README's Install section."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    marker = f"<!-- install: {name} -->"
    if marker not in readme:
        raise SystemExit(f"test-install: README.md has no {marker!r} block")
    block = readme.split(marker, 1)[1]
    match = re.match(r"\s*```sh\n(.*?)```", block, re.S)
    if match is None:
        raise SystemExit(f"test-install: {marker!r} is not followed by a ```sh block")
    return match.group(1)


def expected(venv: Path) -> str:
    return (
        "libcpex layout: package\n"
        f"search: allowed (plugins ran on Python at {venv})\n"
        "delete_everything: denied by tool-policy (tool_forbidden)\n"
    )


def run(script: str, cwd: Path, env: dict[str, str], what: str, timeout: float = 300) -> str:
    started = time.monotonic()
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    print(f"test-install: {what}: {time.monotonic() - started:.1f}s", flush=True)
    if proc.returncode != 0:
        raise SystemExit(
            f"test-install: {what} failed ({proc.returncode}):\n{script}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc.stdout


def check(condition: bool, why: str) -> None:
    if not condition:
        raise SystemExit(f"test-install: {why}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dist", type=Path, required=True, help="the folder of cpexrt's sdist and wheel (make dist)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    wheels = sorted(args.dist.glob("cpexrt-*.whl"))
    sdists = sorted(args.dist.glob("cpexrt-*.tar.gz"))
    check(len(wheels) == 1 and len(sdists) == 1, f"expected one wheel and one sdist in {args.dist}, found {wheels + sdists}")
    wheel, sdist = wheels[0], sdists[0]
    check(
        re.search(r"-cp3\d+-cp3\d+-linux_\w+\.whl$", wheel.name) is not None,
        f"{wheel.name}: not tagged for one interpreter and platform",
    )

    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED and not k.startswith("MAKE")}
    env["CPEX"] = str(ROOT)  # the README's $CPEX: a checkout, for sdk-go's source
    tmp = Path(tempfile.mkdtemp(prefix="cpex-install-"))
    check(not tmp.resolve().is_relative_to(ROOT), f"{tmp} is inside the checkout")
    try:
        # Go host, on the wheel.
        go_dir = tmp / "gateway"
        go_dir.mkdir()
        for name in ("main.go", "go.mod", "go.sum", "cpex.yaml", "policy.py", "host.py"):
            shutil.copy2(EXAMPLE / name, go_dir / name)
        shutil.copy2(wheel, go_dir / wheel.name)
        commands = readme_block("go")
        check(
            len([line for line in commands.splitlines() if line.strip() and not line.startswith("#")]) <= 5,
            "more than 5 commands",
        )
        # Then, in the same shell, the binary for the checks below.
        trailer = "go build -o gateway . && readelf -d gateway > readelf.txt\n"
        out = run(commands + trailer, go_dir, env, "Go host: the README's commands (wheel), go build")
        check(
            out.endswith(expected(go_dir / "venv")),
            f"Go host printed (pip's output, then the host's):\n{out}expected:\n{expected(go_dir / 'venv')}",
        )

        # What was built: linked to the venv's libcpex, no build path of this checkout.
        readelf = (go_dir / "readelf.txt").read_text()
        runpath = re.findall(r"\((?:RUNPATH|RPATH)\).*\[(.*)\]", readelf)
        check(
            runpath
            == [
                str(
                    go_dir
                    / "venv"
                    / "lib"
                    / f"python{sys.version_info.major}.{sys.version_info.minor}"
                    / "site-packages"
                    / "cpexrt"
                    / "lib"
                )
            ],
            f"rpath {runpath}",
        )
        check(str(ROOT / "build").encode() not in (go_dir / "gateway").read_bytes(), f"the binary names {ROOT / 'build'}")

        # Without cgo: one error, naming the fix.
        proc = subprocess.run(
            ["go", "build", "."], cwd=go_dir, env={**env, "CGO_ENABLED": "0"}, capture_output=True, text=True, timeout=300
        )
        errors = [line for line in proc.stderr.splitlines() if ".go:" in line]
        check(
            proc.returncode != 0 and len(errors) == 1 and "build_with_CGO_ENABLED_1" in errors[0],
            f"CGO_ENABLED=0 build:\n{proc.stderr}",
        )

        # cgo without the flags: one error, naming the fix.
        proc = subprocess.run(["go", "build", "."], cwd=go_dir, env=env, capture_output=True, text=True, timeout=300)
        check(
            proc.returncode != 0 and "cpex.h not found: set CGO_CFLAGS and CGO_LDFLAGS" in proc.stderr,
            f"build without flags:\n{proc.stderr}",
        )

        # A C host through the installed cpex.pc (pkg-config, ${pcfiledir}-relative).
        pc_env = {**env, "PKG_CONFIG_PATH": run("venv/bin/cpexrt-config --pkg-config-path", go_dir, env, "cpexrt-config").strip()}
        flags = subprocess.run(
            ["pkg-config", "--cflags", "--libs", "cpex"], env=pc_env, capture_output=True, text=True, check=True
        )
        host_c = go_dir / "host_smoke"
        subprocess.run(["gcc", str(ROOT / "tests" / "c" / "host_smoke.c"), *flags.stdout.split(), "-o", str(host_c)], check=True)
        yaml = (go_dir / "cpex.yaml").read_text().replace('plugin_dirs: ["."]', f"plugin_dirs: [{str(go_dir)!r}]")
        proc = subprocess.run([str(host_c), yaml], env={}, cwd="/", capture_output=True, text=True, timeout=120)
        check(proc.stdout.splitlines()[:3] == ["new 0", "init 0", "invoke 0"], f"C host via cpex.pc:\n{proc.stdout}{proc.stderr}")

        # mypy, from outside the repository, on a host program against the installed wheel.
        mypy = [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--python-executable",
            str(go_dir / "venv" / "bin" / "python"),
        ]
        for what in (["-p", "cpexrt"], ["host.py", "policy.py"]):  # mypy takes a package or files, not both
            proc = subprocess.run([*mypy, *what], cwd=go_dir, env=env, capture_output=True, text=True, timeout=300)
            check(proc.returncode == 0, f"mypy {' '.join(what)} against the installed package:\n{proc.stdout}{proc.stderr}")
        print(f"test-install: mypy --strict on the installed cpexrt and host.py: {proc.stdout.strip()}")

        # Python host, on the sdist (libcpex built at install time).
        py_dir = tmp / "pyhost"
        py_dir.mkdir()
        for name in ("host.py", "cpex.yaml", "policy.py"):
            shutil.copy2(EXAMPLE / name, py_dir / name)
        shutil.copy2(sdist, py_dir / sdist.name)
        commands = readme_block("python")
        check(sdist.name in commands, f"the README's Python host commands do not install {sdist.name}")
        out = run(commands, py_dir, env, "Python host: the README's commands (sdist)")
        check(
            out.endswith(expected(py_dir / "venv")),
            f"Python host printed (pip's output, then the host's):\n{out}expected:\n{expected(py_dir / 'venv')}",
        )
        print(f"test-install: ok (wheel {wheel.name}, sdist {sdist.name}) in {tmp}")
    finally:
        if args.keep:
            print(f"test-install: kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
