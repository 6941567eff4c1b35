"""The web chat widget in Chromium, on a page of another loopback origin than the API's, as a
business's site embeds it: keyboard only, the reply in the conversation log, the transcript
after a reload, and a clear refusal on a site whose origin the widget key does not allow."""

from __future__ import annotations

from collections.abc import AsyncIterator
from html import escape
from typing import Protocol

import httpx
import pytest
from playwright.async_api import Page, expect
from playwright.async_api import Route as PageRoute
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from tests.browser.conftest import OfflinePage
from tests.browser.cutting_proxy import CuttingProxy
from tests.conftest import AgentFactory
from tests.servers import served

# The host page's own CSS is rude on purpose: the widget's styles are its own.
HOST_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Acme Plumbing</title>
<style>
  body {{ font-family: Georgia, serif; margin: 0; background: #fdf6e3; }}
  header {{ background: #073642; color: #fdf6e3; padding: 1rem 2rem; font-size: 1.4rem; }}
  main {{ padding: 1rem 2rem; max-width: 40rem; }}
  div, section, p {{ color: red; font-size: 22px; padding: 30px; }}
  button {{ background: lime; text-transform: uppercase; }}
  /* The site's brand, through the widget's custom properties. */
  #parley-chat-widget {{ --parley-accent: #0f766e; --parley-position-right: 32px; }}
</style></head>
<body>
  <header>Acme Plumbing</header>
  <main><h1>Leaks fixed the same day</h1>
  <p>Call us or ask in the chat. <a href="#services">Our services</a></p></main>
  <script src="{script}" data-key="{key}" defer></script>
</body></html>
"""


def _host_app() -> Starlette:
    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(
            HOST_PAGE.format(
                script=escape(request.query_params["script"]),
                key=escape(request.query_params["key"]),
            )
        )

    return Starlette(routes=[Route("/", page)])


@pytest.fixture(scope="session")
async def host_site() -> AsyncIterator[str]:
    """A business's site: a loopback origin of its own."""
    async with served(_host_app()) as base:
        yield base


@pytest.fixture(scope="session")
async def other_site() -> AsyncIterator[str]:
    """Another site, whose origin no widget key here allows."""
    async with served(_host_app()) as base:
        yield base


class Embedder(Protocol):
    """`embed(agent_id, site, allowed)`: the URL of `site`'s page with the widget on it, keyed
    for `agent_id` with a new widget key that allows the origin `allowed`."""

    async def __call__(self, agent_id: str, site: str, allowed: str) -> str: ...


@pytest.fixture
def embed(api_url: str, http: httpx.AsyncClient) -> Embedder:
    async def page_url(agent_id: str, site: str, allowed: str) -> str:
        created = await http.post(
            "/widget-keys", json={"agent_id": agent_id, "allowed_origins": [allowed]}
        )
        assert created.status_code == 201, created.text
        params = {"script": f"{api_url}/widget.js", "key": created.json()["key"]}
        return str(httpx.URL(site, params=params))

    return page_url


async def open_by_keyboard(page: Page) -> None:
    launcher = page.get_by_role("button", name="Open chat")
    await expect(launcher).to_be_visible()
    await page.keyboard.press("Tab")  # the page's link
    await page.keyboard.press("Tab")
    await expect(launcher).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("textbox", name="Message")).to_be_focused()


async def say_by_keyboard(page: Page, text: str) -> None:
    await page.keyboard.type(text)
    await page.keyboard.press("Enter")


@pytest.fixture
async def agent(make_agent: AgentFactory) -> str:
    return await make_agent(
        "echo", first_message="Hi! I'm Acme's assistant. How can I help you today?"
    )


async def test_a_visitor_chats_with_the_keyboard_only(
    offline_page: OfflinePage, embed: Embedder, host_site: str, agent: str
) -> None:
    page = offline_page.page
    await page.goto(await embed(agent, host_site, allowed=host_site))

    await open_by_keyboard(page)
    conversation = page.get_by_role("log")
    await expect(conversation).to_contain_text("How can I help you today?")
    await say_by_keyboard(page, "My kitchen sink is leaking")
    await expect(conversation).to_contain_text("echo: My kitchen sink is leaking")
    await say_by_keyboard(page, "Can someone come this afternoon?")
    await expect(conversation).to_contain_text("echo: Can someone come this afternoon?")
    await expect(page.get_by_role("status", name="Assistant is typing")).to_be_hidden()
    await offline_page.screenshot("mid-conversation")

    await page.keyboard.press("Escape")
    await expect(page.get_by_role("textbox", name="Message")).to_be_hidden()
    await expect(page.get_by_role("button", name="Open chat")).to_be_focused()
    assert offline_page.refused == []


async def test_after_a_reload_the_transcript_is_still_there(
    offline_page: OfflinePage, embed: Embedder, host_site: str, agent: str
) -> None:
    page = offline_page.page
    await page.goto(await embed(agent, host_site, allowed=host_site))
    await open_by_keyboard(page)
    await say_by_keyboard(page, "Do you fix boilers?")
    await expect(page.get_by_role("log")).to_contain_text("echo: Do you fix boilers?")

    await page.reload()

    # Open across the reload, as it was.
    conversation = page.get_by_role("log")
    await expect(conversation).to_contain_text("Do you fix boilers?")
    await expect(conversation).to_contain_text("echo: Do you fix boilers?")
    # Reopened on load, it leaves the page's focus alone.
    await page.get_by_role("textbox", name="Message").click()
    await say_by_keyboard(page, "Thanks")
    await expect(conversation).to_contain_text("echo: Thanks")
    assert await conversation.get_by_text("echo: Do you fix boilers?").count() == 1


async def test_a_site_the_key_does_not_allow_gets_no_session(
    offline_page: OfflinePage,
    embed: Embedder,
    host_site: str,
    other_site: str,
    agent: str,
    http: httpx.AsyncClient,
) -> None:
    page = offline_page.page
    await page.goto(await embed(agent, other_site, allowed=host_site))

    await page.get_by_role("button", name="Open chat").click()

    await expect(page.get_by_role("alert")).to_contain_text(
        "this site may not be allowed to use this chat"
    )
    await offline_page.screenshot("origin-refused")
    sessions = await http.get("/chats", params={"agent_id": agent})
    assert sessions.json()["items"] == []


async def test_the_page_themes_the_widget_and_its_own_css_stays_out(
    offline_page: OfflinePage, embed: Embedder, host_site: str, agent: str
) -> None:
    page = offline_page.page
    await page.goto(await embed(agent, host_site, allowed=host_site))
    launcher = page.get_by_role("button", name="Open chat")
    await expect(launcher).to_be_visible()

    # --parley-accent: #0f766e; the page's `button { background: lime }` does not reach it.
    await expect(launcher).to_have_css("background-color", "rgb(15, 118, 110)")
    await expect(launcher).to_have_css("text-transform", "none")
    box = await launcher.bounding_box()
    assert box is not None
    assert 1280 - (box["x"] + box["width"]) == 32  # --parley-position-right
    await launcher.click()
    await expect(page.get_by_role("log")).to_have_css("color", "rgb(17, 24, 39)")


async def test_a_visitor_token_the_server_refuses_is_replaced_by_a_new_one(
    offline_page: OfflinePage, embed: Embedder, host_site: str, agent: str
) -> None:
    page = offline_page.page
    url = await embed(agent, host_site, allowed=host_site)
    key = httpx.URL(url).params["key"]
    await page.goto(url)
    await page.evaluate(
        "([name, token]) => localStorage.setItem(name, token)",
        [f"parley:visitor:{key}", "pv_not-a-token-of-this-server"],
    )
    await page.reload()

    await page.get_by_role("button", name="Open chat").click()

    await expect(page.get_by_role("log")).to_contain_text("How can I help you today?")
    await expect(page.get_by_role("alert")).to_be_hidden()
    token = await page.evaluate("name => localStorage.getItem(name)", f"parley:visitor:{key}")
    assert token.startswith("pv_") and token != "pv_not-a-token-of-this-server"


async def test_the_reply_grows_in_the_log_as_the_model_streams_it(
    offline_page: OfflinePage, embed: Embedder, host_site: str, make_agent: AgentFactory
) -> None:
    agent = await make_agent("stream-400")  # 400 ms between words
    page = offline_page.page
    await page.goto(await embed(agent, host_site, allowed=host_site))
    await open_by_keyboard(page)

    await say_by_keyboard(page, "one two three four five six")

    growing = page.locator(".msg.assistant.streaming")
    await expect(growing).to_contain_text("echo:")
    partial = await growing.inner_text()
    await offline_page.screenshot("streaming")
    await expect(page.get_by_role("log")).to_contain_text("echo: one two three four five six")
    await expect(growing).to_have_count(0)
    assert "six" not in partial


async def test_a_message_from_another_tab_shows_in_this_one(
    offline_page: OfflinePage, embed: Embedder, host_site: str, agent: str
) -> None:
    first = offline_page.page
    url = await embed(agent, host_site, allowed=host_site)
    await first.goto(url)
    await first.get_by_role("button", name="Open chat").click()
    await expect(first.get_by_role("log")).to_contain_text("How can I help you today?")
    second = await first.context.new_page()
    await second.goto(url)
    await second.get_by_role("button", name="Open chat").click()
    await expect(second.get_by_role("log")).to_contain_text("How can I help you today?")

    await first.get_by_role("textbox", name="Message").fill("Sent from the first tab")
    await first.get_by_role("button", name="Send").click()

    conversation = second.get_by_role("log")
    await expect(conversation).to_contain_text("Sent from the first tab")
    await expect(conversation).to_contain_text("echo: Sent from the first tab")
    assert await conversation.get_by_text("echo: Sent from the first tab").count() == 1


async def test_after_a_dropped_connection_the_widget_resumes_where_it_was(
    offline_page: OfflinePage,
    embed: Embedder,
    api_url: str,
    host_site: str,
    agent: str,
    http: httpx.AsyncClient,
) -> None:
    page = offline_page.page
    follows: list[dict[str, str]] = []
    page.on("request", lambda r: follows.append(r.headers) if "/stream" in r.url else None)
    proxy = CuttingProxy(api_url)
    async with proxy.served() as network:
        # The page reaches Parley through `network`: the widget's API is the script's origin.
        url = httpx.URL(await embed(agent, host_site, allowed=host_site))
        await page.goto(str(url.copy_set_param("script", f"{network}/widget.js")))
        await page.get_by_role("button", name="Open chat").click()
        await expect(page.get_by_role("log")).to_contain_text("How can I help you today?")
        (session,) = (await http.get("/chats", params={"agent_id": agent})).json()["items"]
        say = f"/chats/{session['id']}/messages"
        conversation = page.get_by_role("log")
        # Sent elsewhere (the account's backend): only the live stream brings it here.
        await http.post(say, json={"content": "Sent before the drop"})
        await expect(conversation).to_contain_text("echo: Sent before the drop")

        proxy.refusing = True
        proxy.cut()
        sent = await http.post(say, json={"content": "Sent while you were offline"})
        proxy.refusing = False

        await expect(conversation).to_contain_text("echo: Sent while you were offline")
    assert sent.status_code == 200
    assert await conversation.get_by_text("echo: Sent before the drop").count() == 1
    assert await conversation.get_by_text("echo: Sent while you were offline").count() == 1
    # It followed from the start, then resumed after the last event it had read.
    assert "last-event-id" not in follows[0]
    assert int(follows[-1]["last-event-id"]) > 1


async def test_after_the_conversation_ends_the_next_message_starts_a_new_one(
    offline_page: OfflinePage, embed: Embedder, host_site: str, agent: str
) -> None:
    page = offline_page.page
    await page.goto(await embed(agent, host_site, allowed=host_site))
    await open_by_keyboard(page)

    await say_by_keyboard(page, "please finish")
    conversation = page.get_by_role("log")
    await expect(conversation).to_contain_text("This conversation has ended")
    await say_by_keyboard(page, "One more question")

    await expect(conversation).to_contain_text("New conversation")
    await expect(conversation).to_contain_text("echo: One more question")
    await expect(page.get_by_role("alert")).to_be_hidden()
    await offline_page.screenshot("new-conversation")


async def test_a_server_that_answers_json_gets_its_reply_shown_too(
    offline_page: OfflinePage, embed: Embedder, host_site: str, agent: str
) -> None:
    page = offline_page.page

    async def without_streaming(route: PageRoute) -> None:
        # As a Parley without streaming answers: the plain JSON reply.
        await route.continue_(headers={**route.request.headers, "accept": "application/json"})

    await page.route("**/messages", without_streaming)
    await page.goto(await embed(agent, host_site, allowed=host_site))
    await open_by_keyboard(page)

    await say_by_keyboard(page, "Plain JSON, please")

    conversation = page.get_by_role("log")
    await expect(conversation).to_contain_text("echo: Plain JSON, please")
    await expect(page.get_by_role("status", name="Assistant is typing")).to_be_hidden()
    assert await conversation.get_by_text("echo: Plain JSON, please").count() == 1


async def test_on_a_phone_the_open_chat_fills_the_screen(
    offline_page: OfflinePage, embed: Embedder, host_site: str, agent: str
) -> None:
    page = offline_page.page
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.goto(await embed(agent, host_site, allowed=host_site))

    await page.get_by_role("button", name="Open chat").click()

    panel = page.get_by_role("dialog", name="Chat with us")
    await expect(page.get_by_role("log")).to_contain_text("How can I help you today?")
    assert await panel.bounding_box() == {"x": 0, "y": 0, "width": 390, "height": 844}
    # One way out, in the header: the launcher would cover the Send button.
    await expect(page.get_by_role("button", name="Close chat")).to_have_count(1)
    await expect(page.get_by_role("button", name="Send")).to_be_visible()
    await offline_page.screenshot("phone")
    await page.get_by_role("button", name="Close chat").click()
    await expect(page.get_by_role("button", name="Open chat")).to_be_focused()


async def test_a_reply_cut_off_mid_stream_arrives_whole_and_once(
    offline_page: OfflinePage,
    embed: Embedder,
    api_url: str,
    host_site: str,
    make_agent: AgentFactory,
    http: httpx.AsyncClient,
) -> None:
    agent = await make_agent("stream-300")
    page = offline_page.page
    proxy = CuttingProxy(api_url)
    async with proxy.served() as network:
        url = httpx.URL(await embed(agent, host_site, allowed=host_site))
        await page.goto(str(url.copy_set_param("script", f"{network}/widget.js")))
        await open_by_keyboard(page)
        await say_by_keyboard(page, "alpha beta gamma delta epsilon zeta")
        await expect(page.locator(".msg.assistant.streaming")).to_contain_text("echo:")

        proxy.cut()  # the reply's stream and the live one

        conversation = page.get_by_role("log")
        await expect(conversation).to_contain_text("echo: alpha beta gamma delta epsilon zeta")
        await expect(page.locator(".msg.assistant.streaming")).to_have_count(0)
    assert await conversation.get_by_text("echo: alpha beta").count() == 1
    (session,) = (await http.get("/chats", params={"agent_id": agent})).json()["items"]
    transcript = (await http.get(f"/chats/{session['id']}")).json()["messages"]
    assert [m["role"] for m in transcript] == ["user", "assistant"]


async def test_a_person_who_takes_over_is_named_in_the_widget(
    offline_page: OfflinePage,
    embed: Embedder,
    host_site: str,
    agent: str,
    http: httpx.AsyncClient,
) -> None:
    page = offline_page.page
    await page.goto(await embed(agent, host_site, allowed=host_site))
    await open_by_keyboard(page)
    conversation = page.get_by_role("log")
    await say_by_keyboard(page, "I would like to talk to a person")
    await expect(conversation).to_contain_text("echo: I would like to talk to a person")
    listed = await http.get("/chats", params={"status": "active", "agent_id": agent})
    [session] = listed.json()["items"]

    taken = await http.post(
        f"/chats/{session['id']}/takeover", json={"operator": {"id": "op-ana", "name": "Ana"}}
    )
    await expect(conversation).to_contain_text("Ana has joined the chat")
    await say_by_keyboard(page, "Hello Ana?")
    await expect(conversation).to_contain_text("Hello Ana?")
    await expect(page.get_by_role("status", name="Assistant is typing")).to_be_hidden()
    written = await http.post(
        f"/chats/{session['id']}/operator-messages",
        json={"content": "Hi, Ana here. How can I help?"},
    )
    reply = conversation.locator(".msg.assistant").last
    await expect(reply).to_contain_text("Hi, Ana here. How can I help?")
    await expect(reply.locator(".who")).to_have_text("Ana")
    await offline_page.screenshot("operator-joined")

    assert taken.status_code == 200 and written.status_code == 201
    assert "echo: Hello Ana?" not in await conversation.inner_text()
    await http.post(f"/chats/{session['id']}/end")
