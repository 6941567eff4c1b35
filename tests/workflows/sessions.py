"""The words the workflow tests speak: start a session, say something (waiting for the reply,
retried across a hand-over to the next run like the API does), queue a message, text one in,
end the session."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from temporalio.client import (
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateHandle,
    WorkflowUpdateStage,
)
from temporalio.exceptions import ApplicationError

from src.domain import REQUEST_HUMAN, HumanHandoff, Operator, SessionAgent, ToolKind
from src.temporal.failures import FailureType
from src.workflows.chat_session import ChatSessionWorkflow
from src.workflows.chat_session_models import (
    EndRequest,
    HandbackRequest,
    SessionStart,
    SessionState,
    TakeoverRequest,
    TurnResult,
    UserMessage,
)
from tests.workflows.conftest import StubbedStack

T = TypeVar("T")
Session = WorkflowHandle[ChatSessionWorkflow, SessionState]

DAY_SECONDS = 24 * 60 * 60
# What the API retries (src/services/chat_sessions.py): a run handing over to the next one,
# and an update the closing run accepted but never processed.
_RETRIED = {FailureType.DRAINING.value, "UnprocessedUpdate"}
_RETRY_SECONDS = 0.02
_RETRIES = 500


async def start_session(
    stubbed: StubbedStack,
    *,
    ttl_seconds: int = DAY_SECONDS,
    turns_per_run: int = 500,
    human_handoff: HumanHandoff | None = None,
    tools: dict[str, ToolKind] | None = None,
    approval_required: list[str] | None = None,
    approval_days: int = 1,
) -> Session:
    session_id = str(uuid.uuid4())
    agent = SessionAgent(
        snapshot_id="snap-1",
        id="agent-1",
        version=1,
        model_name="stub",
        tools={REQUEST_HUMAN: "builtin", **(tools or {})},
        human_handoff=human_handoff,
        approval_required=approval_required or [],
        approval_timeout_seconds=approval_days * DAY_SECONDS,
    )
    start = SessionStart(
        session_id=session_id,
        account_id="acct-1",
        agent=agent,
        channel="web",
        ttl_seconds=ttl_seconds,
        max_message_chars=4_000,
        max_tool_steps=4,
        turns_per_run=turns_per_run,
    )
    # Started, not opened with update-with-start as the API does: on the time-skipping server
    # only a handle from start_workflow skips time while its result() is awaited.
    return await stubbed.client.start_workflow(
        ChatSessionWorkflow.run, start, id=f"chat-{session_id}", task_queue=stubbed.task_queue
    )


def message(content: str, key: str | None = None) -> UserMessage:
    # One request id across retries, as the API sends it.
    return UserMessage(content=content, idempotency_key=key, request_id=str(uuid.uuid4()))


async def say(session: Session, content: str, key: str | None = None) -> TurnResult:
    return await send(session, message(content, key))


async def send(session: Session, sent: UserMessage) -> TurnResult:
    async def send_once() -> TurnResult:
        return await session.execute_update(
            ChatSessionWorkflow.send_message,  # type: ignore[arg-type]  # SDK typing of async updates
            sent,
        )

    return await _retrying(send_once)


async def queue(session: Session, sent: UserMessage) -> asyncio.Task[TurnResult]:
    """Returns once the session has accepted the message (so messages queued one after the
    other arrive in that order); the task is the caller waiting for the reply."""

    async def accept_once() -> WorkflowUpdateHandle[TurnResult]:
        return await session.start_update(
            ChatSessionWorkflow.send_message,  # type: ignore[arg-type]  # SDK typing of async updates
            sent,
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )

    accepted = await _retrying(accept_once)

    async def reply() -> TurnResult:
        try:
            return await accepted.result()
        except WorkflowUpdateFailedError as error:
            if _failure_type(error) not in _RETRIED:
                raise
        return await send(session, sent)

    return asyncio.create_task(reply())


async def text_in(session: Session, content: str, key: str | None = None) -> None:
    """A message from an asynchronous channel (SMS): a signal, nobody waits for the reply;
    `key` is the channel's message id, the same on a redelivery."""
    await session.signal(
        ChatSessionWorkflow.receive_message, UserMessage(content=content, idempotency_key=key)
    )


async def take_over(session: Session, operator: Operator) -> SessionState:
    return await _retrying(
        lambda: session.execute_update(
            ChatSessionWorkflow.take_over,  # type: ignore[arg-type]  # SDK typing of async updates
            TakeoverRequest(operator=operator),
        )
    )


async def hand_back(session: Session) -> SessionState:
    return await _retrying(
        lambda: session.execute_update(
            ChatSessionWorkflow.hand_back,  # type: ignore[arg-type]  # SDK typing of async updates
            HandbackRequest(),
        )
    )


async def end_session(session: Session, note: str | None = None) -> SessionState:
    """Ends the session and waits for its run to close: every message sent before has been
    answered and written by then, signals included (nobody waits on those otherwise)."""
    await (await start_end(session, note)).result()
    return await session.result()


async def start_end(
    session: Session, note: str | None = None
) -> WorkflowUpdateHandle[SessionState]:
    """Asks the session to end; returns once the request is accepted (the messages queued
    before it are still answered), the handle's result is the final session."""

    async def accept_once() -> WorkflowUpdateHandle[SessionState]:
        return await session.start_update(
            ChatSessionWorkflow.end,  # type: ignore[arg-type]  # SDK typing of async updates
            EndRequest(note=note),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )

    return await _retrying(accept_once)


async def runs(stubbed: StubbedStack, session: Session) -> int:
    """How many runs the session has had: its latest run's place in the chain."""
    latest = await stubbed.client.get_workflow_handle(session.id).describe()
    count, run_id = 1, latest.run_id
    while run_id != session.first_execution_run_id:
        history = await stubbed.client.get_workflow_handle(
            session.id, run_id=run_id
        ).fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        run_id = started.continued_execution_run_id
        count += 1
    return count


async def _retrying(call: Callable[[], Awaitable[T]]) -> T:
    for _ in range(_RETRIES):
        try:
            return await call()
        except WorkflowUpdateFailedError as error:
            if _failure_type(error) not in _RETRIED:
                raise
        await asyncio.sleep(_RETRY_SECONDS)
    raise AssertionError(f"still handing over after {_RETRIES} retries")


def _failure_type(error: WorkflowUpdateFailedError) -> str | None:
    return error.cause.type if isinstance(error.cause, ApplicationError) else None
