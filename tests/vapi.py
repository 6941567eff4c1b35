"""Checking the Vapi face's answers against Vapi's published OpenAPI schemas
(tests/vendor/vapi-openapi.components.json), `$ref`s resolved against that document."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DOCUMENT = Path(__file__).parent / "vendor" / "vapi-openapi.components.json"
_URI = "urn:vapi-openapi"


def _nullable_as_json_schema(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` as JSON Schema's `null` type."""
    if isinstance(node, list):
        return [_nullable_as_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _nullable_as_json_schema(value) for key, value in node.items()}
    if converted.pop("nullable", False) is True and isinstance(converted.get("type"), str):
        converted["type"] = [converted["type"], "null"]
    return converted


@cache
def _registry() -> Registry[Any]:
    document = _nullable_as_json_schema(json.loads(DOCUMENT.read_text()))
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(_URI, resource)
    return registry


def schema_problems(component: str, value: Any) -> list[str]:
    validator = Draft202012Validator(
        {"$ref": f"{_URI}#/components/schemas/{component}"}, registry=_registry()
    )
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message[:300]}"
        for error in validator.iter_errors(value)
    ]


def assert_vapi(component: str, value: Any) -> Any:
    """`value` is a valid `component` of Vapi's document; returns it."""
    problems = schema_problems(component, value)
    assert not problems, f"not a Vapi {component}:\n" + "\n".join(problems)
    return value


def assert_vapi_error(response: Any, status: int, mentions: str = "") -> dict[str, Any]:
    """A refusal in Vapi's (NestJS's) error shape."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"message", "error", "statusCode"}, body
    assert body["statusCode"] == status
    assert mentions in body["message"], body
    return body
