"""A webhook-tool endpoint on loopback that records what it receives.

Paths:
  /echo            200 with the arguments it got back as JSON
  /flaky/<n>       500 to the first n calls with one Idempotency-Key, then 200
  /reject          404
  /big/<n>         200 with n characters
  /hang-first      the first call with one Idempotency-Key hangs until `release` is set;
                   later calls answer 200
  /effect/<tag>    an idempotent side effect: the first call with an Idempotency-Key applies
                   it (a new effect number) and answers {"effect": n}; a repeated key gets the
                   stored answer and applies nothing. `effects(tag)` counts applied effects by
                   key, `deliveries(tag)` the calls received by key
  /effect-hold/<tag>
                   the same, but the first call of each key, once applied, is held until
                   `release_effects(tag)`; `wait_effects_held(tag, n)` waits for n held
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route


@dataclass
class ReceivedCall:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    query: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeToolServer:
    calls: list[ReceivedCall] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    _seen: Counter[str] = field(default_factory=Counter)
    # /effect: applied effects and stored answers by (tag, key); held first calls by tag.
    _applied: dict[tuple[str, str], int] = field(default_factory=dict)
    _effect_count: int = 0
    _effect_held: Counter[str] = field(default_factory=Counter)
    _effect_gates: dict[str, asyncio.Event] = field(default_factory=dict)
    _effect_arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def __post_init__(self) -> None:
        self.app = Starlette(
            routes=[Route("/{path:path}", self._handle, methods=["GET", "POST", "PUT", "DELETE"])]
        )

    def calls_to(self, path: str) -> list[ReceivedCall]:
        return [call for call in self.calls if call.path == path]

    def effects(self, tag: str) -> Counter[str]:
        """Side effects applied per idempotency key (1 each when the endpoint is idempotent)."""
        return Counter(key for (t, key) in self._applied if t == tag)

    def effect_numbers(self, tag: str) -> set[int]:
        return {n for (t, _), n in self._applied.items() if t == tag}

    def deliveries(self, tag: str) -> Counter[str]:
        """Calls received per idempotency key, retries included."""
        return Counter(
            c.headers.get("idempotency-key", "")
            for c in self.calls
            if c.path in (f"/effect/{tag}", f"/effect-hold/{tag}")
        )

    async def wait_effects_held(self, tag: str, count: int, within: float = 120) -> None:
        async with self._effect_arrived:
            await asyncio.wait_for(
                self._effect_arrived.wait_for(lambda: self._effect_held[tag] >= count), within
            )

    def release_effects(self, tag: str) -> None:
        self._effect_gates.setdefault(tag, asyncio.Event()).set()
        self._effect_gates[tag] = asyncio.Event()
        self._effect_held[tag] = 0

    async def _effect(self, tag: str, key: str, hold: bool) -> Response:
        if (tag, key) in self._applied:
            return JSONResponse({"effect": self._applied[(tag, key)]})
        self._effect_count += 1
        number = self._applied[(tag, key)] = self._effect_count
        if hold:
            gate = self._effect_gates.setdefault(tag, asyncio.Event())
            async with self._effect_arrived:
                self._effect_held[tag] += 1
                self._effect_arrived.notify_all()
            await asyncio.wait_for(gate.wait(), timeout=300)
        return JSONResponse({"effect": number})

    async def _handle(self, request: Request) -> Response:
        call = ReceivedCall(
            method=request.method,
            path="/" + request.path_params["path"],
            headers={k.lower(): v for k, v in request.headers.items()},
            body=await request.body(),
            query=dict(request.query_params),
        )
        self.calls.append(call)
        key = call.headers.get("idempotency-key", "")
        self._seen[f"{call.path}:{key}"] += 1
        times_seen = self._seen[f"{call.path}:{key}"]
        parts = call.path.strip("/").split("/")
        if parts[0] in ("effect", "effect-hold") and len(parts) == 2 and key:
            return await self._effect(parts[1], key, hold=parts[0] == "effect-hold")
        if parts[0] == "echo":
            received = call.json() if call.body else call.query
            return JSONResponse({"received": received})
        if parts[0] == "vapi":
            # A tool server written for Vapi: a tool-calls message in, its results out.
            [asked] = call.json()["message"]["toolCallList"]
            found = {"asked": json.loads(asked["function"]["arguments"]), "status": "shipped"}
            return JSONResponse(
                {"results": [{"toolCallId": asked["id"], "name": asked["function"]["name"],
                              "result": json.dumps(found)}]}
            )  # fmt: skip
        if parts[0] == "flaky":
            if times_seen <= int(parts[1]):
                return PlainTextResponse("temporarily broken", status_code=500)
            return JSONResponse({"ok": True, "attempt": times_seen})
        if parts[0] == "reject":
            return PlainTextResponse("no such order", status_code=404)
        if parts[0] == "big":
            return PlainTextResponse("y" * int(parts[1]))
        if parts[0] == "hang-first":
            if times_seen == 1:
                await asyncio.wait_for(self.release.wait(), timeout=120)
            return JSONResponse({"done": True, "attempt": times_seen})
        return PlainTextResponse("unknown path", status_code=404)
