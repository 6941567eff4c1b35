"""One JSON error shape for every failure: `{"error": {"code", "message", "details"}}`, or the
envelope of the compatibility face a path belongs to (OSVI's `{"success": false, "errors"}`,
Vapi's `{"message", "error", "statusCode"}`, and OpenAI's for what the router itself answers
under /api/v1/openai: the face's routes answer their own errors, src/api/openai_errors.py)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from src.api.openai_errors import as_parley_error, is_openai_path, openai_error_response
from src.api.outages import DATABASE_UNREACHABLE, DATABASE_UNREACHABLE_MESSAGE
from src.compat.vapi.errors import under_vapi, vapi_error
from src.errors import ParleyError, log_if_server_side

log = logging.getLogger(__name__)

OSVI_PREFIX = "/compat/osvi"


def error_response(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details}}
    return JSONResponse(status_code=status, content=body)


def is_osvi_path(path: str) -> bool:
    return path == OSVI_PREFIX or path.startswith(OSVI_PREFIX + "/")


def osvi_failure(status: int, errors: list[str]) -> JSONResponse:
    return JSONResponse(status_code=status, content={"success": False, "errors": errors})


def error_response_at(
    path: str, status: int, code: str, message: str, details: Any = None
) -> JSONResponse:
    """The error in the shape the route at `path` speaks: OSVI's envelope under
    /compat/osvi, Vapi's `{"message", "error", "statusCode"}` under /compat/vapi, Parley's
    own everywhere else."""
    if is_osvi_path(path):
        return osvi_failure(status, [message])
    if under_vapi(path):
        return vapi_error(status, message)
    return error_response(status, code, message, details)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ParleyError)
    async def domain_error(request: Request, error: ParleyError) -> JSONResponse:
        log_if_server_side(error, f"{request.method} {request.url.path}")
        return error_response_at(
            request.scope["path"], error.status_code, error.code, error.message, error.details
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        path = request.scope["path"]
        not_json = next((p for p in error.errors() if p.get("type") == "json_invalid"), None)
        if not_json is not None:
            return _not_json(path, not_json, error.body)
        problems = [
            {
                "field": ".".join(str(part) for part in problem.get("loc", ())),
                "problem": str(problem.get("msg", "")),
            }
            for problem in error.errors()
        ]
        if is_osvi_path(path):
            # OSVI's field names as its clients send them: `agent_uuid`, not `body.agent_uuid`.
            return osvi_failure(
                422,
                [
                    f"{_osvi_field(p['field'])}: {p['problem'].removeprefix('Value error, ')}"
                    for p in problems
                ],
            )
        summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems[:5])
        return error_response(422, "invalid_input", f"invalid request: {summary}", problems)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        if is_openai_path(request.scope["path"]):
            # No route of the face took the request (a method or a path its catch-all does
            # not match, a newline in the path say): still OpenAI's shape.
            return openai_error_response(as_parley_error(error, request))
        codes = {
            401: "unauthorized",
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
        }
        return error_response_at(
            request.scope["path"],
            error.status_code,
            codes.get(error.status_code, "http_error"),
            str(error.detail),
        )

    async def database_unreachable(request: Request, error: Exception) -> JSONResponse:
        # A dependency outage, not a fault of the request or of the server: retry it.
        log.warning(
            "database unreachable on %s %s: %s",
            request.method,
            request.url.path,
            type(error).__name__,
        )
        return error_response_at(
            request.scope["path"], 503, "unavailable", DATABASE_UNREACHABLE_MESSAGE
        )

    for unreachable in DATABASE_UNREACHABLE:
        app.add_exception_handler(unreachable, database_unreachable)

    @app.exception_handler(Exception)
    async def server_fault(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response_at(
            request.scope["path"], 500, "internal_error", "internal server error"
        )


def _osvi_field(field: str) -> str:
    where, _, name = field.partition(".")
    return name if where in {"body", "query", "path"} and name else field


def _not_json(path: str, problem: dict[str, Any], document: Any) -> JSONResponse:
    """Where the body stops being JSON, as a line and column (FastAPI gives a character
    offset and the decoder's reason)."""
    location = problem.get("loc", ())
    offset = location[1] if len(location) > 1 and isinstance(location[1], int) else 0
    text = document if isinstance(document, str) else ""
    line = text.count("\n", 0, offset) + 1
    column = offset - text.rfind("\n", 0, offset)
    reason = str((problem.get("ctx") or {}).get("error", "invalid JSON"))
    message = f"the body is not valid JSON: {reason} at line {line}, column {column}"
    details = [{"field": "body", "problem": reason, "line": line, "column": column}]
    return error_response_at(path, 422, "invalid_input", message, details)
