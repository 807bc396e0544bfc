"""A test plugin that gives a host the embedded engine's OpenTelemetry output: it
installs opentelemetry-sdk's in-memory span exporter and metric reader as the global
providers (once per process: OpenTelemetry's globals cannot be replaced), and its
`otel_export` hook answers with the finished spans and the metric points as metadata.
Go tests use it to check the span tree the engine produced for their traceparent.

Spans are kept only while someone collects (an initialized OtelProbe, or `collect`):
the providers stay installed for the rest of the process, and its later invokes must
not fill the memory with spans nobody reads."""

from __future__ import annotations

import threading
from typing import Any

from cpexrt import Plugin, PluginContext, allow, hook

_LOCK = threading.Lock()
_STATE: dict[str, Any] = {}
_COLLECTORS = [0]


def _gate(inner: Any) -> Any:
    """A span processor passing finished spans on only while someone collects."""
    from opentelemetry.sdk.trace import SpanProcessor

    class Gate(SpanProcessor):
        def on_end(self, span: Any) -> None:
            if _COLLECTORS[0]:
                inner.on_end(span)

        def shutdown(self) -> None:
            inner.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return bool(inner.force_flush(timeout_millis))

    return Gate()


def collect(on: bool) -> None:
    """Starts (or stops) keeping finished spans; the last collector to stop clears them."""
    exporter, _ = install()
    with _LOCK:
        _COLLECTORS[0] += 1 if on else -1
        if _COLLECTORS[0] <= 0:
            _COLLECTORS[0] = 0
            exporter.clear()


def install() -> tuple[Any, Any]:
    """The process's in-memory span exporter and metric reader, installed on first use."""
    with _LOCK:
        if not _STATE:
            from opentelemetry import metrics, trace
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import InMemoryMetricReader
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor
            from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

            exporter = InMemorySpanExporter()
            provider = TracerProvider()
            provider.add_span_processor(_gate(SimpleSpanProcessor(exporter)))
            trace.set_tracer_provider(provider)
            reader = InMemoryMetricReader()
            metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
            _STATE.update(exporter=exporter, reader=reader)
        return _STATE["exporter"], _STATE["reader"]


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def spans() -> list[dict[str, Any]]:
    exporter, _ = install()
    out = []
    for span in exporter.get_finished_spans():
        out.append(
            {
                "name": span.name,
                "trace_id": f"{span.context.trace_id:032x}",
                "span_id": f"{span.context.span_id:016x}",
                "parent_span_id": f"{span.parent.span_id:016x}" if span.parent is not None else "",
                "status": span.status.status_code.name,
                "attributes": {k: _plain(v) for k, v in (span.attributes or {}).items()},
            }
        )
    return out


def metric_points() -> list[dict[str, Any]]:
    """Every point as {name, attributes, value}: a sum's value, a histogram's count."""
    _, reader = install()
    data = reader.get_metrics_data()
    out = []
    for rm in data.resource_metrics if data is not None else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    if value is None:
                        value = point.count
                    out.append({"name": metric.name, "attributes": dict(point.attributes or {}), "value": value})
    return out


class OtelProbe(Plugin):
    def initialize(self) -> None:
        collect(True)

    def shutdown(self) -> None:
        collect(False)

    @hook("otel_export")
    def export(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        return allow(metadata={"spans": spans(), "metrics": metric_points()})
