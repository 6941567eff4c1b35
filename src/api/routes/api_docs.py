"""`/redoc`: ReDoc from the copy fastapi-offline ships (Swagger UI's `/docs` comes from
FastAPIOffline itself, see src/api/app.py). No auth, like `/docs` and `/openapi.json`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import HTMLResponse

# Where FastAPIOffline mounts Swagger UI's and ReDoc's files.
DOCS_ASSETS_URL = "/static-offline-docs"
# ReDoc's sidebar shows the Redocly logo from Redocly's CDN (and drops it when it fails to
# load): the page's readers are not announced to a third party, and it looks the same offline.
REDOC_POLICY = "img-src 'self' data:"

router = APIRouter()


@router.get("/redoc", include_in_schema=False)
async def redoc(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    page = get_redoc_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}{DOCS_ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
        with_google_fonts=False,
    )
    page.headers["Content-Security-Policy"] = REDOC_POLICY
    return page
