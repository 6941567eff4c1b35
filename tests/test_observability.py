"""Metrics, traces and logs an operator can use."""

from __future__ import annotations

import json
import logging
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.observability import configure_logging, worker_runtime
from src.temporal.client import connect_temporal
from src.worker import running_worker
from tests.conftest import AgentFactory, api_client
from tests.fakes.tool_server import FakeToolServer
from tests.sessions import open_chat, say, stored_session


def has_series(text: str, name: str, **labels: str) -> bool:
    """A sample line of metric `name` carrying every given label."""
    return any(
        line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items())
        for line in text.splitlines()
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_api_metrics_expose_requests_turns_and_active_sessions(
    api_url: str, http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await open_chat(http, await make_agent())
    await say(http, session["id"], "measure me")

    async with httpx.AsyncClient() as plain:
        text = (await plain.get(f"{api_url}/metrics")).text

    assert 'parley_http_requests_total{method="POST",route="/api/v1/chats",status="201"}' in text
    assert "parley_http_request_seconds_bucket" in text
    turns = [line for line in text.splitlines() if line.startswith("parley_turn_seconds_count")]
    assert turns and float(turns[0].split()[-1]) >= 1
    active = [line for line in text.splitlines() if line.startswith("parley_active_sessions ")]
    assert active and float(active[0].split()[-1]) >= 1


async def test_worker_metrics_expose_sdk_llm_and_tool_series(
    make_settings: Any,
    serve_api: Any,
    api_key: str,
    make_agent: AgentFactory,
    tools: tuple[FakeToolServer, str],
) -> None:
    _, base = tools
    port = free_port()
    settings = make_settings(
        TEMPORAL_TASK_QUEUE=f"metrics-{uuid.uuid4().hex[:8]}",
        PARLEY_WORKER_METRICS_ADDRESS=f"127.0.0.1:{port}",
    )
    client = await connect_temporal(settings, worker_runtime(settings))
    agent_id = await make_agent(
        model="tool-lookup_order",
        tools=[{"type": "webhook", "name": "lookup_order", "url": f"{base}/echo"}],
    )
    async with (
        running_worker(settings, client),
        serve_api(settings) as url,
        api_client(url, api_key) as http,
    ):
        session = await open_chat(http, agent_id)
        await say(http, session["id"], '{"id": "M-1"}')
        async with httpx.AsyncClient() as plain:
            text = (await plain.get(f"http://127.0.0.1:{port}/metrics")).text

    assert has_series(text, "parley_llm_latency_bucket", model="tool-lookup_order")
    assert has_series(text, "parley_llm_tokens", kind="prompt", model="tool-lookup_order")
    assert has_series(text, "parley_llm_tokens", kind="completion")
    assert has_series(text, "parley_tool_latency_bucket", tool="lookup_order", type="webhook")
    assert has_series(text, "temporal_activity_execution_latency_bucket")
    assert has_series(text, "temporal_workflow_task_execution_latency_bucket")


async def test_traces_run_from_the_api_request_through_workflow_and_activities(
    make_settings: Any, serve_api: Any, api_key: str, make_agent: AgentFactory
) -> None:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = make_settings(
        TEMPORAL_TASK_QUEUE=f"traces-{uuid.uuid4().hex[:8]}", PARLEY_TRACING="console"
    )
    client = await connect_temporal(settings)
    agent_id = await make_agent()
    async with (
        running_worker(settings, client),
        serve_api(settings) as url,
        api_client(url, api_key) as http,
    ):
        session = await open_chat(http, agent_id)
        await say(http, session["id"], "trace me")

    spans = exporter.get_finished_spans()

    def trace_of(name: str) -> set[str]:
        traces = {s.context.trace_id for s in spans if s.name == name}
        return {s.name for s in spans if s.context.trace_id in traces}

    opened = trace_of("POST /api/v1/chats")
    message = trace_of(f"POST /api/v1/chats/{session['id']}/messages")
    # The session's run (and the turns its loop runs) belongs to the request that opened it;
    # each message request carries its trace into the update it sends.
    assert "RunWorkflow:ChatSessionWorkflow" in opened
    assert "RunActivity:llm.complete_session_turn" in opened
    assert "RunActivity:session_store.record_opened" in opened
    assert any(name.startswith("StartWorkflowUpdate:send_message") for name in message)


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in quiet.items():
        logging.getLogger(name).setLevel(saved)


def agent_calling(url: str, model: str = "tool-lookup_order") -> dict[str, Any]:
    tool = {
        "type": "webhook",
        "name": "lookup_order",
        "description": "Look an order up by id",
        "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
        "url": url,
        "method": "GET",
    }
    return {"name": "logs", "model": {"provider": "openai", "name": model}, "tools": [tool]}


async def test_json_logs_of_workflows_and_activities_carry_session_and_workflow_ids_not_content(
    make_settings: Any,
    serve_api: Any,
    api_key: str,
    tools: tuple[FakeToolServer, str],
    db: async_sessionmaker[AsyncSession],
    capsys: pytest.CaptureFixture[str],
    restored_logging: None,
) -> None:
    _, base = tools
    settings = make_settings(
        TEMPORAL_TASK_QUEUE=f"logs-{uuid.uuid4().hex[:8]}", PARLEY_LOG_FORMAT="json"
    )
    secret = f"secret-{uuid.uuid4().hex[:8]}"
    client = await connect_temporal(settings)
    configure_logging(settings)
    async with (
        running_worker(settings, client),
        serve_api(settings) as url,
        api_client(url, api_key) as http,
    ):
        # a GET tool (arguments in the query string) that fails its first attempt
        flaky = await http.post("/agents", json=agent_calling(f"{base}/flaky/1/{secret[7:]}"))
        tooled = await open_chat(http, flaky.json()["id"])
        await say(http, tooled["id"], f'{{"id": "{secret}"}}')
        # a model that refuses: the LLM activity fails, then the workflow logs the failed turn
        rejecting = await http.post("/agents", json=agent_calling(f"{base}/x", model="reject"))
        refused = await open_chat(http, rejecting.json()["id"])
        await http.post(f"/chats/{refused['id']}/messages", json={"content": secret})
    output = capsys.readouterr().err
    entries = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    tooled_wf = (await stored_session(db, tooled["id"])).workflow_id
    refused_wf = (await stored_session(db, refused["id"])).workflow_id

    def ids(entry: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
        return entry.get("session_id"), entry.get("workflow_id"), entry.get("activity_type")

    assert (tooled["id"], tooled_wf, "webhook_tools.call") in [ids(e) for e in entries]
    assert (refused["id"], refused_wf, "llm.complete_session_turn") in [ids(e) for e in entries]
    [turn_failed] = [e for e in entries if e["message"].startswith("turn failed for session")]
    assert (turn_failed["session_id"], turn_failed["workflow_id"]) == (refused["id"], refused_wf)
    assert secret not in output
