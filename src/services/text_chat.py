"""Stateless text-chat completion: the client carries the transcript and a sealed state.

Transcript rule: the messages a client sends must begin with exactly the transcript the server
last returned (checked against a digest in the state: roles, contents and tool calls); what
follows must be user messages. A changed or forged earlier message is refused with 400.

An older state (the conversation has moved on since it was issued) may only rejoin the turn
it already ran, while Temporal still keeps that turn's workflow: the database record, not the
workflow's existence, says whether a state is the latest. Once the conversation is finished,
only the request that finished it gets its answer again; every other older state is refused.
A state older than PARLEY_STATE_MAX_AGE_SECONDS (it carries its issue time) is refused.

A conversation the client keeps whole (the OpenAI-compatible face) has no state: each call is a
first turn over the transcript as sent, recorded as a conversation of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import (
    ApplicationError,
    CancelledError,
    TerminatedError,
    WorkflowAlreadyStartedError,
)
from temporalio.exceptions import TimeoutError as TimedOutError
from temporalio.service import RPCError, RPCStatusCode

from src.config import Settings
from src.db.snapshots import SnapshotStore
from src.db.tables import ChatMessage, ChatSession
from src.domain import AgentPatch, AgentSnapshot, AgentSpec, Message, SessionStatus
from src.errors import AgentFailed, BadState, Conflict, InvalidInput, Unavailable
from src.sealing.state_envelope import StateRejected, StateSealer
from src.services.agents import AgentService
from src.services.temporal_errors import temporal_unavailable, unavailable
from src.templates import render_for_caller, template_values
from src.temporal.failures import FailureType
from src.workflows.stateless_turn import (
    StatelessTurnInput,
    StatelessTurnOutput,
    StatelessTurnWorkflow,
)
from src.workflows.webhook_events import WebhookRetry

_STATE_VERSION = 1
_FINISHED = "the conversation is finished; start a new one without a state"
_EXPIRED = (
    "the state expired: it was issued more than {max_age:g} s ago "
    "(PARLEY_STATE_MAX_AGE_SECONDS); start a new conversation without a state"
)
_SUPERSEDED = (
    "this state is older than the conversation's latest turn; continue from the latest state"
)


class TextChatTurn(BaseModel):
    agent_id: str | None = None
    agent: AgentSpec | None = None
    agent_overrides: AgentPatch | None = None
    messages: list[Message]
    state: str | None = None
    additional_data: dict[str, Any] = Field(default_factory=dict)
    end_conversation: bool = False
    channel: str = "text"


class TextChatResult(BaseModel):
    messages: list[Message]
    state: str
    is_finished: bool
    correlation_id: str
    call_id: str
    # The seq of the first of `messages` in the conversation (its stream names them by it).
    first_seq: int = Field(default=0, exclude=True)


@dataclass
class PreparedTurn:
    """A stateless turn that passed every check, ready to run."""

    account_id: str
    request: TextChatTurn
    input: StatelessTurnInput
    workflow_id: str
    superseded: str | None
    correlation_id: str
    turn: int


class ConversationState(BaseModel):
    """What the sealed state holds. The agent is frozen at the first turn (`snapshot_id`)."""

    v: int = _STATE_VERSION
    account_id: str
    call_id: str
    correlation_id: str
    snapshot_id: str
    turn: int
    seen: int
    digest: str
    finished: bool
    # When the server sealed it; states sealed before it was recorded have none (expired).
    issued_time: datetime | None = None


def transcript_digest(messages: list[Message]) -> str:
    canonical = [
        [m.role, m.content or "", [[c.id, c.name, c.arguments, c.response] for c in m.tool_calls]]
        for m in messages
    ]
    encoded = json.dumps(canonical, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(encoded).hexdigest()


def open_conversation_state(
    sealer: StateSealer, sealed: str, *, account_id: str, max_age_seconds: float, now: datetime
) -> ConversationState:
    """The conversation a client's `state` continues, if this server sealed it for this
    account, less than `max_age_seconds` before `now`, and the conversation is not finished
    (400 for a state that cannot be trusted or has expired, 409 for a finished one)."""
    try:
        payload = sealer.open(sealed)
        state = ConversationState.model_validate(payload)
    except StateRejected as error:
        raise BadState(f"invalid state: {error}") from None
    except ValueError:
        raise BadState("invalid state: not a Parley conversation state") from None
    if state.account_id != account_id:
        raise BadState("invalid state: it belongs to another account")
    if state.finished:
        raise Conflict(_FINISHED)
    if state.issued_time is None or (now - state.issued_time).total_seconds() > max_age_seconds:
        raise BadState(_EXPIRED.format(max_age=max_age_seconds))
    return state


class TextChatService:
    def __init__(
        self,
        settings: Settings,
        client: Client,
        sessions: async_sessionmaker[AsyncSession],
        agents: AgentService,
        snapshots: SnapshotStore,
    ) -> None:
        self._settings = settings
        self._client = client
        self._sessions = sessions
        self._agents = agents
        self._snapshots = snapshots
        self._sealer = StateSealer(settings.state_keys())

    async def complete(self, account_id: str, request: TextChatTurn) -> TextChatResult:
        return await self.run(await self.prepare(account_id, request))

    async def prepare(self, account_id: str, request: TextChatTurn) -> PreparedTurn:
        """Everything that refuses a turn before it runs (the state, the messages, the
        agent); the turn, ready to run."""
        state = self._open_state(account_id, request.state) if request.state else None
        new = self._new_user_messages(request, state)
        superseded = await self._superseded(state) if state is not None else None
        return await self._prepared(account_id, request, state, new, superseded)

    async def prepare_kept_by_client(self, account_id: str, request: TextChatTurn) -> PreparedTurn:
        """A conversation the client keeps whole and sends with every call, with no state
        (the OpenAI-compatible face): a new conversation each time, whose transcript may hold
        earlier user, assistant (tool calls folded in) and system messages; the agent answers
        the last message, which must be the user's."""
        if request.state is not None:
            raise InvalidInput("a conversation kept by the client has no state")
        last = request.messages[-1] if request.messages else None
        if last is None or last.role != "user":
            raise InvalidInput("the last message must be a user message: the agent answers it")
        for message in request.messages:
            if message.role == "user" and not (message.content or "").strip():
                raise InvalidInput("a user message is empty")
        return await self._prepared(account_id, request, None, request.messages, None)

    async def _prepared(
        self,
        account_id: str,
        request: TextChatTurn,
        state: ConversationState | None,
        new: list[Message],
        superseded: str | None,
    ) -> PreparedTurn:
        snapshot = await self._agent(account_id, request, state)
        call_id = state.call_id if state else str(uuid.uuid4())
        turn = state.turn + 1 if state else 1
        return PreparedTurn(
            account_id=account_id,
            request=request,
            input=self._turn_input(account_id, request, state, snapshot, call_id, new),
            workflow_id=f"text-chat-{call_id}-{turn}",
            superseded=superseded,
            correlation_id=state.correlation_id if state else str(uuid.uuid4()),
            turn=turn,
        )

    async def run(self, prepared: PreparedTurn) -> TextChatResult:
        output = await self._run_turn(prepared.input, prepared.workflow_id, prepared.superseded)
        call_id = prepared.input.call_id
        next_state = ConversationState(
            account_id=prepared.account_id,
            call_id=call_id,
            correlation_id=prepared.correlation_id,
            snapshot_id=output.agent.snapshot_id,
            turn=prepared.turn,
            seen=output.message_count,
            digest=transcript_digest(prepared.request.messages + output.messages),
            finished=output.is_finished,
            issued_time=datetime.now(UTC),
        )
        return TextChatResult(
            messages=output.messages,
            state=self._sealer.seal(next_state.model_dump(mode="json")),
            is_finished=output.is_finished,
            correlation_id=prepared.correlation_id,
            call_id=call_id,
            first_seq=output.message_count - len(output.messages),
        )

    def _new_user_messages(
        self, request: TextChatTurn, state: ConversationState | None
    ) -> list[Message]:
        """The messages after the transcript the state vouches for: user messages only,
        each with text within the size limit."""
        seen = state.seen if state else 0
        if state is not None and transcript_digest(request.messages[:seen]) != state.digest:
            raise BadState(
                "the messages do not match the state: earlier messages were changed, removed "
                "or added; send the transcript exactly as returned, then new user messages"
            )
        new = request.messages[seen:]
        if any(m.role != "user" for m in new):
            raise BadState(
                "only user messages may follow the transcript the server returned; assistant "
                "messages come from the server"
            )
        if not new and not request.end_conversation:
            raise InvalidInput("no new user message: add one, or set end_conversation")
        for message in new:
            if not (message.content or "").strip():
                raise InvalidInput("a user message is empty")
            if len(message.content or "") > self._settings.max_message_chars:
                raise InvalidInput(
                    f"a message is longer than {self._settings.max_message_chars} characters"
                )
        return new

    def _turn_input(
        self,
        account_id: str,
        request: TextChatTurn,
        state: ConversationState | None,
        snapshot: AgentSnapshot,
        call_id: str,
        new: list[Message],
    ) -> StatelessTurnInput:
        # Rendered at each turn by the LLM activity; here only checked against the size limit.
        values = template_values(
            snapshot.spec.variables, request.additional_data, request.channel, datetime.now(UTC)
        )
        _, missing = render_for_caller(
            "system_prompt",
            snapshot.spec.system_prompt,
            values,
            self._settings.max_rendered_template_chars,
        )
        settings = self._settings
        return StatelessTurnInput(
            call_id=call_id,
            account_id=account_id,
            agent=snapshot.summary(),
            channel=request.channel,
            additional_data=request.additional_data,
            first_turn=state is None,
            seen_count=state.seen if state else 0,
            new_messages=new,
            end_conversation=request.end_conversation,
            max_tool_steps=snapshot.spec.max_tool_steps or settings.max_tool_steps,
            budget_usd=snapshot.spec.budget_usd or settings.session_budget_usd,
            input_digest=transcript_digest(request.messages)
            + (":end" if request.end_conversation else ""),
            webhook_retry=WebhookRetry(
                window_seconds=settings.webhook_retry_window_seconds,
                initial_seconds=settings.webhook_retry_initial_seconds,
            ),
            missing_variables=missing if state is None else [],
        )

    def _open_state(self, account_id: str, sealed: str) -> ConversationState:
        return open_conversation_state(
            self._sealer,
            sealed,
            account_id=account_id,
            max_age_seconds=self._settings.state_max_age_seconds,
            now=datetime.now(UTC),
        )

    async def _superseded(self, state: ConversationState) -> str | None:
        """Why `state` may no longer start a turn, if the database shows the conversation
        moved on (a newer turn recorded) or finished since it was issued."""
        async with self._sessions() as db:
            status = await db.scalar(
                select(ChatSession.status).where(ChatSession.id == state.call_id)
            )
            recorded = await db.scalar(
                select(func.count())
                .select_from(ChatMessage)
                .where(ChatMessage.session_id == state.call_id)
            )
        if status == SessionStatus.FINAL.value:
            return _FINISHED
        if (recorded or 0) > state.seen:
            return _SUPERSEDED
        return None

    async def _agent(
        self, account_id: str, request: TextChatTurn, state: ConversationState | None
    ) -> AgentSnapshot:
        """The first turn freezes the agent; later turns use that snapshot."""
        if state is not None:
            snapshot = await self._snapshots.load(state.snapshot_id)
            if request.agent_id is not None and request.agent_id != snapshot.id:
                raise InvalidInput(f"this conversation is bound to agent {snapshot.id!r}")
            return snapshot
        snapshot = await self._agents.resolve(
            account_id, request.agent_id, request.agent, request.agent_overrides
        )
        await self._snapshots.save(account_id, snapshot)
        return snapshot

    async def _run_turn(
        self, turn: StatelessTurnInput, workflow_id: str, superseded: str | None
    ) -> StatelessTurnOutput:
        """Start the turn's workflow, or join it: a replayed state finds the turn it already
        ran and gets the same answer, provided the request is the same. A superseded state
        may only join (409 once Temporal's retention has dropped that turn)."""
        timeout = self._settings.text_chat_turn_timeout_seconds
        try:
            if superseded is None:
                handle = await self._start_turn(turn, workflow_id)
            else:
                handle = self._client.get_workflow_handle_for(
                    StatelessTurnWorkflow.run, workflow_id
                )
            output = await asyncio.wait_for(handle.result(), timeout)
        except TimeoutError:
            raise Unavailable(
                f"the turn did not finish within {timeout:g} s "
                "(PARLEY_TEXT_CHAT_TURN_TIMEOUT_SECONDS; is a worker running?); retry the "
                "request with the same state to get its answer"
            ) from None
        except WorkflowFailureError as error:
            if superseded is not None:  # running it again would rewrite recorded history
                raise Conflict(superseded) from None
            raise _turn_failure(error) from None
        except RPCError as error:
            if superseded is not None and error.status == RPCStatusCode.NOT_FOUND:
                raise Conflict(superseded) from None
            if temporal_unavailable(error):
                raise unavailable() from None
            raise
        if superseded == _FINISHED and not (
            output.is_finished and output.input_digest == turn.input_digest
        ):
            # Only the request that finished the conversation may have its answer again.
            raise Conflict(_FINISHED)
        if output.input_digest != turn.input_digest:
            raise Conflict(
                "this state was already used for a different message; continue from the "
                "latest state"
            )
        return output

    async def _start_turn(
        self, turn: StatelessTurnInput, workflow_id: str
    ) -> WorkflowHandle[Any, StatelessTurnOutput]:
        try:
            return await self._client.start_workflow(
                StatelessTurnWorkflow.run,
                turn,
                id=workflow_id,
                task_queue=self._settings.temporal_task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                static_summary=f"text-chat turn {workflow_id.rsplit('-', 1)[-1]}",
            )
        except WorkflowAlreadyStartedError:
            return self._client.get_workflow_handle_for(StatelessTurnWorkflow.run, workflow_id)


def _turn_failure(error: WorkflowFailureError) -> Exception:
    cause = error.cause
    if isinstance(cause, ApplicationError) and cause.type == FailureType.TURN_FAILED:
        return AgentFailed(cause.message)
    if isinstance(cause, TerminatedError | CancelledError | TimedOutError):
        # Running the turn again with the same state is safe: if it had got as far as
        # recording its messages, the retry is told the conversation moved on (409).
        return Unavailable(
            "the turn's workflow was stopped (terminated, cancelled or timed out) before it "
            "answered; retry the request with the same state"
        )
    return AgentFailed("the turn failed before the agent answered; retry the request")
