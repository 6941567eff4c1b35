"""A raw ASGI endpoint on loopback that records who reached it and can misbehave.

Paths (any method):
  /endless/<tag>        200 with an endless body (1 GiB, made lazily in 64 KiB chunks);
                        `sent[tag]` counts the bytes handed to the server before the client
                        went away, `finished(tag)` waits until it stopped sending
  /endless-json/<tag>   the same with `Content-Type: application/json`
  /trickle/<tag>        200 with a body that never ends, one byte every 0.2 s (until the
                        client goes away; `finished(tag)` then returns)
  /redirect?to=<url>    302 to the URL
  anything else         200 "ok"
`requests` holds (method, path, Host header) of every request, in order.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

ENDLESS_BYTES = 1024**3
CHUNK = b"y" * 65536

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class RecordingServer:
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    sent: Counter[str] = field(default_factory=Counter)
    _stopped: dict[str, asyncio.Event] = field(default_factory=dict)

    async def finished(self, tag: str, within: float = 60) -> int:
        """The bytes sent for `tag`, once the endless body stopped (the client went away)."""
        await asyncio.wait_for(self._stopped.setdefault(tag, asyncio.Event()).wait(), within)
        return self.sent[tag]

    @property
    def app(self) -> RecordingServer:
        return self  # an ASGI app itself (uvicorn takes a bound method for ASGI 2)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        path: str = scope["path"]
        self.requests.append((scope["method"], path, headers.get("host", "")))
        while (await receive()).get("more_body"):
            pass  # the request body is not needed
        if path.startswith(("/endless/", "/endless-json/")):
            kind = "application/json" if path.startswith("/endless-json/") else "text/plain"
            await self._endless(path.rsplit("/", 1)[1], kind, receive, send)
            return
        if path.startswith("/trickle/"):
            await self._endless(path.rsplit("/", 1)[1], "text/plain", receive, send, b"y", 0.2)
            return
        if path == "/redirect":
            target = parse_qs(scope["query_string"].decode())["to"][0]
            await _answer(send, 302, b"moved", [(b"location", target.encode())])
            return
        await _answer(send, 200, b"ok", [])

    async def _endless(
        self, tag: str, kind: str, receive: Receive, send: Send,
        chunk: bytes = CHUNK, pause: float = 0.0,
    ) -> None:  # fmt: skip
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        try:
            await send(
                {"type": "http.response.start", "status": 200,
                 "headers": [(b"content-type", kind.encode())]}
            )  # fmt: skip
            while self.sent[tag] < ENDLESS_BYTES and not gone.is_set():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                self.sent[tag] += len(chunk)
                if pause:
                    await asyncio.sleep(pause)
            if not gone.is_set():
                await send({"type": "http.response.body", "body": b""})
        except OSError:
            pass  # the client went away mid-write
        finally:
            watcher.cancel()
            self._stopped.setdefault(tag, asyncio.Event()).set()


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
