"""Where a cold start's time goes: the Python side of a Go host's first call (the
imports of the boundary, the demo config, initialize, the first demo-pipeline invoke),
each run in a fresh interpreter started as the library starts it in a checkout (no
`site`, no environment, the pinned module search path), in CPU time, so other load on
a shared machine changes the figures less than it changes wall-clock times.

Prints the phases' CPU (median of the runs) and the imports' CPU, per module, self and
cumulative (-X importtime's table, in CPU time, from the last run), largest self first.
With --callgrind (valgrind installed) it prints the instructions one run executes
instead: slow (about 20 s of CPU), but the same figure on a busy machine as on a quiet
one, for an A/B of two trees (--sdk-python of each).

    python bench/startup.py [--runs N] [--top N] [--sdk-python DIR] [--callgrind]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CHILD = """
import sys, time
sys.path[:] = {path!r}
import importlib._bootstrap as _bootstrap
clock = time.process_time
imports = {{}}
stack = []
_load = _bootstrap._load_unlocked
def _timed(spec):
    t = clock()
    stack.append(0.0)
    try:
        return _load(spec)
    finally:
        spent = clock() - t
        inner = stack.pop()
        imports[spec.name] = (spent - inner, spent)
        if stack:
            stack[-1] += spent
_bootstrap._load_unlocked = _timed
t0 = clock()
import _cffi_backend
from cpexrt._boundary import exports
t1 = clock()
from cpexrt.engine import Engine
engine = Engine.from_yaml({config!r})
engine.initialize()
t2 = clock()
payload = {{"tool_name": "get_compensation", "user": "alice", "pii_clearance": True, "arguments": {{"employee_id": "E-1001"}}}}
extensions = {{"meta": {{"entity_type": "tool", "entity_name": "get_compensation"}}}}
engine.invoke("tool_pre_invoke", 0, payload, extensions)
t3 = clock()
_bootstrap._load_unlocked = _load
print(json.dumps({{"imports": t1 - t0, "config": t2 - t1, "invoke": t3 - t2, "modules": imports}}))
"""


def search_path(sdk_python: Path) -> list[str]:
    """The module search path a checkout's library pins (cpex_codegen.build)."""
    paths = sysconfig.get_paths()
    return [str(sdk_python), paths["stdlib"], sysconfig.get_config_var("DESTSHARED"), paths["purelib"], paths["platlib"]]


def child_source(sdk_python: Path) -> str:
    examples = ROOT / "examples"
    text = (examples / "configs" / "generic.yaml").read_text()
    config = text.replace("plugin_dirs: [../plugins]", f"plugin_dirs: [{json.dumps(str(examples / 'plugins'))}]")
    return "import json\n" + _CHILD.format(path=search_path(sdk_python), config=config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--top", type=int, default=25, help="modules listed")
    parser.add_argument("--sdk-python", type=Path, default=ROOT / "sdk-python", help="the tree the engine is imported from")
    parser.add_argument("--callgrind", action="store_true", help="instructions of one run (valgrind), nothing else")
    args = parser.parse_args()
    command = [sys.executable, "-S", "-E", "-c", child_source(args.sdk_python.resolve())]
    if args.callgrind:
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command], capture_output=True, text=True
        )
        found = re.search(r"Collected : (\d+)", proc.stderr)
        if proc.returncode != 0 or found is None:
            sys.exit(f"startup: valgrind failed:\n{proc.stderr[-2000:]}")
        print(f"instructions of one cold start's Python side: {int(found.group(1)) / 1e6:.1f} M")
        return
    runs = [json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout) for _ in range(args.runs)]
    for phase in ("imports", "config", "invoke"):
        print(f"{phase:>8}: {statistics.median(r[phase] for r in runs) * 1e3:7.1f} ms CPU (median of {args.runs})")
    print(f"\n{'self':>7} {'cumul.':>7}  module (CPU ms, last run)")
    modules = runs[-1]["modules"]
    for name, (own, total) in sorted(modules.items(), key=lambda kv: -kv[1][0])[: args.top]:
        print(f"{own * 1e3:7.1f} {total * 1e3:7.1f}  {name}")


if __name__ == "__main__":
    main()
