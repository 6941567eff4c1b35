"""The durable timers around a human operator (agent setting `human_handoff`) on the
time-skipping test server: minutes and hours pass in milliseconds, the timers are workflow
timers like the TTL."""

from __future__ import annotations

from datetime import timedelta

from src.domain import HumanHandoff, Operator, SessionMode, SessionStatus
from src.workflows.chat_session import ChatSessionWorkflow
from src.workflows.chat_session_models import SessionState
from tests.workflows.conftest import StubbedStack
from tests.workflows.sessions import (
    Session,
    end_session,
    hand_back,
    say,
    start_session,
    take_over,
)

ANA = Operator(id="op-ana", name="Ana")
HOLDING = "Everyone is busy; a person will write to you soon."
HANDOFF = HumanHandoff(wait_seconds=600, holding_message=HOLDING, operator_idle_seconds=300)


async def state(session: Session) -> SessionState:
    return await session.query(ChatSessionWorkflow.state)


def kinds(stubbed: StubbedStack, kind: str) -> list[dict[str, object]]:
    return [data for name, data in stubbed.backend.events if name == kind]


async def test_a_help_request_nobody_takes_gets_the_holding_message_once(
    stubbed: StubbedStack,
) -> None:
    session = await start_session(stubbed, human_handoff=HANDOFF)
    await say(session, "help, a person please")
    await stubbed.env.sleep(timedelta(minutes=9))
    before = await state(session)
    await stubbed.env.sleep(timedelta(minutes=2))
    after = await state(session)
    await say(session, "help again")  # asked again: already told, not told twice
    await stubbed.env.sleep(timedelta(minutes=30))
    final = await end_session(session)

    assert before.help_requested and HOLDING not in [m.content for m in before.messages]
    assert after.messages[-1].content == HOLDING
    assert after.messages[-1].author is not None and after.messages[-1].author.kind == "ai"
    assert after.help_requested  # still nobody took over
    assert stubbed.backend.contents().count(HOLDING) == 1
    assert len(kinds(stubbed, "session.help_unanswered")) == 1
    assert final.status == SessionStatus.FINAL


async def test_a_takeover_in_time_cancels_the_holding_message(stubbed: StubbedStack) -> None:
    session = await start_session(stubbed, human_handoff=HANDOFF)
    await say(session, "help, a person please")
    await stubbed.env.sleep(timedelta(minutes=5))
    held = await take_over(session, ANA)
    await stubbed.env.sleep(timedelta(hours=2))
    await end_session(session)

    assert held.mode == SessionMode.HUMAN and not held.help_requested
    assert HOLDING not in stubbed.backend.contents()
    assert kinds(stubbed, "session.help_unanswered") == []


async def test_an_idle_operator_hands_the_waiting_user_back_to_the_agent(
    stubbed: StubbedStack,
) -> None:
    session = await start_session(stubbed, human_handoff=HANDOFF)
    await take_over(session, ANA)
    waiting = await say(session, "is anyone there?")
    await stubbed.env.sleep(timedelta(minutes=4))
    still_held = await state(session)
    await stubbed.env.sleep(timedelta(minutes=2))
    back = await state(session)
    await end_session(session)

    assert waiting.mode == SessionMode.HUMAN and waiting.messages == []
    assert still_held.mode == SessionMode.HUMAN
    assert back.mode == SessionMode.AI and back.active_human is None
    assert [m.content for m in back.messages[-2:]] == [
        "is anyone there?",
        "echo: is anyone there? (saw 1)",
    ]
    assert kinds(stubbed, "session.handback") == [
        {"reason": "operator_idle", "operator": ANA.model_dump()}
    ]


async def test_the_inactivity_ttl_does_not_run_while_a_human_holds_the_session(
    stubbed: StubbedStack,
) -> None:
    session = await start_session(stubbed, ttl_seconds=3600)
    await take_over(session, ANA)
    await stubbed.env.sleep(timedelta(hours=5))
    held = await state(session)
    await hand_back(session)
    await stubbed.env.sleep(timedelta(minutes=50))
    back = await state(session)

    final = await session.result()

    assert held.status == SessionStatus.ACTIVE and held.mode == SessionMode.HUMAN
    assert back.status == SessionStatus.ACTIVE
    assert final.final_reason is not None and final.final_reason.value == "ttl"
