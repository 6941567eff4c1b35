"""Agents call tools: webhook endpoints and MCP servers, each call an activity."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from src.activities.mcp_tools import McpToolActivities
from src.activities.webhook_tools import ToolInvocation, WebhookToolActivities
from src.db.mcp_calls import SentMcpCalls
from src.db.snapshots import SnapshotStore
from src.dev_stack import DEMO_AGENT
from src.domain import (
    AgentSnapshot,
    AgentSpec,
    McpServer,
    McpToolDefinition,
    McpTools,
    ModelConfig,
    ToolConfig,
    WebhookTool,
)
from src.sealing.secret_box import SecretBox
from src.services.accounts import new_api_key, register_api_key
from src.tools.signing import verify
from src.worker import running_worker
from tests.conftest import AgentFactory, api_client
from tests.fakes.llm_server import FakeLLM
from tests.fakes.mcp_http_server import mcp_http_app
from tests.fakes.tool_server import FakeToolServer
from tests.servers import served
from tests.sessions import event_summaries, open_chat, say, stored_session

SECRET = "whsec-test-0123456789abcdef"
ORDER_SCHEMA = {
    "type": "object",
    "properties": {"id": {"type": "string"}},
    "required": ["id"],
}


def webhook_tool(url: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "webhook",
        "name": "lookup_order",
        "description": "Look an order up by id",
        "parameters": ORDER_SCHEMA,
        "url": url,
        **fields,
    }


async def tool_agent(make_agent: AgentFactory, tool: dict[str, Any], **spec: Any) -> str:
    name = tool.get("name", "lookup_order")
    return str(
        await make_agent(
            model=f"tool-{spec.pop('call', name)}",
            tools=[tool],
            webhook={"url": "http://127.0.0.1:9/done", "secret": SECRET},
            **spec,
        )
    )


async def test_webhook_tool_call_is_signed_and_lands_in_the_transcript(
    http: httpx.AsyncClient, make_agent: AgentFactory, tools: tuple[FakeToolServer, str]
) -> None:
    server, base = tools
    tool = webhook_tool(f"{base}/echo", headers={"X-Api-Key": "k-123"})
    session = await open_chat(http, await tool_agent(make_agent, tool))

    turn = await say(http, session["id"], '{"id": "A-17"}')

    [call] = [c for c in server.calls_to("/echo") if c.json() == {"id": "A-17"}]
    assert call.method == "POST"
    assert verify(SECRET, {k.title(): v for k, v in call.headers.items()}, call.body)
    assert call.headers["x-api-key"] == "k-123"
    assert call.headers["idempotency-key"].startswith(session["id"])
    assert call.headers["x-parley-session-id"] == session["id"]
    [tool_turn, reply] = turn["messages"]
    assert tool_turn["tool_calls"] == [
        {
            "id": tool_turn["tool_calls"][0]["id"],
            "name": "lookup_order",
            "arguments": '{"id": "A-17"}',
            "response": '{"received":{"id":"A-17"}}',
        }
    ]
    assert reply["content"] == 'tool said: {"received":{"id":"A-17"}}'
    transcript = (await http.get(f"/chats/{session['id']}")).json()["messages"]
    assert transcript[1:] == turn["messages"]


async def test_get_tools_receive_their_arguments_as_query(
    http: httpx.AsyncClient, make_agent: AgentFactory, tools: tuple[FakeToolServer, str]
) -> None:
    server, base = tools
    tool = webhook_tool(f"{base}/echo", method="GET")
    session = await open_chat(http, await tool_agent(make_agent, tool))

    turn = await say(http, session["id"], '{"id": "G-1"}')

    assert [c.method for c in server.calls_to("/echo") if c.query == {"id": "G-1"}] == ["GET"]
    assert turn["messages"][-1]["content"] == 'tool said: {"received":{"id":"G-1"}}'


async def test_server_errors_are_retried_with_the_same_idempotency_key(
    http: httpx.AsyncClient, make_agent: AgentFactory, tools: tuple[FakeToolServer, str]
) -> None:
    server, base = tools
    path = f"/flaky/2/{uuid.uuid4().hex}"
    session = await open_chat(http, await tool_agent(make_agent, webhook_tool(base + path)))

    turn = await say(http, session["id"], '{"id": "R-1"}')

    calls = server.calls_to(path)
    assert len(calls) == 3
    assert len({c.headers["idempotency-key"] for c in calls}) == 1
    assert json.loads(turn["messages"][0]["tool_calls"][0]["response"])["attempt"] == 3


async def test_a_failing_tool_is_an_error_result_not_a_dead_session(
    http: httpx.AsyncClient, make_agent: AgentFactory, tools: tuple[FakeToolServer, str]
) -> None:
    server, base = tools
    path = f"/reject/{uuid.uuid4().hex}"
    session = await open_chat(http, await tool_agent(make_agent, webhook_tool(base + path)))

    turn = await say(http, session["id"], '{"id": "X-404"}')
    later = await say(http, session["id"], '{"id": "X-405"}')

    assert len(server.calls_to(path)) == 2  # one per turn: 4xx is not retried
    response = turn["messages"][0]["tool_calls"][0]["response"]
    assert response == "error: the tool answered HTTP 404: no such order"
    assert turn["messages"][-1]["content"] == f"tool said: {response}"
    assert later["is_final"] is False


async def test_arguments_that_break_the_schema_never_reach_the_tool(
    http: httpx.AsyncClient, make_agent: AgentFactory, tools: tuple[FakeToolServer, str]
) -> None:
    server, base = tools
    path = f"/echo/{uuid.uuid4().hex}"
    session = await open_chat(http, await tool_agent(make_agent, webhook_tool(base + path)))

    turn = await say(http, session["id"], '{"order": 5}')

    assert server.calls_to(path) == []
    assert "'id' is a required property" in turn["messages"][0]["tool_calls"][0]["response"]


async def test_long_tool_responses_are_truncated(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    tools: tuple[FakeToolServer, str],
    settings: Any,
) -> None:
    _, base = tools
    session = await open_chat(http, await tool_agent(make_agent, webhook_tool(f"{base}/big/50000")))

    turn = await say(http, session["id"], '{"id": "B-1"}')

    response = turn["messages"][0]["tool_calls"][0]["response"]
    limit = settings.tool_response_max_chars
    assert response.startswith("y" * limit)
    assert response.endswith(f"[truncated: {50000 - limit} more characters]")


async def test_tool_urls_resolving_to_private_addresses_are_refused_when_called(
    make_settings: Any,
    serve_api: Any,
    api_key: str,
    temporal_client: Client,
    tools: tuple[FakeToolServer, str],
) -> None:
    server, base = tools
    queue = f"strict-{uuid.uuid4().hex[:8]}"
    # The API accepts "localhost" by name; the worker, with no allow-list, resolves it.
    api_settings = make_settings(TEMPORAL_TASK_QUEUE=queue, PARLEY_TOOL_URL_ALLOWLIST="localhost")
    worker_settings = make_settings(TEMPORAL_TASK_QUEUE=queue, PARLEY_TOOL_URL_ALLOWLIST="")
    path = f"/echo/{uuid.uuid4().hex}"
    url = base.replace("127.0.0.1", "localhost") + path
    async with (
        running_worker(worker_settings, temporal_client),
        serve_api(api_settings) as api,
        api_client(api, api_key) as client,
    ):
        agent = await client.post(
            "/agents",
            json={
                "name": "reaches inside",
                "model": {"provider": "openai", "name": "tool-lookup_order"},
                "tools": [webhook_tool(url)],
            },
        )
        session = await open_chat(client, agent.json()["id"])
        turn = await say(client, session["id"], '{"id": "P-1"}')

    response = turn["messages"][0]["tool_calls"][0]["response"]
    assert "not a public address" in response and "PARLEY_TOOL_URL_ALLOWLIST" in response
    assert server.calls_to(path) == []


async def test_tool_activities_are_summarised_in_history(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    tools: tuple[FakeToolServer, str],
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
) -> None:
    _, base = tools
    session = await open_chat(http, await tool_agent(make_agent, webhook_tool(f"{base}/echo")))
    await say(http, session["id"], '{"id": "S-1"}')
    row = await stored_session(db, session["id"])

    history = await temporal_client.get_workflow_handle(row.workflow_id).fetch_history()
    summaries = event_summaries(
        temporal_client, history, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    )

    assert "tool lookup_order" in summaries
    assert "LLM tool-lookup_order" in summaries


async def test_mcp_tools_over_stdio_with_mcp_server_time(
    http: httpx.AsyncClient, make_agent: AgentFactory, fake_llm: tuple[FakeLLM, str]
) -> None:
    agent_id = await make_agent(
        model="tool-get_current_time",
        tools=[{"type": "mcp", "server": {"command": ["mcp-server-time"]}}],
    )
    session = await open_chat(http, agent_id)

    turn = await say(http, session["id"], '{"timezone": "UTC", "marker": "mcp-time-1"}')

    [first_request, _] = fake_llm[0].requests_for("mcp-time-1")
    offered = {t["function"]["name"] for t in first_request["tools"]}
    assert offered == {"get_current_time", "convert_time"}
    [tool_turn, reply] = turn["messages"]
    assert tool_turn["tool_calls"][0]["name"] == "get_current_time"
    result = json.loads(tool_turn["tool_calls"][0]["response"])
    assert result["timezone"] == "UTC" and result["datetime"].endswith("+00:00")
    assert reply["content"].startswith("tool said: ")


async def test_the_demo_agent_asks_mcp_server_time_when_asked_the_time(
    http: httpx.AsyncClient,
) -> None:
    demo = DEMO_AGENT.model_dump(mode="json", exclude_none=True)
    created = await http.post(
        "/agents", json={**demo, "model": {"provider": "scripted", "name": "scripted"}}
    )
    session = await open_chat(http, created.json()["id"])

    turn = await say(http, session["id"], "What time is it in Europe/Paris?")
    transcript = (await http.get(f"/chats/{session['id']}")).json()["messages"]

    [tool_turn, reply] = turn["messages"]
    [call] = tool_turn["tool_calls"]
    assert call["name"] == "get_current_time"
    assert json.loads(call["arguments"]) == {"timezone": "Europe/Paris"}
    result = json.loads(call["response"])
    assert result["timezone"] == "Europe/Paris"
    assert result["datetime"].endswith(("+01:00", "+02:00"))
    assert reply["content"] == (
        f"The get_current_time tool says: it is {result['datetime']} in Europe/Paris"
    )
    assert [m["role"] for m in transcript[:2]] == ["assistant", "user"]  # greeting, question
    assert transcript[2:] == turn["messages"]


async def test_mcp_allowed_tools_limit_what_the_model_sees(
    http: httpx.AsyncClient, make_agent: AgentFactory, fake_llm: tuple[FakeLLM, str]
) -> None:
    agent_id = await make_agent(
        model="tool-get_current_time",
        tools=[
            {
                "type": "mcp",
                "server": {"command": ["mcp-server-time"]},
                "allowed_tools": ["convert_time"],
            }
        ],
    )
    session = await open_chat(http, agent_id)

    turn = await say(http, session["id"], '{"marker": "mcp-allowed-1"}')

    [request] = fake_llm[0].requests_for("mcp-allowed-1")
    assert {t["function"]["name"] for t in request["tools"]} == {"convert_time"}
    assert turn["messages"][-1]["content"] == 'echo: {"marker": "mcp-allowed-1"}'


async def test_mcp_tools_over_streamable_http(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    async with served(mcp_http_app()) as base:
        agent_id = await make_agent(
            model="tool-add", tools=[{"type": "mcp", "server": {"url": f"{base}/mcp"}}]
        )
        session = await open_chat(http, agent_id)
        turn = await say(http, session["id"], '{"a": 2, "b": 3}')

    assert turn["messages"][0]["tool_calls"][0]["response"] == "5"
    assert turn["messages"][-1]["content"] == "tool said: 5"


async def test_an_unreachable_mcp_server_fails_the_open_clearly(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    async with served(mcp_http_app()) as base:
        pass  # closed again: nothing listens there now
    agent_id = await make_agent(
        tools=[{"type": "mcp", "server": {"url": f"{base}/mcp", "timeout_seconds": 2}}]
    )

    response = await http.post("/chats", json={"agent_id": agent_id, "channel": "web"})

    assert response.status_code == 502, response.text
    assert "tools are unavailable" in response.json()["error"]["message"]


# A tool URL stored before ports were checked at configuration time.
IMPOSSIBLE_PORT_URL = "http://127.0.0.1:99999/x"


async def stored_snapshot(
    settings: Any,
    db: async_sessionmaker[AsyncSession],
    tool: ToolConfig,
    mcp_tools: list[McpToolDefinition],
) -> str:
    spec = AgentSpec(name="from before port checks", tools=[tool])
    model = ModelConfig(provider="scripted")
    snapshot = AgentSnapshot(id="agent-old", version=1, spec=spec, model=model, mcp_tools=mcp_tools)
    account = f"old-{uuid.uuid4().hex[:8]}"
    await register_api_key(db, new_api_key(), account_id=account)
    return await SnapshotStore(db, SecretBox(settings.secret_keys())).save(account, snapshot)


def invocation(snapshot_id: str, name: str) -> ToolInvocation:
    return ToolInvocation(
        snapshot_id=snapshot_id,
        session_id="session-old",
        call_id="call-1",
        idempotency_key=f"session-old:{uuid.uuid4()}",
        name=name,
        arguments="{}",
    )


async def test_a_webhook_tool_url_with_an_impossible_port_is_refused_without_retries(
    settings: Any, db: async_sessionmaker[AsyncSession]
) -> None:
    snapshot_id = await stored_snapshot(
        settings, db, WebhookTool(name="lookup_order", url=IMPOSSIBLE_PORT_URL), []
    )
    activities = WebhookToolActivities(
        settings, SnapshotStore(db, SecretBox(settings.secret_keys()))
    )

    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(activities.call, invocation(snapshot_id, "lookup_order"))

    assert refused.value.non_retryable
    assert "port must be a number from 1 to 65535" in refused.value.message


async def test_an_mcp_server_url_with_an_impossible_port_is_refused_without_retries(
    settings: Any, db: async_sessionmaker[AsyncSession]
) -> None:
    snapshot_id = await stored_snapshot(
        settings,
        db,
        McpTools(server=McpServer(url=IMPOSSIBLE_PORT_URL)),
        [McpToolDefinition(name="add", server_index=0)],
    )
    activities = McpToolActivities(
        settings, SnapshotStore(db, SecretBox(settings.secret_keys())), SentMcpCalls(db)
    )

    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(activities.call, invocation(snapshot_id, "add"))

    assert refused.value.non_retryable
    assert "port must be a number from 1 to 65535" in refused.value.message
