"""Metrics, tracing and logs, each switched by settings and set up once per process.

- Worker: the Temporal SDK's runtime metrics plus Parley's own (LLM latency and tokens, tool
  latency and errors) on a Prometheus endpoint at PARLEY_WORKER_METRICS_ADDRESS.
- API: request counts and latencies, turn latency and active sessions at GET /metrics.
- Tracing (PARLEY_TRACING=console|otlp, off by default): OpenTelemetry spans from the API
  request through the workflow into its activities (temporalio.contrib.opentelemetry).
- Logs (PARLEY_LOG_FORMAT=json): one JSON object per line; a record logged inside a workflow
  or an activity carries its session id and workflow id, whichever logger it comes through.
  Message content is never logged at info level (httpx's request lines, which hold a GET
  tool's arguments in the query string, are kept to warnings).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from temporalio import activity, workflow
from temporalio.client import Interceptor
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput
from temporalio.worker import Interceptor as WorkerInterceptor

from src.config import Settings
from src.temporal.search_attributes import SESSION_ID

_TRACING_READY = False
# The session the running activity works for (each activity runs in a task of its own).
_activity_session: ContextVar[str | None] = ContextVar("parley_activity_session", default=None)


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


class LogContextInterceptor(Interceptor, WorkerInterceptor):
    """Remembers which session each activity works for (its input's `session_id`), so its
    log records can say. A client interceptor too: workers take it from the client."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivitySession(next)


class _ActivitySession(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        session_id = getattr(input.args[0], "session_id", None) if input.args else None
        # Not reset afterwards: the SDK logs a failed attempt after this returns, in the same
        # task, and the task ends with the activity.
        _activity_session.set(session_id if isinstance(session_id, str) else None)
        return await self.next.execute_activity(input)


_CONTEXT_FIELDS = ("session_id", "workflow_id", "run_id", "workflow_type", "activity_type")


class TemporalContextFilter(logging.Filter):
    """Puts the session id, workflow id and run id of the workflow or activity a record is
    logged from on the record, as attributes named in _CONTEXT_FIELDS."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _temporal_context().items():
            if value and getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


def _temporal_context() -> dict[str, str | None]:
    if activity.in_activity():
        info = activity.info()
        return {
            "session_id": _activity_session.get(),
            "workflow_id": info.workflow_id,
            "run_id": info.workflow_run_id,
            "workflow_type": info.workflow_type,
            "activity_type": info.activity_type,
        }
    if workflow.in_workflow():
        run = workflow.info()
        return {
            "session_id": run.typed_search_attributes.get(SESSION_ID),
            "workflow_id": run.workflow_id,
            "run_id": run.run_id,
            "workflow_type": run.workflow_type,
        }
    return {}


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line; the Temporal context TemporalContextFilter (or the SDK's
    loggers) put on a record becomes fields."""

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
        for name in _CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value:
                entry[name] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(entry, default=str)


def log_handler(settings: Settings, stream: Any = None) -> logging.Handler:
    """The handler every log record of the process goes through (stderr by default)."""
    handler = logging.StreamHandler(stream)
    if settings.log_format == "json":
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(TemporalContextFilter())
    return handler


def configure_logging(settings: Settings) -> None:
    root = logging.getLogger()
    root.handlers[:] = [log_handler(settings)]
    root.setLevel(logging.INFO)
    # httpx logs every request's URL at info: a GET or DELETE tool's arguments included. The
    # openai and mcp clients use its fork, httpx2, which logs the same way.
    for name in ("httpx", "httpcore", "httpx2", "httpcore2"):
        logging.getLogger(name).setLevel(logging.WARNING)
