"""`GET /`: a small HTML page that points a person at the API docs (and, under `parley dev`,
at the Temporal UI). No auth, like the docs it links."""

from __future__ import annotations

from html import escape
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from src.api.deps import ServicesDep
from src.api.routes.widget_script import demo_widget_key
from src.config import Settings

router = APIRouter()


@router.get("/", include_in_schema=False)
async def front_page(request: Request, services: ServicesDep) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return HTMLResponse(
        front_page_html(request.app.title, request.app.description, root, services.settings)
    )


def front_page_html(title: str, description: str, root_path: str, settings: Settings) -> str:
    links = [
        (f"{root_path}/docs", "API reference (Swagger UI)"),
        (f"{root_path}/redoc", "API reference (ReDoc)"),
        (f"{root_path}/openapi.json", "OpenAPI document (JSON)"),
        (f"{root_path}/console", "Operator console (take sessions over)"),
    ]
    if demo_widget_key(settings) is not None:
        links.append((f"{root_path}/demo", "Web chat widget demo"))
    ui = temporal_ui_link(settings)
    if ui is not None:
        links.append((ui, "Temporal UI (sessions' workflows)"))
    items = "\n".join(
        f'    <li><a href="{escape(href)}">{escape(text)}</a></li>' for href, text in links
    )
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{escape(title)}</title>
  <style>body {{ font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto;
    padding: 0 1rem; line-height: 1.5; }}</style>
</head>
<body>
  <h1>{escape(title)}</h1>
  <p>{escape(description)}</p>
  <ul>
{items}
  </ul>
</body>
</html>
"""


def temporal_ui_link(settings: Settings) -> str | None:
    """The Temporal UI's workflow list, only in development: `parley dev` sets
    PARLEY_TEMPORAL_UI_URL to its own dev server's UI. A production front page is public and
    does not advertise where the operator's Temporal UI lives."""
    if settings.environment != "development" or not settings.temporal_ui_url:
        return None
    base = settings.temporal_ui_url.rstrip("/")
    return f"{base}/namespaces/{quote(settings.temporal_namespace, safe='')}/workflows"
