"""Browser fixtures: Playwright (from PyPI) driving the system's Chromium, offline.

The browser is Debian's `chromium` at /usr/bin/chromium (`apt-get install chromium`; `.ci/run`
installs it), or PARLEY_TEST_CHROMIUM. Never `playwright install`: it downloads a browser
build of its own. Without a browser these tests are skipped, except in CI, where they fail.

Every page refuses requests to anything but 127.0.0.1 and records them, so a page that
reaches for a CDN shows it. Screenshots are kept in build/screenshots/ (ignored by git),
named after the test; the run's summary lists them.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, Page, Route, async_playwright

CHROMIUM = os.environ.get("PARLEY_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
# URL schemes that never leave the page, so they are not routed through the network.
LOCAL_SCHEMES = {"data", "blob", "about"}
# Shown in the terminal summary: what this run saved.
SAVED: list[Path] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SAVED:
        terminalreporter.section("browser screenshots")
        for path in SAVED:
            terminalreporter.write_line(str(path))


@pytest.fixture(scope="session")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        reason = f"no Chromium at {CHROMIUM}: apt-get install chromium (or PARLEY_TEST_CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="session")
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class OfflinePage:
    """A browser tab that may reach 127.0.0.1 only; `refused` lists every other URL it asked
    for (each one aborted)."""

    page: Page
    name: str
    refused: list[str] = field(default_factory=list)

    async def screenshot(self, label: str) -> Path:
        """Saves the whole page as build/screenshots/<test>-<label>.png."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{self.name}-{label}.png"
        await self.page.screenshot(path=str(path), full_page=False)
        SAVED.append(path)
        return path

    async def guard(self, route: Route) -> None:
        url = urlsplit(route.request.url)
        if url.scheme in LOCAL_SCHEMES or url.hostname == "127.0.0.1":
            await route.continue_()
        else:
            self.refused.append(route.request.url)
            await route.abort("blockedbyclient")


@pytest.fixture
async def offline_page(
    browser: Browser, request: pytest.FixtureRequest
) -> AsyncIterator[OfflinePage]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        tab = OfflinePage(await context.new_page(), re.sub(r"\W+", "-", request.node.name))
        await context.route("**/*", tab.guard)
        yield tab
    finally:
        await context.close()
