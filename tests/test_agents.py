"""Agents are versioned configurations; sessions freeze the one they open with."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from src.db.tables import AuditEvent, ChatSession
from src.worker import running_worker
from tests.conftest import AgentFactory, api_client
from tests.fakes.llm_server import FakeLLM
from tests.sessions import open_chat, say

WEBHOOK_TOOL = {
    "type": "webhook",
    "name": "lookup_order",
    "description": "Find an order",
    "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
    "url": "http://127.0.0.1:9/orders",
    "headers": {"Authorization": "Bearer tool-secret-value"},
}


def system_prompt_of(fake: FakeLLM, marker: str) -> str:
    [request] = fake.requests_for(marker)
    return str(request["messages"][0]["content"])


async def test_updates_make_new_versions_and_old_ones_stay_readable(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent(system_prompt="v1 prompt")

    updated = await http.patch(f"/agents/{agent_id}", json={"system_prompt": "v2 prompt"})
    latest = (await http.get(f"/agents/{agent_id}")).json()
    first = (await http.get(f"/agents/{agent_id}", params={"version": 1})).json()
    missing = await http.get(f"/agents/{agent_id}", params={"version": 3})

    assert updated.status_code == 200
    assert (latest["version"], latest["system_prompt"]) == (2, "v2 prompt")
    assert (first["version"], first["system_prompt"]) == (1, "v1 prompt")
    assert latest["name"] == first["name"]
    assert missing.status_code == 404


async def test_a_session_keeps_the_agent_version_it_opened_with(
    http: httpx.AsyncClient, make_agent: AgentFactory, fake_llm: tuple[FakeLLM, str]
) -> None:
    agent_id = await make_agent(system_prompt="version one")
    session = await open_chat(http, agent_id)

    await http.patch(f"/agents/{agent_id}", json={"system_prompt": "version two"})
    await say(http, session["id"], "marker-frozen-1")
    newer = await open_chat(http, agent_id)
    await say(http, newer["id"], "marker-frozen-2")

    assert system_prompt_of(fake_llm[0], "marker-frozen-1") == "version one"
    assert system_prompt_of(fake_llm[0], "marker-frozen-2") == "version two"


async def test_deleted_agents_disappear_but_their_sessions_go_on(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent()
    session = await open_chat(http, agent_id)

    deleted = await http.delete(f"/agents/{agent_id}")
    turn = await say(http, session["id"], "still here?")
    listed = (await http.get("/agents", params={"limit": 100})).json()["items"]

    assert deleted.status_code == 204
    assert (await http.get(f"/agents/{agent_id}")).status_code == 404
    assert agent_id not in [a["id"] for a in listed]
    assert turn["messages"][-1]["content"] == "echo: still here?"
    reopen = await http.post("/chats", json={"agent_id": agent_id, "channel": "web"})
    assert reopen.status_code == 404


async def test_agents_list_is_paginated(api_url: str, db: Any) -> None:
    from src.services.accounts import new_api_key, register_api_key

    key = new_api_key()
    await register_api_key(db, key, account_id="agents-list-account")
    async with api_client(api_url, key) as client:
        created = [
            (await client.post("/agents", json={"name": f"agent {n}"})).json()["id"]
            for n in range(5)
        ]
        first = (await client.get("/agents", params={"limit": 3})).json()
        second = (
            await client.get("/agents", params={"limit": 3, "cursor": first["next_cursor"]})
        ).json()

    assert len(first["items"]) == 3 and second["next_cursor"] is None
    assert sorted(a["id"] for a in first["items"] + second["items"]) == sorted(created)


async def test_secrets_are_never_shown(http: httpx.AsyncClient) -> None:
    body = {
        "name": "with secrets",
        "tools": [WEBHOOK_TOOL],
        "webhook": {"url": "http://127.0.0.1:9/done", "secret": "whsec-0123456789abcdef"},
    }

    created = await http.post("/agents", json=body)
    fetched = await http.get(f"/agents/{created.json()['id']}")

    for response in (created, fetched):
        text = response.text
        assert "tool-secret-value" not in text and "whsec-0123456789abcdef" not in text
        assert response.json()["tools"][0]["headers"] == {"Authorization": "********"}


@pytest.mark.parametrize(
    ("tool", "field"),
    [
        ({**WEBHOOK_TOOL, "parameters": {"type": "object", "properties": 5}}, "parameters"),
        ({**WEBHOOK_TOOL, "parameters": {"type": "string"}}, "parameters"),
        ({**WEBHOOK_TOOL, "name": "has spaces"}, "name"),
        ({**WEBHOOK_TOOL, "url": "ftp://example.com/x"}, "tools[0].url"),
        ({**WEBHOOK_TOOL, "method": "TRACE"}, "method"),
        ({"type": "mcp", "server": {}}, "server"),
        ({"type": "mcp", "server": {"command": ["rm", "-rf", "/"]}}, "tools[0].server.command"),
        ({"type": "webhook", "name": "x"}, "url"),
        ({**WEBHOOK_TOOL, "url": "http://example.com:99999/x"}, "tools[0].url"),
        ({**WEBHOOK_TOOL, "url": "http://example.com:0/x"}, "tools[0].url"),
        ({"type": "mcp", "server": {"url": "http://example.com:70000/mcp"}}, "tools[0].server.url"),
    ],
)
async def test_invalid_tool_configs_are_422_naming_the_field(
    http: httpx.AsyncClient, tool: dict[str, Any], field: str
) -> None:
    response = await http.post("/agents", json={"name": "bad tools", "tools": [tool]})

    assert response.status_code == 422, response.text
    assert field in response.json()["error"]["message"]


async def test_loopback_tool_urls_are_refused_unless_allowed(
    make_settings: Any, serve_api: Any, api_key: str
) -> None:
    strict = make_settings(PARLEY_TOOL_URL_ALLOWLIST="")
    async with serve_api(strict) as url, api_client(url, api_key) as client:
        loopback = await client.post("/agents", json={"name": "x", "tools": [WEBHOOK_TOOL]})
        private = await client.post(
            "/agents",
            json={"name": "x", "webhook": {"url": "http://10.1.2.3/h", "secret": "s" * 16}},
        )

    assert loopback.status_code == 422 and "PARLEY_TOOL_URL_ALLOWLIST" in loopback.text
    assert private.status_code == 422 and "webhook.url" in private.text


async def test_template_variables_come_from_additional_data_defaults_and_the_server(
    http: httpx.AsyncClient, make_agent: AgentFactory, fake_llm: tuple[FakeLLM, str]
) -> None:
    agent_id = await make_agent(
        system_prompt="{{greeting}} {{name}} on {{channel}}; today is {{weekday}} in {{timezone}}",
        first_message="Hello {{name}}!",
        variables={"greeting": "Dear", "name": "guest"},
    )

    session = await open_chat(
        http, agent_id, additional_data={"name": "Ada", "timezone": "Europe/Paris"}
    )
    await say(http, session["id"], "marker-template-1")

    prompt = system_prompt_of(fake_llm[0], "marker-template-1")
    assert prompt.startswith("Dear Ada on web; today is ")
    assert prompt.endswith(" in Europe/Paris")
    assert session["messages"][0]["content"] == "Hello Ada!"


async def test_a_missing_variable_renders_empty_and_is_audited(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    fake_llm: tuple[FakeLLM, str],
    db: async_sessionmaker[AsyncSession],
) -> None:
    session = await open_chat(http, await make_agent(system_prompt="Hi {{nobody}}!"))

    turn = await say(http, session["id"], "marker-missing-1")
    async with db() as s:
        events = (
            await s.scalars(
                select(AuditEvent).where(
                    AuditEvent.session_id == session["id"],
                    AuditEvent.kind == "template.missing_variable",
                )
            )
        ).all()

    assert turn["messages"][-1]["content"] == "echo: marker-missing-1"
    assert system_prompt_of(fake_llm[0], "marker-missing-1") == "Hi !"
    assert [e.data for e in events] == [{"variable": "nobody", "template": "system_prompt"}]


async def test_a_variable_missing_from_the_first_message_is_audited(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent(system_prompt="plain", first_message="Hello {{first_name}}!")

    session = await open_chat(http, agent_id)
    events = (await http.get(f"/chats/{session['id']}/events")).json()["items"]

    assert session["messages"][0]["content"] == "Hello !"
    assert [e["data"] for e in events if e["kind"] == "template.missing_variable"] == [
        {"variable": "first_name", "template": "first_message"}
    ]


async def test_inline_agents_and_overrides(
    http: httpx.AsyncClient, make_agent: AgentFactory, fake_llm: tuple[FakeLLM, str]
) -> None:
    inline = {
        "name": "inline",
        "system_prompt": "inline for {{who}}",
        "model": {"provider": "openai", "name": "echo"},
    }
    inline_session = await open_chat(
        http, None, agent=inline, agent_overrides={"variables": {"who": "Bob"}}
    )
    stored = await make_agent(system_prompt="stored", variables={"a": "1"})
    overridden = await open_chat(
        http,
        stored,
        agent_overrides={"system_prompt": "overridden {{a}}{{b}}", "variables": {"b": "2"}},
    )

    await say(http, inline_session["id"], "marker-inline-1")
    await say(http, overridden["id"], "marker-override-1")

    assert inline_session["agent_id"].startswith("inline-")
    assert system_prompt_of(fake_llm[0], "marker-inline-1") == "inline for Bob"
    assert system_prompt_of(fake_llm[0], "marker-override-1") == "overridden 12"
    assert (await http.get(f"/agents/{stored}")).json()["system_prompt"] == "stored"


@pytest.mark.parametrize(
    "body",
    [
        {"channel": "web"},
        {"channel": "web", "agent_id": "x", "agent": {"name": "y"}},
        {"channel": "web", "agent": {"name": "y", "tools": [{"type": "nope"}]}},
        {"channel": "web", "agent": {"name": "y"}, "agent_overrides": {"max_tool_steps": 0}},
    ],
)
async def test_bad_agent_choice_at_open_is_422(
    http: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await http.post("/chats", json=body)

    assert response.status_code == 422, response.text


async def test_a_tool_url_with_an_impossible_port_is_422_on_update_too(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent()
    hook = {"url": "https://example.com:65536/done", "secret": "s" * 16}

    response = await http.patch(f"/agents/{agent_id}", json={"webhook": hook})

    assert response.status_code == 422, response.text
    assert "webhook.url" in response.json()["error"]["message"]
    assert "port" in response.json()["error"]["message"]


NOT_ZONES = ["America", "Europe/" + "x" * 300, "Mars/Base", "../etc/passwd", "", 5]


@pytest.mark.parametrize("timezone", NOT_ZONES)
async def test_a_timezone_that_names_no_zone_is_422_at_open(
    http: httpx.AsyncClient, make_agent: AgentFactory, timezone: Any
) -> None:
    agent_id = await make_agent(first_message="It is {{time}} for you.")

    response = await http.post(
        "/chats",
        json={"agent_id": agent_id, "channel": "web", "additional_data": {"timezone": timezone}},
    )

    assert response.status_code == 422, response.text
    assert "additional_data.timezone" in response.json()["error"]["message"]


@pytest.mark.parametrize("timezone", NOT_ZONES)
async def test_a_timezone_that_names_no_zone_is_422_on_text_chat(
    http: httpx.AsyncClient, timezone: Any
) -> None:
    agent = {"name": "t", "model": {"provider": "openai", "name": "echo"}}
    body = {
        "agent": agent,
        "messages": [{"role": "user", "content": "hi"}],
        "additional_data": {"timezone": timezone},
    }

    response = await http.post("/text-chat/completion", json=body)

    assert response.status_code == 422, response.text
    assert "additional_data.timezone" in response.json()["error"]["message"]


async def test_a_session_stored_with_an_unknown_timezone_still_answers_in_utc(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    fake_llm: tuple[FakeLLM, str],
    db: async_sessionmaker[AsyncSession],
) -> None:
    session = await open_chat(http, await make_agent(system_prompt="It is {{now}}."))
    async with db.begin() as s:  # as a session opened before timezones were checked
        await s.execute(
            update(ChatSession)
            .where(ChatSession.id == session["id"])
            .values(additional_data={"timezone": "America"})
        )

    turn = await say(http, session["id"], "marker-bad-zone-1")

    assert turn["messages"][-1]["content"] == "echo: marker-bad-zone-1"
    prompt = system_prompt_of(fake_llm[0], "marker-bad-zone-1")
    assert re.fullmatch(r"It is \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00\.", prompt)


@pytest.mark.parametrize("field", ["first_message", "system_prompt"])
async def test_a_template_that_renders_past_the_limit_is_422_at_open(
    http: httpx.AsyncClient, make_agent: AgentFactory, field: str
) -> None:
    spec: dict[str, Any] = {field: "{{a}}" * 3000}
    agent_id = await make_agent(**spec)
    body = {"agent_id": agent_id, "channel": "web", "additional_data": {"a": "x" * 30_000}}

    response = await http.post("/chats", json=body)

    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert field in message and "PARLEY_MAX_RENDERED_TEMPLATE_CHARS" in message


async def test_a_text_chat_prompt_past_the_limit_is_422_before_the_turn(
    http: httpx.AsyncClient,
) -> None:
    agent = {
        "name": "t",
        "system_prompt": "{{a}}" * 3000,
        "model": {"provider": "openai", "name": "echo"},
    }
    body = {
        "agent": agent,
        "messages": [{"role": "user", "content": "hi"}],
        "additional_data": {"a": "x" * 30_000},
    }

    response = await http.post("/text-chat/completion", json=body)

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert "system_prompt" in error["message"]
    assert "PARLEY_MAX_RENDERED_TEMPLATE_CHARS" in error["message"]


async def test_a_prompt_past_the_workers_limit_fails_the_turn_clearly(
    make_settings: Any, serve_api: Any, api_key: str, temporal_client: Client
) -> None:
    queue = f"render-{uuid.uuid4().hex[:8]}"
    # A session opened under a higher limit than the worker's (a limit lowered since).
    api_settings = make_settings(TEMPORAL_TASK_QUEUE=queue)
    worker_settings = make_settings(
        TEMPORAL_TASK_QUEUE=queue, PARLEY_MAX_RENDERED_TEMPLATE_CHARS=1000
    )
    agent = {
        "name": "long prompt",
        "system_prompt": "{{a}}" * 100,
        "model": {"provider": "openai", "name": "echo"},
    }
    async with (
        running_worker(worker_settings, temporal_client),
        serve_api(api_settings) as api,
        api_client(api, api_key) as client,
    ):
        session = await open_chat(client, None, agent=agent, additional_data={"a": "x" * 100})
        response = await client.post(f"/chats/{session['id']}/messages", json={"content": "hello"})

    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "agent_error"
    assert "system_prompt" in error["message"] and "1,000 characters" in error["message"]


async def test_sip_endpoint_is_set_from_the_external_id(
    http: httpx.AsyncClient, make_agent: AgentFactory, fake_llm: tuple[FakeLLM, str]
) -> None:
    agent_id = await make_agent(
        system_prompt="Caller at {{sip_endpoint}}.", first_message="Hi [{{sip_endpoint}}]"
    )
    endpoint = f"sip:{uuid.uuid4().hex[:8]}@example.com"

    by_sip = await open_chat(http, agent_id, channel="voice", external_id={"sip": endpoint})
    without = await open_chat(http, agent_id)
    await say(http, by_sip["id"], "marker-sip-1")
    events = (await http.get(f"/chats/{without['id']}/events")).json()["items"]

    assert by_sip["messages"][0]["content"] == f"Hi [{endpoint}]"
    assert system_prompt_of(fake_llm[0], "marker-sip-1") == f"Caller at {endpoint}."
    assert without["messages"][0]["content"] == "Hi []"
    assert "template.missing_variable" not in [e["kind"] for e in events]


@pytest.mark.parametrize("key", ["channel", "sip_endpoint"])
async def test_clients_cannot_set_reserved_template_keys(
    http: httpx.AsyncClient, make_agent: AgentFactory, key: str
) -> None:
    agent_id = await make_agent()
    body = {"agent_id": agent_id, "channel": "web", "additional_data": {key: "sip:me@evil"}}
    text_chat = {
        "agent": {"id": agent_id},
        "messages": [{"role": "user", "content": "hi"}],
        "additional_data": {key: "sip:me@evil"},
    }

    opened = await http.post("/chats", json=body)
    stateless = await http.post("/text-chat/completion", json=text_chat)

    for response in (opened, stateless):
        assert response.status_code == 422, response.text
        assert key in response.json()["error"]["message"]
