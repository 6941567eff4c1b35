"""ChatSessionWorkflow: one durable workflow per stateful chat session.

The run method reads like the session's life: open, then wait for a message, the end request
or the inactivity timeout; answer each message with an agent turn; finish. Messages arrive as
Updates (API callers wait for the reply) or Signals (asynchronous channels); both feed one
inbox that is answered in order, one turn at a time.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from src.activities.mcp_tools import (
        DISCOVERY_ACTIVITY_OPTIONS,
        DiscoveryRequest,
        McpToolActivities,
    )
    from src.activities.session_store import (
        LOCAL_STORE_ACTIVITY_OPTIONS,
        STORE_ACTIVITY_OPTIONS,
        AnsweredTurn,
        AuditEntry,
        KeyLookup,
        MessagesProduced,
        SessionOpened,
        SessionStoreActivities,
    )
    from src.domain import FinishReason, Message, SessionStatus
    from src.llm.types import LLMReply, LLMToolCall
    from src.workflows.agent_activities import ask_model, call_tool, failure_reason
    from src.workflows.agent_loop import TurnEnd, run_agent_turn
    from src.workflows.chat_session_models import (
        CarriedState,
        EndRequest,
        InboxItem,
        OpenRequest,
        OpenResult,
        SessionStart,
        SessionState,
        TurnOutcome,
        TurnResult,
        UserMessage,
    )
    from src.workflows.finish_pipeline import run_finish_pipeline
    from src.workflows.webhook_events import WebhookRetry, raise_webhook_event

# Error types the API maps to HTTP statuses; they are part of the API contract.
SESSION_FINAL = "SessionFinal"
DRAINING = "Draining"
INVALID_MESSAGE = "InvalidMessage"
MESSAGE_TOO_LARGE = "MessageTooLarge"
TURN_FAILED = "TurnFailed"
OPEN_FAILED = "OpenFailed"

SESSION_ID = SearchAttributeKey.for_keyword("ParleySessionId")
AGENT_ID = SearchAttributeKey.for_keyword("ParleyAgentId")
CHANNEL = SearchAttributeKey.for_keyword("ParleyChannel")
STATUS = SearchAttributeKey.for_keyword("ParleyStatus")
FINAL_REASON = SearchAttributeKey.for_keyword("ParleyFinalReason")

# Patch ids (workflow.patched): persisted in history, never rename or reuse one.
FINISH_WRITES_REMAINDER = "finish-writes-unrecorded-in-persist-final"
RECORD_LOCALLY = "record-messages-in-local-activities"
KEEP_INACTIVITY_TIMER = "keep-one-inactivity-timer-across-turns"
# A turn answered with the budget message (the LLM activity found the budget used up) finishes
# the session with reason `budget`; before, such a session went on.
FINISH_WHEN_BUDGET_USED_UP = "finish-when-the-budget-is-used-up"
# An agent's post-conversation analysis, artifact and completion webhook run in an abandoned
# SessionAnalysisWorkflow child: the session closes once its final record is written, and its
# endpoint can open the next session while the analysis runs.
FINISH_ANALYSIS_IN_A_CHILD = "finish-analysis-in-a-child-workflow"
CONTINUE_WITH_BACKLOG = "continue-as-new-with-a-backlog"
VALIDATE_CHANNEL_MESSAGES = "validate-channel-messages"
KEYS_IN_DATABASE = "idempotency-keys-in-database"

# The server's per-run history limits; a run hands over at a fraction of them.
_HISTORY_BYTES_LIMIT = 50 * 1024 * 1024
_HISTORY_EVENTS_LIMIT = 51_200
# Updates a run may take beyond `turns_per_run` while a backlog drains; with turns_per_run
# at most 1,500 this stays under the server's 2,000 updates per run.
_BACKLOG_UPDATES = 300


@workflow.defn(name="ChatSessionWorkflow")
class ChatSessionWorkflow:
    @workflow.init
    def __init__(self, start: SessionStart) -> None:
        carried = start.carried
        self._start = start
        self._agent = start.agent
        self._open_error: str | None = None
        now = workflow.now()
        self._first_seq = carried.first_seq if carried else 0
        self._recorded = carried.recorded_count if carried else 0
        self._messages: list[Message] = []
        self._inbox: deque[InboxItem] = deque(carried.inbox if carried else [])
        # Successful outcomes by idempotency key, to answer a client's retry.
        self._answered: dict[str, TurnOutcome] = dict(carried.answered) if carried else {}
        self._keys_forgotten = carried.keys_forgotten if carried else False
        # Idempotency keys of answered user messages not yet recorded, by seq.
        self._message_keys: dict[int, str] = {}
        # Inbox item ids queued or being answered, whichever path (update, signal) brought them.
        self._taken: set[str] = {item.id for item in self._inbox}
        # Outcomes of turns whose update callers are still waiting, and how many wait.
        self._waiters: Counter[str] = Counter()
        self._outcomes: dict[str, TurnOutcome] = {}
        self._created_time = carried.created_time if carried else now
        self._last_activity = carried.last_activity if carried else now
        self._opened = carried is not None
        self._status = SessionStatus.ACTIVE
        self._final_reason: FinishReason | None = None
        self._end_requested = carried.end_requested if carried else False
        self._note: str | None = carried.note if carried else None
        self._finishing = False
        self._draining = False
        self._handing_over = False
        self._updates_this_run = 0
        self._turns_this_run = 0
        self._flushing: asyncio.Task[None] | None = None
        self._pending_events: list[AuditEntry] = []
        self._inactivity_timer: asyncio.Task[None] | None = None

    # ---- the session's life -------------------------------------------------------------

    @workflow.run
    async def run(self, start: SessionStart) -> SessionState:
        if not self._opened:
            await self._open()
            if self._open_error is not None:
                return await self._finish(FinishReason.ERROR)
        while True:
            if self._handover_due():
                await self._continue_as_new()
            if not await self._wait_for_work():
                return await self._finish(FinishReason.TTL)
            if self._inbox:
                finish = await self._answer(self._inbox.popleft())
                self._turns_this_run += 1
                if finish is not None:
                    return await self._finish(finish)
                if self._updates_this_run >= self._start.turns_per_run + _BACKLOG_UPDATES:
                    # A backlog that never empties: refuse new updates (the API retries them
                    # against the next run) before the server's per-run update limit.
                    self._draining = True
            elif self._end_requested:
                return await self._finish(FinishReason.USER_END)

    async def _wait_for_work(self) -> bool:
        """Waits for a message or the end request; False once the session has been idle for
        its TTL. One timer stays armed across turns: when it fires after the session talked
        meanwhile, it is armed again for the rest of the idle time. (A timer started and
        cancelled around every turn was two history events and a timer task per turn.)"""
        ttl = timedelta(seconds=self._start.ttl_seconds)
        if not workflow.patched(KEEP_INACTIVITY_TIMER):
            try:  # histories from before the change: a timer per wait
                await workflow.wait_condition(self._has_work, timeout=ttl)
            except TimeoutError:
                return False
            return True
        idle_since = workflow.now()
        while not self._has_work():
            timer = self._inactivity_timer
            if timer is None or timer.done():
                left = idle_since + ttl - workflow.now()
                if left <= timedelta(0):
                    return False
                self._inactivity_timer = asyncio.create_task(
                    workflow.sleep(left, summary="inactivity timeout")
                )
            await workflow.wait_condition(self._has_work_or_timer_fired)
        return True

    def _has_work(self) -> bool:
        return bool(self._inbox) or self._end_requested

    def _has_work_or_timer_fired(self) -> bool:
        timer = self._inactivity_timer
        return self._has_work() or (timer is not None and timer.done())

    async def _open(self) -> None:
        workflow.upsert_search_attributes(
            [
                SESSION_ID.value_set(self._start.session_id),
                AGENT_ID.value_set(self._agent.id),
                CHANNEL.value_set(self._start.channel),
                STATUS.value_set(SessionStatus.ACTIVE.value),
            ]
        )
        if self._agent.needs_discovery:
            try:
                self._agent = await workflow.execute_activity_method(
                    McpToolActivities.discover,
                    DiscoveryRequest(
                        account_id=self._start.account_id, snapshot_id=self._agent.snapshot_id
                    ),
                    summary="discover MCP tools",
                    **DISCOVERY_ACTIVITY_OPTIONS,
                )
            except ActivityError as error:
                self._open_error = f"the agent's tools are unavailable: {failure_reason(error)}"
        await workflow.execute_activity_method(
            SessionStoreActivities.record_opened,
            SessionOpened(
                session_id=self._start.session_id,
                account_id=self._start.account_id,
                workflow_id=workflow.info().workflow_id,
                agent=self._agent,
                channel=self._start.channel,
                external_id=self._start.external_id,
                endpoint_hash=self._start.endpoint_hash,
                additional_data=self._start.additional_data,
                ttl_seconds=self._start.ttl_seconds,
                time=self._created_time,
            ),
            summary="record session opened",
            **STORE_ACTIVITY_OPTIONS,
        )
        if self._open_error is None and self._start.first_message:
            first = Message(
                role="assistant", content=self._start.first_message, time=workflow.now()
            )
            self._append(first)
            self._record_in_background()
        self._opened = True  # the open update answers now; webhook events follow
        if self._open_error is not None:
            return
        await self._raise_event(
            "session.opened",
            "session.opened",
            {
                "agent_id": self._agent.id,
                "agent_version": self._agent.version,
                "channel": self._start.channel,
                "external_id": self._start.external_id,
                "created_time": self._created_time.isoformat(),
            },
        )
        for index in range(len(self._messages)):
            await self._raise_message_event(index)

    async def _answer(self, item: InboxItem) -> FinishReason | None:
        """Run one agent turn for a user message; returns why the session finishes with it
        (the agent finished, the budget is used up), or None: the session goes on."""
        self._append(Message(role="user", content=item.content, time=workflow.now()))
        produced_from = len(self._messages)
        user_index = produced_from - 1
        finish: FinishReason | None = None
        try:
            turn = await run_agent_turn(
                self._agent,
                self._start.max_tool_steps,
                self._complete,
                self._run_tool,
                self._append,
            )
            finish = self._finish_reason(turn)
            outcome = TurnOutcome(
                messages=self._messages[produced_from:],
                is_final=finish is not None,
                first_seq=self._first_seq + produced_from,
                count=len(self._messages) - produced_from,
            )
        except ActivityError as error:
            # The model refused or stayed unreachable: this turn fails, the session goes on.
            workflow.logger.warning("turn failed for session %s", self._start.session_id)
            outcome = TurnOutcome(
                messages=self._messages[produced_from:],
                error_type=TURN_FAILED,
                error=f"the agent could not answer: {failure_reason(error)}",
            )
        self._record_in_background()
        self._settle(item, outcome)
        self._describe()
        for index in range(user_index, len(self._messages)):
            await self._raise_message_event(index)
        return finish

    def _finish_reason(self, turn: TurnEnd) -> FinishReason | None:
        """Why the session finishes after this turn, if it does."""
        if turn.budget_used_up and workflow.patched(FINISH_WHEN_BUDGET_USED_UP):
            return FinishReason.BUDGET
        return FinishReason.AGENT_FINISH if turn.agent_finished else None

    async def _complete(self, allow_tools: bool) -> LLMReply:
        unrecorded = self._messages[self._recorded - self._first_seq :]
        return await ask_model(
            self._start.session_id,
            self._agent,
            self._recorded,
            unrecorded,
            allow_tools,
            budget_usd=self._start.budget_usd,
        )

    async def _run_tool(self, call: LLMToolCall) -> str:
        return await call_tool(self._start.session_id, self._agent, call, self._pending_events)

    async def _finish(self, reason: FinishReason) -> SessionState:
        """The finish pipeline. The session reads final at once; persistence follows, then
        the run closes while the agent's analysis (a child it abandons) may still run."""
        self._finishing = True
        if self._inactivity_timer is not None:
            self._inactivity_timer.cancel()
        self._status = SessionStatus.FINAL
        self._final_reason = reason
        for item in self._inbox:
            self._settle(item, _final_outcome())
        self._inbox.clear()
        workflow.upsert_search_attributes(
            [STATUS.value_set(SessionStatus.FINAL.value), FINAL_REASON.value_set(reason.value)]
        )
        self._describe()
        if workflow.patched(FINISH_WRITES_REMAINDER):
            # persist_final writes what is still unrecorded (messages, audit events such as
            # session.end_requested) in its own transaction: wait only for a write already
            # under way instead of scheduling one more record_messages activity first.
            if self._flushing is not None:
                await self._flushing
        else:
            await self._recorded_all()  # histories from before the change take the old path
        await run_finish_pipeline(
            agent=self._agent,
            reason=reason,
            note=self._note,
            unrecorded=self._unrecorded(),
            finished_time=workflow.now(),
            retry=self._webhook_retry(),
            inline=not self._analyse_apart(),
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._state(with_messages=False)

    def _analyse_apart(self) -> bool:
        """Whether the agent's analysis runs in a child this run abandons (sessions finished
        before FINISH_ANALYSIS_IN_A_CHILD ran it inline)."""
        return self._agent.has_analysis and workflow.patched(FINISH_ANALYSIS_IN_A_CHILD)

    def _handover_due(self) -> bool:
        """Whether to hand over to a new run before the next turn: at the turn count, when the
        server suggests it, or when history passes the set fraction of its limits; with a
        backlog too (the inbox is carried), but not when only the end request is left."""
        if self._end_requested and not self._inbox:
            return False
        due = self._should_continue_as_new()
        if due and not self._has_work():
            return True  # the one hand-over of histories from before CONTINUE_WITH_BACKLOG
        # Otherwise a run hands over only once it has answered a turn: the retries of the
        # callers it inherited count as updates, and its start alone may pass a very small
        # fraction; without this, runs would hand the backlog on without ever answering.
        if self._turns_this_run > 0 and (due or self._history_near_limit()):
            return workflow.patched(CONTINUE_WITH_BACKLOG)
        return False

    def _should_continue_as_new(self) -> bool:
        return (
            self._updates_this_run >= self._start.turns_per_run
            or workflow.info().is_continue_as_new_suggested()
        )

    def _history_near_limit(self) -> bool:
        info, fraction = workflow.info(), self._start.history_handover_fraction
        return (
            info.get_current_history_size() > fraction * _HISTORY_BYTES_LIMIT
            or info.get_current_history_length() > fraction * _HISTORY_EVENTS_LIMIT
        )

    async def _continue_as_new(self) -> None:
        """Hand over to a fresh run, with every message recorded and every handler done.
        Updates arriving meanwhile are refused with `Draining`; the API retries them and they
        land on the new run. Queued messages (signals and updates alike) are carried over, in
        order; the callers waiting on them are told `Draining` too, and their retry waits on
        the same item in the new run. A pending end request is carried as well."""
        self._draining = True
        self._handing_over = True  # releases the waiting callers: handlers cannot cross over
        await self._recorded_all()
        await workflow.wait_condition(workflow.all_handlers_finished)
        carried = CarriedState(
            first_seq=self._recorded,
            recorded_count=self._recorded,
            created_time=self._created_time,
            last_activity=self._last_activity,
            inbox=[
                item.model_copy(update={"awaited": True}) if item.id in self._waiters else item
                for item in self._inbox
            ],
            answered={
                key: outcome.model_copy(update={"messages": [], "messages_dropped": True})
                for key, outcome in self._answered.items()
            },
            end_requested=self._end_requested,
            note=self._note,
            keys_forgotten=self._keys_forgotten,
        )
        workflow.continue_as_new(
            self._start.model_copy(update={"carried": carried, "agent": self._agent})
        )

    # ---- messages in ----------------------------------------------------------------------

    @workflow.update(name="open")
    async def open(self, request: OpenRequest) -> OpenResult:
        self._updates_this_run += 1
        await workflow.wait_condition(lambda: self._opened)
        if self._open_error is not None:
            raise ApplicationError(self._open_error, type=OPEN_FAILED)
        created = request.session_id == self._start.session_id
        # A joiner reads the transcript by query: update results are history, keep them small.
        return OpenResult(session=self._state(with_messages=created), created=created)

    @open.validator
    def _validate_open(self, request: OpenRequest) -> None:
        self._refuse_if_closing()

    @workflow.update(name="send_message")
    async def send_message(self, message: UserMessage) -> TurnResult:
        self._updates_this_run += 1
        key = message.idempotency_key
        item_id = key or message.request_id
        if item_id is not None and item_id in self._answered:
            return _turn_result(self._answered[item_id])
        if key is not None and self._may_be_recorded(key):
            answered = await self._find_answered(key)
            if answered is not None:
                return TurnResult(
                    messages=None,
                    is_final=False,
                    first_seq=answered.first_seq,
                    count=answered.count,
                )
            if key in self._answered:  # answered while the database was asked
                return _turn_result(self._answered[key])
        if item_id is None:
            item_id = str(workflow.uuid4())
        self._waiters[item_id] += 1
        if item_id not in self._taken:
            self._taken.add(item_id)
            self._inbox.append(InboxItem(id=item_id, content=message.content, idempotency_key=key))
        await workflow.wait_condition(lambda: item_id in self._outcomes or self._handing_over)
        if item_id not in self._outcomes:
            raise ApplicationError("the session is moving to a new run", type=DRAINING)
        outcome = self._outcomes[item_id]
        self._waiters[item_id] -= 1
        if self._waiters[item_id] <= 0:
            del self._waiters[item_id]
            del self._outcomes[item_id]
        return _turn_result(outcome)

    @send_message.validator
    def _validate_message(self, message: UserMessage) -> None:
        self._refuse_other_session(message.session_id)
        item_id = message.idempotency_key or message.request_id
        if item_id is not None and item_id in self._answered:
            return
        if item_id is not None and item_id in self._taken and not self._draining:
            return  # a retry of a message queued here (carried over from the last run)
        self._refuse_if_closing()
        self._check_content(message.content)

    def _may_be_recorded(self, key: str) -> bool:
        """Whether a key unknown here may belong to a turn answered long ago: only once some
        key was forgotten (the database is asked then)."""
        return (
            self._keys_forgotten
            and key not in self._answered
            and key not in self._taken
            and workflow.patched(KEYS_IN_DATABASE)
        )

    async def _find_answered(self, key: str) -> AnsweredTurn | None:
        return await workflow.execute_local_activity_method(
            SessionStoreActivities.find_answered,
            KeyLookup(session_id=self._start.session_id, idempotency_key=key),
            summary="look up an idempotency key",
            **LOCAL_STORE_ACTIVITY_OPTIONS,
        )

    @workflow.signal(name="receive_message")
    async def receive_message(self, message: UserMessage) -> None:
        """A message from an asynchronous channel: queued like any other, nobody waits on it.
        The sender cannot be refused, so a message the update would refuse is audited as
        `message.refused` instead of being queued."""
        refusal = self._refusal(message)
        if refusal is not None and workflow.patched(VALIDATE_CHANNEL_MESSAGES):
            await self._audit_refusal(message, refusal)
            return
        if self._finishing or self._end_requested:
            workflow.logger.warning(
                "session %s is final; a channel message was not answered",
                self._start.session_id,
            )
            return
        key = message.idempotency_key
        if key is not None and (key in self._answered or key in self._taken):
            return  # a channel's redelivery of a message already taken
        item_id = key or str(workflow.uuid4())
        self._taken.add(item_id)
        self._inbox.append(InboxItem(id=item_id, content=message.content, idempotency_key=key))

    def _refusal(self, message: UserMessage) -> str | None:
        """Why a channel message would be refused, in the words of the update's errors."""
        if message.session_id is not None and message.session_id != self._start.session_id:
            return "another_session"
        if self._finishing or self._end_requested:
            return "session_final"
        if not message.content.strip():
            return "empty"
        if len(message.content) > self._start.max_message_chars:
            return "too_large"
        return None

    async def _audit_refusal(self, message: UserMessage, reason: str) -> None:
        """Leaves the refusal in the audit log (no content: it may be what was wrong). Once
        the session is finishing, written here and now: nothing else would write it."""
        workflow.logger.warning(
            "session %s refused a channel message: %s", self._start.session_id, reason
        )
        entry = AuditEntry(
            key=f"message.refused:{workflow.uuid4()}",
            kind="message.refused",
            data={
                "reason": reason,
                "chars": len(message.content),
                "idempotency_key": message.idempotency_key,
            },
            time=workflow.now(),
        )
        if not (self._finishing or self._end_requested):
            self._pending_events.append(entry)
            self._record_in_background()
            return
        await workflow.execute_local_activity_method(
            SessionStoreActivities.record_messages,
            MessagesProduced(
                session_id=self._start.session_id,
                account_id=self._start.account_id,
                first_seq=self._recorded,
                messages=[],
                last_activity=self._last_activity,
                events=[entry],
            ),
            summary="record a refused channel message",
            **LOCAL_STORE_ACTIVITY_OPTIONS,
        )

    @workflow.update(name="end")
    async def end(self, request: EndRequest) -> SessionState:
        self._updates_this_run += 1
        if not self._finishing and not self._end_requested:
            self._end_requested = True
            self._note = request.note
            self._pending_events.append(
                AuditEntry(
                    key="session.end_requested",
                    kind="session.end_requested",
                    data={"note": request.note},
                    time=workflow.now(),
                )
            )
        await workflow.wait_condition(
            lambda: self._status == SessionStatus.FINAL or self._handing_over
        )
        if self._status != SessionStatus.FINAL:  # carried over: the retry waits in the next run
            raise ApplicationError("the session is moving to a new run", type=DRAINING)
        return self._state(with_messages=False)

    @end.validator
    def _validate_end(self, request: EndRequest) -> None:
        self._refuse_other_session(request.session_id)
        if self._draining:
            raise ApplicationError("the session is moving to a new run", type=DRAINING)

    @workflow.query(name="state")
    def state(self) -> SessionState:
        return self._state()

    # ---- plumbing -------------------------------------------------------------------------

    def _append(self, message: Message) -> None:
        self._messages.append(message)
        self._last_activity = message.time

    def _unrecorded(self) -> MessagesProduced:
        """Messages and audit events not yet written; the events are handed over (taken)."""
        events, self._pending_events = self._pending_events, []
        keys, self._message_keys = self._message_keys, {}
        return MessagesProduced(
            session_id=self._start.session_id,
            account_id=self._start.account_id,
            first_seq=self._recorded,
            messages=self._messages[self._recorded - self._first_seq :],
            last_activity=self._last_activity,
            events=events,
            idempotency_keys=keys,
        )

    def _record_in_background(self) -> None:
        """Write new messages to the database without making the waiting caller wait."""
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._record_until_caught_up())

    async def _record_until_caught_up(self) -> None:
        while self._recorded < self._first_seq + len(self._messages) or self._pending_events:
            batch = self._unrecorded()
            summary = _record_summary(batch)
            if workflow.patched(RECORD_LOCALLY):
                await workflow.execute_local_activity_method(
                    SessionStoreActivities.record_messages,
                    batch,
                    summary=summary,
                    **LOCAL_STORE_ACTIVITY_OPTIONS,
                )
            else:  # histories from before the change
                await workflow.execute_activity_method(
                    SessionStoreActivities.record_messages,
                    batch,
                    summary=summary,
                    **STORE_ACTIVITY_OPTIONS,
                )
            self._recorded = batch.first_seq + len(batch.messages)

    async def _recorded_all(self) -> None:
        self._record_in_background()
        assert self._flushing is not None
        await self._flushing

    async def _raise_message_event(self, index: int) -> None:
        seq = self._first_seq + index
        message = self._messages[index]
        await self._raise_event(
            "message", f"message:{seq}", {"seq": seq, **message.model_dump(mode="json")}
        )

    async def _raise_event(self, event_type: str, key: str, data: dict[str, Any]) -> None:
        await raise_webhook_event(
            session_id=self._start.session_id,
            account_id=self._start.account_id,
            agent=self._agent,
            event_type=event_type,
            key=key,
            occurred_time=workflow.now(),
            retry=self._webhook_retry(),
            data=data,
        )

    def _webhook_retry(self) -> WebhookRetry:
        return WebhookRetry(
            window_seconds=self._start.webhook_retry_window_seconds,
            initial_seconds=self._start.webhook_retry_initial_seconds,
        )

    def _describe(self) -> None:
        """What the Temporal UI shows as the session's current details: status and the tail
        of the transcript, tool calls included."""
        lines = [f"**{self._status.value}** · {self._first_seq + len(self._messages)} messages"]
        for message in self._messages[-6:]:
            for call in message.tool_calls:
                lines.append(f"- tool `{call.name}` → {_clip(call.response or '', 80)}")
            if message.content:
                lines.append(f"- {message.role}: {_clip(message.content, 160)}")
        workflow.set_current_details("\n".join(lines))

    def _settle(self, item: InboxItem, outcome: TurnOutcome) -> None:
        self._taken.discard(item.id)
        if self._waiters[item.id] > 0:
            self._outcomes[item.id] = outcome
        # A failed turn is not remembered: retrying the same key runs the turn again.
        if outcome.error_type is not None:
            return
        if item.idempotency_key is not None:
            # recorded with the user message: the database answers once memory has let go
            self._message_keys[outcome.first_seq - 1] = item.idempotency_key
        if item.idempotency_key is not None or item.awaited:
            self._answered[item.id] = outcome
            while len(self._answered) > self._start.answered_keys_kept:
                del self._answered[next(iter(self._answered))]
                self._keys_forgotten = True

    def _refuse_other_session(self, session_id: str | None) -> None:
        if session_id is not None and session_id != self._start.session_id:
            raise ApplicationError("that session is final", type=SESSION_FINAL)

    def _refuse_if_closing(self) -> None:
        if self._draining:
            raise ApplicationError("the session is moving to a new run", type=DRAINING)
        if self._finishing or self._end_requested:
            raise ApplicationError("the session is final", type=SESSION_FINAL)

    def _check_content(self, content: str) -> None:
        if not content.strip():
            raise ApplicationError("the message is empty", type=INVALID_MESSAGE)
        if len(content) > self._start.max_message_chars:
            raise ApplicationError(
                f"the message has {len(content)} characters; the limit is "
                f"{self._start.max_message_chars}",
                type=MESSAGE_TOO_LARGE,
            )

    def _state(self, with_messages: bool = True) -> SessionState:
        return SessionState(
            id=self._start.session_id,
            agent_id=self._agent.id,
            channel=self._start.channel,
            first_seq=self._first_seq,
            messages=self._messages if with_messages else [],
            created_time=self._created_time,
            last_activity=self._last_activity,
            ttl_seconds=self._start.ttl_seconds,
            status=self._status,
            final_reason=self._final_reason,
        )


def _clip(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _record_summary(batch: MessagesProduced) -> str:
    """What a write holds, in words, for the Temporal UI: "record user, assistant (2 tool
    calls), assistant"."""
    parts = []
    for message in batch.messages:
        calls = len(message.tool_calls)
        parts.append(
            f"{message.role} ({calls} tool call{'s' if calls > 1 else ''})"
            if calls
            else message.role
        )
    if batch.events:
        parts.append(f"{len(batch.events)} audit event{'s' if len(batch.events) > 1 else ''}")
    return "record " + (", ".join(parts) or "nothing new")


def _final_outcome() -> TurnOutcome:
    return TurnOutcome(is_final=True, error_type=SESSION_FINAL, error="the session ended first")


def _turn_result(outcome: TurnOutcome) -> TurnResult:
    if outcome.error_type is not None:
        raise ApplicationError(outcome.error or "the turn failed", type=outcome.error_type)
    return TurnResult(
        messages=None if outcome.messages_dropped else outcome.messages,
        is_final=outcome.is_final,
        first_seq=outcome.first_seq,
        count=outcome.count,
    )
