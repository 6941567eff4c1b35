"""One session over thirty days of mostly silence on the time-skipping test server: a message
now and then, the inactivity timer firing and re-arming between them, a help request whose
timer fires, an operator who holds the session for eleven silent days and whose idle timer hands
it back, continue-as-new every few turns, and the end exactly one TTL after the last word."""

from __future__ import annotations

from datetime import timedelta

from src.domain import FinishReason, HumanHandoff, Operator, SessionMode, SessionStatus
from src.workflows.chat_session import ChatSessionWorkflow
from src.workflows.chat_session_models import SessionState
from tests.workflows.conftest import StubbedStack
from tests.workflows.sessions import DAY_SECONDS, Session, runs, say, start_session, take_over

ANA = Operator(id="op-ana", name="Ana")
HOLDING = "Everyone is busy; a person will write to you soon."
HANDOFF = HumanHandoff(wait_seconds=600, holding_message=HOLDING, operator_idle_seconds=300)
# Quiet between messages: under a day, so the one-day TTL fires and re-arms without ending.
QUIET = timedelta(hours=22)


async def state(session: Session) -> SessionState:
    return await session.query(ChatSessionWorkflow.state)


def kinds(stubbed: StubbedStack, kind: str) -> list[dict[str, object]]:
    return [data for name, data in stubbed.backend.events if name == kind]


async def test_a_session_lives_thirty_quiet_days_and_ends_one_ttl_after_its_last_word(
    stubbed: StubbedStack,
) -> None:
    session = await start_session(
        stubbed, ttl_seconds=DAY_SECONDS, turns_per_run=3, human_handoff=HANDOFF
    )
    said: list[str] = []

    async def quiet_days(count: int) -> None:
        for _ in range(count):
            await stubbed.env.sleep(QUIET)
            said.append(f"day message {len(said)}")
            await say(session, said[-1])

    await quiet_days(9)
    said.append("help, a person please")
    await say(session, said[-1])
    await stubbed.env.sleep(timedelta(minutes=11))  # the help timer fires: holding message
    await take_over(session, ANA)
    await stubbed.env.sleep(timedelta(days=11))  # held: the TTL does not run
    held = await state(session)
    said.append("is anyone there?")
    await say(session, said[-1])
    await stubbed.env.sleep(timedelta(minutes=6))  # the operator idle timer hands it back
    back = await state(session)
    await quiet_days(11)
    last_word = (await state(session)).last_activity

    final = await session.result()

    assert held.status == SessionStatus.ACTIVE and held.mode == SessionMode.HUMAN
    assert back.mode == SessionMode.AI
    assert (final.status, final.final_reason) == (SessionStatus.FINAL, FinishReason.TTL)
    assert [f.reason for f in stubbed.backend.finished] == [FinishReason.TTL]
    finished = stubbed.backend.finished[0].finished_time
    assert finished - final.created_time >= timedelta(days=30)
    assert timedelta(days=1) <= finished - last_word < timedelta(days=1, minutes=1)
    assert await runs(stubbed, session) >= 6
    contents = stubbed.backend.contents()
    assert [c for c in contents if c in said] == said  # every word, once, in order
    assert contents.count(HOLDING) == 1
    assert len(kinds(stubbed, "session.help_unanswered")) == 1
    assert [d["reason"] for d in kinds(stubbed, "session.handback")] == ["operator_idle"]
    assert (contents[-1] or "").startswith(f"echo: {said[-1]} ")
