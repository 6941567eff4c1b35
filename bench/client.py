"""What a benchmark does through Parley's HTTP API, timed: create an agent, open, send."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import EventSource, ServerSentEvent, aconnect_sse


@dataclass
class Timed:
    seconds: float
    ok: bool
    status: int  # 0 when no response came back
    body: Any = None
    error: str | None = None


async def create_agent(
    http: httpx.AsyncClient, model: str, tools: list[dict[str, Any]] | None = None
) -> str:
    """An agent answered by the fake model `model`, with finishTheConversation and `tools`."""
    response = await http.post(
        "/agents",
        json={
            "name": f"bench agent ({model})",
            "system_prompt": "You help customers of {{company}} on {{channel}}.",
            "variables": {"company": "Bench Inc."},
            "model": {"provider": "openai", "name": model},
            "tools": [{"type": "builtin", "name": "finishTheConversation"}, *(tools or [])],
        },
    )
    response.raise_for_status()
    return str(response.json()["id"])


async def open_session(http: httpx.AsyncClient, agent_id: str, ttl_seconds: int = 3600) -> Timed:
    return await _timed(
        http, "/chats", {"agent_id": agent_id, "channel": "web", "ttl_seconds": ttl_seconds}, 201
    )


async def send(http: httpx.AsyncClient, session_id: str, content: str) -> Timed:
    return await _timed(http, f"/chats/{session_id}/messages", {"content": content}, 200)


@dataclass
class StreamedTurn:
    """One message sent with `Accept: text/event-stream`, read to its end."""

    seconds: float  # to the end of the stream
    first_delta: float | None  # seconds to the first message.delta
    replies: list[str]  # the content of each `message` event
    error: str | None  # None: the stream ended with `done`


async def stream_turn(http: httpx.AsyncClient, session_id: str, content: str) -> StreamedTurn:
    started = time.perf_counter()
    first: float | None = None
    replies: list[str] = []
    done = False
    error: str | None = None
    try:
        async with aconnect_sse(
            http,
            "POST",
            f"/chats/{session_id}/messages",
            json={"content": content},
            headers={"Accept": "text/event-stream"},
        ) as source:
            async for event in sse_events(source):
                if event.event == "message.delta" and first is None:
                    first = time.perf_counter() - started
                elif event.event == "message":
                    replies.append(str(json.loads(event.data)["message"]["content"]))
                elif event.event == "error":
                    error = f"stream error {json.loads(event.data)['error']['code']}"
                done = done or event.event == "done"
    except httpx.HTTPError as failed:
        error = f"stream {type(failed).__name__}"
    if error is None and not done:
        error = "stream without done"
    return StreamedTurn(time.perf_counter() - started, first, replies, error)


async def sse_events(source: EventSource) -> AsyncIterator[ServerSentEvent]:
    """The events of an SSE response, without the empty ones httpx-sse makes of the server's
    keep-alive comments once an event id was seen (a browser dispatches no event for them)."""
    async for event in source.aiter_sse():
        if event.data:
            yield event


async def _timed(http: httpx.AsyncClient, path: str, body: dict[str, Any], expect: int) -> Timed:
    started = time.perf_counter()
    try:
        response = await http.post(path, json=body)
    except httpx.HTTPError as error:
        return Timed(time.perf_counter() - started, False, 0, error=type(error).__name__)
    elapsed = time.perf_counter() - started
    ok = response.status_code == expect
    return Timed(
        elapsed,
        ok,
        response.status_code,
        body=response.json() if ok else None,
        error=None if ok else response.text[:300],
    )
