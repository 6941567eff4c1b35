"""A real browser on a page of another origin talks to Parley with a publishable key: the
CORS preflight and the answers let it through from an allowed origin, and not from others."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from tests.browser.conftest import OfflinePage
from tests.conftest import AgentFactory
from tests.servers import served

# What the widget does: open (a new visitor), say hello, open again with the token.
WIDGET_FLOW = """
async ([api, key]) => {
  const call = async (path, body, token) => {
    const headers = {"Authorization": `Bearer ${key}`, "Content-Type": "application/json"};
    if (token) headers["X-Parley-Visitor"] = token;
    const response = await fetch(api + path, {method: "POST", headers, body: JSON.stringify(body)});
    return [response.status, await response.json()];
  };
  try {
    const [opened, first] = await call("/api/v1/widget/sessions", {visitor_token: null});
    const token = first.visitor_token, id = first.session.id;
    localStorage.setItem("parley-visitor", token);
    const [said, turn] = await call(`/api/v1/chats/${id}/messages`, {content: "hello"}, token);
    const stored = localStorage.getItem("parley-visitor");
    const [again, second] = await call("/api/v1/widget/sessions", {visitor_token: stored});
    return {opened, said, again, reply: turn.messages.map(m => m.content),
            same: second.session.id === id, transcript: second.session.messages.length};
  } catch (error) {
    return {failed: String(error)};
  }
}
"""


async def _customer_page(_: Any) -> HTMLResponse:
    return HTMLResponse("<!doctype html><title>shop</title><p>a customer's page</p>")


def _page_server() -> AbstractAsyncContextManager[str]:
    """A customer's site on loopback: another port is another origin."""
    return served(Starlette(routes=[Route("/", _customer_page)]))


async def test_a_page_of_an_allowed_origin_chats_and_another_origin_is_blocked(
    api_url: str, http: httpx.AsyncClient, make_agent: AgentFactory, offline_page: OfflinePage
) -> None:
    agent_id = await make_agent()
    async with _page_server() as page_url, _page_server() as other_url:
        key = (
            await http.post(
                "/widget-keys", json={"agent_id": agent_id, "allowed_origins": [page_url]}
            )
        ).json()["key"]
        await offline_page.page.goto(f"{page_url}/")
        allowed = await offline_page.page.evaluate(WIDGET_FLOW, [api_url, key])
        await offline_page.page.goto(f"{other_url}/")
        blocked = await offline_page.page.evaluate(WIDGET_FLOW, [api_url, key])

    assert allowed == {
        "opened": 201,
        "said": 200,
        "again": 200,
        "reply": ["echo: hello"],
        "same": True,
        "transcript": 2,
    }
    assert "Failed to fetch" in blocked["failed"]
