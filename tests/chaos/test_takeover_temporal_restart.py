"""An operator takes sessions over, and the Temporal dev server (a `temporal server start-dev`
child on a SQLite file) is SIGKILLed and started again while the operator holds them: once with
the takeover itself in flight (it waits for a turn held in the model), then with user messages
and operator messages in flight or sent while the server is down. Clients re-ask with the same
Idempotency-Key on a 503. The takeover survives (mode human, the same operator), each user and
operator message is in the transcript once, and after the hand back the agent answers again."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.db.queries import transcript as transcript_of
from tests.chaos.harness import (
    SCALE,
    Asked,
    ask,
    describe_errors,
    echo_reply,
    free_port,
    gather_all,
    marker,
    merge_errors,
    report,
    temporal_process,
    transcript,
    wait_for_port,
    worker_process,
)
from tests.conftest import AgentFactory, SettingsFactory, api_client
from tests.fakes.llm_server import FakeLLM
from tests.sessions import audit_data, open_chat
from tests.test_human_takeover import ANA

PATIENCE = 240


@dataclass
class HeldSession:
    """One session an operator holds: what was said in it, by whom."""

    id: str
    user_messages: list[str] = field(default_factory=list)
    operator_messages: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)  # the agent's, before and after


@dataclass
class Restarts:
    """The dev server child, and how often it went down with what in flight."""

    port: int
    log_dir: Path
    kills: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.server = temporal_process(
            self.log_dir / "temporal.db", self.port, self.log_dir / "temporal.log"
        )

    async def start(self) -> None:
        await self.server.start()
        await wait_for_port(self.port, self.server)

    async def kill(self, during: str) -> None:
        await self.server.kill(signal.SIGKILL)
        self.kills[during] += 1


async def test_a_takeover_survives_temporal_restarts(
    make_settings: SettingsFactory,
    serve_api: Any,
    api_key: str,
    make_agent: AgentFactory,
    fake_llm: tuple[FakeLLM, str],
    db: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    fake = fake_llm[0]
    tag = marker()
    temporal = Restarts(free_port(), tmp_path)
    await temporal.start()
    settings = make_settings(
        TEMPORAL_ADDRESS=f"127.0.0.1:{temporal.port}", TEMPORAL_TASK_QUEUE=f"chaos-takeover-{tag}"
    )
    worker = worker_process(settings, tmp_path / "workers.log")
    await worker.start()
    agent_id = await make_agent(model=f"hold-{tag}", tools=[])
    asked: list[Asked] = []
    kept_after_restarts = 0
    try:
        async with serve_api(settings) as url, api_client(url, api_key) as http:
            http.timeout = PATIENCE
            held = [
                HeldSession((await open_chat(http, agent_id))["id"])
                for _ in range(SCALE.takeover_sessions)
            ]

            # The takeover waits for a turn held in the model; the server dies meanwhile.
            turns = [_user_turn(http, session, f"{tag} before takeover") for session in held]
            await fake.wait_held(tag, len(held))
            takeovers = [_asked(http, f"/chats/{s.id}/takeover", {"operator": ANA}) for s in held]
            await temporal.kill("takeover waiting for a turn")
            fake.release_held(tag)
            await temporal.start()
            asked += await gather_all([*turns, *takeovers], PATIENCE)
            kept_after_restarts += await _count_held_by(http, held, ANA)

            for round_number in range(SCALE.takeover_restarts):
                # Every other round a user and an operator message are in flight at the kill:
                # the server forgets the task that took them, their retries may run in the
                # other order, and the transcript written by the lost task is replaced
                # (src/db/recorded_batches.py).
                messages_first = round_number % 2 == 0
                refused = _Refusals(expected=2 * len(held))
                if messages_first:
                    pending = _messages_round(http, held, f"{tag} r{round_number}", refused)
                    await temporal.kill("user and operator messages in flight")
                else:
                    await temporal.kill("held session, messages sent while down")
                    pending = _messages_round(http, held, f"{tag} r{round_number}", refused)
                    await asyncio.wait_for(refused.all_refused.wait(), PATIENCE)
                await temporal.start()
                asked += await gather_all(pending, PATIENCE)
                kept_after_restarts += await _count_held_by(http, held, ANA)

            # Nothing left unanswered, then hand back: the agent answers the next message.
            asked += await gather_all(
                [_operator_message(http, s, f"{tag} handing back") for s in held], PATIENCE
            )
            handbacks = [_asked(http, f"/chats/{s.id}/handback", {"operator": ANA}) for s in held]
            asked += await gather_all(handbacks, PATIENCE)
            after = [_user_turn(http, session, f"{tag} after hand back") for session in held]
            await fake.wait_held(tag, len(held))
            fake.release_held(tag)
            asked += await gather_all(after, PATIENCE)

            outcome = _Outcome()
            for session in held:
                outcome.add(session, await transcript(http, session.id))
                outcome.compare_stored(await _stored_transcript(db, session.id))
                outcome.takeovers += len(await audit_data(db, session.id, "session.takeover"))
                outcome.handbacks += len(await audit_data(db, session.id, "session.handback"))
                outcome.audited_operator_messages += len(
                    await audit_data(db, session.id, "operator.message")
                )
    finally:
        fake.release_held(tag)
        await worker.stop()
        await temporal.server.stop()

    checks_of_the_hold = len(held) * (1 + SCALE.takeover_restarts)
    killed = ", ".join(f"{n}x {during}" for during, n in temporal.kills.items())
    report(
        "Temporal SIGKILL during a takeover",
        f"{killed} on one SQLite file, {len(held)} sessions held by one operator: "
        f"takeover kept {kept_after_restarts}/{checks_of_the_hold} times after a restart, "
        f"{outcome.line()}; {describe_errors(merge_errors(asked))} (each re-asked with its "
        "Idempotency-Key)",
    )
    assert kept_after_restarts == checks_of_the_hold
    outcome.assert_clean(len(held))
    assert worker.starts == 1  # the worker process rode out every outage


class _Refusals:
    """Set once `expected` different clients have each been told at least once to retry."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.clients: set[str] = set()
        self.all_refused = asyncio.Event()

    def seen_by(self, client: str) -> Callable[[str], None]:
        def seen(_: str) -> None:
            self.clients.add(client)
            if len(self.clients) >= self.expected:
                self.all_refused.set()

        return seen


def _messages_round(
    http: httpx.AsyncClient, held: list[HeldSession], label: str, refused: _Refusals
) -> list[asyncio.Future[Asked]]:
    """In each held session at once: a user message (202: recorded, the agent silent) and an
    operator message (201), each re-asked with its own key until answered."""
    pending: list[asyncio.Future[Asked]] = []
    for session in held:
        user, operator = f"{label} user {marker()}", f"{label} operator {marker()}"
        session.user_messages.append(user)
        pending.append(
            _asked(
                http,
                f"/chats/{session.id}/messages",
                {"content": user},
                expect=202,
                on_error=refused.seen_by(f"user {session.id}"),
            )
        )
        pending.append(_operator_message(http, session, operator, refused.seen_by(operator)))
    return pending


def _operator_message(
    http: httpx.AsyncClient,
    session: HeldSession,
    content: str,
    on_error: Callable[[str], None] | None = None,
) -> asyncio.Future[Asked]:
    session.operator_messages.append(content)
    path = f"/chats/{session.id}/operator-messages"
    return _asked(http, path, {"content": content}, expect=201, on_error=on_error)


def _user_turn(http: httpx.AsyncClient, session: HeldSession, label: str) -> asyncio.Future[Asked]:
    """A message the agent answers (the session is not held)."""
    question = f"{label} {marker()}"
    session.user_messages.append(question)
    session.replies.append(echo_reply(question))
    return _asked(http, f"/chats/{session.id}/messages", {"content": question})


def _asked(
    http: httpx.AsyncClient,
    path: str,
    payload: dict[str, Any],
    expect: int = 200,
    on_error: Callable[[str], None] | None = None,
) -> asyncio.Future[Asked]:
    """POST with a fresh Idempotency-Key, re-asked with it until answered, in the background."""

    async def until_answered() -> Asked:
        status, asked = await ask(
            http, path, payload, f"k-{uuid.uuid4()}", patience=PATIENCE, on_error=on_error
        )
        assert status == expect, (path, status, asked.body)
        return asked

    return asyncio.ensure_future(until_answered())


async def _count_held_by(http: httpx.AsyncClient, held: list[HeldSession], operator: Any) -> int:
    """How many of the sessions read mode human with `operator` active."""
    views = await asyncio.gather(*(_view(http, session.id) for session in held))
    return sum(1 for view in views if view["mode"] == "human" and view["active_human"] == operator)


async def _stored_transcript(
    db: async_sessionmaker[AsyncSession], session_id: str
) -> list[tuple[str, str | None]]:
    async with db() as s:
        return [(message.role, message.content) for message in await transcript_of(s, session_id)]


async def _view(http: httpx.AsyncClient, session_id: str) -> dict[str, Any]:
    response = await http.get(f"/chats/{session_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


@dataclass
class _Outcome:
    """What the transcripts and audit logs show against what was sent."""

    sessions: int = 0
    user_messages: int = 0
    user_once: int = 0
    operator_messages: int = 0
    operator_once: int = 0
    by_the_operator: int = 0
    replies: int = 0
    replies_once: int = 0
    unexpected: int = 0  # transcript messages nobody sent
    takeovers: int = 0
    handbacks: int = 0
    audited_operator_messages: int = 0
    stored_differing: int = 0  # database transcript rows unlike the session's messages
    _shown: list[tuple[str, str | None]] = field(default_factory=list)

    def add(self, session: HeldSession, messages: list[dict[str, Any]]) -> None:
        self.sessions += 1
        self._shown = [(message["role"], message["content"]) for message in messages]
        contents = Counter(message["content"] for message in messages)
        sent = [*session.user_messages, *session.operator_messages, *session.replies]
        self.unexpected += len(messages) - len(sent)
        self.user_messages += len(session.user_messages)
        self.user_once += sum(1 for text in session.user_messages if contents[text] == 1)
        self.operator_messages += len(session.operator_messages)
        self.operator_once += sum(1 for text in session.operator_messages if contents[text] == 1)
        self.by_the_operator += sum(
            1
            for message in messages
            if message["content"] in session.operator_messages
            and message["author"]["kind"] == "human"
            and message["author"]["id"] == ANA["id"]
        )
        self.replies += len(session.replies)
        self.replies_once += sum(1 for text in session.replies if contents[text] == 1)

    def compare_stored(self, stored: list[tuple[str, str | None]]) -> None:
        """The database's transcript of the session last added, against the session's own."""
        self.stored_differing += sum(
            1 for shown, kept in zip(self._shown, stored, strict=False) if shown != kept
        ) + abs(len(self._shown) - len(stored))

    def line(self) -> str:
        return (
            f"{self.user_once}/{self.user_messages} user messages once, "
            f"{self.operator_once}/{self.operator_messages} operator messages once "
            f"({self.audited_operator_messages} audited), {self.unexpected} unexpected "
            f"transcript messages, {self.stored_differing} stored messages unlike the "
            "session's, "
            f"{self.takeovers} takeover and {self.handbacks} hand-back "
            f"audit events, {self.replies_once}/{self.replies} agent replies (before the "
            "takeover and after the hand back)"
        )

    def assert_clean(self, sessions: int) -> None:
        assert self.user_once == self.user_messages, self.line()
        assert self.operator_once == self.operator_messages == self.by_the_operator, self.line()
        assert self.audited_operator_messages == self.operator_messages, self.line()
        assert self.replies_once == self.replies == 2 * sessions, self.line()
        assert self.unexpected == 0 and self.stored_differing == 0, self.line()
        assert self.takeovers == self.handbacks == sessions, self.line()
