"""A widget key's visitor follows its own session's live stream, and no one else's: the stream
route takes the same session check as the other session routes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import AgentFactory
from tests.test_api_errors import assert_error
from tests.test_widget_keys import SHOP, as_visitor, create_key, open_widget, widget


@pytest.fixture
async def shop_key(http: httpx.AsyncClient, make_agent: AgentFactory) -> dict[str, Any]:
    return await create_key(http, await make_agent())


async def test_a_visitor_follows_its_own_stream_and_not_another_visitors(
    api_url: str, shop_key: dict[str, Any]
) -> None:
    async with widget(api_url, shop_key["key"]) as page:
        first = (await open_widget(page)).json()
        second = (await open_widget(page)).json()
        stream = f"/chats/{first['session']['id']}/stream"
        stranger = await page.get(stream, headers=as_visitor(second["visitor_token"]))
        async with page.stream(
            "GET",
            stream,
            headers={**as_visitor(first["visitor_token"]), "Accept": "text/event-stream"},
        ) as own:
            own_status, own_type = own.status_code, own.headers["content-type"]
            allowed = own.headers.get("access-control-allow-origin")

    assert_error(stranger, 404, "not_found")
    assert own_status == 200 and own_type.startswith("text/event-stream")
    assert allowed == SHOP


async def test_without_a_visitor_token_the_stream_is_401(
    api_url: str, shop_key: dict[str, Any]
) -> None:
    async with widget(api_url, shop_key["key"]) as page:
        session = (await open_widget(page)).json()["session"]
        response = await page.get(f"/chats/{session['id']}/stream")

    assert_error(response, 401, "unauthorized")
