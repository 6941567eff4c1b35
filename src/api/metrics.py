"""API metrics in Prometheus form at GET /metrics (no auth, no content: counts and times),
and a span per request when tracing is on, parent of the Temporal spans it causes."""

from __future__ import annotations

import time

from fastapi import APIRouter, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from src.api.deps import ServicesDep

REGISTRY = CollectorRegistry()
HTTP_REQUESTS = Counter(
    "parley_http_requests", "HTTP requests", ["method", "route", "status"], registry=REGISTRY
)
HTTP_SECONDS = Histogram(
    "parley_http_request_seconds", "HTTP request latency", ["method", "route"], registry=REGISTRY
)
TURN_SECONDS = Histogram(
    "parley_turn_seconds",
    "A user message in, the agent's reply out (POST /chats/{id}/messages)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
ACTIVE_SESSIONS = Gauge("parley_active_sessions", "Sessions not yet final", registry=REGISTRY)

router = APIRouter(tags=["health"])


@router.get("/metrics", include_in_schema=False)
async def metrics(services: ServicesDep) -> Response:
    ACTIVE_SESSIONS.set(await services.active_sessions.value())
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


class RequestMetrics:
    """Counts and times every HTTP request, to the start of its response (the turn, for a
    message answered in one piece). A plain ASGI middleware: Starlette's function middleware
    ran each request through a task group and a wrapped response of its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()

        async def measured(message: Message) -> None:
            if message["type"] == "http.response.start":
                _observe(scope, message["status"], time.monotonic() - started)
            await send(message)

        await self.app(scope, receive, measured)


def _observe(scope: Scope, status_code: int, elapsed: float) -> None:
    route = _route_template(scope) if scope.get("route") else "unmatched"
    HTTP_REQUESTS.labels(scope["method"], route, str(status_code)).inc()
    HTTP_SECONDS.labels(scope["method"], route).observe(elapsed)
    if route == "/api/v1/chats/{session_id}/messages" and status_code == 200:
        TURN_SECONDS.observe(elapsed)


def _route_template(scope: Scope) -> str:
    """The path with its parameters named, e.g. /api/v1/chats/{session_id}/messages."""
    path = str(scope["path"])
    for name, value in scope.get("path_params", {}).items():
        path = path.replace(f"/{value}", f"/{{{name}}}", 1)
    return path


class RequestSpans:
    """A span per request (tracing on), current while the request runs, so that the Temporal
    calls it makes are its children."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from opentelemetry import trace

        tracer = trace.get_tracer("parley.api")
        with tracer.start_as_current_span(f"{scope['method']} {scope['path']}") as span:

            async def traced(message: Message) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.status_code", message["status"])
                await send(message)

            await self.app(scope, receive, traced)
