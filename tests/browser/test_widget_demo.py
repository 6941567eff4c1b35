"""`make dev` prints a demo page with the widget on it, talking to the demo agent, and the
front page links it."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from playwright.async_api import expect

from tests.browser.conftest import OfflinePage
from tests.servers import bound_socket
from tests.test_dev_stack import dev_stack
from tests.test_front_page import links_in

# Its own data dir and SQLite file: the PostgreSQL pass would only run it again.
pytestmark = pytest.mark.database_agnostic


def _free_port() -> int:
    with bound_socket() as sock:
        return int(sock.getsockname()[1])


async def test_the_dev_stack_serves_a_demo_page_where_the_widget_talks_to_the_demo_agent(
    tmp_path: Path, offline_page: OfflinePage
) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PARLEY_", "TEMPORAL_", "OPENAI_", "DATABASE_URL"))
    }
    env.update(
        PARLEY_DATA_DIR=str(tmp_path / "data"),
        PARLEY_PORT=str(_free_port()),
        PARLEY_DEV_TEMPORAL_PORT=str(_free_port()),
        PARLEY_DEV_UI_PORT=str(_free_port()),
    )
    output: list[str] = []
    page = offline_page.page

    async with dev_stack(env, output) as banner:
        root = banner["API"].removesuffix("/api/v1")
        async with httpx.AsyncClient() as client:
            front = links_in((await client.get(f"{root}/")).text).links
        await page.goto(banner["widget demo"])
        await page.get_by_role("button", name="Open chat").click()
        conversation = page.get_by_role("log")
        await expect(conversation).to_contain_text("I'm the Parley demo agent")
        await page.get_by_role("textbox", name="Message").fill("hello from the demo page")
        await page.get_by_role("button", name="Send").click()
        await expect(conversation).to_contain_text("scripted model")
        await offline_page.screenshot("demo-page")

    assert banner["widget demo"] == f"{root}/demo", "".join(output)
    assert front["Web chat widget demo"] == "/demo"
    assert offline_page.refused == []
