"""`GET /`: a small HTML page linking the API docs, and the Temporal UI under `parley dev`."""

from __future__ import annotations

from html.parser import HTMLParser

import httpx

from src.api.routes.front_page import front_page_html
from src.config import Settings
from src.sealing.state_envelope import new_key_setting
from tests.conftest import ApiFactory, SettingsFactory

DEV_UI = "http://127.0.0.1:8233"


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: dict[str, str] = {}
        self.tags: set[str] = set()
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href")
        self.tags.add(tag)

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self.links[data] = self._href
            self._href = None


def links_in(page: str) -> _Links:
    """The page's links as {text: href}, and the elements it has."""
    parser = _Links()
    parser.feed(page)
    return parser


async def test_the_front_page_is_html_linking_the_docs(api_url: str) -> None:
    async with httpx.AsyncClient(base_url=api_url) as client:
        response = await client.get("/")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    page = links_in(response.text)
    assert page.links == {
        "API reference (Swagger UI)": "/docs",
        "API reference (ReDoc)": "/redoc",
        "OpenAPI document (JSON)": "/openapi.json",
        "Operator console (take sessions over)": "/console",
    }
    assert "script" not in page.tags


async def test_under_parley_dev_the_front_page_links_the_temporal_ui(
    make_settings: SettingsFactory, serve_api: ApiFactory
) -> None:
    # `parley dev` sets PARLEY_TEMPORAL_UI_URL to its dev server's UI.
    settings = make_settings(PARLEY_TEMPORAL_UI_URL=DEV_UI)
    async with serve_api(settings) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        response = await client.get("/")

    links = links_in(response.text).links
    assert links["Temporal UI (sessions' workflows)"] == f"{DEV_UI}/namespaces/default/workflows"
    assert links["API reference (Swagger UI)"] == "/docs"


def test_what_the_front_page_shows_is_escaped() -> None:
    hostile = 'http://ui.example/"><script>alert(1)</script>'
    settings = Settings(_env_file=None, PARLEY_TEMPORAL_UI_URL=hostile)

    page = links_in(front_page_html("<b>Parley</b>", "a & b", "", settings))

    assert not page.tags & {"script", "b"}
    assert page.links["Temporal UI (sessions' workflows)"] == (
        f"{hostile}/namespaces/default/workflows"
    )


def test_a_production_front_page_does_not_show_the_temporal_ui() -> None:
    settings = Settings(
        _env_file=None,
        PARLEY_ENVIRONMENT="production",
        PARLEY_TEMPORAL_UI_URL="http://temporal-ui.internal:8080",
        PARLEY_PAYLOAD_KEYS=new_key_setting(),
        PARLEY_STATE_KEYS=new_key_setting(),
        PARLEY_SECRET_KEYS=new_key_setting(),
    )

    links = links_in(front_page_html("Parley", "", "", settings)).links

    assert "temporal-ui.internal" not in "".join(links.values())
    assert set(links) == {
        "API reference (Swagger UI)",
        "API reference (ReDoc)",
        "OpenAPI document (JSON)",
        "Operator console (take sessions over)",
    }
