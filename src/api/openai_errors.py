"""Errors of the OpenAI-compatible face in OpenAI's shape, `{"error": {"message", "type",
"param", "code"}}`, so an OpenAI SDK raises its typed exceptions (NotFoundError, ...).

Only paths under OPENAI_PREFIX answer this way: the route class below for everything raised in
a route (validation included), and the front door for what it refuses before (key, rate, body).
The domain errors stay the native ones; a `details` dict may name the OpenAI `param` and `code`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from src.api.outages import DATABASE_UNREACHABLE, DATABASE_UNREACHABLE_MESSAGE
from src.errors import InvalidInput, ParleyError, RateLimited, Unavailable, log_if_server_side

log = logging.getLogger(__name__)

OPENAI_PREFIX = "/api/v1/openai"

# OpenAI's error `type` by status. OpenAI answers bad input with 400, never 422.
_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}
# Native codes that OpenAI names otherwise.
_CODES = {"unauthorized": "invalid_api_key", "rate_limited": "rate_limit_exceeded"}
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
# The SDK retries 409 and 5xx by itself; these will not change on a retry (a final session,
# a turn the agent's model refused after Parley's own retries), so it is told not to.
_NOT_RETRIED = {409, 502}


def is_openai_path(path: str) -> bool:
    return path == OPENAI_PREFIX or path.startswith(OPENAI_PREFIX + "/")


def openai_error_body(error: ParleyError) -> tuple[int, dict[str, Any]]:
    """The status and OpenAI-shaped body of a domain error."""
    status = 400 if error.status_code == 422 else error.status_code
    details = error.details if isinstance(error.details, dict) else {}
    body = {
        "message": error.message,
        "type": _TYPES.get(status, "server_error"),
        "param": details.get("param"),
        "code": details.get("code") or _CODES.get(error.code, error.code),
    }
    return status, {"error": body}


def openai_error_response(error: ParleyError) -> JSONResponse:
    status, body = openai_error_body(error)
    response = JSONResponse(body, status_code=status)
    if isinstance(error, RateLimited) and isinstance(error.details, dict):
        response.headers["Retry-After"] = str(error.details["retry_after_seconds"])
    if status in _NOT_RETRIED:
        response.headers["x-should-retry"] = "false"
    return response


def as_parley_error(error: Exception, request: Request) -> ParleyError:
    """Any failure of a route as the domain error it stands for."""
    if isinstance(error, ParleyError):
        return error
    if isinstance(error, RequestValidationError):
        return _invalid_request(error)
    if isinstance(error, HTTPException):  # the body over the cap, read (src/api/front_door.py)
        failure = ParleyError(str(error.detail))
        failure.status_code = error.status_code
        failure.code = _HTTP_CODES.get(error.status_code, "http_error")
        return failure
    if isinstance(error, DATABASE_UNREACHABLE):
        log.warning("database unreachable on %s: %s", request.url.path, type(error).__name__)
        return Unavailable(DATABASE_UNREACHABLE_MESSAGE)
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return ParleyError("internal server error")


_SOURCES = frozenset({"body", "header", "query", "path"})


def _invalid_request(error: RequestValidationError) -> InvalidInput:
    problems = error.errors()
    if any(p.get("type") == "json_invalid" for p in problems):
        return InvalidInput("the body is not valid JSON", {"code": "invalid_json"})
    first = problems[0] if problems else {}
    location = [part for part in first.get("loc", ()) if part not in _SOURCES]
    param = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in location).lstrip(".")
    if first.get("type") == "missing":
        return InvalidInput(f"you must provide a {param} parameter", {"param": param})
    return InvalidInput(f"{param or 'body'}: {first.get('msg', 'invalid')}", {"param": param})


class OpenAIRoute(APIRoute):
    """A route whose every failure, request validation included, answers in OpenAI's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as error:
                if isinstance(error, ParleyError):  # others are logged by as_parley_error
                    log_if_server_side(error, f"{request.method} {request.url.path}")
                return openai_error_response(as_parley_error(error, request))

        return answer
