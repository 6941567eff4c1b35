"""Inputs, outputs and carried state of ChatSessionWorkflow. Fields are only ever added."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from temporalio.exceptions import ApplicationError

from src.domain import (
    Attachment,
    FinishReason,
    Message,
    Operator,
    PendingApproval,
    SessionAgent,
    SessionMode,
    SessionStatus,
    Transfer,
)


class InboxItem(BaseModel):
    id: str
    content: str
    idempotency_key: str | None = None
    attachments: list[Attachment] = Field(default_factory=list)
    # A caller waited on this item when its run handed over with a backlog: the caller was
    # told to retry, so the next run remembers the outcome by `id` to answer that retry.
    awaited: bool = False


class TurnOutcome(BaseModel):
    messages: list[Message] = Field(default_factory=list)
    is_final: bool = False
    error_type: str | None = None
    error: str | None = None
    # Where the produced messages sit in the transcript, so that an outcome carried across
    # continue-as-new can drop its messages (kept small) and the API re-reads them.
    first_seq: int = 0
    count: int = 0
    messages_dropped: bool = False
    # `human`: an operator held the session, so the message was recorded and not answered.
    mode: SessionMode = SessionMode.AI


class DeskState(BaseModel):
    """Who answers the session and what the agent owes (see OperatorDesk), across runs."""

    operator: Operator | None = None
    help_requested: bool = False
    help_reason: str = ""
    # The help request went unanswered past wait_seconds (told once, until a takeover).
    help_unanswered: bool = False
    # An operator's whispers, for the agent's next turn.
    guidance: list[str] = Field(default_factory=list)
    # The agent owes a reply with no new user message (a hand-back, a whisper's reply_now).
    reply_due: bool = False
    # A user message came while an operator held the session and none answered it yet.
    unanswered: bool = False
    # When the human_handoff timers fire, if armed.
    help_deadline: datetime | None = None
    idle_deadline: datetime | None = None


class SquadSeat(BaseModel):
    name: str
    agent: SessionAgent


class SquadState(BaseModel):
    """A squad session's members (frozen at open, MCP tools discovered), the one answering,
    the first message of the transcript it reads, and the transfers so far."""

    squad_id: str
    version: int
    members: list[SquadSeat]
    active: str
    visible_from: int = 0
    transfers: list[Transfer] = Field(default_factory=list)


class CarriedState(BaseModel):
    """What one run hands to the next at continue-as-new: no transcript, only its position."""

    first_seq: int
    recorded_count: int
    # Transcript writes begun in earlier runs (TranscriptRecorder.batches).
    batches_written: int = 0
    created_time: datetime
    last_activity: datetime
    inbox: list[InboxItem]
    answered: dict[str, TurnOutcome]
    # An end request still waiting for the backlog to drain when the run handed over.
    end_requested: bool = False
    note: str | None = None
    end_reason: FinishReason = FinishReason.USER_END
    # Whether some idempotency key was dropped from `answered`: a key not found there is then
    # looked up in the database before it runs a turn.
    keys_forgotten: bool = False
    context: list[str] = Field(default_factory=list)
    # Read only: what a run carried before DeskState did (the desk holds it now).
    help_requested: bool = False
    desk: DeskState | None = None


class SessionStart(BaseModel):
    session_id: str
    account_id: str
    agent: SessionAgent
    first_message: str | None = None
    channel: str
    external_id: dict[str, Any] | None = None
    endpoint_hash: str | None = None
    additional_data: dict[str, Any] = Field(default_factory=dict)
    ttl_seconds: int
    max_message_chars: int
    max_tool_steps: int
    turns_per_run: int
    # USD of LLM cost past which the session is answered with the budget message and ends.
    budget_usd: float | None = None
    # Hand over to a new run, backlog or not, once history passes this fraction of the
    # server's limits (50 MB, 51,200 events).
    history_handover_fraction: float = 0.5
    # Outcomes kept in memory (and carried across continue-as-new) by idempotency key; older
    # keys are answered from the database.
    answered_keys_kept: int = 256
    webhook_retry_window_seconds: float = 86_400
    webhook_retry_initial_seconds: float = 1.0
    # The context strings given at open (at most CONTEXT_KEPT), read by the model every turn.
    context: list[str] = Field(default_factory=list)
    # A squad session: its members; `agent` is the active one. Carried across runs as it is.
    squad: SquadState | None = None
    carried: CarriedState | None = None


class OpenRequest(BaseModel):
    """The update that comes with the start; `session_id` is the id this caller proposed."""

    session_id: str


class UserMessage(BaseModel):
    content: str
    idempotency_key: str | None = None
    # Fixed by the API for one request across its retries: a message without a key keeps its
    # identity when its caller is told to retry against the next run.
    request_id: str | None = None
    # The session the caller means; a workflow ID outlives sessions (external endpoints).
    session_id: str | None = None
    # Media that came with the message (an SMS's MediaUrlN), by URL.
    attachments: list[Attachment] = Field(default_factory=list)


class ContextAdded(BaseModel):
    content: str
    session_id: str | None = None


class TakeoverRequest(BaseModel):
    operator: Operator
    session_id: str | None = None


class OperatorReply(BaseModel):
    """An operator's message to the user; by the operator holding the session."""

    content: str
    session_id: str | None = None


class OperatorWhisper(BaseModel):
    """Guidance for the agent's next turn, never shown to the user; with `reply_now` the
    agent answers at once."""

    content: str
    reply_now: bool = False
    operator: Operator | None = None
    session_id: str | None = None


class HandbackRequest(BaseModel):
    operator: Operator | None = None
    session_id: str | None = None


class OperatorMessageResult(BaseModel):
    seq: int
    message: Message


class EndRequest(BaseModel):
    note: str | None = None
    session_id: str | None = None
    # Why the session ends: the caller ended it, or (SMS) the person opted out.
    reason: Literal[FinishReason.USER_END, FinishReason.OPT_OUT] = FinishReason.USER_END


class TurnResult(BaseModel):
    """The messages a turn produced; None when they must be read from the database
    (`first_seq`, `count`), for a retried key answered before a continue-as-new."""

    messages: list[Message] | None
    is_final: bool
    first_seq: int = 0
    count: int = 0
    mode: SessionMode = SessionMode.AI

    @classmethod
    def of(cls, outcome: TurnOutcome) -> TurnResult:
        """What the caller of a turn reads; a failed turn is raised as its failure."""
        if outcome.error_type is not None:
            raise ApplicationError(outcome.error or "the turn failed", type=outcome.error_type)
        return cls(
            messages=None if outcome.messages_dropped else outcome.messages,
            is_final=outcome.is_final,
            first_seq=outcome.first_seq,
            count=outcome.count,
            mode=outcome.mode,
        )


class SessionState(BaseModel):
    """The live session as the workflow knows it; `messages` start at `first_seq` (earlier
    ones were recorded in the database before a continue-as-new)."""

    id: str
    agent_id: str
    channel: str
    first_seq: int
    messages: list[Message]
    created_time: datetime
    last_activity: datetime
    ttl_seconds: int
    status: SessionStatus
    final_reason: FinishReason | None = None
    context: list[str] = Field(default_factory=list)
    help_requested: bool = False
    mode: SessionMode = SessionMode.AI
    active_human: Operator | None = None
    pending_approvals: list[PendingApproval] = Field(default_factory=list)
    squad_id: str | None = None


class OpenResult(BaseModel):
    session: SessionState
    created: bool
