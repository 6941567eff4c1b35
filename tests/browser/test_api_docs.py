"""The API docs render in a browser with no internet: Swagger UI and ReDoc come from Parley
itself, so a tab that may reach only 127.0.0.1 shows the whole API."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from tests.browser.conftest import OfflinePage

# Static pages: the PostgreSQL pass would only run them again.
pytestmark = pytest.mark.database_agnostic


async def test_swagger_ui_lists_the_routes_with_no_internet(
    api_url: str, offline_page: OfflinePage
) -> None:
    page = offline_page.page

    await page.goto(f"{api_url}/docs")
    open_chat = page.get_by_role("button", name=re.compile(r"^POST\s*\/api\/v1\/chats\s*Open Chat"))
    await expect(open_chat).to_be_visible()
    await open_chat.click()

    await expect(page.get_by_role("heading", name=re.compile(r"^Parley"))).to_be_visible()
    await expect(page.get_by_role("button", name="Try it out")).to_be_visible()
    await offline_page.screenshot("swagger-ui")
    assert offline_page.refused == []


async def test_redoc_shows_the_operations_with_no_internet(
    api_url: str, offline_page: OfflinePage
) -> None:
    page = offline_page.page

    await page.goto(f"{api_url}/redoc")
    await expect(page.get_by_role("heading", name="Parley (0.1.0)")).to_be_visible()
    await page.get_by_role("menuitem", name="chats").click()
    await page.get_by_role("menuitem", name=re.compile(r"Open Chat$")).click()

    await expect(page.get_by_role("heading", name="Open Chat")).to_be_in_viewport()
    await offline_page.screenshot("redoc")
    assert offline_page.refused == []


async def test_the_front_page_leads_to_the_docs(api_url: str, offline_page: OfflinePage) -> None:
    page = offline_page.page
    await page.goto(f"{api_url}/")
    await expect(page.get_by_role("heading", name="Parley")).to_be_visible()
    await offline_page.screenshot("front-page")

    await page.get_by_role("link", name="API reference (ReDoc)").click()

    await expect(page).to_have_url(f"{api_url}/redoc")
    await expect(page.get_by_role("heading", name="Parley (0.1.0)")).to_be_visible()
    assert offline_page.refused == []
