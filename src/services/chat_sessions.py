"""Chat sessions: open, read, list, message and end, over Temporal and the database.

Active sessions are read from their workflow; final ones from the database, which keeps them
after Temporal's retention has removed the workflow.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from cachetools import LRUCache
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from src.config import Settings
from src.costs import session_costs
from src.db.audit import TemplateName, record_missing_variables
from src.db.queries import audit_page, newest_first, page_of, transcript
from src.db.snapshots import SnapshotStore
from src.db.tables import AuditEvent, ChatSession
from src.domain import (
    AgentPatch,
    AgentSnapshot,
    AgentSpec,
    Artifact,
    Attachment,
    FinishReason,
    Message,
    Operator,
    PendingApproval,
    SessionMode,
    SessionStatus,
    SessionSummary,
    SessionView,
    Usage,
)
from src.errors import (
    AgentFailed,
    Conflict,
    InvalidInput,
    NotFound,
    ParleyError,
    PayloadTooLarge,
    QuotaExceeded,
    Unavailable,
)
from src.pagination import encode_cursor
from src.services.agents import AgentService
from src.services.squads import SquadService
from src.services.temporal_errors import temporal_unavailable, unavailable
from src.session_ids import (
    endpoint_hash,
    message_update_id,
    operator_message_update_id,
    session_workflow_id,
)
from src.sms.delivery import with_delivery
from src.sms.phone_numbers import TWILIO_SMS
from src.templates import render_for_caller, template_values
from src.temporal.failures import FailureType
from src.temporal.search_attributes import FINAL_REASON, SESSION_ID, STATUS
from src.workflows.chat_session import ChatSessionWorkflow
from src.workflows.chat_session_models import (
    ContextAdded,
    EndRequest,
    HandbackRequest,
    OpenRequest,
    OpenResult,
    OperatorMessageResult,
    OperatorReply,
    OperatorWhisper,
    SessionStart,
    SessionState,
    SquadSeat,
    SquadState,
    TakeoverRequest,
    TurnResult,
    UserMessage,
)
from src.workflows.tool_approvals import ApprovalDecision

T = TypeVar("T")


class WorkflowGone(NotFound):
    """The session's workflow has closed (the session finished a moment ago)."""


log = logging.getLogger(__name__)

# How long a caller is kept waiting while a session hands over to its next run (a few ms in
# practice) or while the previous session on an endpoint closes.
_HANDOVER_RETRY_SECONDS = 0.02
_HANDOVER_WAIT_SECONDS = 30.0

# Sessions whose workflow ID the service remembers (an entry is ~200 bytes).
_REMEMBERED_SESSIONS = 100_000

# A query needs a worker; with none running, answer from the database rather than hang.
_QUERY_TIMEOUT = timedelta(seconds=5)
_FINISH_REASONS = {reason.value for reason in FinishReason}

# The server's rejection of an update that reached a workflow task the worker completed
# without processing it (seen when dozens of update-with-starts race for one new workflow):
# the handler never ran, so sending it again is safe whatever the update was.
_UNPROCESSED_UPDATE = "UnprocessedUpdate"


def _not_admitted(error: RPCError) -> bool:
    """Whether the server turned an update away before it reached the workflow: over the
    per-workflow limit of in-flight updates, or aborted because the workflow's update registry
    was reset. Neither ran the handler, so sending again is safe."""
    return error.status == RPCStatusCode.RESOURCE_EXHAUSTED or (
        error.status == RPCStatusCode.UNAVAILABLE and "update was aborted" in error.message
    )


_UPDATE_ERRORS: dict[str, type[ParleyError]] = {
    FailureType.SESSION_FINAL: Conflict,
    FailureType.INVALID_MESSAGE: InvalidInput,
    FailureType.MESSAGE_TOO_LARGE: PayloadTooLarge,
    FailureType.TURN_FAILED: AgentFailed,
    FailureType.OPEN_FAILED: AgentFailed,
    FailureType.MODE_CONFLICT: Conflict,
    FailureType.APPROVAL_NOT_PENDING: NotFound,
}


class OpenChat(BaseModel):
    agent_id: str | None = None
    agent: AgentSpec | None = None
    agent_overrides: AgentPatch | None = None
    squad_id: str | None = None
    channel: str
    external_id: dict[str, Any] | None = None
    ttl_seconds: int | None = None
    additional_data: dict[str, Any] = {}
    context: list[str] = []


class ChatFilters(BaseModel):
    status: SessionStatus | None = None
    agent_id: str | None = None
    channel: str | None = None


class ChatSessionService:
    def __init__(
        self,
        settings: Settings,
        client: Client,
        sessions: async_sessionmaker[AsyncSession],
        agents: AgentService,
        snapshots: SnapshotStore,
        squads: SquadService,
    ) -> None:
        self._settings = settings
        self._squads = squads
        self._client = client
        self._sessions = sessions
        self._agents = agents
        self._snapshots = snapshots
        # The workflow a session lives in never changes: remembered at the first message, so a
        # turn needs no database read. A session that has become final since is refused by
        # Temporal itself: its run is closed, or its validator refuses another session's message.
        self._workflow_ids: LRUCache[tuple[str, str], str] = LRUCache(_REMEMBERED_SESSIONS)

    async def open(
        self, account_id: str, request: OpenChat, *, max_ttl_seconds: int | None = None
    ) -> tuple[SessionView, bool]:
        """Open a session, or join the active one on the same external endpoint.
        Returns the session and whether this call created it. `max_ttl_seconds` is a face's
        own bound for the TTL (Vapi's 30 days); PARLEY_MAX_TTL_SECONDS otherwise."""
        squad: SquadState | None = None
        if request.squad_id is not None:
            squad, snapshots = await self._freeze_squad(account_id, request.squad_id)
            snapshot = snapshots[0]
        else:
            snapshot = await self._agents.resolve(
                account_id, request.agent_id, request.agent, request.agent_overrides
            )
            snapshots = [snapshot]
        endpoint = (
            endpoint_hash(account_id, request.channel, request.external_id)
            if request.external_id is not None
            else None
        )
        start, first_missing = self._session_start(
            account_id, request, snapshot, endpoint, max_ttl_seconds
        )
        start.squad = squad
        await self._check_active_sessions(account_id, endpoint)
        for frozen in snapshots:
            await self._snapshots.save(account_id, frozen)
        workflow_id = session_workflow_id(endpoint)
        result = await self._start_or_join(start, snapshot, workflow_id)
        if not result.created:
            return await self.get(account_id, result.session.id), False
        await record_missing_variables(
            self._sessions, account_id, start.session_id, "first_message", first_missing
        )
        if self._settings.temporal_ui_url:
            log.info(
                "session %s opened: %s/namespaces/%s/workflows/%s",
                start.session_id,
                self._settings.temporal_ui_url.rstrip("/"),
                self._settings.temporal_namespace,
                workflow_id,
            )
        return await self._view(account_id, result.session), True

    def _session_start(
        self,
        account_id: str,
        request: OpenChat,
        snapshot: AgentSnapshot,
        endpoint: str | None,
        max_ttl_seconds: int | None = None,
    ) -> tuple[SessionStart, list[str]]:
        """The new session's start input (its TTL checked, its templates rendered), and the
        variables its first message lacked."""
        ttl = next(
            t
            for t in (
                request.ttl_seconds,
                snapshot.spec.default_ttl_seconds,
                self._settings.default_ttl_seconds,
            )
            if t is not None
        )
        self._check_ttl(ttl, max_ttl_seconds)
        values = template_values(
            snapshot.spec.variables,
            request.additional_data,
            request.channel,
            _now(),
            request.external_id,
        )
        # The system prompt is rendered at each turn; here only checked against the size limit.
        self._render("system_prompt", snapshot.spec.system_prompt, values)
        first_message: str | None = None
        first_missing: list[str] = []
        if snapshot.spec.first_message:
            first_message, first_missing = self._render(
                "first_message", snapshot.spec.first_message, values
            )
        settings = self._settings
        start = SessionStart(
            session_id=str(uuid.uuid4()),
            account_id=account_id,
            agent=snapshot.summary(),
            first_message=first_message,
            channel=request.channel,
            external_id=request.external_id,
            endpoint_hash=endpoint,
            additional_data=request.additional_data,
            ttl_seconds=ttl,
            max_message_chars=settings.max_message_chars,
            max_tool_steps=snapshot.spec.max_tool_steps or settings.max_tool_steps,
            turns_per_run=settings.turns_per_run,
            budget_usd=snapshot.spec.budget_usd or settings.session_budget_usd,
            history_handover_fraction=settings.history_handover_fraction,
            answered_keys_kept=settings.answered_keys_kept,
            webhook_retry_window_seconds=settings.webhook_retry_window_seconds,
            webhook_retry_initial_seconds=settings.webhook_retry_initial_seconds,
            context=request.context,
        )
        return start, first_missing

    async def _freeze_squad(
        self, account_id: str, squad_id: str
    ) -> tuple[SquadState, list[AgentSnapshot]]:
        """The squad's members as this session runs them (404 for an unknown squad)."""
        record = await self._squads.get(account_id, squad_id)
        members = await self._squads.freeze_members(account_id, record.spec)
        state = SquadState(
            squad_id=record.id,
            version=record.version,
            members=[SquadSeat(name=m.name, agent=m.snapshot.summary()) for m in members],
            active=members[0].name,
        )
        return state, [m.snapshot for m in members]

    async def _start_or_join(
        self, start: SessionStart, snapshot: AgentSnapshot, workflow_id: str
    ) -> OpenResult:
        """Update-with-start: starts the session's workflow, or joins the one already
        running on its endpoint."""

        async def open_once() -> Any:
            operation = WithStartWorkflowOperation(
                ChatSessionWorkflow.run,
                start,
                id=workflow_id,
                task_queue=self._settings.temporal_task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                static_summary=f"chat with {snapshot.spec.name} on {start.channel}",
                static_details=(
                    f"session `{start.session_id}` · agent `{snapshot.id}` "
                    f"v{snapshot.version} · model {start.agent.model_name}"
                ),
            )
            return await self._client.execute_update_with_start_workflow(
                ChatSessionWorkflow.open,
                OpenRequest(session_id=start.session_id),
                start_workflow_operation=operation,
            )

        # A session on this endpoint that is finishing refuses joiners; once its run has
        # closed, the same workflow ID starts a new session.
        try:
            result: OpenResult = await _retrying(
                open_once, {FailureType.SESSION_FINAL, FailureType.DRAINING}, _HANDOVER_WAIT_SECONDS
            )
        except Conflict:
            raise Unavailable(
                "the previous session on this endpoint is still closing; retry the request"
            ) from None
        return result

    async def _check_active_sessions(self, account_id: str, endpoint: str | None) -> None:
        """PARLEY_MAX_ACTIVE_SESSIONS per account, counted from the database (stateful
        sessions only: a stateless conversation has no inactivity timer to end it). Joining
        the active session of an endpoint adds none. Concurrent opens may pass it by a few."""
        limit = self._settings.max_active_sessions
        if limit == 0:
            return
        active = (ChatSession.account_id == account_id) & (
            ChatSession.status == SessionStatus.ACTIVE.value
        )
        async with self._sessions() as db:
            count = await db.scalar(
                select(func.count())
                .select_from(ChatSession)
                .where(active, ChatSession.kind == "session")
            )
            if (count or 0) < limit:
                return
            if endpoint is not None and await db.scalar(
                select(ChatSession.id).where(active, ChatSession.endpoint_hash == endpoint)
            ):
                return
        raise QuotaExceeded(
            f"the account has {count} active sessions, the most it may have "
            "(PARLEY_MAX_ACTIVE_SESSIONS); end one or wait for one to finish",
            {"limit": limit, "active": count},
        )

    async def get(self, account_id: str, session_id: str) -> SessionView:
        row = await self._row(account_id, session_id)
        if row.status == SessionStatus.FINAL.value or row.kind == "stateless":
            return await self._view_from_db(row)
        try:
            state = await self._client.get_workflow_handle(row.workflow_id).query(
                ChatSessionWorkflow.state, rpc_timeout=_QUERY_TIMEOUT
            )
        except (RPCError, WorkflowQueryFailedError):
            # No worker answered, or the workflow is gone: the database remains.
            return await self._view_without_worker(row)
        if state.id != session_id:
            return await self._view_from_db(row)
        return await self._view(account_id, state)

    async def list_sessions(
        self, account_id: str, filters: ChatFilters, limit: int, cursor: str | None
    ) -> tuple[list[SessionSummary], str | None]:
        """Sessions without their transcripts (read one with `get`), newest first."""
        query = select(ChatSession).where(ChatSession.account_id == account_id)
        if filters.status is not None:
            query = query.where(ChatSession.status == filters.status.value)
        if filters.agent_id is not None:
            query = query.where(ChatSession.agent_id == filters.agent_id)
        if filters.channel is not None:
            query = query.where(ChatSession.channel == filters.channel)
        query = newest_first(query, ChatSession.created_time, ChatSession.id, limit, cursor)
        async with self._sessions() as db:
            rows = (await db.scalars(query)).all()
        page, next_cursor = page_of(
            rows, limit, lambda row: encode_cursor(row.created_time, row.id)
        )
        return [_summary_of_row(row) for row in page], next_cursor

    async def send(
        self, account_id: str, session_id: str, content: str, idempotency_key: str | None
    ) -> TurnResult:
        workflow_id = await self.check_send(account_id, session_id, content, idempotency_key)
        return await self.deliver(
            account_id, session_id, workflow_id, content, idempotency_key, str(uuid.uuid4())
        )

    async def check_send(
        self, account_id: str, session_id: str, content: str, idempotency_key: str | None
    ) -> str:
        """What refuses a message before it is sent (size, unknown or final session); the
        workflow id the session lives under."""
        if len(content) > self._settings.max_message_chars:
            raise PayloadTooLarge(
                f"the message has {len(content)} characters; the limit is "
                f"{self._settings.max_message_chars}"
            )
        address = (account_id, session_id)
        workflow_id = self._workflow_ids.get(address)
        if workflow_id is None:
            row = await self._session_row(account_id, session_id)
            if row.status == SessionStatus.FINAL.value and idempotency_key is None:
                raise Conflict("the session is final; open a new one")
            workflow_id = row.workflow_id
            self._workflow_ids[address] = workflow_id
        return workflow_id

    async def deliver(
        self,
        account_id: str,
        session_id: str,
        workflow_id: str,
        content: str,
        idempotency_key: str | None,
        request_id: str,
    ) -> TurnResult:
        """The message to its session, and the turn that answers it. The session's stream
        marks the turn's events with `idempotency_key or request_id`."""
        address = (account_id, session_id)
        handle: WorkflowHandle[Any, Any] = self._client.get_workflow_handle(workflow_id)
        update_id = message_update_id(session_id, idempotency_key) if idempotency_key else None
        # One request id across the retries below: a caller told to retry while its message
        # waits in a session's queue (a hand-over to the next run) finds it there, queued once.
        message = UserMessage(
            content=content,
            idempotency_key=idempotency_key,
            session_id=session_id,
            request_id=request_id,
        )

        async def send_once() -> TurnResult:
            return await handle.execute_update(
                ChatSessionWorkflow.send_message,  # type: ignore[arg-type]  # SDK typing of async updates
                message,
                id=update_id,
            )

        try:
            result = await _retrying(send_once, {FailureType.DRAINING}, _HANDOVER_WAIT_SECONDS)
        except NotFound:
            self._workflow_ids.pop(address, None)
            raise Conflict("the session is final; open a new one") from None
        except Conflict:
            self._workflow_ids.pop(address, None)
            raise
        if result.messages is None:  # a retry answered in an earlier run: read them back
            async with self._sessions() as db:
                result.messages = await transcript(
                    db, session_id, result.first_seq, result.first_seq + result.count
                )
        return result

    async def end(
        self,
        account_id: str,
        session_id: str,
        note: str | None,
        reason: Literal[FinishReason.USER_END, FinishReason.OPT_OUT] = FinishReason.USER_END,
    ) -> SessionView:
        await self.request_end(account_id, session_id, note, reason, wait=True)
        return await self.get(account_id, session_id)

    async def request_end(
        self,
        account_id: str,
        session_id: str,
        note: str | None,
        reason: Literal[FinishReason.USER_END, FinishReason.OPT_OUT],
        wait: bool,
    ) -> None:
        """Asks the session to end; with `wait`, returns once it is final, else as soon as
        the session has taken the request (a webhook that must answer at once)."""
        row = await self._session_row(account_id, session_id)
        if row.status == SessionStatus.FINAL.value:
            return
        handle = self._client.get_workflow_handle(row.workflow_id)
        request = EndRequest(note=note, session_id=session_id, reason=reason)

        async def end_once() -> Any:
            if wait:
                return await handle.execute_update(ChatSessionWorkflow.end, request)
            return await handle.start_update(
                ChatSessionWorkflow.end,
                request,
                wait_for_stage=WorkflowUpdateStage.ACCEPTED,
            )

        try:
            await _retrying(end_once, {FailureType.DRAINING}, _HANDOVER_WAIT_SECONDS)
        except (NotFound, Conflict):
            pass  # the session closed a moment ago; the database has the final record

    async def add_context(self, account_id: str, session_id: str, content: str) -> list[str]:
        """One more context string for the session's later turns; the ones kept, oldest first."""
        added = ContextAdded(content=content, session_id=session_id)
        context: list[str] = await self._update_active(
            account_id, session_id, ChatSessionWorkflow.add_context, added
        )
        return context

    # ---- human operators -----------------------------------------------------------------

    async def take_over(self, account_id: str, session_id: str, operator: Operator) -> SessionView:
        """The operator holds the session from now on (the agent stops answering)."""
        request = TakeoverRequest(operator=operator, session_id=session_id)
        await self._update_active(account_id, session_id, ChatSessionWorkflow.take_over, request)
        return await self.get(account_id, session_id)  # the update's state has no transcript

    async def operator_message(
        self, account_id: str, session_id: str, content: str, idempotency_key: str | None = None
    ) -> OperatorMessageResult:
        """A retry with the same `idempotency_key` (in the same run) gets the first one's
        message instead of writing it again."""
        reply = OperatorReply(content=content, session_id=session_id)
        update_id = (
            operator_message_update_id(session_id, idempotency_key) if idempotency_key else None
        )
        result: OperatorMessageResult = await self._update_active(
            account_id, session_id, ChatSessionWorkflow.operator_message, reply, update_id
        )
        return result

    async def whisper(
        self,
        account_id: str,
        session_id: str,
        content: str,
        reply_now: bool,
        operator: Operator | None,
    ) -> TurnResult:
        whisper = OperatorWhisper(
            content=content, reply_now=reply_now, operator=operator, session_id=session_id
        )
        result: TurnResult = await self._update_active(
            account_id, session_id, ChatSessionWorkflow.whisper, whisper
        )
        return result

    async def hand_back(
        self, account_id: str, session_id: str, operator: Operator | None
    ) -> SessionView:
        request = HandbackRequest(operator=operator, session_id=session_id)
        await self._update_active(account_id, session_id, ChatSessionWorkflow.hand_back, request)
        return await self.get(account_id, session_id)  # the update's state has no transcript

    async def decide_approval(
        self,
        account_id: str,
        session_id: str,
        tool_call_id: str,
        approved: bool,
        note: str | None,
        operator: Operator | None,
    ) -> PendingApproval:
        """Lets a tool call waiting for approval run, or refuses it (the model is told)."""
        decision = ApprovalDecision(
            tool_call_id=tool_call_id,
            approved=approved,
            note=note,
            operator=operator,
            session_id=session_id,
        )
        decided: PendingApproval = await self._update_active(
            account_id, session_id, ChatSessionWorkflow.decide_approval, decision
        )
        return decided

    async def _update_active(
        self,
        account_id: str,
        session_id: str,
        update: Any,
        argument: BaseModel,
        update_id: str | None = None,
    ) -> Any:
        """An update to an active session of the account's: 404 for another account's, 409
        for a final session or a stateless conversation (it has no workflow to ask)."""
        row = await self._session_row(account_id, session_id)
        if row.status == SessionStatus.FINAL.value:
            raise Conflict("the session is final; open a new one")
        handle: WorkflowHandle[Any, Any] = self._client.get_workflow_handle(row.workflow_id)

        async def update_once() -> Any:
            return await handle.execute_update(update, argument, id=update_id)

        try:
            return await _retrying(update_once, {FailureType.DRAINING}, _HANDOVER_WAIT_SECONDS)
        except WorkflowGone:
            raise Conflict("the session is final; open a new one") from None

    async def receive(
        self,
        account_id: str,
        session_id: str,
        content: str,
        idempotency_key: str,
        attachments: list[Attachment],
    ) -> None:
        """A message from an asynchronous channel (SMS), queued by signal: nobody waits for
        the turn. A redelivery with the same `idempotency_key` is taken once."""
        row = await self._session_row(account_id, session_id)
        message = UserMessage(
            content=content,
            idempotency_key=idempotency_key,
            session_id=session_id,
            attachments=attachments,
        )
        handle = self._client.get_workflow_handle(row.workflow_id)
        try:
            await handle.signal(ChatSessionWorkflow.receive_message, message)
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise Conflict("the session is final; open a new one") from None
            if temporal_unavailable(error):
                raise unavailable() from None
            raise

    def _render(
        self, field: TemplateName, template: str, values: dict[str, Any]
    ) -> tuple[str, list[str]]:
        return render_for_caller(
            field, template, values, self._settings.max_rendered_template_chars
        )

    # ---- reading ---------------------------------------------------------------------------

    def _check_ttl(self, ttl: int, max_ttl_seconds: int | None = None) -> None:
        low = self._settings.min_ttl_seconds
        high = max_ttl_seconds or self._settings.max_ttl_seconds
        if not low <= ttl <= high:
            raise InvalidInput(f"ttl_seconds must be between {low} and {high}; got {ttl}")

    async def check_owned(self, account_id: str, session_id: str) -> ChatSession:
        """The conversation's row (a session or a stateless conversation), if the account's."""
        return await self._row(account_id, session_id)

    async def _row(self, account_id: str, session_id: str) -> ChatSession:
        async with self._sessions() as db:
            row = await db.get(ChatSession, session_id)
        if row is None or row.account_id != account_id:
            raise NotFound(f"chat session {session_id!r} not found")
        return row

    async def _session_row(self, account_id: str, session_id: str) -> ChatSession:
        """A row that is a stateful session (not a stateless conversation)."""
        row = await self._row(account_id, session_id)
        if row.kind == "stateless":
            raise Conflict(
                "this is a stateless conversation: continue or end it at "
                "/api/v1/text-chat/completion with its state"
            )
        return row

    async def _view(self, account_id: str, state: SessionState) -> SessionView:
        messages = state.messages
        sms = state.channel == TWILIO_SMS
        if state.first_seq > 0 or sms:
            async with self._sessions() as db:
                if state.first_seq > 0:
                    messages = await transcript(db, state.id, stop=state.first_seq) + messages
                if sms:
                    messages = await with_delivery(db, state.id, messages)
        cost, costs = session_costs(messages, [], self._settings.model_prices)
        return SessionView(
            id=state.id,
            agent_id=state.agent_id,
            channel=state.channel,
            messages=messages,
            cost=cost,
            costs=costs,
            created_time=state.created_time,
            last_activity=state.last_activity,
            ttl_seconds=state.ttl_seconds,
            is_final=state.status == SessionStatus.FINAL,
            status=state.status,
            final_reason=state.final_reason,
            context=state.context,
            help_requested=state.help_requested,
            mode=state.mode,
            active_human=state.active_human,
            pending_approvals=state.pending_approvals,
            squad_id=state.squad_id,
        )

    async def _view_without_worker(self, row: ChatSession) -> SessionView:
        """The database's view, final as soon as the workflow is: a session that has just
        finished is final in its search attributes (set as it finished, readable with no
        worker up) before the pipeline's first step writes the final record."""
        view = await self._view_from_db(row)
        if view.is_final:
            return view
        try:
            description = await self._client.get_workflow_handle(row.workflow_id).describe(
                rpc_timeout=_QUERY_TIMEOUT
            )
        except RPCError:
            return view
        attributes = description.typed_search_attributes
        if (
            attributes.get(SESSION_ID) != row.id
            or attributes.get(STATUS) != SessionStatus.FINAL.value
        ):
            return view
        reason = attributes.get(FINAL_REASON)
        return view.model_copy(
            update={
                "is_final": True,
                "status": SessionStatus.FINAL,
                "final_reason": FinishReason(reason) if reason in _FINISH_REASONS else None,
            }
        )

    async def _view_from_db(self, row: ChatSession) -> SessionView:
        async with self._sessions() as db:
            messages = await transcript(db, row.id)
            if row.channel == TWILIO_SMS:
                messages = await with_delivery(db, row.id, messages)
        return self._view_of_row(row, messages)

    def _view_of_row(self, row: ChatSession, messages: list[Message]) -> SessionView:
        analysis = [Usage.model_validate(usage) for usage in row.analysis_usage or []]
        cost, costs = session_costs(messages, analysis, self._settings.model_prices)
        view = _view_of_row(row, messages)
        return view.model_copy(
            update={
                "cost": cost,
                "costs": costs,
                "artifact": Artifact.model_validate(row.artifact) if row.artifact else None,
            }
        )

    async def events(
        self, account_id: str, session_id: str, limit: int, cursor: str | None
    ) -> tuple[list[AuditEvent], str | None]:
        """The session's audit log, oldest first."""
        await self._row(account_id, session_id)  # the caller's account's, or NotFound
        async with self._sessions() as db:
            return await audit_page(db, session_id, limit, cursor)


def _now() -> datetime:
    return datetime.now(UTC)


def _view_of_row(row: ChatSession, messages: list[Message]) -> SessionView:
    status = SessionStatus(row.status)
    return SessionView(
        id=row.id,
        agent_id=row.agent_id,
        channel=row.channel,
        messages=messages,
        created_time=row.created_time,
        last_activity=row.last_activity,
        ttl_seconds=row.ttl_seconds,
        is_final=status == SessionStatus.FINAL,
        status=status,
        final_reason=FinishReason(row.final_reason) if row.final_reason else None,
        context=row.context or [],
        **_presence_of_row(row),
    )


def _summary_of_row(row: ChatSession) -> SessionSummary:
    status = SessionStatus(row.status)
    return SessionSummary(
        id=row.id,
        agent_id=row.agent_id,
        channel=row.channel,
        created_time=row.created_time,
        last_activity=row.last_activity,
        ttl_seconds=row.ttl_seconds,
        is_final=status == SessionStatus.FINAL,
        status=status,
        final_reason=FinishReason(row.final_reason) if row.final_reason else None,
        **_presence_of_row(row),
    )


def _presence_of_row(row: ChatSession) -> dict[str, Any]:
    """Who answers the session, as its last write left it."""
    return {
        "mode": SessionMode(row.mode) if row.mode else SessionMode.AI,
        "help_requested": bool(row.help_requested),
        "active_human": Operator.model_validate(row.active_human) if row.active_human else None,
        "squad_id": row.squad_id,
    }


async def _retrying(
    call: Callable[[], Awaitable[T]], retry_types: set[str], patience_seconds: float
) -> T:
    """Run a Temporal call, retrying the rejections in `retry_types`, mapping the rest of
    Temporal's errors to domain errors."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience_seconds
    delay = _HANDOVER_RETRY_SECONDS
    while True:
        try:
            return await call()
        except WorkflowUpdateFailedError as error:
            cause = error.cause if isinstance(error.cause, ApplicationError) else None
            kind = cause.type if cause else None
            retryable = kind in retry_types or kind == _UNPROCESSED_UPDATE
            if retryable and loop.time() < deadline:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if kind in _UPDATE_ERRORS:
                raise _UPDATE_ERRORS[kind](cause.message if cause else str(error)) from None
            if retryable or kind == "AcceptedUpdateCompletedWorkflow":
                raise Unavailable("the session is busy handing over; retry the request") from None
            raise
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            raise Unavailable("the session did not answer in time; retry the request") from None
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise WorkflowGone("the session's workflow is not running") from None
            if _not_admitted(error) and loop.time() < deadline:
                # Past the SDK's own ~10 s of retries, a crowd of updates on one workflow
                # (many opens racing for one endpoint) is still being turned away; spread the
                # retries out so they stop arriving together.
                await asyncio.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 1.0)
                continue
            if temporal_unavailable(error):
                raise unavailable() from None
            raise
