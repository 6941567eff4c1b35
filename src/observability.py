"""Metrics, tracing and logs, each switched by settings and set up once per process.

- Worker: the Temporal SDK's runtime metrics plus Parley's own (LLM latency and tokens, tool
  latency and errors) on a Prometheus endpoint at PARLEY_WORKER_METRICS_ADDRESS.
- API: request counts and latencies, turn latency and active sessions at GET /metrics.
- Tracing (PARLEY_TRACING=console|otlp, off by default): OpenTelemetry spans from the API
  request through the workflow into its activities (temporalio.contrib.opentelemetry).
- Logs (PARLEY_LOG_FORMAT=json): one JSON object per line with the session and workflow ids
  Temporal attaches; message content is never logged at info level.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from temporalio import activity
from temporalio.client import Interceptor
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from src.config import Settings

_TRACING_READY = False


class _ToolOutcome(Protocol):
    @property
    def error(self) -> str | None: ...


T = TypeVar("T", bound=_ToolOutcome)


def worker_runtime(settings: Settings) -> Runtime | None:
    if not settings.worker_metrics_address:
        return None
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(bind_address=settings.worker_metrics_address)
        )
    )


def tracing_interceptors(settings: Settings) -> list[Interceptor]:
    """The Temporal interceptor that carries trace context across client, workflow and
    activities; with a tracer provider installed once per process."""
    global _TRACING_READY
    if settings.tracing == "off":
        return []
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    from temporalio.contrib.opentelemetry import TracingInterceptor

    if not _TRACING_READY and not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider(resource=Resource.create({"service.name": "parley"}))
        if settings.tracing == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        else:
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        trace.set_tracer_provider(provider)
    _TRACING_READY = True
    return [TracingInterceptor()]


def record_llm_call(model: str, milliseconds: float, prompt: int, completion: int) -> None:
    meter = activity.metric_meter()
    attributes = {"model": model}
    meter.create_histogram("parley_llm_latency", "LLM call latency", "ms").record(
        round(milliseconds), attributes
    )
    tokens = meter.create_counter("parley_llm_tokens", "LLM tokens used")
    tokens.add(prompt, {**attributes, "kind": "prompt"})
    tokens.add(completion, {**attributes, "kind": "completion"})


async def measured_tool_call(tool: str, kind: str, call: Awaitable[T]) -> T:
    """Await a tool call inside its activity, recording its latency and whether it failed."""
    started = time.monotonic()
    try:
        result = await call
    except Exception:
        _record_tool_call(tool, kind, (time.monotonic() - started) * 1000, failed=True)
        raise
    failed = result.error is not None
    _record_tool_call(tool, kind, (time.monotonic() - started) * 1000, failed=failed)
    return result


def _record_tool_call(tool: str, kind: str, milliseconds: float, failed: bool) -> None:
    meter = activity.metric_meter()
    attributes = {"tool": tool, "type": kind}
    meter.create_histogram("parley_tool_latency", "Tool call latency", "ms").record(
        round(milliseconds), attributes
    )
    if failed:
        meter.create_counter("parley_tool_errors", "Failed tool calls").add(1, attributes)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line; Temporal's workflow/activity context becomes fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("temporal_workflow", "temporal_activity"):
            context = getattr(record, key, None)
            if isinstance(context, dict):
                entry.update(
                    {
                        name: context[name]
                        for name in ("workflow_id", "run_id", "workflow_type", "activity_type")
                        if name in context
                    }
                )
        session_id = getattr(record, "session_id", None)
        if session_id:
            entry["session_id"] = session_id
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(entry, default=str)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
