"""`GET /widget.js`: the embeddable web chat widget, a plain JavaScript file served as it is in
the repository (src/api/static/widget.js); and `GET /demo`, a page with the widget on it, under
`parley dev` only. No auth: a page loads the script before it has anything but its widget key.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from src.api.deps import ServicesDep
from src.config import Settings
from src.errors import NotFound

WIDGET_SCRIPT = Path(__file__).resolve().parents[1] / "static" / "widget.js"
# Pages embed the script by a fixed URL: a short cache lets a new release reach them soon.
WIDGET_CACHE = "public, max-age=300"

router = APIRouter()


@router.get("/widget.js", include_in_schema=False)
async def widget_script() -> Response:
    return Response(
        WIDGET_SCRIPT.read_bytes(),
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": WIDGET_CACHE, "X-Content-Type-Options": "nosniff"},
    )


@router.get("/demo", include_in_schema=False)
async def demo_page(request: Request, services: ServicesDep) -> HTMLResponse:
    settings = services.settings
    key = demo_widget_key(settings)
    if key is None:
        raise NotFound("no demo page here: it is served under `parley dev` only")
    return HTMLResponse(demo_page_html(str(request.base_url).rstrip("/"), key))


def demo_widget_key(settings: Settings) -> str | None:
    """The widget key `parley dev` made for the demo agent; never in production, where the
    page would hand out a key of the operator's."""
    if settings.environment != "development" or settings.demo_widget_key is None:
        return None
    return settings.demo_widget_key.get_secret_value()


def demo_page_html(base_url: str, widget_key: str) -> str:
    tag = (
        f'<script src="{escape(base_url)}/widget.js" data-key="{escape(widget_key)}" '
        'data-title="Northwind Bikes" defer>'
    )
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Northwind Bikes — Parley widget demo</title>
  <style>
    body {{ margin: 0; font-family: Georgia, serif; color: #1f2937; background: #fffbf5; }}
    header {{ padding: 1.2rem 2rem; background: #1f2937; color: #fef3c7; }}
    main {{ max-width: 44rem; margin: 2rem auto; padding: 0 1.5rem; line-height: 1.6; }}
    pre {{ background: #f3f4f6; padding: .8rem 1rem; white-space: pre-wrap;
      word-break: break-all; }}
  </style>
</head>
<body>
  <header><strong>Northwind Bikes</strong> — a made-up shop with the Parley widget on it</header>
  <main>
    <h1>Parley widget demo</h1>
    <p>The chat button in the corner is Parley's web chat widget, talking to the demo agent.
    This page embeds it with one tag:</p>
    <pre><code>{escape(tag)}&lt;/script&gt;</code></pre>
    <p>Every session it opens is a Temporal workflow: look for it in the Temporal UI.</p>
  </main>
  {tag}</script>
</body>
</html>
"""
