"""Server-sent events: a conversation's live stream (src/services/session_streams.py) as SSE,
through `sse-starlette` (keep-alive pings, disconnect handling, the wire format).

Every event carries its position in the conversation's stream as `id:`, the same on every
route, so a client resumes anywhere with `Last-Event-ID` (or `?after=`). The message routes
stream their own turn: its events as they come, then `done` with the body the plain call
returns, or `error` with the error shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from src.db.tables import StreamEvent
from src.errors import InvalidInput, ParleyError, log_if_server_side
from src.services.session_streams import SessionStreams

log = logging.getLogger(__name__)

EVENT_STREAM = "text/event-stream"
# A turn's messages are recorded just after its answer; the message route waits this long
# for their `message` events before it sends `done` without them.
_RECORD_WAIT_SECONDS = 10.0
_PING_SECONDS = 15
_SERVER_FAULT = "the server failed to answer; retry the request"

T = TypeVar("T")


def wants_event_stream(request: Request) -> bool:
    return EVENT_STREAM in request.headers.get("accept", "")


def resume_position(last_event_id: str | None, after: int | None) -> int:
    """Where a follower resumes: after `Last-Event-ID` (a position), else `?after=`, else 0."""
    if last_event_id is None or not last_event_id.strip():
        return after or 0
    value = last_event_id.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise InvalidInput("Last-Event-ID must be the id of an event this stream sent")
    return int(value)


def event_source(events: AsyncIterator[ServerSentEvent]) -> EventSourceResponse:
    # No proxy buffering: nginx and the like would hold the events back.
    return EventSourceResponse(
        events, ping=_PING_SECONDS, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


def sse_of(row: StreamEvent) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(row.data), event=row.kind, id=str(row.position))


async def conversation_events(
    streams: SessionStreams, conversation_id: str, after: int
) -> AsyncIterator[ServerSentEvent]:
    """Every event after `after`, live; ends after `session.final`."""
    async for row in streams.follow(conversation_id, after):
        yield sse_of(row)
        if row.kind == "session.final":
            return


async def turn_events(
    streams: SessionStreams,
    conversation_id: str,
    turn: str,
    after: int,
    answer: Awaitable[T],
    recorded: Callable[[T], tuple[set[int], dict[str, Any]]],
) -> AsyncGenerator[ServerSentEvent, None]:
    """One turn's events: those marked with `turn` after position `after` while `answer`
    runs; then, once answered, the `message` events of its recorded messages (`recorded`
    gives their seqs and the `done` body) and `done`; or `error` if the answer failed."""
    answering = asyncio.ensure_future(answer)
    last = after
    # Messages recorded while the answer was on its way: whose they are is known after it.
    recorded_meanwhile: list[StreamEvent] = []
    try:
        async for row in streams.follow(conversation_id, after, stop=answering):
            last = row.position
            if row.turn == turn:
                yield sse_of(row)
            elif row.kind == "message":
                recorded_meanwhile.append(row)
        try:
            result = answering.result()
        except ParleyError as error:
            log_if_server_side(error, f"a streamed turn of {conversation_id}")
            yield _error_event(error.code, error.message, error.details, last)
            return
        except Exception:
            log.exception("a streamed turn of %s failed", conversation_id)
            yield _error_event(
                "internal", "the server failed to answer; retry the request", None, last
            )
            return
        waiting, done = recorded(result)
        for row in recorded_meanwhile:
            if row.data.get("seq") in waiting:
                waiting.discard(row.data["seq"])
                yield sse_of(row)
        deadline = asyncio.create_task(asyncio.sleep(_RECORD_WAIT_SECONDS))
        try:
            async for row in (
                streams.follow(conversation_id, last, stop=deadline) if waiting else _nothing()
            ):
                last = row.position
                if row.turn == turn or (row.kind == "message" and row.data.get("seq") in waiting):
                    yield sse_of(row)
                    waiting.discard(row.data.get("seq", -1))
                if not waiting:
                    break
        finally:
            deadline.cancel()
        yield ServerSentEvent(data=json.dumps(done), event="done", id=str(last))
    finally:
        if not answering.done():
            # The client left: the turn goes on in its session; this call stops waiting.
            answering.cancel()
            with contextlib.suppress(BaseException):
                await answering


async def _nothing() -> AsyncIterator[StreamEvent]:
    return
    yield


def _error_event(code: str, message: str, details: Any, last: int) -> ServerSentEvent:
    body = {"error": {"code": code, "message": message, "details": details}}
    return ServerSentEvent(data=json.dumps(body), event="error", id=str(last))
