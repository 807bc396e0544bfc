"""The demos of examples/ print exactly examples/expected/*.txt, from a Go host and from
a Python host alike."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
    proc = subprocess.run(command, cwd=EXAMPLES, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (EXAMPLES / "expected" / expected).read_text()
