"""CORS for the routes a publishable widget key may call, and for no other route.

Preflights carry no credentials, so no key says which origins to allow: a preflight on a
widget route is answered for any well-formed origin, and the real request is then checked
strictly (the front door refuses a `pw_` key from an origin it does not allow, 403, and that
answer carries no CORS header, so the page cannot read it). A real answer carries
`Access-Control-Allow-Origin` only once the front door has found the origin allowed by the
request's own key. No cookies are involved (the key is a Bearer header): no credentials mode."""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from src.widget.access import VISITOR_HEADER, is_widget_path
from src.widget.origins import OriginInvalid, parse_origin

# Where the front door leaves the Origin it found allowed by the request's widget key.
WIDGET_ORIGIN_SCOPE_KEY = "parley.widget_origin"

_ALLOW_METHODS = "GET, POST"
_ALLOW_HEADERS = f"Authorization, Content-Type, Idempotency-Key, Last-Event-ID, {VISITOR_HEADER}"
_EXPOSE_HEADERS = "Retry-After"
_PREFLIGHT_MAX_AGE = "600"


class WidgetCORS:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_widget_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await _preflight(origin)(scope, receive, send)
            return

        async def with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                allowed = scope.get(WIDGET_ORIGIN_SCOPE_KEY)
                response_headers = MutableHeaders(scope=message)
                response_headers.add_vary_header("Origin")
                if allowed:
                    response_headers["Access-Control-Allow-Origin"] = allowed
                    response_headers["Access-Control-Expose-Headers"] = _EXPOSE_HEADERS
            await send(message)

        await self.app(scope, receive, with_cors)


def _preflight(origin: str | None) -> PlainTextResponse:
    try:
        parse_origin(origin or "")
    except OriginInvalid:
        return PlainTextResponse(
            "a CORS preflight needs an Origin of the form scheme://host[:port]",
            status_code=400,
            headers={"Vary": "Origin"},
        )
    assert origin is not None
    return PlainTextResponse(
        "OK",
        headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": _ALLOW_METHODS,
            "Access-Control-Allow-Headers": _ALLOW_HEADERS,
            "Access-Control-Max-Age": _PREFLIGHT_MAX_AGE,
            "Vary": "Origin",
        },
    )
