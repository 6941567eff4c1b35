"""API metrics in Prometheus form at GET /metrics (no auth, no content: counts and times),
and a span per request when tracing is on, parent of the Temporal spans it causes."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

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


async def measure_requests(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    started = time.monotonic()
    response = await call_next(request)
    route = _route_template(request) if request.scope.get("route") else "unmatched"
    elapsed = time.monotonic() - started
    HTTP_REQUESTS.labels(request.method, route, str(response.status_code)).inc()
    HTTP_SECONDS.labels(request.method, route).observe(elapsed)
    if route == "/api/v1/chats/{session_id}/messages" and response.status_code == 200:
        TURN_SECONDS.observe(elapsed)
    return response


def _route_template(request: Request) -> str:
    """The path with its parameters named, e.g. /api/v1/chats/{session_id}/messages."""
    path = request.url.path
    for name, value in request.path_params.items():
        path = path.replace(f"/{value}", f"/{{{name}}}", 1)
    return path


async def trace_requests(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    from opentelemetry import trace

    tracer = trace.get_tracer("parley.api")
    with tracer.start_as_current_span(f"{request.method} {request.url.path}") as span:
        response = await call_next(request)
        span.set_attribute("http.status_code", response.status_code)
        return response
