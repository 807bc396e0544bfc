"""What an invoke tells an operator: OpenTelemetry spans and metrics (when
opentelemetry-api is installed and an SDK is configured) and decision records (when the
manager has a decision sink). With none of them on, `start` returns None and the
executor's only cost is one test per plugin.

Spans: one `cpex.invoke <hook>` span per invoke that runs plugins, a child
`cpex.plugin <name>` span per plugin run in the pipeline. The parent is the W3C trace
context the host passed in the request's global context (`traceparent`,
`tracestate`), else the caller's current OpenTelemetry context. Attributes follow the
semantic conventions where one fits (`error.type`), the rest are under `cpex.`.

Metrics (instrumentation scope `cpexrt`): `cpex.invocations`, `cpex.invoke.duration`
(s) per hook and decision; `cpex.plugin.calls`, `cpex.plugin.denials`,
`cpex.plugin.errors`, `cpex.plugin.timeouts`, `cpex.plugin.duration` (s) per plugin
and hook."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from cpexrt import wire
from cpexrt.errors import PipelineTimeoutError

if TYPE_CHECKING:
    from cpexrt.engine.decisions import DecisionLog
    from cpexrt.engine.executor import Invocation, LoadedPlugin, PipelineOutcome

# opentelemetry-api is optional (the otel extra), and imported only once something uses
# it: importing it costs some 10 ms of start-up. A provider can be set only by code that
# imported the API (or, through the environment, by an OTEL_PYTHON_*_PROVIDER
# variable), so until opentelemetry.trace or .metrics is in sys.modules nothing can be
# observed and `start` skips the import (`_otel_in_use`: two dict lookups per invoke).
_ENV_PROVIDERS = ("OTEL_PYTHON_TRACER_PROVIDER", "OTEL_PYTHON_METER_PROVIDER")


def _installed() -> bool:
    try:
        # the top-level name: a dotted one would import the package
        return importlib.util.find_spec("opentelemetry") is not None
    except (ImportError, ValueError):  # sys.modules["opentelemetry"] is None, or a broken install
        return False


OTEL = _installed()  # opentelemetry-api importable
_LOADED = False  # the API imported, and the names below set

# The API's modules and names, set by _load.
otel_context: Any = None
otel_metrics: Any = None
otel_trace: Any = None
NoOpTracerProvider: Any = None
ProxyTracerProvider: Any = None
SpanKind: Any = None
Status: Any = None
StatusCode: Any = None
_PROPAGATOR: Any = None
_UNSET_METERS: tuple[type, ...] = ()
_metrics_globals: Any = None

# The no-op test: the API's own globals, None until an application sets a provider
# (get_tracer_provider() costs about a microsecond, reading os.environ each call).
# When a provider comes from the environment (OTEL_PYTHON_*_PROVIDER), or a newer API
# moved these globals, the public calls are made every time instead.
_UNSET_FAST = False

_LOAD_LOCK = threading.Lock()


def _load() -> bool:
    """Imports the API (once); False if it cannot be imported."""
    global OTEL, _LOADED, otel_context, otel_metrics, otel_trace, NoOpTracerProvider, ProxyTracerProvider
    global SpanKind, Status, StatusCode, _PROPAGATOR, _UNSET_METERS, _metrics_globals, _UNSET_FAST
    with _LOAD_LOCK:
        if _LOADED or not OTEL:
            return _LOADED
        try:
            context = importlib.import_module("opentelemetry.context")
            metrics = importlib.import_module("opentelemetry.metrics")
            trace = importlib.import_module("opentelemetry.trace")
            tracecontext = importlib.import_module("opentelemetry.trace.propagation.tracecontext")
        except ImportError:
            OTEL = False
            return False
        otel_context, otel_metrics, otel_trace = context, metrics, trace
        NoOpTracerProvider, ProxyTracerProvider = trace.NoOpTracerProvider, trace.ProxyTracerProvider
        SpanKind, Status, StatusCode = trace.SpanKind, trace.Status, trace.StatusCode
        _PROPAGATOR = tracecontext.TraceContextTextMapPropagator()
        try:
            internal = importlib.import_module("opentelemetry.metrics._internal")
            _UNSET_METERS = (internal._ProxyMeterProvider, metrics.NoOpMeterProvider)
        except (ImportError, AttributeError):  # pragma: no cover - a newer API moved it: treat every provider as set
            internal, _UNSET_METERS = None, ()
        try:
            _metrics_globals = internal
            _UNSET_FAST = (
                internal is not None
                and trace._TRACER_PROVIDER is None
                and internal._METER_PROVIDER is None
                and not any(name in os.environ for name in _ENV_PROVIDERS)
            )
        except AttributeError:  # pragma: no cover - another API version
            _UNSET_FAST = False
        _LOADED = True
        return True


def _otel_in_use() -> bool:
    """Whether the API is loaded, loading it once the application (or a plugin) has
    imported it."""
    return _LOADED or (("opentelemetry.trace" in sys.modules or "opentelemetry.metrics" in sys.modules) and _load())


if OTEL and (
    "opentelemetry.trace" in sys.modules
    or "opentelemetry.metrics" in sys.modules
    or any(name in os.environ for name in _ENV_PROVIDERS)
):
    _load()

SCOPE = "cpexrt"
_VERSION = "0.1.0"


class _Otel:
    """The tracer and instruments of the providers last seen (cached per provider)."""

    tracer_provider: Any = None
    tracer: Any = None
    meter_provider: Any = None
    instruments: _Instruments | None = None


class _Instruments:
    def __init__(self, meter: Any) -> None:
        self.invocations = meter.create_counter("cpex.invocations", unit="{invocation}", description="invokes that ran plugins")
        self.invoke_duration = meter.create_histogram(
            "cpex.invoke.duration", unit="s", description="duration of an invoke that ran plugins"
        )
        self.calls = meter.create_counter("cpex.plugin.calls", unit="{call}", description="plugin handler runs")
        self.denials = meter.create_counter("cpex.plugin.denials", unit="{denial}", description="denies, enforced or not")
        self.errors = meter.create_counter("cpex.plugin.errors", unit="{error}", description="plugin failures, by code")
        self.timeouts = meter.create_counter("cpex.plugin.timeouts", unit="{timeout}", description="plugin timeouts")
        self.duration = meter.create_histogram("cpex.plugin.duration", unit="s", description="duration of a plugin run")


_CACHE_LOCK = threading.Lock()


def _tracer() -> Any:
    provider = otel_trace.get_tracer_provider()
    if provider is not _Otel.tracer_provider:
        with _CACHE_LOCK:
            if provider is not _Otel.tracer_provider:
                unset = isinstance(provider, (ProxyTracerProvider, NoOpTracerProvider))
                _Otel.tracer = None if unset else provider.get_tracer(SCOPE, _VERSION)
                _Otel.tracer_provider = provider
    return _Otel.tracer


def _instruments() -> _Instruments | None:
    provider = otel_metrics.get_meter_provider()
    if provider is not _Otel.meter_provider:
        with _CACHE_LOCK:  # instruments are made once per provider
            if provider is not _Otel.meter_provider:
                unset = isinstance(provider, _UNSET_METERS)
                _Otel.instruments = None if unset else _Instruments(provider.get_meter(SCOPE, _VERSION))
                _Otel.meter_provider = provider
    return _Otel.instruments


def start(hook: str, request: dict[str, Any] | None, decisions: DecisionLog) -> Observation | None:
    """The observation of one invoke, or None when nothing observes it (no SDK
    configured, no decision sink): the no-op path."""
    tracer = instruments = None
    if (
        OTEL
        and (_LOADED or _otel_in_use())  # (its first test, inline)
        and not (_UNSET_FAST and otel_trace._TRACER_PROVIDER is None and _metrics_globals._METER_PROVIDER is None)
    ):
        tracer = _tracer()
        instruments = _instruments()
    if tracer is None and instruments is None and not decisions.active:
        return None
    return Observation(hook, request, tracer, instruments, decisions if decisions.active else None)


# The verdicts of a plugin run, as records and span attributes name them.
ALLOW, DENY, MODIFY, ERROR, TIMEOUT, CANCELLED = "allow", "deny", "modify", "error", "timeout", "cancelled"


class Observation:
    """One invoke's observation: its span, the per-plugin verdicts, and at the end the
    metrics and the decision record."""

    __slots__ = ("hook", "request", "tracer", "instruments", "decisions", "span", "parent", "started", "wall", "plugins")

    def __init__(
        self,
        hook: str,
        request: dict[str, Any] | None,
        tracer: Any,
        instruments: _Instruments | None,
        decisions: DecisionLog | None,
    ) -> None:
        self.hook, self.request, self.tracer = hook, request, tracer
        self.instruments, self.decisions = instruments, decisions
        self.plugins: list[dict[str, Any]] = []
        self.wall = time.time()
        self.started = time.perf_counter()
        self.span: Any = None
        self.parent: Any = None  # the context of the plugin spans: None when not recording
        if tracer is not None:
            attributes: dict[str, Any] = {"cpex.hook": hook}
            parent = None
            if request is not None:
                if request.get("request_id"):
                    attributes["cpex.request.id"] = request["request_id"]
                parent = _parent_context(request)
            self.span = tracer.start_span(f"cpex.invoke {hook}", context=parent, kind=SpanKind.INTERNAL, attributes=attributes)
            if self.span.is_recording():
                self.parent = otel_trace.set_span_in_context(self.span)

    # -- one plugin -----------------------------------------------------------------

    def begin(self, plugin: LoadedPlugin, inv: Invocation, out: PipelineOutcome) -> _Mark:
        # A plugin's span is made when the plugin is done, with its start time and
        # every attribute at once (the SDK's per-attribute checks dominate its cost).
        return _Mark(out, inv, time.time_ns() if self.parent is not None else None)

    def end(
        self, plugin: LoadedPlugin, mark: _Mark, inv: Invocation, out: PipelineOutcome, exc: BaseException | None = None
    ) -> None:
        """Records what the plugin's run did to the outcome (or the exception that
        failed the call)."""
        elapsed = time.perf_counter() - mark.started
        entry: dict[str, Any] = {"plugin": plugin.name, "mode": mode_of(plugin), "verdict": ALLOW, "enforced": True}
        if exc is not None:
            entry["verdict"] = TIMEOUT if isinstance(exc, PipelineTimeoutError) else ERROR
            entry["error_code"] = getattr(exc, "plugin_code", None) or (
                "invoke_timeout" if entry["verdict"] == TIMEOUT else "plugin_error"
            )
        else:
            for error in out.errors[mark.errors :]:
                if error.plugin_name != plugin.name:
                    continue
                if error.code == "not_enforced":
                    code = (error.details or {}).get("violation_code")
                    entry["verdict"] = DENY if code else MODIFY
                    entry["enforced"] = False
                    if code:
                        entry["violation_code"] = code
                else:
                    entry["verdict"] = TIMEOUT if error.code == "plugin_timeout" else ERROR
                    entry["error_code"] = error.code
            if mark.continuing and not out.continue_processing:
                entry["verdict"] = DENY
                entry["enforced"] = True
                entry["violation_code"] = out.violation.code if out.violation is not None else "denied"
            elif inv.payload is not mark.payload or inv.extensions is not mark.extensions:
                entry["verdict"] = MODIFY
                if self.decisions is not None:
                    self._modified(entry, mark, inv)
        entry["duration_ms"] = round(elapsed * 1000.0, 4)
        self.plugins.append(entry)
        if mark.span_start is not None:
            self._plugin_span(plugin, entry, mark.span_start)
        if self.instruments is not None:
            self._count(entry, elapsed)

    def cancelled(self, plugin: LoadedPlugin, mark: _Mark) -> None:
        """A concurrent plugin halted by another's deny before it finished."""
        entry = {"plugin": plugin.name, "mode": mode_of(plugin), "verdict": CANCELLED, "enforced": True}
        entry["duration_ms"] = round((time.perf_counter() - mark.started) * 1000.0, 4)
        self.plugins.append(entry)
        if mark.span_start is not None:
            self._plugin_span(plugin, entry, mark.span_start)

    def _plugin_span(self, plugin: LoadedPlugin, entry: dict[str, Any], start: int) -> None:
        attributes: dict[str, Any] = {
            "cpex.hook": self.hook,
            "cpex.plugin.name": plugin.name,
            "cpex.plugin.mode": entry["mode"],
            "cpex.decision": entry["verdict"],
            "cpex.enforced": entry["enforced"],
        }
        if "violation_code" in entry:
            attributes["cpex.violation.code"] = entry["violation_code"]
        if "error_code" in entry:
            attributes["error.type"] = entry["error_code"]
        if "modified_fields" in entry:
            attributes["cpex.modified_fields"] = entry["modified_fields"]
        span = self.tracer.start_span(
            f"cpex.plugin {plugin.name}", context=self.parent, kind=SpanKind.INTERNAL, attributes=attributes, start_time=start
        )
        if "error_code" in entry:
            span.set_status(Status(StatusCode.ERROR, entry["error_code"]))
        span.end()

    def _modified(self, entry: dict[str, Any], mark: _Mark, inv: Invocation) -> None:
        include = self.decisions is not None and self.decisions.include_values
        fields: list[str] = []
        values: dict[str, Any] = {}
        if inv.payload is not mark.payload:
            _diff("payload", wire.unpack(mark.payload.wire, "payload"), wire.unpack(inv.payload.wire, "payload"), fields, values)
        if mark.extensions is not inv.extensions:
            before = wire.unpack(mark.extensions.wire, "extensions") if mark.had_extensions else {}
            _diff("extensions", before, wire.unpack(inv.extensions.wire, "extensions"), fields, values)
        entry["modified_fields"] = fields
        if include:
            entry["modified_values"] = values

    def _count(self, entry: dict[str, Any], elapsed: float) -> None:
        ins = self.instruments
        assert ins is not None
        attrs = {"cpex.hook": self.hook, "cpex.plugin.name": entry["plugin"]}
        ins.duration.record(elapsed, attrs)
        verdict = entry["verdict"]
        ins.calls.add(1, {**attrs, "cpex.decision": verdict, "cpex.enforced": entry["enforced"]})
        if verdict == DENY:
            ins.denials.add(
                1, {**attrs, "cpex.enforced": entry["enforced"], "cpex.violation.code": entry.get("violation_code", "")}
            )
        elif verdict == TIMEOUT:
            ins.timeouts.add(1, attrs)
        if "error_code" in entry:
            ins.errors.add(1, {**attrs, "error.type": entry["error_code"]})

    # -- the end of the invoke -----------------------------------------------------------

    def finish(self, out: PipelineOutcome | None, exc: BaseException | None = None) -> None:
        elapsed = time.perf_counter() - self.started
        record: dict[str, Any] = {"hook": self.hook, "time": self.wall}
        if self.request is not None and self.request.get("request_id"):
            record["request_id"] = self.request["request_id"]
        if exc is not None:
            record["decision"] = TIMEOUT if isinstance(exc, PipelineTimeoutError) else ERROR
            record["error"] = type(exc).__name__
        elif not out.continue_processing:  # type: ignore[union-attr]
            record["decision"] = DENY
            violation = out.violation  # type: ignore[union-attr]
            record["violation_code"] = violation.code if violation is not None else "denied"
            record["violation_plugin"] = violation.plugin_name if violation is not None else None
        elif out.payload is not None or out.extensions is not None:  # type: ignore[union-attr]
            record["decision"] = MODIFY
        else:
            record["decision"] = ALLOW
        if out is not None and out.background is not None:
            record["background"] = list(out.background.plugin_names)
        record["duration_ms"] = round(elapsed * 1000.0, 4)
        record["plugins"] = self.plugins
        span = self.span
        if span is not None:
            context = span.get_span_context()
            if context.is_valid:
                record["trace_id"] = f"{context.trace_id:032x}"
                record["span_id"] = f"{context.span_id:016x}"
            attributes: dict[str, Any] = {"cpex.decision": record["decision"], "cpex.plugin.count": len(self.plugins)}
            if "violation_code" in record:
                attributes["cpex.violation.code"] = record["violation_code"]
            if exc is not None:
                attributes["error.type"] = type(exc).__name__
                span.set_status(Status(StatusCode.ERROR, str(exc)[:512]))
            span.set_attributes(attributes)
            span.end()
        if self.instruments is not None:
            attrs = {"cpex.hook": self.hook, "cpex.decision": record["decision"]}
            self.instruments.invocations.add(1, attrs)
            self.instruments.invoke_duration.record(elapsed, attrs)
        if self.decisions is not None:
            self.decisions.emit(record)


class _Mark:
    """The outcome as it was before a plugin ran, to tell what the plugin did."""

    __slots__ = ("errors", "continuing", "payload", "extensions", "had_extensions", "span_start", "started")

    def __init__(self, out: PipelineOutcome, inv: Invocation, span_start: int | None) -> None:
        self.errors = len(out.errors)
        self.continuing = out.continue_processing
        self.payload, self.extensions, self.had_extensions = inv.payload, inv.extensions, inv.has_extensions
        self.span_start = span_start  # time.time_ns() when the plugin's span is recorded
        self.started = time.perf_counter()

    def refresh(self, out: PipelineOutcome, inv: Invocation) -> None:
        """The outcome as it is now (a concurrent plugin settles after the others
        started); the start time stays."""
        self.errors = len(out.errors)
        self.continuing = out.continue_processing
        self.payload, self.extensions, self.had_extensions = inv.payload, inv.extensions, inv.has_extensions


def mode_of(plugin: LoadedPlugin) -> str:
    """The plugin's mode as configured: permissive for a shadow plugin."""
    return "permissive" if plugin.shadow else plugin.spec.mode.value


def _parent_context(request: dict[str, Any]) -> Any:
    """The context the host's W3C trace context names, or None (the current one)."""
    traceparent = request.get("traceparent")
    if not traceparent or not isinstance(traceparent, str):
        return None
    carrier = {"traceparent": traceparent}
    tracestate = request.get("tracestate")
    if isinstance(tracestate, str) and tracestate:
        carrier["tracestate"] = tracestate
    return _PROPAGATOR.extract(carrier, context=otel_context.Context())


_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


def valid_traceparent(text: str) -> bool:
    """A W3C traceparent: version (not ff), trace id and parent id (not all zeros),
    flags; a later version may append fields."""
    m = _TRACEPARENT.fullmatch(text)
    if m is None:
        return False
    version, trace_id, span_id, _, rest = m.groups()
    return version != "ff" and (version != "00" or rest is None) and trace_id != "0" * 32 and span_id != "0" * 16


# How deep modified_fields names a change (payload.args.query is 3 levels).
_DEPTH = 3


def _diff(path: str, before: Any, after: Any, fields: list[str], values: dict[str, Any], depth: int = 0) -> None:
    """The dotted paths where after differs from before (maps compared key by key down
    to _DEPTH levels; anything else as a whole)."""
    if before == after:
        return
    if depth < _DEPTH and isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(set(before) | set(after), key=str):
            _diff(f"{path}.{key}", before.get(key, _ABSENT), after.get(key, _ABSENT), fields, values, depth + 1)
        return
    fields.append(path)
    values[path] = None if after is _ABSENT else after


class _Absent:
    def __eq__(self, other: object) -> bool:
        return other is self

    def __hash__(self) -> int:
        return 0


_ABSENT = _Absent()
