"""ChatSessionWorkflow's own promises, on the time-skipping server with stubbed activities:
one inbox answered in order, an idempotency key answered once, continue-as-new that loses
nothing, the inactivity TTL, and the end request."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from src.domain import FinishReason, SessionStatus
from src.temporal.failures import FailureType
from src.workflows.chat_session import ChatSessionWorkflow
from src.workflows.chat_session_models import TurnResult
from tests.workflows.conftest import StubbedStack
from tests.workflows.sessions import (
    DAY_SECONDS,
    end_session,
    message,
    queue,
    runs,
    say,
    start_end,
    start_session,
    text_in,
)


def replies_to(*contents: str) -> list[str | None]:
    """The transcript of these user messages answered one by one, in this order."""
    transcript: list[str | None] = []
    for content in contents:
        transcript += [content, f"echo: {content} (saw {len(transcript) + 1})"]
    return transcript


def reply_of(answer: TurnResult) -> str | None:
    return answer.messages[-1].content if answer.messages else None


async def test_messages_sent_during_a_turn_are_answered_one_at_a_time_in_order(
    stubbed: StubbedStack,
) -> None:
    session = await start_session(stubbed)
    stubbed.backend.model_open.clear()
    first = await queue(session, message("one"))
    await stubbed.backend.wait_for_model_calls(1)
    second = await queue(session, message("two"))
    await text_in(session, "three (sms)")
    fourth = await queue(session, message("four"))
    fifth = await queue(session, message("five"))

    stubbed.backend.model_open.set()
    answers = await asyncio.gather(first, second, fourth, fifth)
    await say(session, "six")

    assert [reply_of(a) for a in answers] == [
        "echo: one (saw 1)",
        "echo: two (saw 3)",
        "echo: four (saw 7)",
        "echo: five (saw 9)",
    ]
    assert stubbed.backend.most_model_calls_at_once == 1
    assert stubbed.backend.contents() == replies_to(
        "one", "two", "three (sms)", "four", "five", "six"
    )


async def test_a_retried_idempotency_key_is_answered_once_and_the_model_asked_once(
    stubbed: StubbedStack,
) -> None:
    session = await start_session(stubbed)
    stubbed.backend.model_open.clear()
    original = await queue(session, message("order a pizza", key="k-1"))
    await stubbed.backend.wait_for_model_calls(1)
    retry_while_answering = await queue(session, message("order a pizza", key="k-1"))

    stubbed.backend.model_open.set()
    first, second = await asyncio.gather(original, retry_while_answering)
    later = await say(session, "order a pizza", key="k-1")
    other = await say(session, "order a pizza", key="k-2")

    assert first == second == later
    assert first.messages is not None
    assert [m.content for m in first.messages] == ["echo: order a pizza (saw 1)"]
    assert other.messages is not None
    assert [m.content for m in other.messages] == ["echo: order a pizza (saw 3)"]
    assert len(stubbed.backend.model_calls) == 2
    assert stubbed.backend.contents() == replies_to("order a pizza", "order a pizza")
    assert stubbed.backend.keys == {"k-1": 0, "k-2": 2}


async def test_a_channel_message_delivered_twice_is_answered_once(stubbed: StubbedStack) -> None:
    session = await start_session(stubbed)
    stubbed.backend.model_open.clear()
    await text_in(session, "hi", key="sms-1")
    await stubbed.backend.wait_for_model_calls(1)
    await text_in(session, "hi", key="sms-1")  # redelivered while it is being answered

    stubbed.backend.model_open.set()
    await say(session, "are you there?")
    await text_in(session, "hi", key="sms-1")  # redelivered after it was answered
    await end_session(session)

    assert len(stubbed.backend.model_calls) == 2
    assert stubbed.backend.contents() == replies_to("hi", "are you there?")


async def test_continue_as_new_carries_the_transcript_and_loses_no_message(
    stubbed: StubbedStack,
) -> None:
    session = await start_session(stubbed, turns_per_run=2)
    contents = [f"message {n}" for n in range(7)]

    answers = [await say(session, content) for content in contents[:3]]
    keyed = await say(session, contents[3], key="before-hand-over")
    answers += [keyed] + [await say(session, content) for content in contents[4:]]
    retried = await say(session, contents[3], key="before-hand-over")
    state = await session.query(ChatSessionWorkflow.state)

    assert [reply_of(a) for a in answers] == [
        f"echo: message {n} (saw {2 * n + 1})" for n in range(7)
    ]
    assert [(a.first_seq, a.count) for a in answers] == [(2 * n + 1, 1) for n in range(7)]
    # answered in an earlier run: the reply is where the transcript holds it, read back
    assert (retried.messages, retried.first_seq, retried.count) == (None, 7, 1)
    assert stubbed.backend.contents() == replies_to(*contents)
    assert len(stubbed.backend.model_calls) == 7
    assert await runs(stubbed, session) >= 3
    assert state.status == SessionStatus.ACTIVE
    assert 0 < state.first_seq <= 14
    assert [m.content for m in state.messages] == replies_to(*contents)[state.first_seq :]


async def test_a_backlog_is_handed_over_to_the_next_run_in_order(stubbed: StubbedStack) -> None:
    session = await start_session(stubbed, turns_per_run=1)
    stubbed.backend.model_open.clear()
    waiting = [await queue(session, message("first"))]
    await stubbed.backend.wait_for_model_calls(1)
    for n in range(2, 6):
        waiting.append(await queue(session, message(f"queued {n}")))
        await text_in(session, f"sms {n}")

    stubbed.backend.model_open.set()
    answers = await asyncio.gather(*waiting)
    # The last text message has no caller waiting on it: wait for the session to end.
    final = await end_session(session)

    expected = ["first"] + [c for n in range(2, 6) for c in (f"queued {n}", f"sms {n}")]
    assert stubbed.backend.contents() == replies_to(*expected)
    assert [reply_of(a) for a in answers] == [
        "echo: first (saw 1)",
        "echo: queued 2 (saw 3)",
        "echo: queued 3 (saw 7)",
        "echo: queued 4 (saw 11)",
        "echo: queued 5 (saw 15)",
    ]
    assert len(stubbed.backend.model_calls) == 9
    assert await runs(stubbed, session) >= 2
    assert final.final_reason == FinishReason.USER_END


async def test_a_session_idle_for_a_day_finishes_with_reason_ttl(stubbed: StubbedStack) -> None:
    session = await start_session(stubbed, ttl_seconds=DAY_SECONDS)
    await say(session, "hello")
    await stubbed.env.sleep(timedelta(hours=23))
    after_23_hours = await session.query(ChatSessionWorkflow.state)

    final = await session.result()

    assert after_23_hours.status == SessionStatus.ACTIVE
    assert (final.status, final.final_reason) == (SessionStatus.FINAL, FinishReason.TTL)
    assert [f.reason for f in stubbed.backend.finished] == [FinishReason.TTL]
    assert stubbed.backend.contents() == replies_to("hello")


async def test_a_message_restarts_the_inactivity_clock(stubbed: StubbedStack) -> None:
    session = await start_session(stubbed, ttl_seconds=DAY_SECONDS)
    await say(session, "hello")
    await stubbed.env.sleep(timedelta(hours=23))
    await say(session, "still there?")
    await stubbed.env.sleep(timedelta(hours=23))
    after_46_hours = await session.query(ChatSessionWorkflow.state)

    final = await session.result()

    assert after_46_hours.status == SessionStatus.ACTIVE
    assert final.final_reason == FinishReason.TTL
    assert stubbed.backend.contents() == replies_to("hello", "still there?")


async def test_an_end_request_lets_the_turn_under_way_finish_and_refuses_later_messages(
    stubbed: StubbedStack,
) -> None:
    session = await start_session(stubbed)
    stubbed.backend.model_open.clear()
    answering = await queue(session, message("one more thing"))
    await stubbed.backend.wait_for_model_calls(1)
    ending = await start_end(session, note="done")
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await say(session, "and another thing")

    stubbed.backend.model_open.set()
    answer = await answering
    ended = await ending.result()
    # The end request is answered once the session reads final; the run closes after the
    # final record is written.
    await session.result()

    assert isinstance(refused.value.cause, ApplicationError)
    assert refused.value.cause.type == FailureType.SESSION_FINAL
    assert reply_of(answer) == "echo: one more thing (saw 1)"
    assert (ended.status, ended.final_reason) == (SessionStatus.FINAL, FinishReason.USER_END)
    assert [(f.reason, f.note) for f in stubbed.backend.finished] == [
        (FinishReason.USER_END, "done")
    ]
    assert stubbed.backend.contents() == replies_to("one more thing")
    assert len(stubbed.backend.model_calls) == 1
