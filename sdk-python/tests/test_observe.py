"""Observability: spans and metrics (OpenTelemetry), logs, decision records and shadow
mode, from the engine in-process and from the Python host over libcpex.so."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from conftest import PLUGIN_DIR, config, plugin, python_prints
from cpexrt._generated import calls
from cpexrt._generated.records import DecisionRecord, LogRecord
from cpexrt.engine import Engine
from cpexrt.engine.decisions import DecisionLog
from cpexrt.errors import ConfigError, InvalidHandleError, InvalidInputError, PipelineError
from cpexrt.host import Library, PluginManager

sys.path.insert(0, PLUGIN_DIR)
import otel_probe

SECRET = "s3cr3t-payload-value"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"

PIPELINE = (
    plugin("tr", "Trace", config="{tag: a}"),
    plugin("boom", "Raises", on_error="ignore"),
    plugin("shadow", "DenyWhenBlocked", mode="permissive"),
)


def engine(*plugins: str, settings: str = "") -> Engine:
    e = Engine.from_yaml(settings + config(*plugins))
    e.initialize()
    return e


def payload(block: bool = True) -> dict[str, Any]:
    return {"trace": [], "block": block, "secret": SECRET}


# -- spans and metrics ------------------------------------------------------------------


@pytest.fixture(scope="module")
def otel() -> Iterator[Any]:
    """opentelemetry-sdk's in-memory exporter and reader, as the global providers."""
    exporter, _ = otel_probe.install()
    otel_probe.collect(True)
    yield exporter
    otel_probe.collect(False)


def spans_of(exporter: Any, trace_id: str) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if f"{s.context.trace_id:032x}" == trace_id]


def test_spans_join_the_hosts_trace(otel: Any) -> None:
    e = engine(*PIPELINE)
    out = e.invoke("tool_pre_invoke", 0, payload(), request={"request_id": "r1", "traceparent": TRACEPARENT})
    assert out.continue_processing
    spans = spans_of(otel, TRACE_ID)
    (invoke,) = [s for s in spans if s.name == "cpex.invoke tool_pre_invoke"]
    assert f"{invoke.parent.span_id:016x}" == PARENT_ID
    assert invoke.attributes["cpex.request.id"] == "r1"
    assert invoke.attributes["cpex.decision"] == "modify"
    children = {s.name: s for s in spans if s.parent is not None and s.parent.span_id == invoke.context.span_id}
    assert set(children) == {"cpex.plugin tr", "cpex.plugin boom", "cpex.plugin shadow"}
    assert children["cpex.plugin tr"].attributes["cpex.decision"] == "modify"
    boom = children["cpex.plugin boom"]
    assert boom.attributes["error.type"] == "plugin_error"
    assert boom.status.status_code.name == "ERROR"
    shadow = children["cpex.plugin shadow"]
    assert dict(shadow.attributes) == {
        "cpex.hook": "tool_pre_invoke",
        "cpex.plugin.name": "shadow",
        "cpex.plugin.mode": "permissive",
        "cpex.decision": "deny",
        "cpex.enforced": False,
        "cpex.violation.code": "blocked",
    }
    for span in spans:
        assert SECRET not in repr(dict(span.attributes or {}))
    e.shutdown()


def test_a_failed_invoke_ends_its_span_with_the_error(otel: Any) -> None:
    e = engine(plugin("tr", "Trace", config="{tag: a}"), plugin("boom", "Raises"))
    trace_id = "1" * 32
    with pytest.raises(PipelineError):
        e.invoke("tool_pre_invoke", 0, payload(), request={"request_id": "r2", "traceparent": f"00-{trace_id}-{'2' * 16}-01"})
    spans = {s.name: s for s in spans_of(otel, trace_id)}
    invoke = spans["cpex.invoke tool_pre_invoke"]
    assert invoke.status.status_code.name == "ERROR"
    assert invoke.attributes["error.type"] == "PipelineError"
    assert invoke.attributes["cpex.decision"] == "error"
    assert spans["cpex.plugin boom"].attributes["error.type"] == "plugin_error"
    e.shutdown()


def test_concurrent_plugins_get_spans_and_the_halted_are_cancelled(otel: Any) -> None:
    e = engine(
        plugin("deny", "AsyncDeny", mode="concurrent"),
        plugin("slow", "AsyncSleeper", mode="concurrent", config="{seconds: 5}"),
    )
    trace_id = "3" * 32
    out = e.invoke("tool_pre_invoke", 0, payload(), request={"request_id": "r3", "traceparent": f"00-{trace_id}-{'4' * 16}-01"})
    assert not out.continue_processing
    spans = {s.name: s for s in spans_of(otel, trace_id)}
    assert spans["cpex.plugin deny"].attributes["cpex.decision"] == "deny"
    assert spans["cpex.plugin deny"].attributes["cpex.violation.code"] == "async_no"
    assert spans["cpex.plugin slow"].attributes["cpex.decision"] == "cancelled"
    e.shutdown()


def test_without_a_traceparent_the_callers_current_span_is_the_parent(otel: Any) -> None:
    from opentelemetry import trace

    e = engine(plugin("tr", "Trace", config="{tag: a}"))
    with trace.get_tracer("test").start_as_current_span("gateway") as parent:
        e.invoke("tool_pre_invoke", 0, payload(), request={"request_id": "r4"})
    trace_id = f"{parent.get_span_context().trace_id:032x}"
    (invoke,) = [s for s in spans_of(otel, trace_id) if s.name.startswith("cpex.invoke")]
    assert invoke.parent.span_id == parent.get_span_context().span_id
    e.shutdown()


def test_metrics_count_per_plugin_and_hook(otel: Any) -> None:
    e = engine(*PIPELINE)
    before = _points()
    for _ in range(3):
        e.invoke("tool_pre_invoke", 0, payload())
    after = _points()

    def grew(name: str, **attrs: Any) -> float:
        key = (name, tuple(sorted(attrs.items())))
        return after.get(key, 0) - before.get(key, 0)

    hook = {"cpex.hook": "tool_pre_invoke"}
    assert (
        grew(
            "cpex.plugin.denials",
            **hook,
            **{"cpex.plugin.name": "shadow", "cpex.enforced": False, "cpex.violation.code": "blocked"},
        )
        == 3
    )
    assert grew("cpex.plugin.errors", **hook, **{"cpex.plugin.name": "boom", "error.type": "plugin_error"}) == 3
    assert grew("cpex.plugin.duration", **hook, **{"cpex.plugin.name": "tr"}) == 3
    assert grew("cpex.invocations", **hook, **{"cpex.decision": "modify"}) == 3
    assert grew("cpex.invoke.duration", **hook, **{"cpex.decision": "modify"}) == 3
    e.shutdown()


def _points() -> dict[tuple[str, tuple[tuple[str, Any], ...]], float]:
    return {(p["name"], tuple(sorted(p["attributes"].items()))): p["value"] for p in otel_probe.metric_points()}


def test_timeouts_are_counted(otel: Any) -> None:
    e = engine(plugin("spin", "AsyncSleeper", on_error="ignore", timeout=0.05, config="{seconds: 5}"))
    before = _points()
    out = e.invoke("tool_pre_invoke", 0, payload())
    assert [err.code for err in out.errors] == ["plugin_timeout"]
    after = _points()
    key = ("cpex.plugin.timeouts", (("cpex.hook", "tool_pre_invoke"), ("cpex.plugin.name", "spin")))
    assert after.get(key, 0) - before.get(key, 0) == 1
    e.shutdown()


_NO_OP = """
import sys
{block}
from cpexrt.engine import Engine, observe
from cpexrt.engine.decisions import DecisionLog
assert observe.OTEL is {otel}
assert observe.start("h", None, DecisionLog()) is None
e = Engine.from_yaml({yaml!r})
e.initialize()
out = e.invoke("tool_pre_invoke", 0, {{"trace": []}}, request={{"request_id": "r", "traceparent": {tp!r}}})
assert out.modified_payload == {{"trace": ["a"]}}, out.modified_payload
print("ok")
"""


@pytest.mark.parametrize("installed", [True, False])
def test_without_an_sdk_tracing_is_off(installed: bool) -> None:
    """With opentelemetry-api but no SDK configured, and without opentelemetry at all,
    nothing is observed and invokes work (a fresh interpreter: this one has an SDK)."""
    block = "" if installed else "sys.modules['opentelemetry'] = None"
    code = _NO_OP.format(block=block, otel=installed, yaml=config(plugin("tr", "Trace", config="{tag: a}")), tp=TRACEPARENT)
    out = python_prints(code)
    assert out.strip() == "ok"


_LAZY = """
import sys
sys.path.insert(0, {plugins!r})
from cpexrt.engine import Engine, observe
e = Engine.from_yaml({yaml!r})
e.initialize()
request = {{"request_id": "r", "traceparent": {tp!r}}}
out = e.invoke("tool_pre_invoke", 0, {{"trace": []}}, request=request)
assert out.modified_payload == {{"trace": ["a"]}}, out.modified_payload
# nothing observes yet, and the API was not imported for it (start-up cost)
assert observe.OTEL is True and not observe._LOADED
assert not [m for m in sys.modules if m.startswith("opentelemetry")], sorted(sys.modules)
import otel_probe  # the application configures an SDK after the engine started
exporter, _ = otel_probe.install()
otel_probe.collect(True)
out = e.invoke("tool_pre_invoke", 0, {{"trace": []}}, request=request)
assert out.modified_payload == {{"trace": ["a"]}}, out.modified_payload
spans = otel_probe.spans()
names = sorted(s["name"] for s in spans)
assert names == ["cpex.invoke tool_pre_invoke", "cpex.plugin tr"], names
assert all(s["trace_id"] == {trace_id!r} for s in spans), spans
assert any(p["name"] == "cpex.invocations" for p in otel_probe.metric_points())
e.shutdown()
print("ok")
"""


def test_opentelemetry_is_imported_once_the_application_uses_it() -> None:
    """The engine does not import opentelemetry at start-up; an SDK the application
    configures later (after the engine started and ran invokes) gets the spans and
    metrics, parented by the host's traceparent (a fresh interpreter)."""
    code = _LAZY.format(
        plugins=PLUGIN_DIR, yaml=config(plugin("tr", "Trace", config="{tag: a}")), tp=TRACEPARENT, trace_id=TRACE_ID
    )
    out = python_prints(code)
    assert out.strip() == "ok"


def test_an_environment_provider_loads_opentelemetry_at_import() -> None:
    """OTEL_PYTHON_TRACER_PROVIDER names a provider the API makes itself, with no
    application code importing it: the engine loads the API at import then."""
    code = "from cpexrt.engine import observe; assert observe._LOADED and not observe._UNSET_FAST; print('ok')"
    env = {**os.environ, "OTEL_PYTHON_TRACER_PROVIDER": "sdk_tracer_provider"}
    out = python_prints(code, env=env)
    assert out.strip() == "ok"


def test_a_malformed_traceparent_is_refused_naming_the_field() -> None:
    e = engine(plugin("tr", "Trace", config="{tag: a}"))
    for bad in ("garbage", f"00-{'0' * 32}-{PARENT_ID}-01", f"ff-{TRACE_ID}-{PARENT_ID}-01", f"00-{TRACE_ID}-{PARENT_ID}-01-x"):
        with pytest.raises(InvalidInputError, match=r"request\.traceparent"):
            e.invoke("tool_pre_invoke", 0, payload(), request={"request_id": "r", "traceparent": bad})
    with pytest.raises(InvalidInputError, match=r"request\.tracestate: expected a string"):
        e.invoke("tool_pre_invoke", 0, payload(), request={"request_id": "r", "tracestate": 3})
    e.shutdown()


# -- logs -----------------------------------------------------------------------------


def test_the_engine_logs_failures_with_fields_and_no_payload(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="cpexrt")
    e = engine(*PIPELINE, plugin("gone", "Raises", on_error="disable"))
    e.invoke("tool_pre_invoke", 0, payload())
    e.shutdown()
    with pytest.raises(ConfigError):
        Engine.from_yaml(config(plugin("x", "Allow", mode="loud")))
    by_plugin = {getattr(r, "plugin", None): r for r in caplog.records if r.name == "cpexrt.engine.executor"}
    boom = by_plugin["boom"]
    assert boom.name == "cpexrt.engine.executor" and boom.levelno == logging.WARNING
    assert (boom.plugin, boom.hook, boom.on_error) == ("boom", "tool_pre_invoke", "ignore")  # type: ignore[attr-defined]
    shadow = by_plugin["shadow"]
    assert shadow.levelno == logging.INFO and shadow.plugin == "shadow" and shadow.violation_code == "blocked"  # type: ignore[attr-defined]
    assert "switched off" in by_plugin["gone"].getMessage()
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        r.name == "cpexrt.engine" and r.levelno == logging.ERROR and "plugins[0].mode" in r.getMessage() for r in caplog.records
    )
    assert any(m.startswith("initialized 4 plugins") for m in messages)
    assert any(m == "shut down" for m in messages)
    for r in caplog.records:
        assert SECRET not in r.getMessage() and SECRET not in repr(r.__dict__)


def test_a_failure_nobody_would_log_is_not_formatted_but_still_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    # With no handler on the way but a NullHandler (as the cpexrt logger's in an
    # embedded interpreter), the WARNING is not built; the failure is the plugin's all
    # the same. A handler that takes WARNING gets it again; with no handler at all,
    # logging's last resort does.
    log = logging.getLogger("cpexrt.engine.executor")
    built: list[str] = []
    make = log.makeRecord

    def counted(*args: Any, **kwargs: Any) -> logging.LogRecord:
        built.append(args[4])
        return make(*args, **kwargs)

    monkeypatch.setattr(log, "makeRecord", counted)
    monkeypatch.setattr(log, "propagate", False)
    monkeypatch.setattr(logging, "lastResort", logging.StreamHandler(io.StringIO()))
    quiet = logging.NullHandler()
    loud = logging.StreamHandler(io.StringIO())
    loud.setLevel(logging.ERROR)
    ext = {"meta": {"entity_name": "t"}}
    e = engine(plugin("refused", "ExtensionEditor", on_error="ignore", config='{"set": {"meta.scope": "x"}}'))
    strict = engine(plugin("refused", "ExtensionEditor", on_error="fail", config='{"set": {"meta.scope": "x"}}'))
    log.addHandler(quiet)
    log.addHandler(loud)
    try:
        result = e.invoke("tool_pre_invoke", 0, payload(), ext)
        assert [(x.plugin_name, x.code) for x in result.errors] == [("refused", "extension_write_refused")]
        assert result.continue_processing and result.modified_extensions is None and built == []
        with pytest.raises(PipelineError, match=r"refused.*extension_write_refused"):
            strict.invoke("tool_pre_invoke", 0, payload(), ext)
        assert built == []  # a NullHandler and a handler above WARNING take nothing
        loud.setLevel(logging.WARNING)
        e.invoke("tool_pre_invoke", 0, payload(), ext)
        assert len(built) == 1
        log.removeHandler(quiet)
        log.removeHandler(loud)
        e.invoke("tool_pre_invoke", 0, payload(), ext)
        assert len(built) == 2
    finally:
        log.removeHandler(quiet)
        log.removeHandler(loud)
        e.shutdown()
        strict.shutdown()


def test_lifecycle_failures_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cpexrt")
    e = Engine.from_yaml(config(plugin("ok", "Allow"), plugin("bad", "BrokenInit")))
    with pytest.raises(PipelineError):
        e.initialize()
    assert any(getattr(r, "plugin", None) == "bad" and getattr(r, "step", None) == "initialize" for r in caplog.records)
    assert any(r.levelno == logging.ERROR and "initialize failed" in r.getMessage() for r in caplog.records)


def test_log_records_reach_a_sink_set_through_the_abi(library: Library) -> None:
    """cpex_set_log_sink, the Go host's path, called from Python: LogRecord maps on the
    cpex-logs thread, never the invoking one; NULL stops it; a bad level is refused."""
    ffi = library.ffi
    got: list[tuple[LogRecord, str]] = []

    def deliver(_user: Any, record: Any, length: int) -> None:
        got.append((LogRecord.from_wire(msgpack.unpackb(ffi.buffer(record, length)[:]), "log"), threading.current_thread().name))

    callback = ffi.callback(calls.RECORD_FN, deliver)
    with pytest.raises(InvalidInputError, match="min_level"):
        calls.set_log_sink(library, callback, ffi.NULL, 0)
    calls.set_log_sink(library, callback, ffi.NULL, logging.INFO)
    try:
        with PluginManager(config(*PIPELINE), library=library) as m:
            m.initialize()
            m.invoke("tool_pre_invoke", payload())
    finally:
        calls.set_log_sink(library, ffi.NULL, ffi.NULL, 0)  # hands over what is queued
    failures = [r for r, _ in got if (r.fields or {}).get("code") == "plugin_error"]
    assert failures and failures[0].level == logging.WARNING and failures[0].level_name == "WARNING"
    assert failures[0].logger == "cpexrt.engine.executor"
    assert failures[0].fields == {"plugin": "boom", "hook": "tool_pre_invoke", "code": "plugin_error", "on_error": "ignore"}
    assert {thread for _, thread in got} == {"cpex-logs"}
    assert not [r for r, _ in got if r.level < logging.INFO]
    count = len(got)
    logging.getLogger("cpexrt.engine").warning("after the sink was removed")
    assert len(got) == count


# -- decision records ---------------------------------------------------------------------


def collect(e: Engine) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    e.set_decision_sink(got.append)
    return got


def test_decision_records_name_each_plugins_verdict_and_no_payload() -> None:
    e = engine(*PIPELINE, plugin("ext", "ExtensionEditor", config="{set: {custom.k: v2, custom.gone: __remove__}}"))
    got = collect(e)
    e.invoke("tool_pre_invoke", 0, payload(), {"custom": {"k": "v", "gone": 1}}, request={"request_id": "req-1"})
    assert e.decisions.flush()
    (record,) = got
    assert SECRET not in json.dumps(record)
    assert record["request_id"] == "req-1" and record["hook"] == "tool_pre_invoke" and record["decision"] == "modify"
    verdicts = [(p["plugin"], p["verdict"], p["enforced"]) for p in record["plugins"]]
    assert verdicts == [("tr", "modify", True), ("boom", "error", True), ("ext", "modify", True), ("shadow", "deny", False)]
    by_name = {p["plugin"]: p for p in record["plugins"]}
    assert by_name["tr"]["modified_fields"] == ["payload.trace"]
    assert by_name["ext"]["modified_fields"] == ["extensions.custom.gone", "extensions.custom.k"]
    assert "modified_values" not in by_name["ext"]
    assert by_name["boom"]["error_code"] == "plugin_error"
    assert by_name["shadow"]["violation_code"] == "blocked" and by_name["shadow"]["mode"] == "permissive"
    assert all(p["duration_ms"] >= 0 for p in record["plugins"])
    DecisionRecord.from_wire(record, "record")  # the schema's shape
    e.shutdown()


def test_values_only_when_asked(tmp_path: Path) -> None:
    e = engine(plugin("tr", "Trace", config="{tag: a}"), settings="decision_records: {include_values: true}\n")
    got = collect(e)
    e.invoke("tool_pre_invoke", 0, payload())
    e.decisions.flush()
    assert got[0]["plugins"][0]["modified_values"] == {"payload.trace": ["a"]}
    e.shutdown()


def test_a_deny_and_a_failed_invoke_are_recorded() -> None:
    e = engine(
        plugin("tr", "Trace", config="{tag: a}"), plugin("deny", "DenyWhenBlocked"), plugin("ff", "Allow", mode="fire_and_forget")
    )
    got = collect(e)
    e.invoke("tool_pre_invoke", 0, payload())
    e.decisions.flush()
    assert got[0]["decision"] == "deny" and got[0]["violation_code"] == "blocked" and got[0]["violation_plugin"] == "deny"
    assert got[0]["background"] == ["ff"]
    e.shutdown()
    e = engine(plugin("tr", "Trace", config="{tag: a}"), plugin("boom", "Raises"))
    got = collect(e)
    with pytest.raises(PipelineError):
        e.invoke("tool_pre_invoke", 0, payload())
    e.decisions.flush()
    assert got[0]["decision"] == "error" and got[0]["error"] == "PipelineError"
    assert [(p["plugin"], p["verdict"], p.get("error_code")) for p in got[0]["plugins"]] == [
        ("tr", "modify", None),
        ("boom", "error", "plugin_error"),
    ]
    e.shutdown()


def test_decision_records_to_a_jsonl_file_relative_to_the_config(tmp_path: Path) -> None:
    path = tmp_path / "cpex.yaml"
    path.write_text("decision_records: {file: audit/decisions.jsonl}\n" + config(*PIPELINE))
    (tmp_path / "audit").mkdir()
    e = Engine()
    e.load_config_file(str(path))
    e.initialize()
    for i in range(3):
        e.invoke("tool_pre_invoke", 0, payload(), request={"request_id": f"f{i}"})
    e.shutdown()  # writes what is queued and closes the file
    lines = (tmp_path / "audit" / "decisions.jsonl").read_text().splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == ["f0", "f1", "f2"]
    assert SECRET not in "".join(lines)


def test_an_unopenable_decision_file_fails_the_load_and_changes_nothing(tmp_path: Path) -> None:
    e = Engine()
    with pytest.raises(ConfigError, match=r"decision_records\.file: cannot open"):
        e.load_config(f"decision_records: {{file: {str(tmp_path / 'no' / 'x.jsonl')!r}}}\n" + config(*PIPELINE))
    assert e.plugin_count() == 0 and not e.decisions.active


def test_a_sink_that_raises_loses_its_record_not_the_invoke() -> None:
    e = engine(plugin("tr", "Trace", config="{tag: a}"))

    def broken(record: dict[str, Any]) -> None:
        raise RuntimeError("sink down")

    e.set_decision_sink(broken)
    out = e.invoke("tool_pre_invoke", 0, payload())
    assert out.modified_payload["trace"] == ["a"]
    e.decisions.flush()
    assert e.decisions.dropped == 1
    e.shutdown()


def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    log = DecisionLog()
    release = threading.Event()

    def slow(record: dict[str, Any]) -> None:
        release.wait(10)

    log.set_sink(slow)
    log._outbox._capacity = 2
    for i in range(10):
        log.emit({"n": i})  # never blocks
    # At most one batch (taken off the queue before the sink blocked) and a full queue
    # were accepted: the rest was dropped, never waited for.
    assert log._outbox.dropped >= 10 - 2 * 2
    release.set()
    assert log.flush()
    log.close()


def test_records_stop_when_the_sink_is_removed() -> None:
    e = engine(plugin("tr", "Trace", config="{tag: a}"))
    got = collect(e)
    e.invoke("tool_pre_invoke", 0, payload())
    e.set_decision_sink(None)  # hands over what is queued first
    assert len(got) == 1 and not e.decisions.active
    e.invoke("tool_pre_invoke", 0, payload())
    e.shutdown()
    assert len(got) == 1


def test_the_python_host_receives_decision_records(library: Library) -> None:
    got: list[DecisionRecord] = []
    m = PluginManager(config(*PIPELINE), library=library)
    m.initialize()
    m.set_decision_sink(got.append)
    result = m.invoke("tool_pre_invoke", payload(), request={"request_id": "host-1", "traceparent": TRACEPARENT})
    assert not result.denied and [err.code for err in result.errors] == ["plugin_error", "not_enforced"]
    m.shutdown()  # delivers what is queued
    (record,) = got
    assert isinstance(record, DecisionRecord)
    assert record.request_id == "host-1" and record.decision == "modify"
    assert [(p.plugin, p.verdict, p.enforced) for p in record.plugins] == [
        ("tr", "modify", True),
        ("boom", "error", True),
        ("shadow", "deny", False),
    ]
    with pytest.raises(InvalidHandleError):
        m.set_decision_sink(got.append)


# -- shadow mode -----------------------------------------------------------------------


def test_a_permissive_cpex_plugin_is_a_shadow() -> None:
    """mode: permissive runs a cpex plugin in the transform phase: its deny is recorded
    (not_enforced, with the violation code) and not enforced, even under on_error: fail;
    its modification applies as a transform's (py-cpex's semantics)."""
    e = engine(
        plugin("shadow", "DenyWhenBlocked", mode="permissive"),
        plugin("shadow-tr", "Trace", mode="permissive", config="{tag: s}"),
    )
    out = e.invoke("tool_pre_invoke", 0, payload())
    assert out.continue_processing and out.violation is None
    (error,) = out.errors
    assert (error.plugin_name, error.code, error.details) == ("shadow", "not_enforced", {"violation_code": "blocked"})
    assert out.modified_payload["trace"] == ["s"]
    assert [p.spec.mode.value for p in e._set.plugins] == ["transform", "transform"]
    e.shutdown()


def test_permissive_is_the_only_way_to_shadow() -> None:
    with pytest.raises(ConfigError, match="shadow"):
        Engine.from_yaml(config(plugin("x", "Allow", shadow="true")))
