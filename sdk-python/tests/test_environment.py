"""libcpex.so in a C host under hostile environments: it finds its Python packages and
libpython from any working directory with no environment variable, ignores the host's
PYTHONHOME / PYTHONPATH / venv, and reports a failed start-up as a status on every call
instead of exiting or reading as success."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import config, plugin

ROOT = Path(__file__).resolve().parents[2]
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]


def build_host(tmp: Path, libdir: Path, source: str = "host_smoke.c") -> Path:
    exe = tmp / source.removesuffix(".c")
    subprocess.run(
        [
            "gcc",
            *STRICT,
            f"-I{ROOT / 'include'}",
            str(ROOT / "tests" / "c" / source),
            f"-L{libdir}",
            "-lcpex",
            f"-Wl,-rpath,{libdir}",
            "-o",
            str(exe),
        ],
        check=True,
    )
    return exe


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_host(tmp_path_factory.mktemp("host"), ROOT / "build" / "lib")


YAML = config(plugin("a", "Allow"))

ENVIRONMENTS = {
    "empty (env -i)": {},
    "bogus PYTHONHOME / PYTHONPATH": {"PYTHONHOME": "/nonexistent", "PYTHONPATH": "/nonexistent/lib", "PATH": "/usr/bin:/bin"},
    "unrelated venv activated": {
        "VIRTUAL_ENV": "/tmp/other-venv",
        "PATH": "/tmp/other-venv/bin:/usr/bin:/bin",
        "PYTHONNOUSERSITE": "1",
    },
}


@pytest.mark.parametrize("env_name", list(ENVIRONMENTS))
@pytest.mark.parametrize("cwd", ["/", str(ROOT / "sdk-go")])
def test_a_c_host_works_in_any_environment_and_directory(host: Path, env_name: str, cwd: str) -> None:
    proc = subprocess.run([str(host), YAML], env=ENVIRONMENTS[env_name], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:3] == ["new 0", "init 0", "invoke 0"], proc.stdout + proc.stderr
    assert lines[-2:] == ["sigint default", "shutdown 0"]


def test_a_forked_child_gets_a_status_not_a_hang(tmp_path: Path) -> None:
    exe = build_host(tmp_path, ROOT / "build" / "lib", "fork_host.c")
    proc = subprocess.run([str(exe)], env={}, cwd="/", capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("child -9 cpex runtime unusable in process"), proc.stdout
    assert "which forked" in lines[0]
    assert lines[1:] == ["child exit 0", "parent count 0"]


def test_a_failed_start_up_is_a_status_on_every_call(tmp_path: Path) -> None:
    broken = tmp_path / "lib"
    subprocess.run(
        [sys.executable, str(ROOT / "ffi" / "build_lib.py"), "--out-dir", str(broken), "--sdk-python", str(tmp_path / "empty")],
        check=True,
        capture_output=True,
    )
    exe = build_host(tmp_path, broken)
    proc = subprocess.run([str(exe), YAML], env={}, cwd="/", capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    steps = [line for line in proc.stdout.splitlines() if line.startswith(("new ", "again "))]
    assert [line.split(" ", 2)[:2] for line in steps] == [["new", "-9"], ["again", "-9"]], proc.stdout
    for line in steps:
        assert "cpex runtime start-up failed: the engine did not load" in line
    assert proc.stdout.count("No module named 'cpexrt'") == 2


def test_exported_symbols_are_only_the_abi() -> None:
    out = subprocess.run(
        ["nm", "-D", "--defined-only", str(ROOT / "build" / "lib" / "libcpex.so")], capture_output=True, text=True, check=True
    ).stdout
    symbols = sorted(line.split()[-1] for line in out.splitlines() if line.strip())
    assert symbols and all(s.startswith("cpex_") for s in symbols), symbols
    header = (ROOT / "include" / "cpex.h").read_text()
    for s in symbols:
        assert f" {s}(" in header or f"*{s}(" in header, f"{s} is exported but not in cpex.h"


def test_a_moved_library_still_finds_its_python(tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.copy2(ROOT / "build" / "lib" / "libcpex.so.1", moved / "libcpex.so.1")
    (moved / "libcpex.so").symlink_to("libcpex.so.1")
    exe = build_host(tmp_path, moved)
    proc = subprocess.run([str(exe), YAML], env={}, cwd="/", capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:3] == ["new 0", "init 0", "invoke 0"], proc.stdout
