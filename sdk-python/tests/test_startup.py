"""Start-up: what the library's Python side imports before its first result. Optional
parts (isolation, OpenTelemetry, py-cpex) are imported only when a config or the
application uses them (docs/architecture.md, Start-up), and work when it does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import config, plugin

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

_PROBE = """
import sys
import cpexrt._boundary.exports  # what libcpex's init code imports
from cpexrt.engine import Engine
e = Engine()
e.load_config_file({path!r})
e.initialize()
payload = {{"tool_name": "get_compensation", "user": "alice", "pii_clearance": True, "arguments": {{"employee_id": "E-1"}}}}
out = e.invoke("tool_pre_invoke", 0, payload, {{"meta": {{"entity_type": "tool", "entity_name": "get_compensation"}}}})
assert out.continue_processing, out
lazy = ("cpexrt.engine.isolation", "cpexrt.engine.worker", "cpexrt.engine.frames", "opentelemetry", "cpex")
print(sorted(m for m in sys.modules if m in lazy or m.startswith(("opentelemetry.", "cpex."))))
"""


def test_the_demo_runs_without_importing_the_optional_parts() -> None:
    code = _PROBE.format(path=str(EXAMPLES / "configs" / "generic.yaml"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


_FIRST_RESULT = """
import sys
import cpexrt._boundary.exports  # what libcpex's init code imports
from cpexrt.engine import Engine
e = Engine()
e.load_config_file({path!r})
e.initialize()
loaded = sorted(m for m in ("asyncio", "cpexrt.engine.pycpex") if m in sys.modules)
payload = {{"tool_name": "get_compensation", "user": "alice", "pii_clearance": True, "arguments": {{"employee_id": "E-1"}}}}
out = e.invoke("tool_pre_invoke", 0, payload, {{"meta": {{"entity_type": "tool", "entity_name": "get_compensation"}}}})
print(loaded, out.continue_processing, "asyncio" in sys.modules)
"""


def test_a_first_result_without_async_plugins_imports_neither_asyncio_nor_the_pycpex_adapter() -> None:
    """asyncio is imported for an async handler or the runtime loop (fire-and-forget
    plugins), the py-cpex adapter for a py-cpex plugin: the demo pipeline without its
    fire-and-forget plugin imports neither, its loading included."""
    code = _FIRST_RESULT.format(path=str(EXAMPLES.parent / "bench" / "configs" / "generic-no-audit.yaml"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[] True False"


def test_the_first_fire_and_forget_plugin_starts_the_runtime_loop_without_its_invoke_waiting() -> None:
    """The demo's fire-and-forget audit plugin: the config loads without asyncio, the
    first invoke hands the task to the runtime loop, made on its own thread (asyncio
    imported there), and the task runs; later invokes use the same loop."""
    code = _FIRST_RESULT.format(path=str(EXAMPLES / "configs" / "generic.yaml")) + (
        "assert out.background.wait(30) == []\n"
        "from cpexrt.engine.runtime_loop import RUNTIME_LOOP\n"
        "loop = RUNTIME_LOOP.current\n"
        "assert loop is not None and loop.is_running()\n"
        "for _ in range(3):\n"
        "    again = e.invoke('tool_pre_invoke', 0, payload, {'meta': {'entity_type': 'tool', 'entity_name': 'x'}})\n"
        "    assert again.background.wait(30) == []\n"
        "print(RUNTIME_LOOP.current is loop, 'asyncio' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    first, last = done.stdout.splitlines()
    assert first.startswith("[] True ")  # asyncio may or may not be imported yet when the invoke returns
    assert last == "True True"


def test_the_demo_makes_only_the_records_it_uses() -> None:
    """The generated records are classes made on first use (docs/architecture.md,
    Start-up): the demo's first result makes none of those it never touches (plugin
    stats, decision and log records, py-cpex's hook payloads), and each is made when
    read."""
    unused = ("PluginStats", "DecisionRecord", "LogRecord", "ToolPreInvokePayload", "HttpPreRequestPayload")
    code = _PROBE.format(path=str(EXAMPLES / "configs" / "generic.yaml")) + (
        "from cpexrt._generated import records\n"
        f"print(sorted(n for n in {unused!r} if n in vars(records)))\n"
        "print(records.PluginStats(name='p', isolation='none', disabled=False).to_wire())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == ["[]", "{'name': 'p', 'isolation': 'none', 'disabled': False}"]


def test_isolation_is_imported_when_a_plugin_asks_for_it() -> None:
    """A plugin with isolation: thread runs on a helper thread (the module imported
    lazily), and plugin_stats reports it."""
    from cpexrt.engine import Engine

    e = Engine.from_yaml(config(plugin("th", "Trace", config="{tag: a}", isolation="thread")))
    e.initialize()
    try:
        out = e.invoke("tool_pre_invoke", 0, {"trace": []})
        assert out.modified_payload == {"trace": ["a"]}
        assert "cpexrt.engine.isolation" in sys.modules
        assert [(s["name"], s["isolation"]) for s in e.plugin_stats()] == [("th", "thread")]
    finally:
        e.shutdown()


def test_a_runtime_loop_that_cannot_be_made_fails_the_waiting_fire_and_forget_tasks() -> None:
    """The loop is made on its own thread after the first task was handed over: if it
    cannot be made, that task ends as an error of its batch (wait returns it, nothing
    left pending), and the next invoke that needs the loop raises, naming the cause."""
    code = _FIRST_RESULT.format(path=str(EXAMPLES / "configs" / "generic.yaml")) + (
        "errors = out.background.wait(30)\n"
        "print([(x.plugin_name, x.message) for x in errors])\n"
        "try:\n"
        "    e.invoke('tool_pre_invoke', 0, payload, {'meta': {'entity_type': 'tool', 'entity_name': 'x'}})\n"
        "except RuntimeError as exc:\n"
        "    print('raised', exc)\n"
    )
    code = code.replace(
        "e = Engine()\n",
        "from cpexrt.engine import runtime_loop\n"
        "def _no_loop():\n"
        "    raise OSError(24, 'Too many open files')\n"
        "runtime_loop.new_loop = _no_loop\n"
        "e = Engine()\n",
        1,
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("[] True "), lines
    assert lines[1] == (
        "[('<engine>', \"fire-and-forget task not run: the runtime loop could not be started: "
        "OSError(24, 'Too many open files')\")]"
    ), lines
    assert lines[2] == "raised the runtime loop could not be started: OSError(24, 'Too many open files')", lines
