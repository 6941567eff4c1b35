"""Tool schemas are checked when an agent is saved and validated without fetching anything:
no `$ref` outside the schema, patterns on RE2, size caps, headers that cannot inject."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from src.activities.webhook_tools import ToolInvocation, WebhookToolActivities
from src.db.snapshots import SnapshotStore
from src.db.tables import AgentVersion
from src.domain import FROM_STORAGE, AgentSnapshot, AgentSpec, ModelConfig
from src.sealing.secret_box import SecretBox
from src.services.accounts import new_api_key, register_api_key
from src.tools.json_schemas import validation_errors
from tests.conftest import AgentFactory
from tests.fakes.llm_server import FakeLLM
from tests.fakes.mcp_schema_server import mcp_schema_app
from tests.fakes.tool_server import FakeToolServer
from tests.servers import served
from tests.sessions import open_chat, say

SECRET = "sk-live-do-not-leak-4242"
BACKTRACKING_INPUT = "a" * 40 + "!"
# Generous: on RE2 the answer comes at once; on a backtracking engine, after hours.
PROMPTLY = 120


class SchemaHost(ThreadingHTTPServer):
    """A loopback server holding a schema with a secret in it; it counts who asks for it.
    It runs in a thread of its own: a blocking fetch from the event loop would reach it."""

    hits = 0

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SchemaRequest)


class _SchemaRequest(BaseHTTPRequestHandler):
    server: SchemaHost

    def do_GET(self) -> None:
        self.server.hits += 1
        body = json.dumps({"const": SECRET}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def schema_host() -> Iterator[tuple[SchemaHost, str]]:
    host = SchemaHost()
    thread = threading.Thread(target=host.serve_forever, daemon=True)
    thread.start()
    try:
        yield host, f"http://127.0.0.1:{host.server_address[1]}/schema.json"
    finally:
        host.shutdown()
        host.server_close()
        thread.join()


@pytest.fixture
def secret_file(tmp_path: Path) -> str:
    path = tmp_path / "key.json"
    path.write_text(json.dumps({"const": SECRET}))
    return path.as_uri()


def webhook_tool(url: str, parameters: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "type": "webhook",
        "name": "lookup_order",
        "description": "Look an order up by id",
        "parameters": parameters,
        "url": url,
        **fields,
    }


def agent_body(*tools: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "name": "schema checks",
        "model": {"provider": "openai", "name": "tool-lookup_order"},
        "tools": list(tools),
        **spec,
    }


def refused_message(response: httpx.Response) -> str:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"]["code"] == "invalid_input"
    return str(body["error"]["message"])


def id_schema(id_schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"id": id_schema}, "required": ["id"]}


# --- $ref: nothing is ever fetched ---------------------------------------------------------


async def test_a_ref_to_a_file_is_refused_when_the_agent_is_saved(
    http: httpx.AsyncClient, secret_file: str
) -> None:
    tool = webhook_tool("http://127.0.0.1:9/x", {"$ref": secret_file})

    created = await http.post("/agents", json=agent_body(tool))

    message = refused_message(created)
    assert (
        "tools.0.webhook.parameters" in message and "$ref: must point inside the schema" in message
    )
    assert SECRET not in created.text and secret_file not in created.text


async def test_a_ref_to_a_url_is_refused_when_the_agent_is_saved_and_never_fetched(
    http: httpx.AsyncClient, make_agent: AgentFactory, schema_host: tuple[SchemaHost, str]
) -> None:
    host, url = schema_host
    tool = webhook_tool("http://127.0.0.1:9/x", id_schema({"$ref": url}))
    agent_id = await make_agent()

    created = await http.post("/agents", json=agent_body(tool))
    updated = await http.patch(f"/agents/{agent_id}", json={"tools": [tool]})

    assert "properties/id/$ref: must point inside the schema" in refused_message(created)
    assert "$ref: must point inside the schema" in refused_message(updated)
    assert host.hits == 0


async def test_a_ref_to_a_file_in_an_inline_agent_is_refused(
    http: httpx.AsyncClient, secret_file: str
) -> None:
    agent = agent_body(webhook_tool("http://127.0.0.1:9/x", id_schema({"$ref": secret_file})))
    messages = [{"role": "user", "content": '{"id": "A-1"}'}]

    stateless = await http.post(
        "/text-chat/completion", json={"agent": agent, "messages": messages}
    )
    session = await http.post("/chats", json={"agent": agent, "channel": "web"})

    assert "$ref: must point inside the schema" in refused_message(stateless)
    assert "$ref: must point inside the schema" in refused_message(session)
    assert SECRET not in stateless.text + session.text


async def stored_snapshot(
    db: async_sessionmaker[AsyncSession], secrets: SecretBox, spec: dict[str, Any]
) -> str:
    """A snapshot as one stored before these checks: read back, not validated again."""
    agent = AgentSpec.model_validate(spec, context=FROM_STORAGE)
    snapshot = AgentSnapshot(
        id="agent-old", version=1, spec=agent, model=ModelConfig(provider="scripted")
    )
    account = f"old-{uuid.uuid4().hex[:8]}"
    await register_api_key(db, new_api_key(), account_id=account)
    return await SnapshotStore(db, secrets).save(account, snapshot)


@pytest.mark.parametrize("where", ["file", "url"])
async def test_a_stored_schema_with_an_outside_ref_reads_nothing_when_the_tool_is_called(
    where: str,
    settings: Any,
    db: async_sessionmaker[AsyncSession],
    tools: tuple[FakeToolServer, str],
    schema_host: tuple[SchemaHost, str],
    secret_file: str,
) -> None:
    server, base = tools
    host, url = schema_host
    path = f"/echo/{uuid.uuid4().hex}"
    ref = secret_file if where == "file" else url
    tool = webhook_tool(base + path, id_schema({"$ref": ref}))
    secrets = SecretBox(settings.secret_keys())
    snapshot_id = await stored_snapshot(db, secrets, {"name": "old", "tools": [tool]})
    activities = WebhookToolActivities(settings, SnapshotStore(db, secrets))
    invocation = ToolInvocation(
        snapshot_id=snapshot_id,
        session_id="session-old",
        call_id="call-1",
        idempotency_key=f"session-old:{uuid.uuid4()}",
        name="lookup_order",
        arguments='{"id": "A-1"}',
    )

    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(activities.call, invocation)

    assert refused.value.non_retryable
    assert "the tool's schema cannot be used" in refused.value.message
    assert "does not resolve inside the schema" in refused.value.message
    assert SECRET not in refused.value.message
    assert host.hits == 0
    assert server.calls_to(path) == []


async def test_a_local_ref_to_defs_still_works_end_to_end(
    http: httpx.AsyncClient, tools: tuple[FakeToolServer, str]
) -> None:
    server, base = tools
    path = f"/echo/{uuid.uuid4().hex}"
    parameters = {
        "type": "object",
        "$defs": {"order_id": {"type": "string", "pattern": "^A-[0-9]+$"}},
        "properties": {"id": {"$ref": "#/$defs/order_id"}},
        "required": ["id"],
    }
    created = await http.post("/agents", json=agent_body(webhook_tool(base + path, parameters)))
    assert created.status_code == 201, created.text
    session = await open_chat(http, created.json()["id"])

    good = await say(http, session["id"], '{"id": "A-17"}')
    bad = await say(http, session["id"], '{"id": "B-17"}')

    assert good["messages"][0]["tool_calls"][0]["response"] == '{"received":{"id":"A-17"}}'
    response = bad["messages"][0]["tool_calls"][0]["response"]
    assert response == (
        "error: the arguments do not match the tool's schema at id: "
        "'B-17' does not match '^A-[0-9]+$'"
    )
    assert [call.json() for call in server.calls_to(path)] == [{"id": "A-17"}]


# --- regular expressions: RE2, linear time -------------------------------------------------


async def test_a_backtracking_pattern_answers_the_model_with_a_validation_error(
    http: httpx.AsyncClient, tools: tuple[FakeToolServer, str]
) -> None:
    server, base = tools
    path = f"/echo/{uuid.uuid4().hex}"
    parameters = id_schema({"type": "string", "pattern": "^(a+)+$"})
    created = await http.post("/agents", json=agent_body(webhook_tool(base + path, parameters)))
    assert created.status_code == 201, created.text
    session = await open_chat(http, created.json()["id"])

    turn = await asyncio.wait_for(
        say(http, session["id"], json.dumps({"id": BACKTRACKING_INPUT})), PROMPTLY
    )

    response = turn["messages"][0]["tool_calls"][0]["response"]
    assert response == (
        "error: the arguments do not match the tool's schema at id: "
        f"'{BACKTRACKING_INPUT}' does not match '^(a+)+$'"
    )
    assert turn["messages"][-1]["content"] == f"tool said: {response}"
    assert server.calls_to(path) == []


@pytest.mark.parametrize(
    ("parameters", "where"),
    [
        (id_schema({"type": "string", "pattern": "^(?=A)A-secret-part$"}), "properties/id/pattern"),
        ({"type": "object", "patternProperties": {"(x)secret-part\\1": {}}}, "patternProperties"),
    ],
)
async def test_a_pattern_re2_cannot_compile_is_refused_when_the_agent_is_saved(
    http: httpx.AsyncClient, parameters: dict[str, Any], where: str
) -> None:
    created = await http.post(
        "/agents", json=agent_body(webhook_tool("http://127.0.0.1:9/x", parameters))
    )

    message = refused_message(created)
    assert f"{where}: not a regular expression RE2 accepts" in message
    assert "lookarounds, backreferences" in message
    assert "secret-part" not in created.text


def test_pattern_properties_and_additional_properties_match_keys_with_re2() -> None:
    schema = {
        "type": "object",
        "patternProperties": {"^(a+)+$": {"type": "integer"}},
        "additionalProperties": False,
    }

    problems = validation_errors(schema, {BACKTRACKING_INPUT: 1, "aaa": "three"})

    assert [problem.message for problem in problems] == [
        "'three' is not of type 'integer'",
        f"Additional properties are not allowed ('{BACKTRACKING_INPUT}' was unexpected)",
    ]


# --- errors in a schema name the place, never the content ---------------------------------


async def test_a_schema_error_names_the_place_without_quoting_the_schema(
    http: httpx.AsyncClient,
) -> None:
    parameters = id_schema({"type": "string", "enum": SECRET})
    created = await http.post(
        "/agents", json=agent_body(webhook_tool("http://127.0.0.1:9/x", parameters))
    )

    message = refused_message(created)
    assert "properties/id/enum: must be of type array" in message
    assert SECRET not in created.text


# --- MCP: schemas a server offers are checked the same way ---------------------------------


async def test_mcp_tools_whose_schemas_cannot_be_trusted_are_dropped_and_nothing_is_fetched(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    fake_llm: tuple[FakeLLM, str],
    schema_host: tuple[SchemaHost, str],
    secret_file: str,
) -> None:
    host, url = schema_host
    sku = f"A-{uuid.uuid4().int % 10**9}"
    async with served(mcp_schema_app(url, secret_file)) as base:
        agent_id = await make_agent(
            model="tool-order", tools=[{"type": "mcp", "server": {"url": f"{base}/mcp"}}]
        )
        session = await open_chat(http, agent_id)
        good = await say(http, session["id"], json.dumps({"item": {"sku": sku}}))
        bad = await say(http, session["id"], json.dumps({"item": {"sku": "B-1"}}))

    first_request = fake_llm[0].requests_for(sku)[0]
    assert {tool["function"]["name"] for tool in first_request["tools"]} == {"order", "backtrack"}
    assert good["messages"][0]["tool_calls"][0]["response"] == f"ordered {sku}"
    response = bad["messages"][0]["tool_calls"][0]["response"]
    assert response == (
        "error: the arguments do not match the tool's schema at item/sku: "
        "'B-1' does not match '^A-[0-9]+$'"
    )
    assert host.hits == 0
    transcript = (await http.get(f"/chats/{session['id']}")).text
    assert SECRET not in transcript


async def test_a_backtracking_pattern_an_mcp_server_offers_answers_promptly(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    schema_host: tuple[SchemaHost, str],
    secret_file: str,
) -> None:
    _, url = schema_host
    async with served(mcp_schema_app(url, secret_file)) as base:
        agent_id = await make_agent(
            model="tool-backtrack", tools=[{"type": "mcp", "server": {"url": f"{base}/mcp"}}]
        )
        session = await open_chat(http, agent_id)
        turn = await asyncio.wait_for(
            say(http, session["id"], json.dumps({"q": BACKTRACKING_INPUT})), PROMPTLY
        )

    assert turn["messages"][0]["tool_calls"][0]["response"] == (
        "error: the arguments do not match the tool's schema at q: "
        f"'{BACKTRACKING_INPUT}' does not match '^(a+)+$'"
    )


# --- size caps ------------------------------------------------------------------------------


async def test_oversized_variables_and_tool_schemas_are_refused_naming_the_field(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    big = "x" * (65 * 1024)
    parameters = id_schema({"type": "string", "description": big})
    agent_id = await make_agent()

    variables = await http.post("/agents", json=agent_body(variables={"notes": big}))
    schema = await http.post(
        "/agents", json=agent_body(webhook_tool("http://127.0.0.1:9/x", parameters))
    )
    patched = await http.patch(f"/agents/{agent_id}", json={"variables": {"notes": big}})
    overridden = await http.post(
        "/chats",
        json={"agent_id": agent_id, "channel": "web", "agent_overrides": {"variables": {"a": big}}},
    )

    assert refused_message(variables).startswith("variables: 66,")
    assert "PARLEY_MAX_AGENT_VARIABLES_BYTES" in refused_message(variables)
    assert refused_message(schema).startswith("tools[0].parameters: 66,")
    assert "the limit is 65,536 (PARLEY_MAX_TOOL_SCHEMA_BYTES)" in refused_message(schema)
    assert refused_message(patched).startswith("variables: ")
    assert refused_message(overridden).startswith("variables: ")


# --- headers --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [f"{SECRET}\r\nX-Injected: 1", f"{SECRET}\nX-Injected: 1"])
async def test_header_values_with_line_breaks_are_refused_naming_the_header(
    http: httpx.AsyncClient, value: str
) -> None:
    webhook = webhook_tool("http://127.0.0.1:9/x", id_schema({}), headers={"X-Api-Key": value})
    mcp = {"type": "mcp", "server": {"url": "http://127.0.0.1:9/mcp", "headers": {"X-Mcp": value}}}

    on_webhook_tool = await http.post("/agents", json=agent_body(webhook))
    on_mcp_server = await http.post("/agents", json=agent_body(mcp))

    assert "header 'X-Api-Key': the value contains a line break" in refused_message(on_webhook_tool)
    assert "header 'X-Mcp': the value contains a line break" in refused_message(on_mcp_server)
    assert SECRET not in on_webhook_tool.text + on_mcp_server.text


async def test_a_header_name_that_is_not_a_token_is_refused(http: httpx.AsyncClient) -> None:
    tool = webhook_tool("http://127.0.0.1:9/x", id_schema({}), headers={"X-A\r\nB": "v"})

    created = await http.post("/agents", json=agent_body(tool))

    assert "is not a valid HTTP header name" in refused_message(created)


# --- configs stored before these checks ---------------------------------------------------


async def test_an_agent_stored_before_these_checks_still_reads_and_its_tool_is_refused_safely(
    http: httpx.AsyncClient,
    db: async_sessionmaker[AsyncSession],
    tools: tuple[FakeToolServer, str],
) -> None:
    server, base = tools
    path = f"/echo/{uuid.uuid4().hex}"
    allowed = id_schema({"type": "string"})
    created = await http.post("/agents", json=agent_body(webhook_tool(base + path, allowed)))
    agent_id = created.json()["id"]
    stored = created.json()
    stored["tools"][0]["parameters"] = id_schema({"type": "string", "pattern": "^(?=A)A"})
    spec = {key: stored[key] for key in AgentSpec.model_fields if key in stored}
    spec["tools"][0]["headers"] = {}
    async with db.begin() as s:
        await s.execute(update(AgentVersion).where(AgentVersion.id == agent_id).values(spec=spec))

    read = await http.get(f"/agents/{agent_id}")
    session = await open_chat(http, agent_id)
    turn = await say(http, session["id"], '{"id": "A-1"}')

    assert read.status_code == 200, read.text
    response = turn["messages"][0]["tool_calls"][0]["response"]
    assert "the tool's schema cannot be used: it has a pattern RE2 cannot compile" in response
    assert server.calls_to(path) == []
