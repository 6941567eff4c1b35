"""An OpenAPI document of what `/openapi.json` leaves out, for the fuzz case to cover too:

- the catch-all routes of the OpenAI and Vapi faces (`include_in_schema=False`): any other path
  under `/api/v1/openai` or `/compat/vapi`, answered 404 in the vendor's error shape;
- Twilio's webhooks with the form Twilio posts (the served document lists them without a body:
  the routes read the form themselves), so that a fuzzed form signed by the hooks with the
  number's auth token gets past the signature check (tests/chaos/fuzz_hooks.py);
- the pages and scripts: `/`, `/console` and its assets, `/widget.js`, `/demo`, `/metrics`,
  the API docs (`/docs`, `/redoc`, `/openapi.json`) and the docs' static files.
"""

from __future__ import annotations

from typing import Any

from src.sms.delivery import STATUS_RANK

FACE_PREFIXES = ("/api/v1/openai", "/compat/vapi")
CATCH_ALL_METHODS = ("get", "post", "put", "patch", "delete")
PAGES = (
    "/",
    "/console",
    "/console.js",
    "/console.css",
    "/widget.js",
    "/demo",
    "/metrics",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/openapi.json",
)
STATIC_DOCS_FILES = "/static-offline-docs/{file}"

# What Twilio posts to a number's "A message comes in" webhook and to a StatusCallback.
_TEXT_FIELDS = ("MessageSid", "AccountSid", "From", "To", "Body", "NumMedia")
_MEDIA_FIELDS = ("MediaUrl0", "MediaContentType0")
_STATUS_FIELDS = ("MessageSid", "AccountSid", "From", "To", "ErrorCode", "ErrorMessage")


def _form(fields: tuple[str, ...], required: list[str], **extra: Any) -> dict[str, Any]:
    properties: dict[str, Any] = {name: {"type": "string"} for name in fields}
    properties.update({name: {"type": "string", "minLength": 1} for name in required})
    properties.update(extra)
    return {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "properties": properties,
                    "required": required,
                    "additionalProperties": False,
                }
            }
        },
    }


def _answers(*statuses: int) -> dict[str, Any]:
    return {str(status): {"description": "answered"} for status in statuses}


def _catch_all(prefix: str) -> dict[str, Any]:
    path_parameter = {
        "name": "path",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
    }
    operations: dict[str, Any] = {}
    for method in CATCH_ALL_METHODS:
        operation: dict[str, Any] = {
            "operationId": f"unknown_{prefix.strip('/').replace('/', '_')}_{method}",
            "parameters": [path_parameter],
            "responses": _answers(200, 401, 404, 422),
        }
        if method in ("post", "put", "patch"):
            operation["requestBody"] = {
                "required": False,
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        operations[method] = operation
    return operations


def _page(path: str) -> dict[str, Any]:
    return {"get": {"operationId": f"page_{path}", "responses": _answers(200, 404)}}


def unlisted_document() -> dict[str, Any]:
    paths: dict[str, Any] = {f"{prefix}/{{path}}": _catch_all(prefix) for prefix in FACE_PREFIXES}
    paths["/channels/twilio/sms"] = {
        "post": {
            "operationId": "twilio_text_in",
            "requestBody": _form(
                _TEXT_FIELDS + _MEDIA_FIELDS,
                ["MessageSid", "From", "To", "Body"],
                NumMedia={"type": "string", "pattern": "^[0-9]{1,2}$"},
            ),
            "responses": _answers(200, 403, 404, 422),
        }
    }
    paths["/channels/twilio/status"] = {
        "post": {
            "operationId": "twilio_status_callback",
            "requestBody": _form(
                _STATUS_FIELDS,
                ["MessageSid", "MessageStatus", "From"],
                MessageStatus={"type": "string", "enum": list(STATUS_RANK)},
            ),
            "responses": _answers(200, 403, 404, 422),
        }
    }
    paths.update({path: _page(path) for path in PAGES})
    paths[STATIC_DOCS_FILES] = {
        "get": {
            "operationId": "static_docs_file",
            "parameters": [
                {"name": "file", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": _answers(200, 404),
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Parley: routes /openapi.json leaves out", "version": "1"},
        "paths": paths,
    }


def operations_of(document: dict[str, Any]) -> set[str]:
    """ "METHOD /path" of every operation of an OpenAPI document."""
    return {
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        for method in operations
    }
