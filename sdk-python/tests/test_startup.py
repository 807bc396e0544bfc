"""Start-up: what the library's Python side imports before its first result. Optional
parts (isolation, OpenTelemetry, py-cpex) are imported only when a config or the
application uses them (docs/architecture.md, Start-up), and work when it does."""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import config, plugin, python_prints

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
    out = python_prints(code)
    assert out.strip() == "[]"


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
    out = python_prints(code)
    assert out.strip() == "[] True False"


def _demo_with_audit_file(tmp_path: Path) -> tuple[Path, Path]:
    """generic.yaml, its audit plugin writing to a file: (the config, the file)."""
    audit = tmp_path / "audit.log"
    text = (EXAMPLES / "configs" / "generic.yaml").read_text()
    text = text.replace("plugin_dirs: [../plugins]", f"plugin_dirs: [{str(EXAMPLES / 'plugins')!r}]")
    text = text.replace("    on_error: ignore\n", f"    on_error: ignore\n    config: {{path: {str(audit)!r}}}\n", 1)
    path = tmp_path / "generic.yaml"
    path.write_text(text)
    return path, audit


def test_the_demo_fire_and_forget_plugin_runs_its_followers_without_importing_asyncio(tmp_path: Path) -> None:
    """The demo's fire-and-forget audit plugin is sync: its runs happen on the
    background thread (cpex-background), made on the first invoke, with no asyncio
    imported and no runtime loop made; later invokes use the same thread."""
    config_path, audit = _demo_with_audit_file(tmp_path)
    code = _FIRST_RESULT.format(path=str(config_path)) + (
        "assert out.background.wait(30) == []\n"
        "import threading\n"
        "first = [t for t in threading.enumerate() if t.name == 'cpex-background']\n"
        "for _ in range(3):\n"
        "    again = e.invoke('tool_pre_invoke', 0, payload, {'meta': {'entity_type': 'tool', 'entity_name': 'x'}})\n"
        "    assert again.background.wait(30) == []\n"
        "later = [t for t in threading.enumerate() if t.name == 'cpex-background']\n"
        "from cpexrt.engine.runtime_loop import RUNTIME_LOOP\n"
        "print(len(first), later == first, RUNTIME_LOOP.current, 'asyncio' in sys.modules)\n"
    )
    out = python_prints(code)
    assert out.splitlines() == ["[] True False", "1 True None False"]
    assert audit.read_text().splitlines() == ["get_compensation by alice"] * 4


def test_an_async_fire_and_forget_plugin_that_suspends_runs_on_the_runtime_loop_bounded_by_its_timeout() -> None:
    """A handler that gives a coroutine is finished on the runtime loop (made then):
    one that suspends briefly runs to its end, one that sleeps past its timeout is
    stopped there and reported by name; the sync follower beside them runs too."""
    from cpexrt.engine import Engine
    from cpexrt.engine.runtime_loop import RUNTIME_LOOP

    e = Engine.from_yaml(
        config(
            plugin("rec", "Recorder", mode="fire_and_forget", config="{seconds: 0.01}"),
            plugin("sleepy", "AsyncSleeper", mode="fire_and_forget", config="{seconds: 30}", timeout=0.2),
            plugin("sync", "SyncRecorder", mode="fire_and_forget"),
        )
    )
    e.initialize()
    try:
        outs = [e.invoke("tool_pre_invoke", 0, {"id": i}) for i in range(3)]
        for out in outs:
            assert out.continue_processing and out.background is not None
            errors = out.background.wait(30)
            assert [(x.plugin_name, x.code) for x in errors] == [("sleepy", "plugin_timeout")]
        assert sorted(e.global_state["recorded"]) == [0, 1, 2]
        assert sorted(e.global_state["sync_recorded"]) == [0, 1, 2]
        assert RUNTIME_LOOP.current is not None and RUNTIME_LOOP.current.is_running()
    finally:
        e.shutdown()


# Records who first imports pydantic (or pydantic_core): the innermost cpexrt module on
# the stack, under sdk-python/cpexrt.
_PYDANTIC_SPY = """
import sys, traceback
importers = []
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name in ("pydantic", "pydantic_core"):
            ours = [f.filename for f in traceback.extract_stack() if "/cpexrt/" in f.filename]
            importers.append((name, ours[-1].split("/cpexrt/")[-1] if ours else "not cpexrt"))
        return None
sys.meta_path.insert(0, Spy())
"""


def test_records_and_payloads_import_no_pydantic() -> None:
    """The wire records are plain classes (cpexrt.wire.WireRecord): the boundary, the
    records, the payload registry and the executor import no pydantic, and decoding,
    checking, cloning and encoding a CMF message and the results' records use none."""
    code = _PYDANTIC_SPY + (
        "import cpexrt._boundary.exports, cpexrt._generated.records, cpexrt.wire, cpexrt.payloads\n"
        "import cpexrt.engine.executor\n"
        "from cpexrt import payloads\n"
        "from cpexrt._generated.records import PipelineResult, PluginError, PluginViolation\n"
        "from cpexrt.wire import clone\n"
        "msg = {'message': {'role': 'assistant', 'content': [{'content_type': 'text', 'text': 'hi'},"
        " {'content_type': 'tool_call', 'content': {'tool_call_id': 'c1', 'name': 'search', 'arguments': {'q': 'x'}}}]}}\n"
        "message = payloads.decode(1, msg)\n"
        "assert clone(message) == message and clone(message) is not message\n"
        "v = PluginViolation.model_validate({'code': 'c', 'reason': 'r'})\n"
        "r = PipelineResult(continue_processing=False, payload_modified=False, extensions_modified=False,"
        " payload_type=1, violation=v, errors=[PluginError(plugin_name='p', message='m')])\n"
        "payloads._check_slots({'http': {'request_headers': {'a': 'b'}}})\n"
        "print(PipelineResult.from_wire(r.to_wire()) == r, importers, 'pydantic' in sys.modules)\n"
    )
    assert python_prints(code).split() == ["True", "[]", "False"]


def test_the_demos_import_no_pydantic() -> None:
    """The generic demo (an allow, a deny) and the CMF demo (an on_error: ignore error)
    run, config to results, with no pydantic imported (only the py-cpex adapter,
    engine/pycpex.py, uses it, with py-cpex's own models)."""
    code = _PYDANTIC_SPY + (
        "import cpexrt._boundary.exports\n"
        "from cpexrt.engine import Engine\n"
        "e = Engine()\n"
        f"e.load_config_file({str(EXAMPLES / 'configs' / 'generic.yaml')!r})\n"
        "e.initialize()\n"
        "ext = {'meta': {'entity_type': 'tool', 'entity_name': 'get_compensation'}}\n"
        "allow = e.invoke('tool_pre_invoke', 0, {'tool_name': 'get_compensation', 'user': 'alice', 'pii_clearance': True}, ext)\n"
        "deny = e.invoke('tool_pre_invoke', 0, {'tool_name': 'get_compensation', 'user': 'alice'}, ext)\n"
        "e.shutdown()\n"
        "c = Engine()\n"
        f"c.load_config_file({str(EXAMPLES / 'configs' / 'cmf.yaml')!r})\n"
        "c.initialize()\n"
        "msg = {'message': {'role': 'assistant', 'content': [{'content_type': 'text', 'text': 'hi'},"
        " {'content_type': 'tool_call', 'content': {'tool_call_id': 'c1', 'name': 'search_docs', 'arguments': {'q': 'x'}}}]}}\n"
        "cmf = c.invoke('cmf.tool_pre_invoke', 1, msg, {'http': {'request_headers': {'host': 'gateway.local'}}})\n"
        "c.shutdown()\n"
        "print(allow.continue_processing, deny.violation.code, [x.plugin_name for x in cmf.errors], cmf.continue_processing)\n"
        "print(sorted(set(importers)), 'pydantic' in sys.modules, 'pydantic_core' in sys.modules)\n"
    )
    lines = python_prints(code).splitlines()
    assert lines[0] == "True pii_clearance_required ['header-injector-readonly'] True"
    assert lines[1] == "[] False False"


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
    """The loop is made for the first fire-and-forget handler that gives a coroutine,
    after its invoke returned: if it cannot be made, that task ends as an error of its
    batch (wait returns it, nothing left pending), so does the next one, and whatever
    asks for the loop raises, naming the cause. Sync fire-and-forget plugins, which
    need no loop, still run."""
    followers = config(plugin("rec", "Recorder", mode="fire_and_forget"), plugin("sync", "SyncRecorder", mode="fire_and_forget"))
    code = (
        "import sys\n"
        "from cpexrt.engine import runtime_loop\n"
        "def _no_loop():\n"
        "    raise OSError(24, 'Too many open files')\n"
        "runtime_loop.new_loop = _no_loop\n"
        "from cpexrt.engine import Engine\n"
        f"e = Engine.from_yaml({followers!r})\n"
        "e.initialize()\n"
        "for i in range(2):\n"
        "    out = e.invoke('tool_pre_invoke', 0, {'id': i})\n"
        "    print(out.continue_processing, [(x.plugin_name, x.message) for x in out.background.wait(30)])\n"
        "print(e.global_state.get('recorded'), e.global_state['sync_recorded'])\n"
        "try:\n"
        "    runtime_loop.RUNTIME_LOOP.loop\n"
        "except RuntimeError as exc:\n"
        "    print('raised', exc)\n"
    )
    out = python_prints(code)
    lines = out.splitlines()
    failed = (
        "True [('<engine>', \"fire-and-forget task not run: the runtime loop could not be started: "
        "OSError(24, 'Too many open files')\")]"
    )
    assert lines[:2] == [failed, failed], lines
    assert lines[2] == "None [0, 1]", lines
    assert lines[3] == "raised the runtime loop could not be started: OSError(24, 'Too many open files')", lines


def test_a_background_thread_that_cannot_be_started_fails_the_queued_fire_and_forget_tasks() -> None:
    """The background thread is started by the first fire-and-forget task: if it
    cannot be, the queued tasks end as errors of their batches (nothing left
    pending), the invoke's own result stands, and the next task tries again."""
    code = (
        "import threading\n"
        "from cpexrt.engine import Engine, background\n"
        "class NoThread(threading.Thread):\n"
        "    refuse = True\n"
        "    def start(self):\n"
        "        if NoThread.refuse and self.name == 'cpex-background':\n"
        "            NoThread.refuse = False\n"
        '            raise RuntimeError("can\'t start new thread")\n'
        "        super().start()\n"
        "background.threading.Thread = NoThread\n"
        f"e = Engine.from_yaml({config(plugin('count', 'Counter'), plugin('sync', 'SyncRecorder', mode='fire_and_forget'))!r})\n"
        "e.initialize()\n"
        "for i in range(2):\n"
        "    out = e.invoke('tool_pre_invoke', 0, {'id': i})\n"
        "    print(out.continue_processing, *(f'{x.plugin_name}: {x.message}' for x in out.background.wait(30)), sep=' | ')\n"
        "print(e.global_state['sync_recorded'])\n"
    )
    out = python_prints(code)
    assert out.splitlines() == [
        "True | <engine>: fire-and-forget task not run: the background thread could not be started: "
        'RuntimeError("can\'t start new thread")',
        "True",
        "[1]",
    ]
