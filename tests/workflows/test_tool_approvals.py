"""A tool call that waits for approval is a durable wait (time-skipping test server): days
pass in milliseconds, and the decision, or its absence, settles it."""

from __future__ import annotations

from datetime import timedelta

from src.domain import PendingApproval
from src.workflows.chat_session import ChatSessionWorkflow
from src.workflows.tool_approvals import ApprovalDecision
from tests.workflows.conftest import StubbedStack
from tests.workflows.sessions import end_session, message, queue, start_session

DAY = timedelta(days=1)


async def test_an_approval_may_take_days_and_then_the_call_is_made(stubbed: StubbedStack) -> None:
    session = await start_session(
        stubbed, tools={"refund": "webhook"}, approval_required=["refund"], approval_days=3
    )
    answering = await queue(session, message("refund order 7"))
    await stubbed.env.sleep(2 * DAY)
    waiting = await session.query(ChatSessionWorkflow.state)
    [pending] = waiting.pending_approvals
    decided: PendingApproval = await session.execute_update(
        ChatSessionWorkflow.decide_approval,  # type: ignore[arg-type]  # SDK typing of async updates
        ApprovalDecision(tool_call_id=pending.tool_call_id, approved=True),
    )
    reply = await answering
    await end_session(session)

    assert pending.name == decided.name == "refund"
    assert stubbed.backend.tool_calls and stubbed.backend.tool_calls[0].name == "refund"
    assert reply.messages is not None and reply.messages[-1].content == "tool said: refund done"


async def test_without_a_decision_the_call_is_refused_when_the_timeout_passes(
    stubbed: StubbedStack,
) -> None:
    session = await start_session(
        stubbed, tools={"refund": "webhook"}, approval_required=["refund"], approval_days=3
    )
    answering = await queue(session, message("refund order 8"))
    await stubbed.env.sleep(4 * DAY)
    reply = await answering
    await end_session(session)

    assert stubbed.backend.tool_calls == []
    assert reply.messages is not None
    assert reply.messages[0].tool_calls[0].response == (
        "error: nobody approved this call in time, so it was not made"
    )
