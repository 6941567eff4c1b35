"""An OpenAI-compatible Chat Completions server on loopback, driven by the model name.

The agent under test picks a behaviour through its model name, so concurrent tests never
share mutable state:
  echo            replies "echo: <last user text>"; "please finish" makes it call
                  finishTheConversation; after a tool result it says goodbye
  slow-<ms>       like echo after a delay
  reject          answers 400 (a caller error: not retried)
  flaky-<n>       answers 500 to the first n requests of a conversation, then like echo
  limited-<n>     answers 429 (Retry-After: 1) to the first n requests, then like echo
  always-tools    calls an unknown `lookup` tool whenever tools are offered
  tool-<name>     calls the tool <name> with the user's message as its JSON arguments (or
                  {} if the message is not a JSON object), then replies "tool said: <result>"
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


class FakeLLM:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._attempts: Counter[str] = Counter()
        self.app = Starlette(
            routes=[Route("/v1/chat/completions", self._complete, methods=["POST"])]
        )

    def requests_for(self, marker: str) -> list[dict[str, Any]]:
        """Requests whose messages mention `marker` anywhere."""
        return [r for r in self.requests if marker in json.dumps(r["messages"])]

    async def _complete(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.requests.append(body)
        model: str = body["model"]
        messages: list[dict[str, Any]] = body["messages"]
        tools = [t["function"]["name"] for t in body.get("tools", [])]
        if model == "reject":
            return JSONResponse(
                {"error": {"message": "model 'reject' does not exist", "type": "invalid_request"}},
                status_code=400,
            )
        if model.startswith(("flaky-", "limited-")):
            key = hashlib.sha256(json.dumps(messages).encode()).hexdigest()
            self._attempts[key] += 1
            if self._attempts[key] <= int(model.split("-", 1)[1]):
                if model.startswith("limited-"):
                    return JSONResponse(
                        {"error": {"message": "slow down"}},
                        status_code=429,
                        headers={"Retry-After": "1"},
                    )
                return JSONResponse({"error": {"message": "overloaded"}}, status_code=500)
        if model.startswith("slow-"):
            await asyncio.sleep(int(model.split("-", 1)[1]) / 1000)
        last = messages[-1]
        if model == "always-tools" and tools:
            return _completion(model, None, [("lookup", '{"q": "x"}', len(messages))])
        if model.startswith("tool-") and last["role"] == "tool":
            return _completion(model, f"tool said: {last['content']}")
        if model.startswith("tool-") and model[5:] in tools:
            return _completion(model, None, [(model[5:], _json_object(last), len(messages))])
        if last["role"] == "tool":
            return _completion(model, "Goodbye from the fake model.")
        text = str(last.get("content") or "")
        if "please finish" in text and "finishTheConversation" in tools:
            return _completion(model, None, [("finishTheConversation", "{}", len(messages))])
        return _completion(model, f"echo: {text}")


def _json_object(message: dict[str, Any]) -> str:
    try:
        parsed = json.loads(str(message.get("content") or ""))
    except json.JSONDecodeError:
        return "{}"
    return json.dumps(parsed) if isinstance(parsed, dict) else "{}"


def _completion(
    model: str, content: str | None, calls: list[tuple[str, str, int]] | None = None
) -> JSONResponse:
    tool_calls = [
        {
            "id": f"call_{name}_{n}",
            "type": "function",
            "function": {"name": name, "arguments": args},
        }
        for name, args, n in calls or []
    ]
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return JSONResponse(
        {
            "id": f"chatcmpl-{time.time_ns()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if tool_calls else "stop",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
    )
