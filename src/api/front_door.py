"""The front door: a pure ASGI middleware that refuses a request before its body is read.

On the routes that need a key (`/api/v1/...`; OSVI's face `/compat/osvi/...`, whose key
comes in an `API-Token` header and whose refusals are in OSVI's envelope; and Vapi's face
`/compat/vapi/...`, Bearer keys, refusals in Vapi's error shape), in this order: the
API key from the headers (401), the key's request rate (429 with Retry-After), a JSON
Content-Type when there is a body (415). A publishable widget key (`pw_...`) is checked
instead against its routes and origins (403), the client IP's and the visitor's rates (429)
and its visitor token (401); see src/widget/access.py. On every route: the body's size, from
Content-Length at once and from the bytes read, so a chunked upload stops at the cap too
(413). A response sent before the request's body was read to its end closes the connection,
so the server reads no more of it.

Health, metrics and codec routes keep their own rules (no key, no key, PARLEY_CODEC_AUTH).
Refusals under `/api/v1/openai` are in OpenAI's error shape (src/api/openai_errors.py).
FastAPI's own `max_body_size` is not used: it answers any early response of a request whose
Content-Length is over the cap, a 401 included, with a plain-text 413.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from src.api.deps import ACCOUNT_SCOPE_KEY, PRINCIPAL_SCOPE_KEY, Services, bearer_key
from src.api.errors import OSVI_PREFIX, error_response_at, is_osvi_path
from src.api.openai_errors import is_openai_path, openai_error_response
from src.api.outages import DATABASE_UNREACHABLE, DATABASE_UNREACHABLE_MESSAGE
from src.api.schemas import ErrorResponse
from src.compat.vapi.errors import under_vapi
from src.errors import (
    InvalidInput,
    ParleyError,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from src.services.accounts import hash_api_key
from src.widget.access import VISITOR_HEADER, Principal
from src.widget.cors import WIDGET_ORIGIN_SCOPE_KEY
from src.widget.keys import WIDGET_KEY_PREFIX

log = logging.getLogger(__name__)

KEYED_PREFIX = "/api/v1"
# OSVI's clients send their key as `API-Token: <key>`.
OSVI_KEY_HEADER = "api-token"
JSON_HINT = "send the body as JSON with 'Content-Type: application/json'"


# For the OpenAPI document of the keyed routes: what the front door may answer.
FRONT_DOOR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "missing, malformed, unknown or revoked key"},
    403: {
        "model": ErrorResponse,
        "description": "a publishable widget key off its routes, or from an origin it does "
        "not allow",
    },
    413: {"model": ErrorResponse, "description": "body over PARLEY_MAX_REQUEST_BYTES"},
    415: {"model": ErrorResponse, "description": "a body not sent as application/json"},
    429: {"model": ErrorResponse, "description": "over the key's rate (Retry-After) or a quota"},
}


class BodyTooLarge(HTTPException):
    """Raised from `receive` when the bytes read pass the cap; an HTTPException so that
    FastAPI's body reading lets it through to the error handlers (413 in the error shape)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, detail=_too_large(limit))


class FrontDoor:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        services: Services = scope["app"].state.services
        headers = Headers(scope=scope)
        length = _content_length(headers)
        has_body = bool(length) or "transfer-encoding" in headers
        limit = services.settings.max_request_bytes
        try:
            if "\x00" in scope["path"]:
                # PostgreSQL cannot hold a NUL: an id with one would fail in the database.
                raise InvalidInput("the path contains a NUL character (%00)")
            if _needs_key(scope["path"]):
                await self._admit(scope, headers, services, has_body)
            if length is not None and length > limit:
                raise PayloadTooLarge(_too_large(limit), {"limit_bytes": limit})
        except DATABASE_UNREACHABLE as error:  # a key not in the cache needs the database
            log.warning("database unreachable checking an API key: %s", type(error).__name__)
            await self._refuse(
                Unavailable(DATABASE_UNREACHABLE_MESSAGE), scope, receive, send, close=has_body
            )
            return
        except ParleyError as refusal:
            await self._refuse(refusal, scope, receive, send, close=has_body)
            return
        await self._pass_counted(scope, receive, send, limit, not has_body, length)

    async def _admit(
        self, scope: Scope, headers: Headers, services: Services, has_body: bool
    ) -> None:
        key = _key_of(scope["path"], headers)
        if key is not None and key.startswith(WIDGET_KEY_PREFIX):
            await self._admit_widget(scope, headers, services, key)
        else:
            await self._admit_secret_key(scope, services, key)
        if has_body and not _is_json(headers.get("content-type")):
            raise UnsupportedMediaType(
                f"the body must be JSON: {JSON_HINT}",
                {"content_type": headers.get("content-type")},
            )

    async def _admit_secret_key(self, scope: Scope, services: Services, key: str | None) -> None:
        account_id = await services.authenticator.account_for(key)
        scope[ACCOUNT_SCOPE_KEY] = account_id
        scope[PRINCIPAL_SCOPE_KEY] = Principal(account_id=account_id)
        assert key is not None  # account_for refuses a missing key
        retry_after = await services.rate_limiter.retry_after(hash_api_key(key))
        if retry_after is not None:
            limit = services.settings.rate_limit_per_minute
            raise RateLimited(
                f"more than {limit} requests a minute with this API key; retry in {retry_after} s",
                {"limit_per_minute": limit, "retry_after_seconds": retry_after},
            )

    async def _admit_widget(
        self, scope: Scope, headers: Headers, services: Services, key: str
    ) -> None:
        """A publishable key: its routes and origins only, rated per client IP and visitor
        instead of per key (one key serves every visitor of a site)."""
        gate = services.widget_gate
        origin = headers.get("origin")
        grant = await gate.grant_from(key, scope["method"], scope["path"], origin)
        # From here on the answer, a refusal included, is readable by the page (CORS).
        scope[WIDGET_ORIGIN_SCOPE_KEY] = origin
        client = scope.get("client")
        principal = await gate.principal(
            grant, scope["path"], client[0] if client else None, headers.get(VISITOR_HEADER)
        )
        scope[ACCOUNT_SCOPE_KEY] = principal.account_id
        scope[PRINCIPAL_SCOPE_KEY] = principal

    async def _pass_counted(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        limit: int,
        body_done: bool,
        length: int | None,
    ) -> None:
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received, body_done
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > limit:
                    body_done = False  # the rest is not read
                    raise BodyTooLarge(limit)
            return message

        async def closing_send(message: Message) -> None:
            nonlocal started, body_done
            if message["type"] == "http.response.start":
                started = True
                if not body_done and length is not None and received < limit:
                    # Answered without reading the body (a refusal, an unknown route): read
                    # the rest first. Closing a socket with unread bytes in it resets the
                    # connection, and the reset can cut the answer off at the client.
                    body_done = await _drain(receive, limit - received)
                if not body_done:
                    message = {**message, "headers": [*message.get("headers", []), _CLOSE]}
            await send(message)

        try:
            await self.app(scope, counted_receive, closing_send)
        except BodyTooLarge as error:
            # Only when no error handler turned it into the response already.
            if started:
                raise
            refusal = PayloadTooLarge(str(error.detail), {"limit_bytes": limit})
            await self._refuse(refusal, scope, receive, send, close=True)

    async def _refuse(
        self, error: ParleyError, scope: Scope, receive: Receive, send: Send, close: bool
    ) -> None:
        if is_openai_path(scope["path"]):  # an OpenAI SDK reads only OpenAI's error shape
            response = openai_error_response(error)
        else:
            response = error_response_at(
                scope["path"], error.status_code, error.code, error.message, error.details
            )
        if isinstance(error, RateLimited) and isinstance(error.details, dict):
            response.headers["Retry-After"] = str(error.details["retry_after_seconds"])
        if close:
            response.headers["Connection"] = "close"
        await response(scope, receive, send)


_CLOSE = (b"connection", b"close")


async def _drain(receive: Receive, at_most: int) -> bool:
    """Reads and drops the rest of a request body of at most `at_most` more bytes; whether
    it was all read (False: the client disconnected, or sent more than it declared)."""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return False
        at_most -= len(message.get("body", b""))
        if at_most < 0:
            return False
        if not message.get("more_body", False):
            return True


def _needs_key(path: str) -> bool:
    return (
        path == KEYED_PREFIX
        or path.startswith(KEYED_PREFIX + "/")
        or is_osvi_path(path)
        or under_vapi(path)
    )


def _key_of(path: str, headers: Headers) -> str | None:
    if not is_osvi_path(path):
        return bearer_key(headers.get("authorization"))
    key = (headers.get(OSVI_KEY_HEADER) or "").strip()
    if not key:
        raise Unauthorized(f"missing API key: send 'API-Token: <key>' on {OSVI_PREFIX} routes")
    return key


def _content_length(headers: Headers) -> int | None:
    try:
        return int(headers["content-length"])
    except (KeyError, ValueError):
        return None


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    kind, _, subtype = media.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def _too_large(limit: int) -> str:
    return f"the request body is larger than {limit} bytes (PARLEY_MAX_REQUEST_BYTES)"
