"""The fake Twilio answers the Messages create call with bursts of 429 (with Retry-After) and
500, some of the 500s only after it took the text: every part of every reply reaches the
person exactly once and in order (a retry finds a text Twilio took in its message list instead
of sending it again), and every part is recorded with the sid of its own text."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from src.db.tables import SmsPart
from src.sms.texts import text_parts
from src.worker import running_worker
from tests.chaos.harness import SCALE, gather_all, marker, report
from tests.chaos.test_sms_sends import QUESTION_WORDS, SEND_PATIENCE, sends_recorded
from tests.conftest import AgentFactory, SettingsFactory, api_client
from tests.fakes.twilio_server import ApiRequest, FakeTwilio
from tests.sms import add_number, new_number, pair_sessions, text_in

RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True)
class Burst:
    statuses: tuple[int, ...]
    after: int  # parts of the reply Twilio takes before the burst
    accept_5xx: bool  # Twilio takes the text, then answers the 500


# Round r of person p gets BURSTS[(p + r) % len(BURSTS)]. 429s and 500s alternate so that the
# activity's backoff (1 s doubling, SMS_SEND) and Retry-After both decide a retry's delay.
BURSTS = [
    Burst((429, 429, 500), after=0, accept_5xx=False),
    Burst((500, 429, 500), after=1, accept_5xx=True),
]


@dataclass
class Person:
    number: str  # the person's
    agent_number: str  # the number they text
    agent_id: str
    expected: list[str]  # the replies, in order


async def _converse(
    person: Person, index: int, fake: FakeTwilio, twilio: httpx.AsyncClient, settings: Any
) -> None:
    for round_number in range(SCALE.twilio_rounds):
        burst = BURSTS[(index + round_number) % len(BURSTS)]
        fake.burst_next(
            burst.statuses,
            to=person.number,
            after=burst.after,
            retry_after=RETRY_AFTER_SECONDS,
            accept_5xx=burst.accept_5xx,
        )
        tag = marker()
        question = " ".join(f"p{index}-r{round_number}-{tag}-{i}" for i in range(QUESTION_WORDS))
        answer = await text_in(twilio, settings, person.number, person.agent_number, question)
        assert answer.status_code == 200, answer.text
        person.expected.append("echo: " + question)
        await fake.wait_for(_all_sent(fake, person), SEND_PATIENCE)


def _all_sent(fake: FakeTwilio, person: Person) -> Callable[[], bool]:
    """True once Twilio has every part of the person's replies so far."""
    replies = "".join(person.expected)
    return lambda: "".join(t.body for t in fake.sent(person.number)) == replies


def _waits_after(status: int, sends: list[ApiRequest]) -> list[float]:
    """Seconds from each send answered `status` to the next send to the same person."""
    return [
        after.answered_at - before.answered_at
        for before, after in itertools.pairwise(sends)
        if before.status == status
    ]


def _span(waits: list[float]) -> str:
    return f"{min(waits):.1f}-{max(waits):.1f} s" if waits else "none"


async def _recorded_parts(http: httpx.AsyncClient, person: Person) -> list[dict[str, Any]]:
    [session] = await pair_sessions(http, person.agent_id)
    messages = await sends_recorded(http, session["id"])
    return [p for m in messages if m["role"] == "assistant" for p in m["delivery"] or []]


async def test_twilio_429_and_500_bursts(
    make_settings: SettingsFactory,
    serve_api: Any,
    api_key: str,
    make_agent: AgentFactory,
    fake_twilio: tuple[FakeTwilio, str],
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
) -> None:
    fake = fake_twilio[0]
    settings = make_settings(TEMPORAL_TASK_QUEUE=f"chaos-twilio-{marker()}")
    async with (
        running_worker(settings, temporal_client),
        serve_api(settings) as url,
        api_client(url, api_key) as http,
        httpx.AsyncClient(base_url=url, timeout=30) as twilio,
    ):
        people = []
        for _ in range(SCALE.twilio_people):
            agent_id = await make_agent(client=http)
            number = (await add_number(http, fake, agent_id))["number"]
            people.append(Person(new_number(), number, agent_id, []))
        await gather_all(
            [_converse(p, i, fake, twilio, settings) for i, p in enumerate(people)],
            within=SEND_PATIENCE * SCALE.twilio_rounds,
        )
        recorded = {p.number: await _recorded_parts(http, p) for p in people}
    async with db() as session:
        attempts = sum(
            await session.scalars(
                select(SmsPart.attempts).where(SmsPart.recipient.in_(list(recorded)))
            )
        )

    texts = {p.number: fake.sent(p.number) for p in people}
    sends = [s for p in people for s in fake.sends(p.number)]
    answered = Counter(s.status for s in sends)
    duplicates = sum(
        n - 1 for p in people for n in Counter(t.body for t in texts[p.number]).values()
    )
    resent = sum(n - 1 for n in Counter((s.params["To"], s.params["Body"]) for s in sends).values())
    taken_then_500 = sum(1 for p in people for t in texts[p.number] if not t.answered)
    lookups = sum(1 for r in fake.requests if r.method == "GET" and r.params.get("To") in recorded)
    parts = sum(len(v) for v in recorded.values())
    with_sid = sum(1 for v in recorded.values() for p in v if p["provider_message_id"])
    # The answer times of sends, not their start: a wait includes the reconciling lookup.
    after_429 = [w for p in people for w in _waits_after(429, fake.sends(p.number))]
    after_500 = [w for p in people for w in _waits_after(500, fake.sends(p.number))]
    report(
        "Twilio 429/500 bursts",
        f"{len(people)} people x {SCALE.twilio_rounds} replies: {parts} parts -> "
        f"{sum(len(v) for v in texts.values())} texts ({duplicates} duplicate), "
        f"{len(sends)} send requests: {answered[429]}x 429 (Retry-After "
        f"{RETRY_AFTER_SECONDS} s), {answered[500]}x 500 ({taken_then_500} after Twilio took "
        f"the text), {answered[201]}x 201; {resent} sends retried, {lookups} message-list "
        f"lookups; next send {_span(after_429)} after a 429, {_span(after_500)} after a 500; "
        f"{with_sid}/{parts} parts recorded with Twilio's sid",
    )
    assert duplicates == 0
    for person in people:
        sent = texts[person.number]
        parts_of_person = recorded[person.number]
        # Every part once, in order, recorded with the sid of its own text.
        assert [t.body for t in sent] == [p for e in person.expected for p in text_parts(e)]
        assert [p["provider_message_id"] for p in parts_of_person] == [t.sid for t in sent]
    scripted = Counter(
        status
        for i in range(len(people))
        for r in range(SCALE.twilio_rounds)
        for status in BURSTS[(i + r) % len(BURSTS)].statuses
    )
    assert (answered[429], answered[500]) == (scripted[429], scripted[500])  # every burst ran
    # Parley counts a send attempt per request: its record matches what Twilio saw.
    assert attempts == len(sends)
