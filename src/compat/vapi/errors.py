"""Vapi's error shape, `{"message", "error", "statusCode"}` (NestJS's, which Vapi's API
returns; Vapi's OpenAPI document describes no error body), for every refusal under
/compat/vapi: the front door's, the routes', and FastAPI's validation of a request."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from src.errors import ParleyError, log_if_server_side

VAPI_PREFIX = "/compat/vapi"


class VapiErrorBody(BaseModel):
    """For the OpenAPI document: the body of every refusal under /compat/vapi."""

    message: str
    error: str
    statusCode: int


VAPI_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": VapiErrorBody, "description": description}
    for status, description in {
        400: "a malformed body or parameter",
        401: "missing or unknown key",
        404: "an unknown id, or another account's",
        422: "a field or value Parley does not map (named in `message`)",
    }.items()
}


class BadRequest(ParleyError):
    """A request Vapi itself would refuse as malformed (NestJS answers these with 400)."""

    status_code = 400
    code = "bad_request"


class Unmapped(ParleyError):
    """A well-formed Vapi field that Parley does not map: refused, never silently ignored."""

    status_code = 422
    code = "unmapped"


def under_vapi(path: str) -> bool:
    return path == VAPI_PREFIX or path.startswith(VAPI_PREFIX + "/")


def vapi_error(status: int, message: str) -> JSONResponse:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    return JSONResponse(
        status_code=status, content={"message": message, "error": reason, "statusCode": status}
    )


def validation_message(error: RequestValidationError) -> str:
    problems = []
    for problem in error.errors()[:5]:
        where = ".".join(str(part) for part in problem.get("loc", ()) if part != "body")
        problems.append(f"{where or 'body'}: {problem.get('msg', '')}")
    return "; ".join(problems) or "invalid request"


class VapiRoute(APIRoute):
    """A route whose every refusal has Vapi's error shape: malformed requests 400 (as Vapi's
    validation answers them), domain errors with their own status (401/404/409/422/...)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_as_vapi(request: Request) -> Response:
            try:
                return await handle(request)
            except RequestValidationError as error:
                return vapi_error(400, validation_message(error))
            except ParleyError as error:
                log_if_server_side(error, f"{request.method} {request.url.path}")
                return vapi_error(error.status_code, error.message)
            except HTTPException as error:
                return vapi_error(error.status_code, str(error.detail))

        return handle_as_vapi
