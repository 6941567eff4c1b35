"""Writes vapi-openapi.components.json: the schemas of Vapi's published OpenAPI document that
the Vapi face's answers are checked against, with every schema they reference (the whole
document is 3 MB). Run: python tests/vendor/extract_vapi_components.py <vapi-openapi.json>"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOTS = [
    "Session",
    "CreateSessionDTO",
    "UpdateSessionDTO",
    "Chat",
    "CreateChatDTO",
    "ChatPaginatedResponse",
    "SessionPaginatedResponse",
    "CreateChatStreamResponse",
    "OpenAIResponsesRequest",
    "ResponseObject",
    "ResponseTextDeltaEvent",
    "ResponseTextDoneEvent",
    "ResponseCompletedEvent",
    "ResponseErrorEvent",
]
PREFIX = "#/components/schemas/"


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(PREFIX):
                yield value.removeprefix(PREFIX)
            else:
                yield from references(value)
    elif isinstance(node, list):
        for value in node:
            yield from references(value)


def extract(document: dict[str, Any]) -> dict[str, Any]:
    schemas = document["components"]["schemas"]
    kept: dict[str, Any] = {}
    pending = list(ROOTS)
    while pending:
        name = pending.pop()
        if name not in kept:
            kept[name] = schemas[name]
            pending += references(schemas[name])
    return {
        "openapi": document["openapi"],
        "info": document["info"],
        "components": {"schemas": dict(sorted(kept.items()))},
    }


if __name__ == "__main__":
    source = json.loads(Path(sys.argv[1]).read_text())
    target = Path(__file__).with_name("vapi-openapi.components.json")
    target.write_text(json.dumps(extract(source), separators=(",", ":")) + "\n")
