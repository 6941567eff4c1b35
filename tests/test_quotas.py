"""Quotas: requests per key, active sessions per account, allowed models and an output
ceiling for agents, and the size of a stateless conversation's transcript."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.config import Settings
from src.services.accounts import new_api_key, register_api_key
from tests.conftest import ApiFactory, SettingsFactory, api_client
from tests.test_api_errors import assert_error

AGENT = {
    "name": "quota agent",
    "system_prompt": "You help.",
    "model": {"provider": "openai", "name": "echo"},
    "tools": [],
}

NewAccount = Callable[[], AbstractAsyncContextManager[httpx.AsyncClient]]


async def well_inside_a_minute(margin_seconds: float = 20) -> None:
    """The limiter weighs the previous minute's requests by how much of that minute is still
    in the window and rounds down, so requests that straddle a minute boundary can let one more
    through. Tests that count up to a limit start far enough from the boundary."""
    into_minute = time.time() % 60
    if into_minute > 60 - margin_seconds:
        await asyncio.sleep(60 - into_minute + 0.1)


@pytest.fixture
def new_account(db: async_sessionmaker[AsyncSession]) -> Callable[[str], NewAccount]:
    """A client of a new account (so its counts start at zero) for the API at `url`."""

    def for_api(url: str) -> NewAccount:
        @asynccontextmanager
        async def client() -> AsyncIterator[httpx.AsyncClient]:
            key = new_api_key()
            await register_api_key(db, key, account_id=f"quota-{uuid.uuid4().hex[:8]}")
            async with api_client(url, key) as http:
                yield http

        return client

    return for_api


async def test_requests_over_the_rate_are_429_with_retry_after(
    make_settings: SettingsFactory, serve_api: ApiFactory, new_account: Any
) -> None:
    async with serve_api(make_settings(PARLEY_RATE_LIMIT_PER_MINUTE=3)) as url:
        async with new_account(url)() as first, new_account(url)() as second:
            await well_inside_a_minute()
            allowed = [(await first.get("/agents")).status_code for _ in range(3)]
            refused = await first.get("/agents")
            other_key = await second.get("/agents")

    assert allowed == [200, 200, 200]
    error = assert_error(refused, 429, "rate_limited")
    assert "3 requests a minute" in error["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert other_key.status_code == 200


async def test_opening_past_the_active_session_limit_is_429_until_one_ends(
    make_settings: SettingsFactory, serve_api: ApiFactory, new_account: Any, worker: None
) -> None:
    async with (
        serve_api(make_settings(PARLEY_MAX_ACTIVE_SESSIONS=2)) as url,
        new_account(url)() as http,
    ):
        agent_id = (await http.post("/agents", json=AGENT)).json()["id"]
        endpoint = {"agent_id": agent_id, "channel": "sms", "external_id": {"phone": "+1555"}}
        first = await http.post("/chats", json=endpoint)
        second = await http.post("/chats", json={"agent_id": agent_id, "channel": "web"})
        refused = await http.post("/chats", json={"agent_id": agent_id, "channel": "web"})
        joined = await http.post("/chats", json=endpoint)
        await http.post(f"/chats/{second.json()['id']}/end")
        after_end = await http.post("/chats", json={"agent_id": agent_id, "channel": "web"})

    assert (first.status_code, second.status_code) == (201, 201)
    error = assert_error(refused, 429, "quota_exceeded")
    assert "PARLEY_MAX_ACTIVE_SESSIONS" in error["message"]
    assert error["details"] == {"limit": 2, "active": 2}
    assert joined.status_code == 200 and joined.json()["id"] == first.json()["id"]
    assert after_end.status_code == 201, after_end.text


MODEL_LIMITS = {"PARLEY_ALLOWED_MODELS": "echo, gpt-4o-mini", "PARLEY_MAX_OUTPUT_TOKENS": 100}
BAD_MODELS = [
    ({"provider": "openai", "name": "gpt-4-32k"}, "model.name"),
    ({"provider": "openai", "name": "echo", "max_tokens": 101}, "model.max_tokens"),
]


@pytest.fixture
async def limited_api(
    make_settings: SettingsFactory, serve_api: ApiFactory, new_account: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """An API with MODEL_LIMITS, a client of a new account and an agent within the limits."""
    async with serve_api(make_settings(**MODEL_LIMITS)) as url, new_account(url)() as http:
        good = {**AGENT, "model": {"provider": "openai", "name": "echo", "max_tokens": 100}}
        created = await http.post("/agents", json=good)
        assert created.status_code == 201, created.text
        yield http, created.json()["id"]


@pytest.mark.parametrize(("model", "field"), BAD_MODELS)
async def test_an_agent_over_the_model_limits_is_422_naming_the_field_wherever_given(
    limited_api: tuple[httpx.AsyncClient, str], model: dict[str, Any], field: str
) -> None:
    http, agent_id = limited_api
    bad_agent = {**AGENT, "model": model}
    user = [{"role": "user", "content": "hi"}]

    responses = {
        "create": await http.post("/agents", json=bad_agent),
        "update": await http.patch(f"/agents/{agent_id}", json={"model": model}),
        "inline open": await http.post("/chats", json={"agent": bad_agent, "channel": "web"}),
        "open override": await http.post(
            "/chats",
            json={"agent_id": agent_id, "channel": "web", "agent_overrides": {"model": model}},
        ),
        "inline text chat": await http.post(
            "/text-chat/completion", json={"agent": bad_agent, "messages": user}
        ),
        "text chat override": await http.post(
            "/text-chat/completion",
            json={"agent": {"id": agent_id}, "agent_overrides": {"model": model}, "messages": user},
        ),
    }

    for where, response in responses.items():
        error = assert_error(response, 422, "invalid_input")
        assert field in error["message"], where


async def test_an_agent_within_the_model_limits_is_accepted(
    limited_api: tuple[httpx.AsyncClient, str],
) -> None:
    http, agent_id = limited_api

    patched = await http.patch(
        f"/agents/{agent_id}", json={"model": {"provider": "openai", "name": "gpt-4o-mini"}}
    )

    assert patched.status_code == 200, patched.text


@pytest.fixture
async def transcript_capped(
    make_settings: SettingsFactory, serve_api: ApiFactory, http: httpx.AsyncClient
) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    settings = make_settings(
        PARLEY_MAX_TRANSCRIPT_MESSAGES=3,
        PARLEY_MAX_TRANSCRIPT_BYTES=2000,
        PARLEY_MAX_MESSAGE_CHARS=1500,
    )
    key = http.headers["Authorization"].removeprefix("Bearer ")
    async with serve_api(settings) as url, api_client(url, key) as client:
        yield client, settings


@pytest.mark.parametrize(
    ("messages", "words"),
    [
        ([{"role": "user", "content": "x" * 1501}], "messages[0] has 1501 characters"),
        ([{"role": "user", "content": "hi"}] * 4, "4 messages"),
        ([{"role": "user", "content": "é" * 700}] * 2, "2800 bytes"),
    ],
    ids=["message too long", "too many messages", "too many bytes"],
)
async def test_a_text_chat_transcript_over_the_limits_is_413(
    transcript_capped: tuple[httpx.AsyncClient, Settings],
    make_agent: Any,
    messages: list[dict[str, Any]],
    words: str,
) -> None:
    client, _ = transcript_capped
    body = {"agent": {"id": await make_agent()}, "messages": messages}

    response = await client.post("/text-chat/completion", json=body)

    assert words in assert_error(response, 413, "payload_too_large")["message"]


async def test_a_text_chat_message_too_long_is_413_with_the_default_limits(
    http: httpx.AsyncClient, make_agent: Any, settings: Settings
) -> None:
    content = "x" * (settings.max_message_chars + 1)
    body = {"agent": {"id": await make_agent()}, "messages": [{"role": "user", "content": content}]}

    response = await http.post("/text-chat/completion", json=body)

    error = assert_error(response, 413, "payload_too_large")
    assert str(settings.max_message_chars) in error["message"]
