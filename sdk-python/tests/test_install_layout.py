"""Install anywhere, in-process checks: cpexrt-config's answers, and a library built in
the package layout (a wheel's) that finds the interpreter of the venv it is installed
in from its own path, or falls back to its build's interpreter. (`make test-install`
does the whole round trip: wheel, sdist, fresh venvs, an out-of-tree Go program.)"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from conftest import config, plugin
from cpexrt import config as cpexrt_config

ROOT = Path(__file__).resolve().parents[2]
PY = f"python{sys.version_info.major}.{sys.version_info.minor}"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cpexrt.config", *args], capture_output=True, text=True, timeout=60)


def test_in_a_checkout_the_config_names_the_checkouts_build() -> None:
    layout = cpexrt_config.layout()
    assert layout.kind == "checkout"
    assert layout.library == ROOT / "build" / "lib" / "libcpex.so.1" and layout.library.exists()
    assert (layout.include_dir / "cpex.h").exists() and (layout.pkg_config_dir / "cpex.pc").exists()
    assert cli("--library", "--includedir").stdout.splitlines() == [str(layout.library), str(ROOT / "include")]
    assert cli("--pkg-config-path").stdout.strip() == str(ROOT / "build" / "pkgconfig")


def test_the_config_prints_cgo_flags_that_a_shell_can_eval() -> None:
    out = cli("--cgo-env").stdout.strip()
    env = dict(
        line.split("=", 1)
        for line in subprocess.run(["bash", "-c", f"{out}; env"], capture_output=True, text=True, check=True).stdout.splitlines()
        if line.startswith("CGO_")
    )
    libdir = ROOT / "build" / "lib"
    assert env == {
        "CGO_CFLAGS": f"-O2 -g -I{ROOT / 'include'}",
        "CGO_LDFLAGS": f"-O2 -g -L{libdir} -Wl,-rpath,{libdir}",
    }
    assert shlex.split(cli("--cflags", "--libs").stdout) == [
        f"-I{ROOT / 'include'}",
        f"-L{libdir}",
        "-l:libcpex.so.1",
        f"-Wl,-rpath,{libdir}",
    ]


def test_the_config_answers_as_pkg_config_for_cpex_only() -> None:
    # What cgo and other build tools run: `$PKG_CONFIG --cflags -- cpex`.
    assert cli("--cflags", "--", "cpex").stdout.strip() == f"-I{ROOT / 'include'}"
    assert cli("--exists", "cpex").returncode == 0
    other = cli("--libs", "--", "openssl")
    assert other.returncode == 1 and "package 'openssl' not known" in other.stderr
    abi = cli("--modversion").stdout.strip()
    assert abi == (ROOT / "build" / "pkgconfig" / "cpex.pc").read_text().split("Version: ")[1].split()[0]


def test_a_missing_library_is_named_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpexrt_config, "PACKAGE", tmp_path / "site" / "cpexrt")
    assert cpexrt_config.layout().kind == "checkout"
    assert cpexrt_config.main(["--libs"]) == 1
    (tmp_path / "site" / "cpexrt" / "lib").mkdir(parents=True)
    (tmp_path / "site" / "cpexrt" / "lib" / "libcpex.so.1").write_bytes(b"")
    layout = cpexrt_config.layout()
    assert layout.kind == "package" and layout.include_dir == tmp_path / "site" / "cpexrt" / "include"


@pytest.fixture(scope="module")
def package_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """libcpex built as the wheel builds it (package layout), once for this module."""
    out = tmp_path_factory.mktemp("wheel") / "cpexrt" / "lib"
    subprocess.run(
        [sys.executable, str(ROOT / "ffi" / "build_lib.py"), "--layout", "package", "--out-dir", str(out)],
        check=True,
        capture_output=True,
    )
    return out


def test_the_package_layout_is_self_contained(package_build: Path) -> None:
    pc = (package_build / "pkgconfig" / "cpex.pc").read_text()
    assert "libdir=${pcfiledir}/.." in pc and "-l:libcpex.so.1" in pc and str(ROOT) not in pc
    assert (package_build.parent / "include" / "cpex.h").read_bytes() == (ROOT / "include" / "cpex.h").read_bytes()
    # Nothing of the building environment is pinned (in the data the code reads, or the
    # dynamic section) but the rpath to its libpython; debug info may name sources.
    library = str(package_build / "libcpex.so.1")
    sections = subprocess.run(
        ["readelf", "-p", ".rodata", "-p", ".data", "-d", library], capture_output=True, check=True
    ).stdout.decode("utf-8", "replace")
    assert str(ROOT) not in sections and sysconfig.get_paths()["purelib"] not in sections
    assert f"[{sysconfig.get_config_var('LIBDIR')}]" in sections  # the rpath to libpython


def install_into(site: Path, library_dir: Path) -> None:
    """cpexrt into site as a wheel would put it: the package (linked from this checkout,
    for speed) and the package-layout library, plus a .pth to this venv's
    site-packages for cpexrt's dependencies (which also proves .pth files are read)."""
    package = site / "cpexrt"
    package.mkdir(parents=True)
    for entry in (ROOT / "sdk-python" / "cpexrt").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    shutil.copytree(library_dir, package / "lib")
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")


def run_host(tmp_path: Path, library_dir: Path) -> list[str]:
    exe = tmp_path / "host"
    subprocess.run(
        [
            "gcc",
            f"-I{ROOT / 'include'}",
            str(ROOT / "tests" / "c" / "host_smoke.c"),
            f"-L{library_dir}",
            "-l:libcpex.so.1",
            "-o",
            str(exe),
        ],
        check=True,
    )
    yaml = config(plugin("a", "Allow"))
    # LD_LIBRARY_PATH only finds the library (a Go program has an rpath instead); the
    # interpreter is found from the library's own path, with no other variable set.
    env = {"LD_LIBRARY_PATH": str(library_dir)}
    proc = subprocess.run([str(exe), yaml], env=env, cwd="/", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_an_installed_library_runs_on_the_venv_it_is_installed_in(tmp_path: Path, package_build: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    site = env_dir / "lib" / PY / "site-packages"
    install_into(site, package_build)
    probe = site / "sitecustomize.py"  # imported by site at start-up: proves which Python started
    probe.write_text(f"import sys\nopen({str(tmp_path / 'prefix')!r}, 'w').write(sys.prefix)\n")
    lines = run_host(tmp_path, site / "cpexrt" / "lib")
    assert lines[:3] == ["new 0", "init 0", "invoke 0"], lines
    assert (tmp_path / "prefix").read_text() == str(env_dir)


def test_without_an_interpreter_beside_it_the_library_uses_its_builds(tmp_path: Path, package_build: Path) -> None:
    # e.g. a --user install: <prefix>/lib/pythonX.Y/site-packages with no <prefix>/bin/python.
    site = tmp_path / "home" / ".local" / "lib" / PY / "site-packages"
    install_into(site, package_build)
    lines = run_host(tmp_path, site / "cpexrt" / "lib")
    assert lines[:3] == ["new 0", "init 0", "invoke 0"], lines
    assert not os.path.exists(tmp_path / "home" / ".local" / "bin")
