"""The API process is SIGKILLed and restarted while SSE clients follow sessions that are taking
turns (`GET /chats/{id}/stream`). Each client reconnects with `Last-Event-ID` set to the last
id it saw and, across all its connections, sees every event of its session exactly once and in
order: the same list a fresh stream from the start reads afterwards."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx

from src.services.accounts import new_api_key
from tests.chaos.harness import (
    SCALE,
    Asked,
    TranscriptCheck,
    api_process,
    describe_errors,
    echo_reply,
    free_port,
    gather_all,
    marker,
    merge_errors,
    report,
    say_until_answered,
    transcript,
    wait_for_health,
)
from tests.conftest import AgentFactory, SettingsFactory, api_client
from tests.sessions import open_chat
from tests.sse import Event, open_stream

PATIENCE = 240
MAX_TURNS = 400  # per session: talkers go on until every kill is done, at most this long
RECONNECT_PAUSE = 0.1
RECONNECT_ATTEMPTS = 2400


@dataclass
class Follower:
    """One SSE client of one session: what it saw, over how many connections."""

    session_id: str
    last_reply: str  # the content of the session's last `message` event: it stops there
    events: list[Event] = field(default_factory=list)
    connections: int = 0
    attached: bool = False
    refused: int = 0  # connection attempts while the API was down

    def resume_headers(self) -> dict[str, str]:
        return {"Last-Event-ID": self.events[-1].id} if self.events else {}

    def saw_last_reply(self) -> bool:
        last = self.events[-1] if self.events else None
        return last is not None and is_reply(last, self.last_reply)


def is_reply(event: Event, content: str) -> bool:
    return event.name == "message" and event.data["message"]["content"] == content


async def follow_across_restarts(http: httpx.AsyncClient, follower: Follower) -> None:
    """Follow the session's stream until its last reply, reconnecting after every drop with
    `Last-Event-ID` (bounded attempts)."""
    url = f"/chats/{follower.session_id}/stream"
    for _ in range(RECONNECT_ATTEMPTS):
        try:
            async with open_stream(http, url, **follower.resume_headers()) as arriving:
                follower.connections += 1
                follower.attached = True
                async for event in arriving:
                    follower.events.append(event)
                    if follower.saw_last_reply():
                        return
        except httpx.TransportError:
            if not follower.attached:
                follower.refused += 1
        follower.attached = False
        await asyncio.sleep(RECONNECT_PAUSE)
    raise AssertionError(f"follower of {follower.session_id} never saw its last reply")


@dataclass
class Delivery:
    """A follower's events against the complete list a fresh stream reads."""

    delivered: int = 0
    lost: int = 0
    repeated: int = 0
    out_of_order: int = 0
    different: int = 0  # same id, another event

    def add(self, seen: list[Event], complete: list[Event]) -> None:
        ids = [event.position for event in seen]
        complete_by_id = {event.position: event for event in complete}
        self.delivered += len(seen)
        self.lost += len(complete_by_id.keys() - set(ids))
        self.repeated += len(ids) - len(set(ids))
        self.out_of_order += sum(1 for a, b in pairwise(ids) if b <= a)
        self.different += sum(
            1
            for event in seen
            if event.position in complete_by_id
            and (event.name, event.data)
            != (complete_by_id[event.position].name, complete_by_id[event.position].data)
        )

    def clean(self) -> bool:
        return self.lost == self.repeated == self.out_of_order == self.different == 0


async def test_sse_clients_resume_across_api_kills(
    make_settings: SettingsFactory,
    worker: None,
    make_agent: AgentFactory,
    tmp_path: Path,
) -> None:
    tag = marker()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    key = new_api_key()
    api = api_process(make_settings(), port, key, tmp_path / "api.log")
    await api.start()
    await wait_for_health(base, api)
    kills_done = asyncio.Event()
    kills = 0

    async def talker(http: Any, session_id: str, number: int) -> tuple[list[str], Asked]:
        """Turns, one after another, until every kill is done; then the last question."""
        questions: list[str] = []
        errors: Counter[str] = Counter()
        for turn in range(MAX_TURNS):
            last = kills_done.is_set()
            question = last_question(tag, number) if last else f"{tag} s{number} turn {turn}"
            asked = await say_until_answered(
                http, session_id, question, f"q-{uuid.uuid4()}", patience=PATIENCE
            )
            errors.update(asked.errors)
            questions.append(question)
            if last:
                return questions, Asked({}, errors)
        raise AssertionError(f"session {session_id}: the kills outlasted {MAX_TURNS} turns")

    async def killer(followers: list[Follower]) -> None:
        nonlocal kills
        try:
            for _ in range(SCALE.sse_api_kills):
                # Kill once every client is attached and has had events since the last restart.
                await wait_for_new_events(followers)
                await api.kill(signal.SIGKILL)
                kills += 1
                await api.start()
                await wait_for_health(base, api)
        finally:
            kills_done.set()  # the talkers ask their last question

    try:
        async with api_client(base, key) as http:
            http.timeout = httpx.Timeout(PATIENCE)
            agent_id = await make_agent(model="stream-20", client=http, tools=[])
            sessions = [(await open_chat(http, agent_id))["id"] for _ in range(SCALE.sse_sessions)]
            followers = [
                Follower(sid, echo_reply(last_question(tag, number)))
                for number, sid in enumerate(sessions)
                for _ in range(SCALE.sse_followers_per_session)
            ]
            following = [asyncio.ensure_future(follow_across_restarts(http, f)) for f in followers]
            killing = asyncio.ensure_future(killer(followers))
            try:
                talked = await gather_all(
                    [talker(http, sid, n) for n, sid in enumerate(sessions)], PATIENCE * 4
                )
                await killing
                await gather_all(following, PATIENCE)
            finally:
                for task in [*following, killing]:
                    task.cancel()
                await asyncio.gather(*following, killing, return_exceptions=True)
            check = TranscriptCheck()
            complete: dict[str, list[Event]] = {}
            for number, sid in enumerate(sessions):
                check.add(await transcript(http, sid), talked[number][0], echo_reply)
                fresh = Follower(sid, echo_reply(last_question(tag, number)))
                await asyncio.wait_for(follow_across_restarts(http, fresh), PATIENCE)
                complete[sid] = fresh.events
            for sid in sessions:
                await http.post(f"/chats/{sid}/end")
    finally:
        await api.stop()

    delivery = Delivery()
    for follower in followers:
        delivery.add(follower.events, complete[follower.session_id])
    events_in_all = sum(len(events) for events in complete.values())
    reconnects = sum(f.connections - 1 for f in followers)
    report(
        "API SIGKILL with SSE clients attached",
        f"{kills}x SIGKILL, {len(followers)} SSE clients on {len(sessions)} sessions "
        f"({check.turns_expected} turns, {events_in_all} events in all): "
        f"{delivery.delivered} events delivered over {reconnects} reconnects with Last-Event-ID "
        f"({sum(f.refused for f in followers)} refused while down), {delivery.lost} lost, "
        f"{delivery.repeated} repeated, {delivery.out_of_order} out of order, "
        f"{delivery.different} different from a fresh read; {check.line()}; talkers: "
        f"{describe_errors(merge_errors([asked for _, asked in talked]))}",
    )
    assert kills == SCALE.sse_api_kills
    assert all(f.connections > kills for f in followers), "every client reconnected each kill"
    assert delivery.clean()
    assert delivery.delivered == events_in_all * SCALE.sse_followers_per_session
    for events in complete.values():
        assert [e.position for e in events] == list(range(1, len(events) + 1))
    check.assert_clean()


async def wait_for_new_events(followers: list[Follower], attempts: int = 2400) -> None:
    """Until every follower is attached and has read an event since this call (bounded)."""
    seen = [len(follower.events) for follower in followers]
    for _ in range(attempts):
        if all(
            follower.attached and len(follower.events) > count
            for follower, count in zip(followers, seen, strict=True)
        ):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the followers never all had new events")


def last_question(tag: str, number: int) -> str:
    return f"{tag} s{number} last question"
