"""A webhook receiver on loopback that verifies Parley's signatures, like a customer's would.

`fail_first[event_id] = n` makes it answer 503 to the first n deliveries of that event.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from src.tools.signing import verify


@dataclass
class Delivery:
    event: str
    idempotency_key: str
    signed: bool
    body: dict[str, Any]
    status: int


@dataclass
class WebhookReceiver:
    secret: str
    deliveries: list[Delivery] = field(default_factory=list)
    fail_first: dict[str, int] = field(default_factory=dict)
    _seen: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.app = Starlette(routes=[Route("/hooks", self._receive, methods=["POST"])])

    def accepted(self, session_id: str, event: str | None = None) -> list[Delivery]:
        return [
            d
            for d in self.deliveries
            if d.status == 200
            and d.body["session_id"] == session_id
            and (event is None or d.event == event)
        ]

    def attempts(self, session_id: str, event: str) -> list[Delivery]:
        return [
            d for d in self.deliveries if d.body["session_id"] == session_id and d.event == event
        ]

    async def _receive(self, request: Request) -> JSONResponse:
        raw = await request.body()
        headers = {key.title(): value for key, value in request.headers.items()}
        signed = verify(self.secret, headers, raw)
        body = json.loads(raw)
        key = request.headers.get("idempotency-key", "")
        self._seen[key] += 1
        status = 200 if signed else 401
        if signed and self._seen[key] <= self.fail_first.get(body["session_id"], 0):
            status = 503
        self.deliveries.append(
            Delivery(request.headers.get("x-parley-event", ""), key, signed, body, status)
        )
        return JSONResponse({"ok": status == 200}, status_code=status)
