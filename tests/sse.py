"""Reading Parley's SSE routes in tests, with httpx-sse (a real SSE parser over real HTTP)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import EventSource, aconnect_sse

STREAM = {"Accept": "text/event-stream"}


@dataclass
class Event:
    name: str
    data: Any
    id: str
    at: float  # time.monotonic() when it arrived

    @property
    def position(self) -> int:
        return int(self.id)


async def stream_post(
    http: httpx.AsyncClient, url: str, body: dict[str, Any], **headers: str
) -> list[Event]:
    """POST with `Accept: text/event-stream`; every event until the stream ends."""
    async with aconnect_sse(http, "POST", url, json=body, headers={**STREAM, **headers}) as source:
        assert source.response.status_code == 200, await source.response.aread()
        assert source.response.headers["content-type"].startswith("text/event-stream")
        return [event async for event in _events(source)]


@asynccontextmanager
async def open_stream(
    http: httpx.AsyncClient, url: str, **headers: str
) -> AsyncIterator[AsyncIterator[Event]]:
    """GET an SSE route; once it answers 200, its events as they arrive."""
    async with aconnect_sse(http, "GET", url, headers={**STREAM, **headers}) as source:
        assert source.response.status_code == 200, await source.response.aread()

        async with aclosing(_events(source)) as events:
            yield events


async def follow(http: httpx.AsyncClient, url: str, until: str, **headers: str) -> list[Event]:
    """GET an SSE route; every event up to and including the first named `until`."""
    events: list[Event] = []
    async with open_stream(http, url, **headers) as arriving:
        async for event in arriving:
            events.append(event)
            if event.name == until:
                break
    return events


async def _events(source: EventSource) -> AsyncGenerator[Event]:
    """The events a browser dispatches. httpx-sse 0.4 also yields one with no data for the
    blank line ending a keep-alive comment (`: ping`, every 15 s) once an `id:` was seen; the
    SSE spec dispatches no event with an empty data buffer, so neither does this."""
    async for sse in source.aiter_sse():
        if sse.data:
            yield Event(sse.event, json.loads(sse.data), sse.id, time.monotonic())


def named(events: list[Event], name: str) -> list[Event]:
    return [event for event in events if event.name == name]


def text_of(events: list[Event], message_index: int = 0) -> str:
    """The text the deltas of one message spell, honouring `discard`."""
    text = ""
    for event in events:
        if event.data.get("message_index") != message_index:
            continue
        if event.name == "message.delta":
            text += event.data["delta"]
        elif event.name == "discard":
            text = ""
    return text
