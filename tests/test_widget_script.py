"""`GET /widget.js` serves the chat widget as one small plain script; `GET /demo` shows it on a
page under `parley dev` only, and the front page links that page there."""

from __future__ import annotations

import gzip

import httpx

from src.api.routes.front_page import front_page_html
from src.api.routes.widget_script import WIDGET_SCRIPT
from src.config import Settings
from src.sealing.state_envelope import new_key_setting
from tests.conftest import ApiFactory, SettingsFactory
from tests.test_front_page import links_in

# What a page pays for the widget over the wire, at most.
MAX_GZIPPED_BYTES = 40 * 1024
DEMO_KEY = "pw_demo_0123456789abcdef"


async def test_the_widget_script_is_served_as_javascript(api_url: str) -> None:
    async with httpx.AsyncClient(base_url=api_url) as client:
        response = await client.get("/widget.js")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "public, max-age=300"
    assert response.content == WIDGET_SCRIPT.read_bytes()


def test_the_widget_script_is_under_40_kb_gzipped() -> None:
    gzipped = gzip.compress(WIDGET_SCRIPT.read_bytes(), compresslevel=9)

    assert len(gzipped) <= MAX_GZIPPED_BYTES, f"{len(gzipped)} bytes gzipped"


def test_the_widget_script_loads_nothing_from_elsewhere() -> None:
    script = WIDGET_SCRIPT.read_text()

    assert "import " not in script
    assert "http://" not in script and "https://" not in script.replace(
        "https://parley.example/widget.js", ""
    )


async def test_under_parley_dev_the_demo_page_embeds_the_widget(
    make_settings: SettingsFactory, serve_api: ApiFactory
) -> None:
    settings = make_settings(PARLEY_DEMO_WIDGET_KEY=DEMO_KEY)
    async with serve_api(settings) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        demo = await client.get("/demo")
        front = await client.get("/")

    assert demo.status_code == 200
    tag = f'<script src="{base_url}/widget.js" data-key="{DEMO_KEY}" data-title="Northwind Bikes"'
    assert tag in demo.text
    assert links_in(front.text).links["Web chat widget demo"] == "/demo"


async def test_without_a_demo_key_there_is_no_demo_page(api_url: str) -> None:
    async with httpx.AsyncClient(base_url=api_url) as client:
        response = await client.get("/demo")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_a_production_front_page_does_not_link_a_demo() -> None:
    settings = Settings(
        _env_file=None,
        PARLEY_ENVIRONMENT="production",
        PARLEY_DEMO_WIDGET_KEY=DEMO_KEY,
        PARLEY_PAYLOAD_KEYS=new_key_setting(),
        PARLEY_STATE_KEYS=new_key_setting(),
        PARLEY_SECRET_KEYS=new_key_setting(),
    )

    links = links_in(front_page_html("Parley", "", "", settings)).links

    assert "Web chat widget demo" not in links
