"""What the chaos cases share: sizes (reduced in `make test`, full in `make chaos`), the report,
Parley processes that can be killed and restarted, a cuttable TCP proxy, a client that re-asks
with the same Idempotency-Key, and transcript checks.

Everything listens on and talks to loopback only; every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from src.dev_stack import temporal_cli
from src.temporal.search_attributes import SEARCH_ATTRIBUTES
from tests.stack import REPO, Child, api_process, worker_process

T = TypeVar("T")

__all__ = ["REPO", "Child", "api_process", "worker_process"]  # from tests.stack

FULL = os.environ.get("PARLEY_CHAOS", "").lower() == "full"


@dataclass(frozen=True)
class Scale:
    """How hard each case pushes. Reduced: a few minutes inside `make test`."""

    worker_kills: int = 20 if FULL else 2  # per case: during an LLM call, during a tool call
    sessions_per_kill: int = 3 if FULL else 2  # turns in flight at each kill
    # per case: mid-stream, mid-approval wait, mid-handoff (each kill opens new sessions)
    feature_kills: int = 10 if FULL else 1
    burst_sessions: int = 12 if FULL else 4
    burst_turns: int = 4 if FULL else 2
    db_sessions: int = 20 if FULL else 3
    temporal_restarts: int = 6 if FULL else 2
    temporal_sessions: int = 6 if FULL else 3
    api_restarts: int = 6 if FULL else 2
    api_clients: int = 20 if FULL else 6
    api_turns: int = 10 if FULL else 4
    sse_api_kills: int = 6 if FULL else 2
    sse_sessions: int = 4 if FULL else 2
    sse_followers_per_session: int = 3 if FULL else 2
    takeover_restarts: int = 6 if FULL else 2
    takeover_sessions: int = 4 if FULL else 2
    twilio_people: int = 6 if FULL else 2  # texting at once, each into a burst per reply
    twilio_rounds: int = 5 if FULL else 2  # replies per person
    fuzz_examples: int = 100 if FULL else 25
    # The coverage phase (boundary and invalid values for every field, ~3,000 requests) is
    # thorough but takes minutes: full run only.
    fuzz_phases: str = "examples,coverage,fuzzing" if FULL else "examples,fuzzing"


SCALE = Scale()

# Lines for the end-of-run report (printed by tests/chaos/conftest.py, and written to
# PARLEY_CHAOS_REPORT when set).
REPORT: list[str] = []


def report(case: str, line: str) -> None:
    REPORT.append(f"{case}: {line}")
    print(f"\n[chaos] {case}: {line}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def marker() -> str:
    return uuid.uuid4().hex[:12]


# ---- processes ----------------------------------------------------------------------------


def temporal_process(db_file: Path, port: int, log: Path) -> Child:
    """A Temporal dev server keeping its state in a SQLite file, on a fixed port."""
    command = [
        temporal_cli(), "server", "start-dev",
        "--db-filename", str(db_file),
        "--ip", "127.0.0.1",
        "--port", str(port),
        "--headless",
        "--log-level", "error",
    ]  # fmt: skip
    for name, kind in SEARCH_ATTRIBUTES.items():
        command += ["--search-attribute", f"{name}={kind}"]
    return Child("temporal", command, dict(os.environ), log)


async def wait_for_port(port: int, child: Child | None = None, within: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if child is not None and not child.alive():
            raise AssertionError(f"{child.name} exited:\n{child.tail()}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {within:.0f} s")


async def wait_for_health(base_url: str, child: Child, within: float = 90) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    async with httpx.AsyncClient(timeout=5) as plain:
        while loop.time() < deadline:
            if not child.alive():
                raise AssertionError(f"{child.name} exited:\n{child.tail()}")
            try:
                if (await plain.get(f"{base_url}/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"{base_url} not healthy after {within:.0f} s:\n{child.tail()}")


# ---- a TCP proxy that can be cut -----------------------------------------------------------


@dataclass
class CuttableProxy:
    """Loopback TCP proxy in front of one upstream (PostgreSQL here). `cut()` aborts every
    open connection and resets new ones at once (the database is unreachable for whoever
    goes through the proxy, and only for them); `restore()` forwards again."""

    upstream_port: int
    port: int = 0
    cut_now: bool = False
    refused: int = 0
    _server: asyncio.Server | None = None
    _open: set[asyncio.StreamWriter] = field(default_factory=set)
    _refused_changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self._abort_all()

    def cut(self) -> None:
        self.cut_now = True
        self.refused = 0
        self._abort_all()

    def restore(self) -> None:
        self.cut_now = False

    async def wait_refused(self, count: int, within: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self.refused < count:
            self._refused_changed.clear()
            await asyncio.wait_for(self._refused_changed.wait(), max(0.01, deadline - loop.time()))

    def _abort_all(self) -> None:
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_now:
            self.refused += 1
            self._refused_changed.set()
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._open.update((writer, up_writer))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        self._open.difference_update((writer, up_writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.transport.abort()


# ---- clients that re-ask --------------------------------------------------------------------

RETRYABLE_STATUSES = {503}


@dataclass
class Asked:
    """What one client saw asking one question until it got the answer."""

    body: dict[str, Any]
    errors: Counter[str]


async def ask(
    http: httpx.AsyncClient,
    path: str,
    payload: dict[str, Any],
    idempotency_key: str | None,
    *,
    attempts: int = 600,
    patience: float = 300,
    pause: float = 0.25,
    on_error: Callable[[str], None] | None = None,
) -> tuple[int, Asked]:
    """POST until an answer that is not a retryable error, re-asking with the same
    Idempotency-Key after a retryable error: a 503 or a connection failure (the API process
    gone, restarting, or cut mid-request). Returns the final status and what was seen."""
    errors: Counter[str] = Counter()
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    for _ in range(attempts):
        try:
            response = await http.post(path, json=payload, headers=headers)
        except httpx.TransportError as error:
            kind = type(error).__name__
        else:
            body = response.json()
            if response.status_code not in RETRYABLE_STATUSES:
                return response.status_code, Asked(body, errors)
            assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
            kind = f"{response.status_code} {body['error']['code']}"
        errors[kind] += 1
        if on_error is not None:
            on_error(kind)
        if loop.time() > deadline:
            break
        await asyncio.sleep(pause)
    raise AssertionError(f"POST {path} never answered; errors seen: {dict(errors)}")


async def say_until_answered(
    http: httpx.AsyncClient, session_id: str, content: str, key: str, **kw: Any
) -> Asked:
    status, asked = await ask(
        http, f"/chats/{session_id}/messages", {"content": content}, key, **kw
    )
    assert status == 200, (status, asked.body)
    return asked


def merge_errors(asked: list[Asked]) -> Counter[str]:
    total: Counter[str] = Counter()
    for item in asked:
        total.update(item.errors)
    return total


def describe_errors(errors: Counter[str]) -> str:
    if not errors:
        return "no client errors"
    listed = ", ".join(f"{count}x {kind}" for kind, count in errors.most_common())
    return f"{sum(errors.values())} retryable client errors ({listed})"


# ---- transcript checks ----------------------------------------------------------------------


@dataclass
class TranscriptCheck:
    turns_expected: int = 0
    turns_completed: int = 0
    duplicated: int = 0
    extra: int = 0  # messages beyond what the turns account for
    missing: list[str] = field(default_factory=list)

    def add(
        self,
        messages: list[dict[str, Any]],
        questions: list[str],
        reply_of: Reply,
        per_turn: int = 2,
    ) -> None:
        """Each question must appear once as a user message, and its reply once; a turn adds
        `per_turn` messages (user, [assistant with tool calls,] reply), so the transcript has
        exactly that many per question: any more are duplicates."""
        self.extra += max(0, len(messages) - per_turn * len(questions))
        users = Counter(m["content"] for m in messages if m["role"] == "user")
        assistants = Counter(m["content"] for m in messages if m["role"] == "assistant")
        for question in questions:
            self.turns_expected += 1
            expected = reply_of(question)
            self.duplicated += max(0, users[question] - 1)
            if expected is not None:
                self.duplicated += max(0, assistants[expected] - 1)
            if users[question] >= 1 and (expected is None or assistants[expected] >= 1):
                self.turns_completed += 1
            else:
                self.missing.append(question)

    def line(self) -> str:
        return (
            f"{self.turns_completed}/{self.turns_expected} turns completed, "
            f"{self.duplicated + self.extra} duplicated transcript messages"
        )

    def assert_clean(self) -> None:
        assert not self.missing, f"turns without their reply: {self.missing[:5]}"
        assert self.duplicated == 0 and self.extra == 0, self.line()
        assert self.turns_completed == self.turns_expected


Reply = Callable[[str], str | None]


def echo_reply(question: str) -> str:
    return f"echo: {question}"


async def transcript(http: httpx.AsyncClient, session_id: str) -> list[dict[str, Any]]:
    response = await http.get(f"/chats/{session_id}")
    assert response.status_code == 200, response.text
    return list(response.json()["messages"])


async def gather_all(awaitables: Sequence[Awaitable[T]], within: float) -> list[T]:
    return list(await asyncio.wait_for(asyncio.gather(*awaitables), within))
