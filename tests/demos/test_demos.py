"""The demos of examples/ print exactly examples/expected/*.txt, from a Go host and from
a Python host alike."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cpexrt import config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

DEMOS = {
    "go generic": (["go", "run", "./generic"], "generic.txt"),
    "go cmf": (["go", "run", "./cmf"], "cmf.txt"),
    "python generic": ([sys.executable, "python/generic_demo.py"], "generic.txt"),
    "python cmf": ([sys.executable, "python/cmf_demo.py"], "cmf.txt"),
}


@pytest.mark.parametrize("name", list(DEMOS))
def test_demo_prints_the_expected_output(name: str) -> None:
    command, expected = DEMOS[name]
    # The checkout's library for go (as the Makefile sets it), also when pytest runs alone.
    env = {**os.environ, **config.layout().cgo_environ()}
    proc = subprocess.run(command, cwd=EXAMPLES, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (EXAMPLES / "expected" / expected).read_text()


def test_the_readme_python_quick_start_runs(tmp_path: Path) -> None:
    readme = (EXAMPLES.parent / "README.md").read_text()
    section = readme.split("## Quick start: a Python host", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "cpex.yaml").write_text(
        f"plugin_settings: {{plugin_dirs: [{str(EXAMPLES / 'plugins')!r}]}}\n"
        "plugins:\n  - {name: identity-checker, kind: 'demo_plugins:IdentityChecker'}\n"
    )
    (tmp_path / "quick_start.py").write_text(code)
    proc = subprocess.run([sys.executable, "quick_start.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
