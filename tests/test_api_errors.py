"""Every bad input gets a clear 4xx in the one error shape."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from src.config import Settings
from tests.conftest import AgentFactory, api_client
from tests.sessions import open_chat, say


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return dict(body["error"])


@pytest.mark.parametrize("key", [None, "pk_not-a-real-key"])
async def test_missing_or_unknown_api_key_is_401(api_url: str, key: str | None) -> None:
    async with api_client(api_url, key) as client:
        for response in [await client.get("/chats"), await client.post("/agents", json={})]:
            assert_error(response, 401, "unauthorized")


async def test_health_needs_no_key(api_url: str) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{api_url}/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "temporal": "ok", "database": "ok"}


async def test_unknown_session_is_404(http: httpx.AsyncClient) -> None:
    missing = str(uuid.uuid4())
    for response in [
        await http.get(f"/chats/{missing}"),
        await http.post(f"/chats/{missing}/messages", json={"content": "hi"}),
        await http.post(f"/chats/{missing}/end"),
    ]:
        assert_error(response, 404, "not_found")


async def test_another_accounts_session_and_agent_are_404(
    http: httpx.AsyncClient, other_http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent()
    session = await open_chat(http, agent_id)

    for response in [
        await other_http.get(f"/chats/{session['id']}"),
        await other_http.post(f"/chats/{session['id']}/messages", json={"content": "hi"}),
        await other_http.post(f"/chats/{session['id']}/end"),
        await other_http.get(f"/agents/{agent_id}"),
    ]:
        assert_error(response, 404, "not_found")
    listed = (await other_http.get("/chats", params={"agent_id": agent_id})).json()
    assert listed["items"] == []
    assert_error(
        await other_http.post("/chats", json={"agent_id": agent_id, "channel": "web"}),
        404,
        "not_found",
    )


async def test_message_to_a_final_session_is_409(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await open_chat(http, await make_agent())
    await http.post(f"/chats/{session['id']}/end")

    error = assert_error(
        await http.post(f"/chats/{session['id']}/messages", json={"content": "hello?"}),
        409,
        "conflict",
    )
    assert "final" in error["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"channel": "web", "ttl_seconds": 86401}, "ttl_seconds"),
        ({"channel": "web", "ttl_seconds": 0}, "ttl_seconds"),
        ({"channel": "web", "external_id": "not-an-object"}, "external_id"),
        ({"channel": "web", "external_id": {}}, "external_id"),
        ({"channel": "web", "external_id": {"a": {"nested": 1}}}, "external_id"),
        ({"channel": "Not A Channel!"}, "channel"),
        ({"channel": "web", "additional_data": {"channel": "spoofed"}}, "additional_data"),
        ({"channel": "web", "surprise": 1}, "surprise"),
    ],
)
async def test_bad_open_requests_are_422_naming_the_field(
    http: httpx.AsyncClient, make_agent: AgentFactory, body: dict[str, Any], field: str
) -> None:
    response = await http.post("/chats", json={"agent_id": await make_agent(), **body})

    error = assert_error(response, 422, "invalid_input")
    assert field in error["message"]


async def test_open_with_unknown_agent_is_404(http: httpx.AsyncClient) -> None:
    error = assert_error(
        await http.post("/chats", json={"agent_id": "agent-missing", "channel": "web"}),
        404,
        "not_found",
    )
    assert "agent-missing" in error["message"]


async def test_text_chat_with_unknown_agent_is_404(http: httpx.AsyncClient) -> None:
    body = {"agent": {"id": "agent-missing"}, "messages": [{"role": "user", "content": "hi"}]}

    error = assert_error(await http.post("/text-chat/completion", json=body), 404, "not_found")
    assert "agent-missing" in error["message"]


async def test_ttl_below_the_configured_minimum_is_422(
    settings: Settings, serve_api: Any, make_settings: Any, api_key: str, make_agent: AgentFactory
) -> None:
    strict = make_settings(PARLEY_MIN_TTL_SECONDS=60)
    async with serve_api(strict) as url, api_client(url, api_key) as client:
        response = await client.post(
            "/chats", json={"agent_id": await make_agent(), "channel": "web", "ttl_seconds": 59}
        )

    error = assert_error(response, 422, "invalid_input")
    assert "between 60 and 86400" in error["message"]


@pytest.mark.parametrize("content", ["", "   \n"])
async def test_empty_message_is_422(
    http: httpx.AsyncClient, make_agent: AgentFactory, content: str
) -> None:
    session = await open_chat(http, await make_agent())

    response = await http.post(f"/chats/{session['id']}/messages", json={"content": content})

    assert "empty" in assert_error(response, 422, "invalid_input")["message"]


async def test_malformed_json_body_is_422(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/chats", content=b"{not json", headers={"Content-Type": "application/json"}
    )

    assert_error(response, 422, "invalid_input")


async def test_oversized_message_is_413(
    http: httpx.AsyncClient, make_agent: AgentFactory, settings: Settings
) -> None:
    session = await open_chat(http, await make_agent())

    response = await http.post(
        f"/chats/{session['id']}/messages",
        json={"content": "x" * (settings.max_message_chars + 1)},
    )

    assert (
        str(settings.max_message_chars)
        in assert_error(response, 413, "payload_too_large")["message"]
    )


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"tools": [{"type": "teleport", "name": "x"}]}, "tools"),
        ({"tools": [{"type": "builtin", "name": "selfDestruct"}]}, "tools"),
        ({"system_prompt": "Hello {{ broken"}, "system_prompt"),
        ({"model": {"provider": "nope", "name": "x"}}, "model"),
        ({"name": ""}, "name"),
    ],
)
async def test_invalid_agent_configs_are_422_naming_the_field(
    http: httpx.AsyncClient, spec: dict[str, Any], field: str
) -> None:
    response = await http.post("/agents", json={"name": "bad agent", **spec})

    assert field in assert_error(response, 422, "invalid_input")["message"]


async def test_llm_rejecting_a_turn_is_a_clear_error_and_the_session_goes_on(
    http: httpx.AsyncClient, make_agent: AgentFactory, fake_llm: Any
) -> None:
    session = await open_chat(http, await make_agent(model="reject"))

    first = await http.post(f"/chats/{session['id']}/messages", json={"content": "hi"})
    second = await http.post(f"/chats/{session['id']}/messages", json={"content": "still there?"})
    state = (await http.get(f"/chats/{session['id']}")).json()

    error = assert_error(first, 502, "agent_error")
    assert "400" in error["message"] and "does not exist" in error["message"]
    assert_error(second, 502, "agent_error")
    assert state["status"] == "active"
    assert [m["content"] for m in state["messages"]] == ["hi", "still there?"]


async def test_llm_server_errors_are_retried_until_the_turn_completes(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await open_chat(http, await make_agent(model="flaky-2"))

    turn = await say(http, session["id"], "are you there?")

    assert turn["messages"][-1]["content"] == "echo: are you there?"


async def test_llm_rate_limits_are_retried_after_the_advertised_delay(
    http: httpx.AsyncClient, make_agent: AgentFactory, fake_llm: Any
) -> None:
    session = await open_chat(http, await make_agent(model="limited-1"))

    turn = await say(http, session["id"], "rate limited 3317")

    assert turn["messages"][-1]["content"] == "echo: rate limited 3317"
    assert len(fake_llm[0].requests_for("rate limited 3317")) == 2


async def test_agent_tool_steps_are_bounded(
    http: httpx.AsyncClient, make_agent: AgentFactory, fake_llm: Any
) -> None:
    session = await open_chat(http, await make_agent(model="always-tools", max_tool_steps=3))

    turn = await say(http, session["id"], "loop forever 5521")

    requests = fake_llm[0].requests_for("loop forever 5521")
    assert [bool(r.get("tools")) for r in requests] == [True, True, True, False]
    tool_turns = [m for m in turn["messages"] if m["tool_calls"]]
    assert len(tool_turns) == 3
    assert all("not available" in m["tool_calls"][0]["response"] for m in tool_turns)
    assert turn["messages"][-1]["tool_calls"] == []
    assert turn["messages"][-1]["content"]
