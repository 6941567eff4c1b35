"""A customer's webhook endpoint on loopback. It checks every delivery against the documented
contract with hmac/hashlib of its own, never Parley's signing code, so a signature Parley
computes the wrong way fails here even where Parley's own `verify()` would agree with it.

The contract: `X-Parley-Timestamp: <unix seconds>`, `X-Parley-Signature: v1=<hex
HMAC-SHA256(secret, "<timestamp>.<raw body>")>` (several comma-separated `v1=` values while a
secret rotates), `X-Parley-Event: <the body's event>`, and an `Idempotency-Key` that stays the
same for every delivery of one event. A bad signature is answered 401, any other breach 400.

Scripting, per session id:
  answers[session_id] = [Answer(429, {"Retry-After": "2"}), Answer(503)]
                  the first valid deliveries of that session get these answers, later ones 200
  hold.add(session_id)
                  its first valid delivery is held until the client goes away (recorded with
                  status 499, like a proxy's "client closed request") or `release(session_id)`
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

TOLERANCE_SECONDS = 300
CLIENT_WENT_AWAY = 499
_SIGNATURE_VALUE = re.compile(r"v1=([0-9a-f]{64})")


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Delivery:
    event: str
    idempotency_key: str
    signed: bool
    body: dict[str, Any]
    status: int
    problems: list[str]
    received: float  # time.monotonic() on arrival


@dataclass
class WebhookReceiver:
    secret: str
    deliveries: list[Delivery] = field(default_factory=list)
    answers: dict[str, list[Answer]] = field(default_factory=dict)
    hold: set[str] = field(default_factory=set)
    _valid: Counter[str] = field(default_factory=Counter)
    _keys: dict[tuple[Any, ...], str] = field(default_factory=dict)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _releases: dict[str, asyncio.Event] = field(default_factory=dict)
    _held: set[str] = field(default_factory=set)

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

    async def wait_accepted(
        self, session_id: str, event: str, count: int = 1, within: float = 60
    ) -> list[Delivery]:
        """Until `count` deliveries of `event` were accepted for the session."""
        await self.wait_for(lambda: len(self.accepted(session_id, event)) >= count, within)
        return self.accepted(session_id, event)

    async def wait_held(self, session_id: str, within: float = 60) -> None:
        """Until the session's first delivery arrived and is being held."""
        await self.wait_for(lambda: session_id in self._held, within)

    async def wait_for(self, condition: Callable[[], bool], within: float) -> None:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(condition), within)
            except TimeoutError:
                last = self.deliveries[-3:]
                raise AssertionError(f"not within {within} s; last deliveries: {last}") from None

    def release(self, session_id: str) -> None:
        self._releases.setdefault(session_id, asyncio.Event()).set()

    async def _receive(self, request: Request) -> JSONResponse:
        arrived = time.monotonic()
        raw = await request.body()
        body = json.loads(raw)
        event = request.headers.get("x-parley-event", "")
        key = request.headers.get("idempotency-key", "")
        signed = self._signed(request.headers.get("x-parley-timestamp"),
                              request.headers.get("x-parley-signature"), raw)  # fmt: skip
        problems = [] if signed else ["signature"]
        if event != body.get("event"):
            problems.append(f"X-Parley-Event {event!r} is not the body's {body.get('event')!r}")
        if not key:
            problems.append("no Idempotency-Key")
        # One event of a session: its type, and its seq for per-message events (with the
        # text's part and status for a `message.delivery`).
        data = body["data"]
        identity = (
            body["session_id"],
            body.get("event", ""),
            data.get("seq"),
            *((data.get("part"), data.get("status")) if event == "message.delivery" else ()),
        )
        if self._keys.setdefault(identity, key) != key:
            problems.append(f"Idempotency-Key changed from {self._keys[identity]!r} to {key!r}")
        answer = Answer(200 if not problems else 401 if not signed else 400)
        if not problems:
            session_id = body["session_id"]
            self._valid[session_id] += 1
            script = self.answers.get(session_id, [])
            if self._valid[session_id] <= len(script):
                answer = script[self._valid[session_id] - 1]
            if session_id in self.hold and self._valid[session_id] == 1:
                if not await self._held_until_released(request, session_id):
                    answer = Answer(CLIENT_WENT_AWAY)
        await self._record(Delivery(event, key, signed, body, answer.status, problems, arrived))
        return JSONResponse(
            {"ok": answer.status == 200, "problems": problems},
            status_code=answer.status,
            headers=answer.headers,
        )

    def _signed(self, timestamp: str | None, signature: str | None, raw: bytes) -> bool:
        if timestamp is None or not timestamp.isdigit() or signature is None:
            return False
        if abs(time.time() - int(timestamp)) > TOLERANCE_SECONDS:
            return False
        expected = hmac.new(
            self.secret.encode(), timestamp.encode() + b"." + raw, hashlib.sha256
        ).hexdigest()
        offered = [_SIGNATURE_VALUE.fullmatch(part.strip()) for part in signature.split(",")]
        if not offered or not all(offered):
            return False  # every value must be `v1=<64 hex digits>`
        return any(hmac.compare_digest(expected, m.group(1)) for m in offered if m)

    async def _held_until_released(self, request: Request, session_id: str) -> bool:
        """False when the client went away first (its connection closed)."""
        released = self._releases.setdefault(session_id, asyncio.Event())
        async with self._changed:
            self._held.add(session_id)
            self._changed.notify_all()
        gone = asyncio.create_task(_disconnected(request))
        waiting = asyncio.create_task(released.wait())
        done, pending = await asyncio.wait({gone, waiting}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return waiting in done

    async def _record(self, delivery: Delivery) -> None:
        async with self._changed:
            self.deliveries.append(delivery)
            self._changed.notify_all()


async def _disconnected(request: Request) -> None:
    # The body is read, so the next ASGI message is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass
