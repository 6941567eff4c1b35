"""Vapi's `tool-calls` server message, for webhook tools made from a Vapi assistant's function
tools (`payload: "vapi"`): a tool server written for Vapi gets the request it expects and
answers `{"results": [{"toolCallId", "result" | "error"}]}`, which the model reads."""

from __future__ import annotations

import json
import time
from typing import Any

from src.domain import WebhookTool


def tool_calls_body(tool: WebhookTool, call_id: str, session_id: str, arguments: Any) -> bytes:
    """The `tool-calls` message for one call, in Vapi's shape."""
    call = {
        "id": call_id,
        "type": "function",
        "function": {"name": tool.name, "arguments": json.dumps(arguments)},
    }
    message = {
        "type": "tool-calls",
        "timestamp": int(time.time() * 1000),
        "toolCallList": [call],
        "toolWithToolCallList": [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                },
                "server": {"url": tool.url},
                "toolCall": call,
            }
        ],
        "chat": {"id": session_id},
    }
    return json.dumps({"message": message}, separators=(",", ":")).encode()


def tool_calls_result(text: str, call_id: str) -> str:
    """What the model reads of the server's answer: the call's `result` (or `error`), else
    the answer as it came (a server that answers in its own way is not refused)."""
    try:
        answer = json.loads(text)
    except json.JSONDecodeError:
        return text
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, list):
        return text
    mine = [r for r in results if isinstance(r, dict) and r.get("toolCallId") == call_id]
    found = (
        mine[0]
        if mine
        else (results[0] if len(results) == 1 and isinstance(results[0], dict) else None)
    )
    if found is None:
        return text
    if found.get("error") is not None:
        return f"error: {found['error']}"
    result = found.get("result")
    return result if isinstance(result, str) else json.dumps(result)
