"""A webhook-tool endpoint on loopback that records what it receives.

Paths:
  /echo            200 with the arguments it got back as JSON
  /flaky/<n>       500 to the first n calls with one Idempotency-Key, then 200
  /reject          404
  /big/<n>         200 with n characters
  /hang-first      the first call with one Idempotency-Key hangs until `release` is set;
                   later calls answer 200
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

    def __post_init__(self) -> None:
        self.app = Starlette(
            routes=[Route("/{path:path}", self._handle, methods=["GET", "POST", "PUT", "DELETE"])]
        )

    def calls_to(self, path: str) -> list[ReceivedCall]:
        return [call for call in self.calls if call.path == path]

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
        if parts[0] == "echo":
            received = call.json() if call.body else call.query
            return JSONResponse({"received": received})
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
