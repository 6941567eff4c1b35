"""Following conversations' live streams from an API process (src/db/stream_events.py).

A follower reads its conversation's events after a position, then waits to be woken: on
PostgreSQL by the NOTIFY each write sends (one LISTEN connection per process), on SQLite by a
poller that, while anyone follows, checks every 10 milliseconds which conversations
have new events (one query for all followers). A follower also reads again after a second of
silence, so a lost wake-up costs latency, never an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from src.db.stream_events import STREAM_CHANNEL, events_after, head_position, last_id, written_since
from src.db.tables import StreamEvent

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.01
_SILENCE_SECONDS = 1.0
_LISTEN_RETRY_SECONDS = 5.0


class SessionStreams:
    def __init__(self, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._engine = engine
        self._sessions = sessions
        self._followers: dict[str, set[asyncio.Event]] = {}
        self._poller: asyncio.Task[None] | None = None
        self._listening: AsyncConnection | None = None
        self._listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """On PostgreSQL, LISTEN in the background: the API starts (and answers 503s) while
        the database is away; followers read every second until the listener is up."""
        if self._engine.dialect.name == "postgresql":
            self._listener = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        while self._listening is None:
            try:
                connection = await self._engine.connect()
                raw = await connection.get_raw_connection()
                await raw.driver_connection.add_listener(STREAM_CHANNEL, self._notified)  # type: ignore[union-attr]
                self._listening = connection
            except Exception:
                log.warning("cannot LISTEN for stream events yet; retrying", exc_info=True)
                await asyncio.sleep(_LISTEN_RETRY_SECONDS)

    async def close(self) -> None:
        for task in (self._poller, self._listener):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._listening is not None:
            with contextlib.suppress(Exception):
                await self._listening.close()

    async def head(self, conversation_id: str) -> int:
        async with self._sessions() as db:
            return await head_position(db, conversation_id)

    async def follow(
        self, conversation_id: str, after: int, stop: asyncio.Future[Any] | None = None
    ) -> AsyncIterator[StreamEvent]:
        """The conversation's events after position `after`, in order, as they are written;
        endless, or until `stop` is done and every event written by then has been read."""
        woken = asyncio.Event()
        self._followers.setdefault(conversation_id, set()).add(woken)
        if stop is not None:
            stop.add_done_callback(lambda _: woken.set())
        self._ensure_poller()
        try:
            while True:
                woken.clear()
                stopped = stop is not None and stop.done()
                async with self._sessions() as db:
                    rows = await events_after(db, conversation_id, after)
                for row in rows:
                    after = row.position
                    yield row
                if rows:
                    continue
                if stopped:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), _SILENCE_SECONDS)
        finally:
            followers = self._followers.get(conversation_id, set())
            followers.discard(woken)
            if not followers:
                self._followers.pop(conversation_id, None)

    def _wake(self, conversation_id: str) -> None:
        for woken in self._followers.get(conversation_id, ()):
            woken.set()

    def _notified(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        self._wake(payload)

    def _ensure_poller(self) -> None:
        if self._listening is not None or self._engine.dialect.name == "postgresql":
            return
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        """SQLite: while anyone follows, wake the followers of conversations with new events."""
        async with self._sessions() as db:
            seen = await last_id(db)
        while self._followers:
            await asyncio.sleep(_POLL_SECONDS)
            try:
                async with self._sessions() as db:
                    written, seen = await written_since(db, seen)
            except Exception:  # the database is away a moment: followers read again anyway
                log.warning("stream poll failed", exc_info=True)
                continue
            for conversation_id in written:
                self._wake(conversation_id)
