"""The operator console in Chromium: signed in with an account API key kept in the tab only,
the account's sessions listed with help requests first, a session's transcript live, and an
operator who takes a session over, answers the customer and hands it back to the AI."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from playwright.async_api import Locator, Page, ViewportSize, expect

from src.activities.llm import guidance_message
from tests.browser.conftest import OfflinePage
from tests.conftest import AgentFactory
from tests.fakes.tool_server import FakeToolServer
from tests.sessions import open_chat, say
from tests.test_tools import webhook_tool

REQUEST_HUMAN = {"type": "builtin", "name": "requestHuman"}
DESKTOP = ViewportSize(width=1280, height=800)
PHONE = ViewportSize(width=390, height=844)


async def sign_in(page: Page, api_url: str, key: str, name: str = "Dana Reyes") -> None:
    await page.goto(f"{api_url}/console")
    await page.get_by_role("textbox", name="API key").fill(key)
    await page.get_by_role("textbox", name="Your name").fill(name)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Active sessions")).to_be_visible()


def entry(page: Page, session_id: str) -> Locator:
    return page.get_by_role("navigation").get_by_role("button", name=session_id)


@pytest.fixture
async def console(offline_page: OfflinePage) -> AsyncIterator[OfflinePage]:
    """The console's tab at 1280x800; after the test, it has reached for nothing elsewhere,
    thrown nothing and broken none of its own content security policy."""
    page = offline_page.page
    await page.set_viewport_size(DESKTOP)
    thrown: list[str] = []
    page.on("pageerror", lambda error: thrown.append(str(error)))
    page.on("console", lambda m: thrown.append(m.text) if "Content Security" in m.text else None)
    yield offline_page
    assert offline_page.refused == []
    assert thrown == []


@pytest.fixture
async def chat(http: httpx.AsyncClient, make_agent: AgentFactory) -> AsyncIterator[str]:
    """An active session with one exchange in it, ended after the test."""
    agent_id = await make_agent("echo", first_message="Hi! How can I help?")
    session = await open_chat(http, agent_id)
    await say(http, session["id"], "Where is my order?")
    yield session["id"]
    await http.post(f"/chats/{session['id']}/end")


async def test_the_api_key_is_kept_in_the_tab_only(
    console: OfflinePage, api_url: str, api_key: str, chat: str
) -> None:
    page = console.page
    await sign_in(page, api_url, api_key)

    await expect(entry(page, chat)).to_be_visible()
    stored = await page.evaluate("() => [sessionStorage.length, localStorage.length]")
    kept = await page.evaluate("() => Object.values(sessionStorage).join('')")
    assert stored == [1, 0]
    assert api_key in kept
    assert await page.context.cookies() == []
    assert api_key not in page.url
    await page.reload()  # the same tab: still signed in
    await expect(entry(page, chat)).to_be_visible()
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("textbox", name="API key")).to_be_visible()
    assert await page.evaluate("() => sessionStorage.length") == 0


async def test_a_key_the_api_refuses_is_said_so(console: OfflinePage, api_url: str) -> None:
    page = console.page
    await page.goto(f"{api_url}/console")
    await page.get_by_role("textbox", name="API key").fill("pk_not_a_real_key")
    await page.get_by_role("textbox", name="Your name").fill("Dana Reyes")
    await page.get_by_role("button", name="Sign in").click()

    await expect(page.get_by_role("alert")).to_contain_text("This API key was refused")
    await expect(page.get_by_role("textbox", name="API key")).to_be_focused()
    assert await page.evaluate("() => sessionStorage.length") == 0
    await console.screenshot("key-refused")


async def test_it_works_from_the_keyboard(
    console: OfflinePage, api_url: str, api_key: str, chat: str
) -> None:
    page = console.page
    await page.goto(f"{api_url}/console")
    await expect(page.get_by_role("textbox", name="API key")).to_be_focused()
    await page.keyboard.type(api_key)
    await page.keyboard.press("Tab")
    await page.keyboard.type("Dana Reyes")
    await page.keyboard.press("Enter")

    await expect(entry(page, chat)).to_be_visible()
    await entry(page, chat).focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("log", name="Conversation")).to_contain_text("echo:")
    # Past the rest of the list (other tests' sessions of the account may be in it).
    take_over = page.get_by_role("button", name="Take over")
    for _ in range(120):
        await page.keyboard.press("Tab")
        if await take_over.evaluate("button => button === document.activeElement"):
            break
    await expect(take_over).to_be_focused()
    await expect(take_over).to_have_css("outline-style", "solid")


async def test_a_selected_session_shows_its_transcript_live(
    console: OfflinePage, api_url: str, api_key: str, http: httpx.AsyncClient, chat: str
) -> None:
    page = console.page
    await sign_in(page, api_url, api_key)

    await entry(page, chat).click()
    conversation = page.get_by_role("log", name="Conversation")
    await expect(conversation).to_contain_text("Hi! How can I help?")
    await expect(conversation).to_contain_text("echo: Where is my order?")
    # Sent by the customer's side after the console opened it: the live stream brings it.
    await say(http, chat, "It was due on Monday")

    await expect(conversation).to_contain_text("echo: It was due on Monday")
    await expect(page.get_by_role("button", name="Take over")).to_be_enabled()
    await expect(page.get_by_role("button", name="Send", exact=True)).to_be_disabled()
    await expect(page.get_by_role("button", name="Hand back")).to_be_disabled()
    await console.screenshot("ai-mode")


async def test_an_operator_answers_a_help_request_and_hands_the_session_back(
    console: OfflinePage,
    api_url: str,
    api_key: str,
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
) -> None:
    page = console.page
    quiet = await open_chat(http, await make_agent("echo"))
    await say(http, quiet["id"], "Just browsing")
    agent_id = await make_agent(model="tool-requestHuman", tools=[REQUEST_HUMAN])
    session = (await open_chat(http, agent_id))["id"]
    await say(http, session, json.dumps({"reason": "wants a refund over $500"}))
    await say(http, quiet["id"], "Still browsing")  # the most recent activity, yet second

    await sign_in(page, api_url, api_key)
    first = page.get_by_role("navigation").get_by_role("listitem").first
    await expect(first).to_contain_text(session)
    await expect(first).to_contain_text("Help requested")
    await console.screenshot("help-request-listed")

    await entry(page, session).click()
    await page.get_by_role("button", name="Take over").click()
    await expect(page.locator("#session-facts")).to_contain_text("Human mode")
    await expect(page.get_by_role("button", name="Take over")).to_be_disabled()
    asked = await http.post(f"/chats/{session}/messages", json={"content": "Is that a person?"})
    assert asked.status_code == 202  # recorded, and the AI stays silent
    conversation = page.get_by_role("log", name="Conversation")
    await expect(conversation).to_contain_text("Is that a person?")
    await page.get_by_role("textbox", name="Reply").fill("I'm Dana, I can refund that for you.")
    await page.get_by_role("button", name="Send", exact=True).click()
    await expect(conversation).to_contain_text("I'm Dana, I can refund that for you.")
    await expect(conversation).to_contain_text("Dana Reyes (operator)")
    await console.screenshot("human-mode")

    view = (await http.get(f"/chats/{session}")).json()
    last = view["messages"][-1]
    assert last["content"] == "I'm Dana, I can refund that for you."
    assert last["author"]["kind"] == "human" and last["author"]["name"] == "Dana Reyes"

    await page.get_by_role("button", name="Hand back").click()
    await expect(page.locator("#session-facts")).to_contain_text("AI mode")
    await expect(page.get_by_role("button", name="Send", exact=True)).to_be_disabled()
    await expect(page.get_by_role("alert")).to_have_count(0)  # no error shown
    assert (await http.get(f"/chats/{session}")).json()["mode"] == "ai"
    for ended in (session, quiet["id"]):
        await http.post(f"/chats/{ended}/end")


async def test_a_whisper_guides_the_ai_and_it_answers_at_once(
    console: OfflinePage, api_url: str, api_key: str, http: httpx.AsyncClient, chat: str
) -> None:
    page = console.page
    await sign_in(page, api_url, api_key)
    await entry(page, chat).click()
    await expect(page.get_by_role("log", name="Conversation")).to_contain_text("echo:")

    await page.get_by_role("textbox", name="Whisper to the AI").fill("Offer the 10% coupon")
    await page.get_by_role("checkbox", name="The AI answers the customer now").check()
    await page.get_by_role("button", name="Whisper").click()

    # The echo model repeats the last message it reads: the guidance, unseen by the user.
    answer = f"echo: {guidance_message(['Offer the 10% coupon'])}"
    await expect(page.get_by_role("log", name="Conversation")).to_contain_text(answer)
    await expect(page.get_by_role("textbox", name="Whisper to the AI")).to_have_value("")
    await expect(page.get_by_role("alert")).to_have_count(0)
    view = (await http.get(f"/chats/{chat}")).json()
    assert [m["content"] for m in view["messages"]][-1] == answer
    assert view["mode"] == "ai"


async def test_an_ended_session_leaves_the_list_and_its_controls_go_off(
    console: OfflinePage, api_url: str, api_key: str, http: httpx.AsyncClient, chat: str
) -> None:
    page = console.page
    await sign_in(page, api_url, api_key)
    await entry(page, chat).click()

    await page.get_by_role("button", name="End", exact=True).click()

    await expect(page.get_by_role("status")).to_have_text("This session has ended.")
    await expect(entry(page, chat)).to_have_count(0)
    for name in ("Take over", "Hand back", "End", "Send", "Whisper"):
        await expect(page.get_by_role("button", name=name, exact=True)).to_be_disabled()
    assert (await http.get(f"/chats/{chat}")).json()["is_final"] is True


@pytest.fixture
async def approval_chat(
    http: httpx.AsyncClient, make_agent: AgentFactory, tools: tuple[FakeToolServer, str]
) -> AsyncIterator[tuple[str, asyncio.Task[dict[str, Any]]]]:
    """A session whose model calls a tool that waits for approval; the customer's message
    that made it call it, still waiting for its reply."""
    agent_id = await make_agent(
        model="tool-lookup_order",
        tools=[webhook_tool(f"{tools[1]}/echo", requires_approval=True)],
    )
    session = (await open_chat(http, agent_id))["id"]
    turn = asyncio.create_task(say(http, session, '{"id": "A-1182"}'))
    yield session, turn
    turn.cancel()
    await http.post(f"/chats/{session}/end")


async def test_an_operator_approves_a_tool_call_and_the_ai_reads_its_answer(
    console: OfflinePage,
    api_url: str,
    api_key: str,
    approval_chat: tuple[str, asyncio.Task[dict[str, Any]]],
) -> None:
    page = console.page
    session, turn = approval_chat
    await sign_in(page, api_url, api_key)
    await entry(page, session).click()
    waiting = page.get_by_role("group", name="Tool call lookup_order")
    await expect(waiting).to_contain_text("A-1182")
    # The API refuses a takeover while a call waits: decided first.
    await expect(page.get_by_role("button", name="Take over")).to_be_disabled()
    await console.screenshot("approval-waiting")

    await waiting.get_by_role("button", name="Approve").click()

    reply = await turn
    assert reply["messages"][-1]["content"] == 'tool said: {"received":{"id":"A-1182"}}'
    conversation = page.get_by_role("log", name="Conversation")
    await expect(conversation).to_contain_text('tool said: {"received":{"id":"A-1182"}}')
    await expect(waiting).to_have_count(0)
    await expect(page.get_by_role("button", name="Take over")).to_be_enabled()
    await expect(page.get_by_role("alert")).to_have_count(0)


async def test_an_operator_refuses_a_tool_call_and_the_ai_reads_why(
    console: OfflinePage,
    api_url: str,
    api_key: str,
    approval_chat: tuple[str, asyncio.Task[dict[str, Any]]],
) -> None:
    page = console.page
    session, turn = approval_chat
    await sign_in(page, api_url, api_key)
    await entry(page, session).click()
    waiting = page.get_by_role("group", name="Tool call lookup_order")

    await waiting.get_by_role("textbox", name="Note for the AI").fill("not for this customer")
    await waiting.get_by_role("button", name="Refuse").click()

    reply = await turn
    refused = "an operator refused this call, so it was not made: not for this customer"
    assert refused in reply["messages"][-1]["content"]
    await expect(page.get_by_role("log", name="Conversation")).to_contain_text(refused)
    await expect(waiting).to_have_count(0)


async def test_on_a_phone_the_list_sits_above_the_conversation(
    offline_page: OfflinePage, api_url: str, api_key: str, chat: str
) -> None:
    page = offline_page.page
    await page.set_viewport_size(PHONE)
    await sign_in(page, api_url, api_key)

    await entry(page, chat).click()

    await expect(page.get_by_role("log", name="Conversation")).to_contain_text("echo:")
    listed = await page.get_by_role("navigation").bounding_box()
    transcript = await page.get_by_role("log", name="Conversation").bounding_box()
    assert listed is not None and transcript is not None
    assert listed["width"] <= PHONE["width"] and transcript["y"] > listed["y"]
    assert await page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    await offline_page.screenshot("phone")


async def test_the_page_runs_only_its_own_script_and_may_not_be_framed(api_url: str) -> None:
    async with httpx.AsyncClient(base_url=api_url) as client:
        page = await client.get("/console")
        script = await client.get("/console.js")
        style = await client.get("/console.css")

    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy and "form-action 'none'" in policy
    assert page.headers["referrer-policy"] == "no-referrer"
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert style.headers["content-type"] == "text/css; charset=utf-8"
