"""Publishable widget keys: managed with the account's secret key, and good, from the
origins they allow, for nothing but a widget visitor's own web session."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.services.accounts import new_api_key, register_api_key
from src.widget.access import VISITOR_HEADER
from tests.conftest import AgentFactory, ApiFactory, SettingsFactory, api_client
from tests.sessions import open_chat, wait_until_final
from tests.test_api_errors import assert_error
from tests.test_quotas import AGENT, well_inside_a_minute

SHOP = "https://shop.example.com"
ORIGINS = [SHOP, "https://*.example.org"]


async def create_key(
    http: httpx.AsyncClient, agent_id: str, origins: list[str] = ORIGINS
) -> dict[str, Any]:
    response = await http.post(
        "/widget-keys", json={"agent_id": agent_id, "allowed_origins": origins}
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


@asynccontextmanager
async def widget(
    base_url: str, key: str, origin: str | None = SHOP
) -> AsyncIterator[httpx.AsyncClient]:
    """A browser page's client: the publishable key, and the page's Origin."""
    async with api_client(base_url, key) as client:
        if origin is not None:
            client.headers["Origin"] = origin
        yield client


async def open_widget(client: httpx.AsyncClient, token: str | None = None) -> httpx.Response:
    return await client.post("/widget/sessions", json={"visitor_token": token})


def as_visitor(token: str) -> dict[str, str]:
    return {VISITOR_HEADER: token}


@pytest.fixture
async def widget_key(http: httpx.AsyncClient, make_agent: AgentFactory) -> dict[str, Any]:
    return await create_key(http, await make_agent())


async def test_a_key_is_created_shown_once_read_listed_and_deleted(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent()
    created = await create_key(http, agent_id, ["HTTPS://Shop.Example.com:443", SHOP])
    read = await http.get(f"/widget-keys/{created['id']}")
    listed = (await http.get("/widget-keys", params={"limit": 100})).json()
    deleted = await http.delete(f"/widget-keys/{created['id']}")
    after = await http.get(f"/widget-keys/{created['id']}")
    listed_after = (await http.get("/widget-keys", params={"limit": 100})).json()

    assert created["key"].startswith("pw_")
    assert created["key_prefix"] == created["key"][:8]
    assert created["agent_id"] == agent_id
    assert created["allowed_origins"] == [SHOP]
    assert read.status_code == 200
    assert read.json() == {k: v for k, v in created.items() if k != "key"}
    assert created["id"] in [item["id"] for item in listed["items"]]
    assert all("key" not in item for item in listed["items"])
    assert deleted.status_code == 204
    assert_error(after, 404, "not_found")
    assert created["id"] not in [item["id"] for item in listed_after["items"]]


async def test_keys_are_listed_newest_first_in_keyset_pages(
    api_url: str, db: async_sessionmaker[AsyncSession]
) -> None:
    key = new_api_key()
    await register_api_key(db, key, account_id=f"widget-pages-{uuid.uuid4().hex[:8]}")
    async with api_client(api_url, key) as http:
        agent_id = (await http.post("/agents", json=AGENT)).json()["id"]
        made = [(await create_key(http, agent_id))["id"] for _ in range(3)]
        first = (await http.get("/widget-keys", params={"limit": 2})).json()
        second = (
            await http.get("/widget-keys", params={"limit": 2, "cursor": first["next_cursor"]})
        ).json()
        bad_cursor = await http.get("/widget-keys", params={"cursor": "not-a-cursor"})

    assert [item["id"] for item in first["items"] + second["items"]] == made[::-1]
    assert second["next_cursor"] is None
    assert_error(bad_cursor, 422, "invalid_input")


async def test_another_account_cannot_see_or_delete_a_key(
    http: httpx.AsyncClient, other_http: httpx.AsyncClient, widget_key: dict[str, Any]
) -> None:
    read = await other_http.get(f"/widget-keys/{widget_key['id']}")
    listed = (await other_http.get("/widget-keys", params={"limit": 100})).json()
    deleted = await other_http.delete(f"/widget-keys/{widget_key['id']}")

    assert_error(read, 404, "not_found")
    assert widget_key["id"] not in [item["id"] for item in listed["items"]]
    assert_error(deleted, 404, "not_found")
    assert (await http.get(f"/widget-keys/{widget_key['id']}")).status_code == 200


async def test_a_key_for_another_accounts_agent_is_refused(
    other_http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    response = await other_http.post(
        "/widget-keys", json={"agent_id": await make_agent(), "allowed_origins": [SHOP]}
    )

    assert_error(response, 404, "not_found")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"agent_id": "a", "allowed_origins": []}, "allowed_origins"),
        ({"agent_id": "a", "allowed_origins": ["*"]}, "allowed_origins"),
        ({"agent_id": "a", "allowed_origins": ["https://shop.example.com/"]}, "allowed_origins"),
        ({"agent_id": "a", "allowed_origins": ["https://a.*.example.com"]}, "allowed_origins"),
        ({"agent_id": "a", "allowed_origins": "https://shop.example.com"}, "allowed_origins"),
        ({"allowed_origins": [SHOP]}, "agent_id"),
        ({"agent_id": "a", "allowed_origins": [SHOP], "extra": 1}, "extra"),
    ],
)
async def test_bad_key_requests_are_422_naming_the_field(
    http: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    error = assert_error(await http.post("/widget-keys", json=body), 422, "invalid_input")

    assert field in error["message"]


async def test_a_widget_key_cannot_manage_keys_agents_or_list_sessions(
    api_url: str, widget_key: dict[str, Any]
) -> None:
    async with widget(api_url, widget_key["key"]) as page:
        responses = [
            await page.get("/agents"),
            await page.post("/agents", json={}),
            await page.get(f"/agents/{widget_key['agent_id']}"),
            await page.get("/chats"),
            await page.post("/chats", json={"agent_id": widget_key["agent_id"], "channel": "web"}),
            await page.get("/widget-keys"),
            await page.post("/text-chat/completion", json={}),
        ]

    for response in responses:
        error = assert_error(response, 403, "forbidden")
        assert "secret API key" in error["message"]


async def test_a_secret_key_cannot_open_widget_sessions(http: httpx.AsyncClient) -> None:
    assert_error(await open_widget(http), 403, "forbidden")


@pytest.mark.parametrize(
    "origin",
    [SHOP, "https://www.example.org", "https://a.b.example.org"],
)
async def test_allowed_origins_open_a_session_and_get_cors_headers(
    api_url: str, widget_key: dict[str, Any], origin: str
) -> None:
    async with widget(api_url, widget_key["key"], origin) as page:
        response = await open_widget(page)

    assert response.status_code == 201, response.text
    assert response.headers["Access-Control-Allow-Origin"] == origin
    assert "Origin" in response.headers["Vary"]


@pytest.mark.parametrize(
    "origin",
    [
        None,
        "null",
        "https://evil.example.com",
        "https://evil.example.org.attacker.net",
        "https://example.org",
        "http://shop.example.com",
        "https://shop.example.com:8443",
    ],
)
async def test_other_origins_are_refused_403_without_cors(
    api_url: str, widget_key: dict[str, Any], origin: str | None
) -> None:
    async with widget(api_url, widget_key["key"], origin) as page:
        response = await open_widget(page)

    error = assert_error(response, 403, "forbidden")
    assert "allowed_origins" in error["message"]
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_preflights_of_widget_routes_are_answered_and_others_are_not(
    api_url: str,
) -> None:
    preflight = {
        "Origin": "https://anything.example.net",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": f"authorization, content-type, {VISITOR_HEADER}",
    }
    async with httpx.AsyncClient(base_url=f"{api_url}/api/v1") as client:
        opening = await client.options("/widget/sessions", headers=preflight)
        message = await client.options("/chats/some-id/messages", headers=preflight)
        agents = await client.options("/agents", headers=preflight)
        no_origin = await client.options(
            "/widget/sessions", headers={"Access-Control-Request-Method": "POST"}
        )

    for answer in (opening, message):
        assert answer.status_code == 200
        assert answer.headers["Access-Control-Allow-Origin"] == "https://anything.example.net"
        allowed_headers = answer.headers["Access-Control-Allow-Headers"].lower()
        assert VISITOR_HEADER.lower() in allowed_headers
        assert "authorization" in allowed_headers
    assert "Access-Control-Allow-Origin" not in agents.headers
    assert no_origin.status_code == 400


async def test_a_reload_with_the_token_joins_the_same_session_and_transcript(
    api_url: str, widget_key: dict[str, Any]
) -> None:
    async with widget(api_url, widget_key["key"]) as page:
        first = await open_widget(page)
        token = first.json()["visitor_token"]
        session_id = first.json()["session"]["id"]
        said = await page.post(
            f"/chats/{session_id}/messages", json={"content": "hi"}, headers=as_visitor(token)
        )
        reload = await open_widget(page, token)
        second_tab = await open_widget(page, token)
        read = await page.get(f"/chats/{session_id}", headers=as_visitor(token))

    assert first.status_code == 201
    assert token.startswith("pv_")
    assert first.json()["session"]["channel"] == "web"
    assert first.json()["session"]["agent_id"] == widget_key["agent_id"]
    assert said.status_code == 200, said.text
    assert said.headers["Access-Control-Allow-Origin"] == SHOP
    assert [m["content"] for m in said.json()["messages"]] == ["echo: hi"]
    assert (reload.status_code, second_tab.status_code) == (200, 200)
    assert reload.json()["visitor_token"] == token
    assert reload.json()["session"]["id"] == second_tab.json()["session"]["id"] == session_id
    contents = [m["content"] for m in reload.json()["session"]["messages"]]
    assert contents == ["hi", "echo: hi"]
    assert read.status_code == 200
    assert read.json()["messages"] == reload.json()["session"]["messages"]


async def test_a_visitor_cannot_read_or_message_another_visitors_session(
    api_url: str, http: httpx.AsyncClient, widget_key: dict[str, Any]
) -> None:
    async with widget(api_url, widget_key["key"]) as page:
        first = (await open_widget(page)).json()
        second = (await open_widget(page)).json()
        first_id = first["session"]["id"]
        other_session = await open_chat(http, widget_key["agent_id"])
        read = await page.get(f"/chats/{first_id}", headers=as_visitor(second["visitor_token"]))
        said = await page.post(
            f"/chats/{first_id}/messages",
            json={"content": "hello"},
            headers=as_visitor(second["visitor_token"]),
        )
        unrelated = await page.get(
            f"/chats/{other_session['id']}", headers=as_visitor(first["visitor_token"])
        )
        no_token = await page.get(f"/chats/{first_id}")
        own = await page.get(f"/chats/{first_id}", headers=as_visitor(first["visitor_token"]))

    assert second["session"]["id"] != first_id
    assert_error(read, 404, "not_found")
    assert_error(said, 404, "not_found")
    assert_error(unrelated, 404, "not_found")
    error = assert_error(no_token, 401, "unauthorized")
    assert VISITOR_HEADER in error["message"]
    assert own.status_code == 200
    # The secret key still reads the visitor's session.
    assert (await http.get(f"/chats/{first_id}")).status_code == 200


async def test_a_new_session_starts_after_the_visitors_last_one_is_final(
    api_url: str, http: httpx.AsyncClient, widget_key: dict[str, Any]
) -> None:
    async with widget(api_url, widget_key["key"]) as page:
        first = (await open_widget(page)).json()
        token = first["visitor_token"]
        ended = await page.post(f"/chats/{first['session']['id']}/end", headers=as_visitor(token))
        assert (await http.post(f"/chats/{first['session']['id']}/end")).status_code == 200
        await wait_until_final(http, first["session"]["id"])
        again = await open_widget(page, token)

    assert_error(ended, 403, "forbidden")
    assert again.status_code == 201, again.text
    assert again.json()["session"]["id"] != first["session"]["id"]
    assert again.json()["session"]["messages"] == []
    assert again.json()["visitor_token"] == token


@pytest.mark.parametrize(
    "token",
    [
        "pv_v1.k1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "not-a-token",
        "pv_",
    ],
)
async def test_forged_visitor_tokens_are_401(
    api_url: str, widget_key: dict[str, Any], token: str
) -> None:
    async with widget(api_url, widget_key["key"]) as page:
        opened = await open_widget(page, token)
        session_id = (await open_widget(page)).json()["session"]["id"]
        read = await page.get(f"/chats/{session_id}", headers=as_visitor(token))

    for response in (opened, read):
        error = assert_error(response, 401, "unauthorized")
        assert "visitor token" in error["message"]
        assert response.headers["Access-Control-Allow-Origin"] == SHOP


async def test_another_keys_visitor_token_is_401(
    api_url: str, http: httpx.AsyncClient, widget_key: dict[str, Any]
) -> None:
    other_key = await create_key(http, widget_key["agent_id"])
    async with widget(api_url, other_key["key"]) as other_page:
        foreign = (await open_widget(other_page)).json()["visitor_token"]
    async with widget(api_url, widget_key["key"]) as page:
        response = await open_widget(page, foreign)

    assert_error(response, 401, "unauthorized")


async def test_a_deleted_or_unknown_widget_key_is_401(
    api_url: str, http: httpx.AsyncClient, widget_key: dict[str, Any]
) -> None:
    await http.delete(f"/widget-keys/{widget_key['id']}")
    async with widget(api_url, widget_key["key"]) as page:
        deleted = await open_widget(page)
    async with widget(api_url, "pw_unknown") as page:
        unknown = await open_widget(page)

    assert_error(deleted, 401, "unauthorized")
    assert_error(unknown, 401, "unauthorized")


async def test_bad_open_bodies_are_clear_4xx(api_url: str, widget_key: dict[str, Any]) -> None:
    async with widget(api_url, widget_key["key"]) as page:
        not_object = await page.post("/widget/sessions", json=["x"])
        extra = await page.post("/widget/sessions", json={"visitor_token": None, "x": 1})
        not_json = await page.post(
            "/widget/sessions", content=b"{}", headers={"Content-Type": "text/plain"}
        )

    assert_error(not_object, 422, "invalid_input")
    assert_error(extra, 422, "invalid_input")
    assert_error(not_json, 415, "unsupported_media_type")


async def test_a_visitor_over_its_rate_gets_429_with_retry_after(
    make_settings: SettingsFactory,
    serve_api: ApiFactory,
    http: httpx.AsyncClient,
    widget_key: dict[str, Any],
    worker: None,
) -> None:
    settings = make_settings(PARLEY_WIDGET_RATE_PER_VISITOR_PER_MINUTE=3)
    async with serve_api(settings) as url, widget(url, widget_key["key"]) as page:
        await well_inside_a_minute()
        first = (await open_widget(page)).json()
        other = (await open_widget(page)).json()
        token, session_id = first["visitor_token"], first["session"]["id"]
        allowed = [
            (await page.get(f"/chats/{session_id}", headers=as_visitor(token))).status_code
            for _ in range(3)
        ]
        refused = await page.get(f"/chats/{session_id}", headers=as_visitor(token))
        reopen = await open_widget(page, token)
        other_visitor = await page.get(
            f"/chats/{other['session']['id']}", headers=as_visitor(other["visitor_token"])
        )

    assert allowed == [200, 200, 200]
    error = assert_error(refused, 429, "rate_limited")
    assert "visitor" in error["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["Access-Control-Allow-Origin"] == SHOP
    assert "Retry-After" in refused.headers["Access-Control-Expose-Headers"]
    assert_error(reopen, 429, "rate_limited")
    assert other_visitor.status_code == 200


async def test_an_ip_over_its_rate_gets_429_with_retry_after(
    make_settings: SettingsFactory,
    serve_api: ApiFactory,
    widget_key: dict[str, Any],
    worker: None,
) -> None:
    settings = make_settings(PARLEY_WIDGET_RATE_PER_IP_PER_MINUTE=2)
    async with serve_api(settings) as url, widget(url, widget_key["key"]) as page:
        await well_inside_a_minute()
        allowed = [(await open_widget(page)).status_code for _ in range(2)]
        refused = await open_widget(page)

    assert allowed == [201, 201]
    error = assert_error(refused, 429, "rate_limited")
    assert "IP address" in error["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60


async def test_secret_key_answers_carry_no_cors_headers(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    session = await open_chat(http, await make_agent())
    response = await http.get(f"/chats/{session['id']}", headers={"Origin": SHOP})

    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers
