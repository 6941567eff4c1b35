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
  maybe-<name>    calls the tool <name> only for a user message that is a JSON object (its
                  arguments); echoes other messages
  hold-<tag>      like echo, but the first request of each conversation state is held until
                  `release_held(tag)`; `wait_held(tag, n)` waits until n are held (the chaos
                  suite kills a worker while they are)
  burst-<a>-<b>-<c>-<ms>
                  per conversation state: a answers 429 (Retry-After: 1), then b answers 500,
                  then c answers that take <ms> ms (past the client's timeout), then like echo;
                  a last user message containing "[400]" is answered 400 every time
  gpt-<...>       like echo, answered under a dated name (<model>-2024-07-18), as OpenAI does
  served-<name>   like echo, answered under the model name <name>
  stream-<ms>     like echo; streamed (when asked to), <ms> between words
  midhold-<tag>   like echo; the first streamed answer of each conversation state sends half
                  its words, then is held (counted by `wait_held(tag, n)`) until
                  `release_held(tag)`; later answers stream whole (the chaos suite kills a
                  worker while the text is flowing)
  cut-<n>         like echo, but the first n streamed answers of a conversation state stop
                  halfway: the connection drops after half the words (the call is retried)

Every model streams when the request asks (`stream: true`): the same answer, as chunks.

Post-conversation analysis requests (the transcript as the user message) get, from any model:
a summary "summary of <n> lines"; in JSON mode, a value generated from the JSON schema in the
instruction. Model `invalid-json-<n>` answers the first n JSON-mode requests of a conversation
with an invalid value; model `hang-analysis` holds its first summary request until `release`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from src.llm.types import TRANSCRIPT_HEADER


class FakeLLM:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.release = asyncio.Event()
        self._attempts: Counter[str] = Counter()
        # hold-<tag>: requests held per tag, the gate that releases them, and a condition
        # that wakes whoever waits for them to arrive.
        self._held: Counter[str] = Counter()
        self._gates: dict[str, asyncio.Event] = {}
        self._arrived = asyncio.Condition()
        self.failures: Counter[str] = Counter()  # burst answers given, by kind
        self.app = Starlette(
            routes=[Route("/v1/chat/completions", self._complete, methods=["POST"])]
        )

    def requests_for(self, marker: str) -> list[dict[str, Any]]:
        """Requests whose messages mention `marker` anywhere."""
        return [r for r in self.requests if marker in json.dumps(r["messages"])]

    async def wait_held(self, tag: str, count: int, within: float = 120) -> None:
        """Until `count` requests of model hold-<tag> are being held."""
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: self._held[tag] >= count), within)

    def release_held(self, tag: str) -> None:
        self._gates.setdefault(tag, asyncio.Event()).set()
        self._gates[tag] = asyncio.Event()  # later first requests are held again
        self._held[tag] = 0

    async def _complete(self, request: Request) -> Response:
        body = await request.json()
        answer = await self._answer(request)
        if not body.get("stream") or answer.status_code != 200:
            return answer
        model: str = body["model"]
        gap = int(model.split("-")[1]) / 1000 if model.startswith("stream-") else 0.0
        cut = False
        if model.startswith("cut-"):
            key = hashlib.sha256(json.dumps(["cut", body["messages"]]).encode()).hexdigest()
            self._attempts[key] += 1
            cut = self._attempts[key] <= int(model.split("-")[1])
        halfway = None
        if model.startswith("midhold-") and self._first("midhold", body["messages"]):
            halfway = functools.partial(self._hold, model[8:])
        return StreamingResponse(
            _chunks(json.loads(bytes(answer.body)), gap, cut, halfway),
            media_type="text/event-stream",
        )

    async def _answer(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.requests.append(body)
        model: str = body["model"]
        messages: list[dict[str, Any]] = body["messages"]
        tools = [t["function"]["name"] for t in body.get("tools", [])]
        if model.startswith("hold-"):
            await self._hold_first(model[5:], messages)
        if model.startswith("burst-"):
            failure = await self._burst(model, messages)
            if failure is not None:
                return failure
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
        if str(messages[1].get("content") or "").startswith(TRANSCRIPT_HEADER):
            return await self._analyse(model, messages, "response_format" in body)
        if model == "always-tools" and tools:
            return _completion(model, None, [("lookup", '{"q": "x"}', len(messages))])
        if model.startswith("maybe-") and last["role"] == "user" and model[6:] in tools:
            # Calls its tool only for a message that is a JSON object (its arguments).
            if _json_object(last) != "{}":
                return _completion(model, None, [(model[6:], _json_object(last), len(messages))])
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

    async def _hold_first(self, tag: str, messages: list[dict[str, Any]]) -> None:
        if self._first("hold", messages):
            await self._hold(tag)

    def _first(self, mode: str, messages: list[dict[str, Any]]) -> bool:
        """Whether this is the first request of a mode for this conversation state."""
        key = hashlib.sha256(json.dumps([mode, messages]).encode()).hexdigest()
        self._attempts[key] += 1
        return self._attempts[key] == 1

    async def _hold(self, tag: str) -> None:
        """Counted as held for `wait_held`, until `release_held(tag)`."""
        gate = self._gates.setdefault(tag, asyncio.Event())
        async with self._arrived:
            self._held[tag] += 1
            self._arrived.notify_all()
        await asyncio.wait_for(gate.wait(), timeout=300)

    async def _burst(self, model: str, messages: list[dict[str, Any]]) -> JSONResponse | None:
        limited, broken, slow, slow_ms = (int(part) for part in model.split("-")[1:5])
        if "[400]" in str(messages[-1].get("content") or ""):
            self.failures["400"] += 1
            return JSONResponse(
                {"error": {"message": "the request is malformed", "type": "invalid_request"}},
                status_code=400,
            )
        key = hashlib.sha256(json.dumps([model, messages]).encode()).hexdigest()
        self._attempts[key] += 1
        attempt = self._attempts[key]
        if attempt <= limited:
            self.failures["429"] += 1
            return JSONResponse(
                {"error": {"message": "slow down"}}, status_code=429, headers={"Retry-After": "1"}
            )
        if attempt <= limited + broken:
            self.failures["500"] += 1
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=500)
        if attempt <= limited + broken + slow:
            self.failures["timeout"] += 1
            await asyncio.sleep(slow_ms / 1000)
        return None

    async def _analyse(
        self, model: str, messages: list[dict[str, Any]], json_mode: bool
    ) -> JSONResponse:
        key = hashlib.sha256(json.dumps([model, *messages[:2]]).encode()).hexdigest()
        self._attempts[key] += 1
        if not json_mode:
            if model == "hang-analysis" and self._attempts[key] == 1:
                await asyncio.wait_for(self.release.wait(), timeout=120)
            lines = len(str(messages[1]["content"]).splitlines()) - 1
            return _completion(model, f"summary of {lines} lines")
        schema = json.loads(str(messages[0]["content"]).split("\n", 1)[1])
        if model.startswith("invalid-json-") and self._attempts[key] <= int(model.split("-")[2]):
            return _completion(model, '{"not": "what you asked"}')
        return _completion(model, json.dumps(_example(schema)))


def _example(schema: dict[str, Any]) -> Any:
    """A value valid against simple JSON schemas."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {name: _example(sub) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return []
    if kind == "boolean":
        return True
    if kind in ("integer", "number"):
        return 1
    return "text"


def _json_object(message: dict[str, Any]) -> str:
    try:
        parsed = json.loads(str(message.get("content") or ""))
    except json.JSONDecodeError:
        return "{}"
    return json.dumps(parsed) if isinstance(parsed, dict) else "{}"


def _served_name(model: str) -> str:
    if model.startswith("gpt-"):
        return f"{model}-2024-07-18"
    return model.removeprefix("served-")


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
            "model": _served_name(model),
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


async def _chunks(
    completion: dict[str, Any],
    gap: float,
    cut: bool = False,
    halfway: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[str]:
    """A completion as OpenAI streams it: the text word by word (`gap` seconds apart), tool
    calls in two pieces each, then the finish reason, the usage, and [DONE]. With `cut`, the
    connection drops after half the words; with `halfway`, the stream waits for it there."""

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
        body = {
            "id": completion["id"],
            "object": "chat.completion.chunk",
            "created": completion["created"],
            "model": completion["model"],
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(body)}\n\n"

    def delta(content: dict[str, Any], finish: str | None = None) -> str:
        return chunk([{"index": 0, "delta": content, "finish_reason": finish}])

    choice = completion["choices"][0]
    message = choice["message"]
    yield delta({"role": "assistant", "content": ""})
    words = re.findall(r"\s*\S+\s*", message.get("content") or "")
    for number, word in enumerate(words):
        if cut and number == len(words) // 2:
            await asyncio.sleep(0.2)  # the first half reaches the stream before the drop
            raise ConnectionResetError("the fake model dropped the connection")
        if halfway is not None and number == len(words) // 2:
            await halfway()
        if number and gap:
            await asyncio.sleep(gap)
        yield delta({"content": word})
    for index, call in enumerate(message.get("tool_calls") or []):
        head = {"index": index, "id": call["id"], "type": "function"}
        yield delta({"tool_calls": [{**head, "function": {"name": call["function"]["name"]}}]})
        arguments = {"arguments": call["function"]["arguments"]}
        yield delta({"tool_calls": [{"index": index, "function": arguments}]})
    yield delta({}, choice["finish_reason"])
    yield chunk([], usage=completion["usage"])
    yield "data: [DONE]\n\n"
