"""ChatSessionWorkflow: one durable workflow per stateful chat session.

The run method reads like the session's life: open, then wait for a message, the end request
or the inactivity timeout; answer each message with an agent turn; hand over to a new run
when history grows; finish. Messages arrive as Updates (API callers wait for the reply) or
Signals (asynchronous channels); both feed one inbox that is answered in order, one turn at a
time. The parts: `SessionInbox` (queue, waiters, remembered outcomes), `TranscriptRecorder`
(messages and their writes), `IdleTimer` (the inactivity timeout), `OperatorDesk` (who answers:
the agent or a human operator, and the handoff timers), `SquadHandoffs` (a squad's members).
The updates of human operators are in chat_session_operators.py (`OperatorUpdates`, a mixin).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from src.activities.session_store import (
        AnsweredTurn,
        KeyLookup,
        SessionOpened,
        SessionPresence,
        SessionStoreActivities,
    )
    from src.activities.turn_record import TurnRecord
    from src.activities.turn_stream import TurnStream
    from src.domain import (
        CONTEXT_KEPT,
        REQUEST_HUMAN,
        Author,
        FinishReason,
        Message,
        SessionAgent,
        SessionMode,
        SessionStatus,
    )
    from src.llm.types import LLMReply, LLMToolCall
    from src.temporal.failures import FailureType
    from src.workflows import activity_options
    from src.workflows.agent_calls import ask_model, call_tool, failure_reason
    from src.workflows.agent_loop import run_agent_turn
    from src.workflows.chat_session_models import (
        CarriedState,
        ContextAdded,
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
    from src.workflows.chat_session_operators import OperatorUpdates
    from src.workflows.conversation_open import (
        ToolsUnavailable,
        freeze_agent,
        mark_final,
        name_conversation,
        record_opened,
    )
    from src.workflows.finish_pipeline import run_finish_pipeline
    from src.workflows.idle_timer import IdleTimer
    from src.workflows.message_checks import channel_refusal, check_content, refusal_entry
    from src.workflows.operator_desk import Duty, OperatorDesk
    from src.workflows.run_handover import RunHandover
    from src.workflows.session_inbox import SessionInbox
    from src.workflows.sms_outbox import TWILIO_SMS, SmsOutbox
    from src.workflows.squad_handoffs import SquadHandoffs
    from src.workflows.tool_approvals import ToolApprovals, refusal_result
    from src.workflows.transcript_recorder import TranscriptRecorder
    from src.workflows.webhook_events import SessionEvents, WebhookRetry


@workflow.defn(name="ChatSessionWorkflow")
class ChatSessionWorkflow(OperatorUpdates):
    @workflow.init
    def __init__(self, start: SessionStart) -> None:
        carried = start.carried
        self._start = start
        # The agent answering: a squad's active member, or the session's agent.
        self._agent = start.agent
        self._squad = SquadHandoffs(start.squad) if start.squad is not None else None
        self._inbox = SessionInbox(carried, start.answered_keys_kept)
        self._transcript = TranscriptRecorder(
            start.session_id, start.account_id, carried, workflow.now()
        )
        self._idle = IdleTimer(timedelta(seconds=start.ttl_seconds))
        self._handover = RunHandover(start.turns_per_run, start.history_handover_fraction)
        self._events = SessionEvents(
            start.session_id,
            start.account_id,
            WebhookRetry(
                window_seconds=start.webhook_retry_window_seconds,
                initial_seconds=start.webhook_retry_initial_seconds,
            ),
        )
        self._texts = (
            SmsOutbox(start.session_id, start.account_id, start.external_id)
            if start.channel == TWILIO_SMS
            else None
        )
        self._created_time = carried.created_time if carried else workflow.now()
        self._opened = carried is not None
        self._open_error: str | None = None
        self._status = SessionStatus.ACTIVE
        self._final_reason: FinishReason | None = None
        self._end_requested = carried.end_requested if carried else False
        self._note: str | None = carried.note if carried else None
        self._end_reason = carried.end_reason if carried else FinishReason.USER_END
        # What the model should know besides the transcript: the most recent CONTEXT_KEPT.
        self._context = list(carried.context if carried else start.context)
        # The agent or a human operator answers; help requests, whispers, handoff timers.
        self._desk = OperatorDesk(carried, start.agent.human_handoff)
        self._approvals = ToolApprovals()
        self._finishing = False
        # Handing over to the next run: new updates are refused (`Draining`, the API
        # retries), and waiting callers are released to retry there.
        self._draining = False
        self._handing_over = False
        # The turn under way: its id (inbox item) and where its messages start in the
        # transcript; whether one runs, and the whispers it reads.
        self._turn = ("", 0)
        self._turn_running = False
        self._turn_guidance: list[str] = []
        # The seq and Idempotency-Key of the user message the running turn answers; whether
        # its last model call recorded it (src/activities/turn_record.py).
        self._turn_key: tuple[int, str] | None = None
        self._turn_recorded = False
        # Turns answered in this run and the last one's outcome (a whisper's reply_now).
        self._turns_done = 0
        self._last_outcome = TurnOutcome()

    # ---- the session's life -------------------------------------------------------------

    @workflow.run
    async def run(self, start: SessionStart) -> SessionState:
        if not self._opened:
            await self._open()
            if self._open_error is not None:
                return await self._finish(FinishReason.ERROR)
        while True:
            if self._handover.due(bool(self._inbox), self._end_requested):
                await self._continue_as_new()
            if not await self._idle.wait(self._has_work, paused=self._desk.holds_session):
                return await self._finish(FinishReason.TTL)
            finish: FinishReason | None = None
            if self._inbox and self._desk.holds_session():
                await self._hold(self._inbox.next())
            elif self._inbox:
                finish = await self._answer(self._inbox.next())
            elif (duty := self._desk.duty()) is not None:
                finish = await self._attend(duty)
            elif self._end_requested:
                return await self._finish(self._end_reason)
            self._handover.turns += 1
            if finish is not None:
                return await self._finish(finish)
            if self._handover.backlog_never_empties():
                self._draining = True

    def _has_work(self) -> bool:
        return bool(self._inbox) or self._end_requested or self._desk.duty() is not None

    async def _open(self) -> None:
        name_conversation(self._start.session_id, self._agent.id, self._start.channel)
        try:
            if self._squad is None:
                self._agent = await freeze_agent(self._start.account_id, self._agent)
            else:
                for seat in self._squad.state.members:
                    seat.agent = await freeze_agent(self._start.account_id, seat.agent)
                self._agent = self._squad.active
        except ToolsUnavailable as error:
            self._open_error = str(error)
        await record_opened(self._opened_record(), "record session opened")
        if self._open_error is None and self._start.first_message:
            first = Message(
                role="assistant",
                content=self._start.first_message,
                time=workflow.now(),
                author=Author.ai(self._agent.id),
            )
            self._transcript.append(first)
            self._transcript.record_in_background()
        self._opened = True  # the open update answers now; webhook events follow
        if self._open_error is not None:
            return
        await self._events.raise_event(
            self._host,
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
        await self._raise_messages(0)

    async def _answer(self, item: InboxItem) -> FinishReason | None:
        """Run one agent turn for a user message; returns why the session finishes with it
        (the agent finished, the budget is used up), or None: the session goes on."""
        self._transcript.append(_user_message(item))
        key = item.idempotency_key
        outcome, finish = await self._reply(
            item.id, (self._transcript.count - 1, key) if key is not None else None
        )
        if outcome.error_type is None and key is not None and not self._turn_recorded:
            self._transcript.key_message(outcome.first_seq - 1, key)
        self._inbox.settle(item, outcome)
        _, produced_from = self._turn
        await self._record_and_raise(produced_from - 1)
        return finish

    async def _hold(self, item: InboxItem) -> None:
        """A user message while an operator holds the session: recorded, streamed and raised,
        not answered; its caller reads mode `human`."""
        transcript = self._transcript
        transcript.append(_user_message(item))
        seq = transcript.count - 1
        if item.idempotency_key is not None:
            transcript.key_message(seq, item.idempotency_key)
        self._desk.user_waiting()
        outcome = TurnOutcome(first_seq=seq + 1, mode=SessionMode.HUMAN)
        self._inbox.settle(item, outcome)
        await self._record_and_raise(len(transcript.messages) - 1)

    async def _reply(
        self, turn_id: str, key: tuple[int, str] | None = None
    ) -> tuple[TurnOutcome, FinishReason | None]:
        """One agent turn on the transcript as it stands, with the whispers waiting for it;
        `key`: the seq and Idempotency-Key of the user message it answers."""
        transcript = self._transcript
        produced_from = len(transcript.messages)
        self._turn = (turn_id, produced_from)
        self._turn_key, self._turn_recorded = key, False
        self._turn_running = True
        self._turn_guidance = list(self._desk.state.guidance)
        owed = self._desk.state.reply_due
        finish: FinishReason | None = None
        try:
            turn = await run_agent_turn(
                lambda: self._agent,
                self._start.max_tool_steps,
                self._complete,
                self._run_tool,
                transcript.append,
            )
            finish = turn.finish_reason
            outcome = TurnOutcome(
                messages=transcript.messages[produced_from:],
                is_final=finish is not None,
                first_seq=transcript.first_seq + produced_from,
                count=len(transcript.messages) - produced_from,
            )
        except ActivityError as error:
            # The model refused or stayed unreachable: this turn fails, the session goes on.
            workflow.logger.warning("turn failed for session %s", self._start.session_id)
            outcome = TurnOutcome(
                messages=transcript.messages[produced_from:],
                error_type=FailureType.TURN_FAILED,
                error=f"the agent could not answer: {failure_reason(error)}",
            )
        self._turn_running = False
        self._desk.replied(len(self._turn_guidance) if outcome.error_type is None else 0, owed)
        self._turns_done += 1
        self._last_outcome = outcome
        return outcome, finish

    async def _attend(self, duty: Duty) -> FinishReason | None:
        """What the operator desk says is due: the agent's reply with no new user message,
        the holding message of an unanswered help request, or taking back an idle session."""
        if duty == Duty.REPLY:
            _, finish = await self._reply(f"reply:{workflow.uuid4()}")
            await self._record_and_raise(self._turn[1])
            return finish
        if duty == Duty.OPERATOR_IDLE:
            await self._hand_back("operator_idle", None)
            return None
        self._desk.help_unanswered_done()
        holding = self._agent.human_handoff.holding_message if self._agent.human_handoff else None
        if holding:
            self._transcript.append(
                Message(
                    role="assistant",
                    content=holding,
                    time=workflow.now(),
                    author=Author.ai(self._agent.id),
                )
            )
        await self._operator_event(
            "session.help_unanswered",
            f"help_unanswered:{workflow.uuid4()}",
            {"reason": self._desk.state.help_reason},
        )
        await self._record_and_raise(len(self._transcript.messages) - (1 if holding else 0))
        return None

    async def _record_and_raise(self, from_index: int) -> None:
        """The transcript from `from_index` on: written in the background, shown in the
        Temporal UI, texted (an SMS session) and raised as webhook events."""
        self._transcript.record_in_background()
        self._transcript.describe(self._status.value)
        await self._raise_messages(from_index)

    async def _complete(self, allow_tools: bool) -> LLMReply:
        if self._squad is not None:
            self._switch_member(self._squad)
        # A plain reply comes back recorded with the turn (src/activities/turn_record.py).
        record = self._transcript.turn_record(self._agent.id, self._turn_key)
        recorded = False
        try:
            reply = await self._ask_model(allow_tools, record)
            recorded = reply.recorded_message is not None
            return reply
        finally:
            self._transcript.turn_answered(recorded)
            self._turn_recorded = recorded

    async def _ask_model(self, allow_tools: bool, record: TurnRecord | None) -> LLMReply:
        turn, produced_from = self._turn
        return await ask_model(
            self._start.session_id,
            self._agent,
            self._transcript.recorded,
            self._transcript.unrecorded_messages(),
            allow_tools,
            budget_usd=self._start.budget_usd,
            context=self._context,
            guidance=self._turn_guidance,
            snapshot_id=self._agent.snapshot_id if self._squad else None,
            visible_from=self._squad.state.visible_from if self._squad else 0,
            stream=TurnStream(
                turn=turn, message_index=len(self._transcript.messages) - produced_from
            ),
            record=record,
        )

    async def _run_tool(self, call: LLMToolCall) -> str:
        if call.name == REQUEST_HUMAN:
            return await self._request_help(call)
        if self._agent.tools.get(call.name) == "handoff" and self._squad is not None:
            return self._squad.ask(call)
        if call.name in self._agent.approval_required:
            decision = await self._await_approval(call)
            if not decision.approved:
                return refusal_result(decision)
        return await call_tool(
            self._start.account_id,
            self._start.session_id,
            self._agent,
            call,
            self._transcript.pending_events,
        )

    def _switch_member(self, squad: SquadHandoffs) -> None:
        """A handoff asked for in the last step: the next model call is the new member's."""
        transfer = squad.switch_if_asked(self._transcript.messages, self._transcript.first_seq)
        if transfer is None:
            return
        self._agent = squad.active
        self._transcript.audit(
            "agent.handoff",
            f"handoff:{len(squad.state.transfers)}",
            {
                "from": transfer.from_member,
                "to": transfer.to_member,
                "reason": transfer.reason,
            },
            transfer.time,
        )
        self._transcript.set_presence(self._presence())

    async def _finish(self, reason: FinishReason) -> SessionState:
        """The finish pipeline. The session reads final at once; persist_final writes what is
        still unrecorded in its own transaction, then the run closes while the agent's
        analysis (a child it abandons) may still run."""
        self._finishing = True
        self._idle.cancel()
        self._desk.close()
        self._status = SessionStatus.FINAL
        self._final_reason = reason
        self._inbox.close(_final_outcome())
        mark_final(reason.value)
        self._transcript.describe(self._status.value)
        await self._transcript.write_under_way()
        if self._texts is not None:
            await self._texts.sent_all()
        await run_finish_pipeline(
            agent=self._host,
            reason=reason,
            note=self._note,
            unrecorded=self._transcript.take_unrecorded(),
            finished_time=workflow.now(),
            retry=self._events.retry,
            inline=not self._host.has_analysis,
            context=self._context,
            transfers=self._squad.state.transfers if self._squad else [],
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._state(with_messages=False)

    async def _continue_as_new(self) -> None:
        """Hand over to a fresh run, with every message recorded and every handler done.
        Updates arriving meanwhile are refused with `Draining`; the API retries them and they
        land on the new run. Queued messages (signals and updates alike) are carried over, in
        order; the callers waiting on them are told `Draining` too, and their retry waits on
        the same item in the new run. A pending end request is carried as well."""
        self._draining = True
        self._handing_over = True  # releases the waiting callers: handlers cannot cross over
        await self._transcript.recorded_all()
        if self._texts is not None:
            await self._texts.sent_all()
        await workflow.wait_condition(workflow.all_handlers_finished)
        carried = CarriedState(
            first_seq=self._transcript.recorded,
            recorded_count=self._transcript.recorded,
            batches_written=self._transcript.batches,
            created_time=self._created_time,
            last_activity=self._transcript.last_activity,
            inbox=self._inbox.carried_items(),
            answered=self._inbox.carried_answers(),
            end_requested=self._end_requested,
            note=self._note,
            end_reason=self._end_reason,
            keys_forgotten=self._inbox.keys_forgotten,
            context=self._context,
            desk=self._desk.state,
        )
        workflow.continue_as_new(
            self._start.model_copy(
                update={
                    "carried": carried,
                    "agent": self._agent,
                    "squad": self._squad.state if self._squad else None,
                }
            )
        )

    # ---- messages in ----------------------------------------------------------------------

    @workflow.update(name="open")
    async def open(self, request: OpenRequest) -> OpenResult:
        self._handover.updates += 1
        await workflow.wait_condition(lambda: self._opened)
        if self._open_error is not None:
            raise ApplicationError(self._open_error, type=FailureType.OPEN_FAILED)
        created = request.session_id == self._start.session_id
        # A joiner reads the transcript by query: update results are history, keep them small.
        return OpenResult(session=self._state(with_messages=created), created=created)

    @open.validator
    def _validate_open(self, request: OpenRequest) -> None:
        self._refuse_if_closing()

    @workflow.update(name="send_message")
    async def send_message(self, message: UserMessage) -> TurnResult:
        self._handover.updates += 1
        key = message.idempotency_key
        item_id = key or message.request_id
        if (answered := self._inbox.answered(item_id)) is not None:
            return TurnResult.of(answered)
        if key is not None and self._inbox.may_be_recorded(key):
            found = await self._find_answered(key)
            if found is not None:
                return TurnResult(
                    messages=None, is_final=False, first_seq=found.first_seq, count=found.count
                )
            if (answered := self._inbox.answered(key)) is not None:
                return TurnResult.of(answered)  # answered while the database was asked
        item_id = item_id or str(workflow.uuid4())
        self._inbox.put(InboxItem(id=item_id, content=message.content, idempotency_key=key))
        outcome = await self._inbox.outcome(item_id, released=lambda: self._handing_over)
        if outcome is None:
            raise _draining()
        return TurnResult.of(outcome)

    @send_message.validator
    def _validate_message(self, message: UserMessage) -> None:
        self._refuse_other_session(message.session_id)
        item_id = message.idempotency_key or message.request_id
        if self._inbox.answered(item_id) is not None:
            return
        if self._inbox.is_taken(item_id) and not self._draining:
            return  # a retry of a message queued here (carried over from the last run)
        self._refuse_if_closing()
        check_content(message.content, self._start.max_message_chars)

    async def _find_answered(self, key: str) -> AnsweredTurn | None:
        return await workflow.execute_local_activity_method(
            SessionStoreActivities.find_answered,
            KeyLookup(session_id=self._start.session_id, idempotency_key=key),
            **activity_options.titled(activity_options.LOCAL_STORE, "look up an idempotency key"),
        )

    @workflow.signal(name="receive_message")
    async def receive_message(self, message: UserMessage) -> None:
        """A message from an asynchronous channel: queued like any other, nobody waits on it.
        The sender cannot be refused, so a message the update would refuse is audited as
        `message.refused` instead of being queued."""
        refusal = channel_refusal(
            message.content,
            message.session_id,
            self._start.session_id,
            self._finishing or self._end_requested,
            self._start.max_message_chars,
            has_attachments=bool(message.attachments),
        )
        if refusal is not None:
            await self._audit_refusal(message, refusal)
            return
        key = message.idempotency_key
        if self._inbox.answered(key) is not None or self._inbox.is_taken(key):
            return  # a channel's redelivery of a message already taken
        item_id = key or str(workflow.uuid4())
        self._inbox.put(
            InboxItem(
                id=item_id,
                content=message.content,
                idempotency_key=key,
                attachments=message.attachments,
            )
        )

    async def _audit_refusal(self, message: UserMessage, reason: str) -> None:
        """Leaves the refusal in the audit log (no content: it may be what was wrong)."""
        workflow.logger.warning(
            "session %s refused a channel message: %s", self._start.session_id, reason
        )
        entry = refusal_entry(len(message.content), message.idempotency_key, reason)
        if self._finishing or self._end_requested:
            await self._transcript.record_now(entry)  # no later batch would write it
            return
        self._transcript.add_event(entry)
        self._transcript.record_in_background()

    @workflow.update(name="add_context")
    async def add_context(self, added: ContextAdded) -> list[str]:
        """One more context string for the model's later turns; the oldest past
        CONTEXT_KEPT goes. The audit log keeps its length, not its text."""
        self._handover.updates += 1
        self._context = [*self._context, added.content][-CONTEXT_KEPT:]
        self._transcript.audit(
            "session.context_added",
            f"context:{workflow.uuid4()}",
            {"length": len(added.content), "kept": len(self._context)},
        )
        self._transcript.record_in_background()
        return self._context

    @add_context.validator
    def _validate_context(self, added: ContextAdded) -> None:
        self._refuse_other_session(added.session_id)
        self._refuse_if_closing()

    @workflow.update(name="end")
    async def end(self, request: EndRequest) -> SessionState:
        self._handover.updates += 1
        if not self._finishing and not self._end_requested:
            self._approvals.refuse_all("the session is ending")
            self._end_requested = True
            self._note = request.note
            self._end_reason = request.reason
            self._transcript.audit(
                "session.end_requested",
                "session.end_requested",
                {"note": request.note, "reason": request.reason.value},
            )
        await workflow.wait_condition(
            lambda: self._status == SessionStatus.FINAL or self._handing_over
        )
        if self._status != SessionStatus.FINAL:  # carried over: the retry waits in the next run
            raise _draining()
        return self._state(with_messages=False)

    @end.validator
    def _validate_end(self, request: EndRequest) -> None:
        self._refuse_other_session(request.session_id)
        if self._draining:
            raise _draining()

    @workflow.query(name="state")
    def state(self) -> SessionState:
        return self._state()

    # ---- plumbing -------------------------------------------------------------------------

    @property
    def _host(self) -> SessionAgent:
        """The agent whose settings the session's webhook events and finish use: a squad's
        first member, or the session's agent."""
        return self._squad.lead if self._squad is not None else self._agent

    def _presence(self) -> SessionPresence:
        return SessionPresence(
            mode=self._desk.mode,
            help_requested=self._desk.state.help_requested,
            active_human=self._desk.operator,
            agent_id=self._agent.id,
        )

    def _opened_record(self) -> SessionOpened:
        return SessionOpened(
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
            squad_id=self._squad.state.squad_id if self._squad else None,
        )

    async def _raise_messages(self, from_index: int) -> None:
        """This run's messages from `from_index` on: texted to the person (an SMS session),
        then raised as `message` events."""
        transcript = self._transcript
        if self._texts is not None:
            for index in range(from_index, len(transcript.messages)):
                self._texts.send(transcript.first_seq + index, transcript.messages[index])
        for index in range(from_index, len(transcript.messages)):
            message = transcript.messages[index]
            await self._events.raise_message(self._host, transcript.first_seq + index, message)

    def _refuse_other_session(self, session_id: str | None) -> None:
        if session_id is not None and session_id != self._start.session_id:
            raise ApplicationError("that session is final", type=FailureType.SESSION_FINAL)

    def _refuse_if_closing(self) -> None:
        if self._draining:
            raise _draining()
        if self._finishing or self._end_requested:
            raise ApplicationError("the session is final", type=FailureType.SESSION_FINAL)

    def _state(self, with_messages: bool = True) -> SessionState:
        return SessionState(
            id=self._start.session_id,
            agent_id=self._agent.id,
            channel=self._start.channel,
            first_seq=self._transcript.first_seq,
            messages=self._transcript.messages if with_messages else [],
            created_time=self._created_time,
            last_activity=self._transcript.last_activity,
            ttl_seconds=self._start.ttl_seconds,
            status=self._status,
            final_reason=self._final_reason,
            context=self._context,
            help_requested=self._desk.state.help_requested,
            mode=self._desk.mode,
            active_human=self._desk.operator,
            pending_approvals=list(self._approvals.pending.values()),
            squad_id=self._squad.state.squad_id if self._squad else None,
        )


def _draining() -> ApplicationError:
    return ApplicationError("the session is moving to a new run", type=FailureType.DRAINING)


def _user_message(item: InboxItem) -> Message:
    return Message(
        role="user", content=item.content, attachments=item.attachments, time=workflow.now()
    )


def _final_outcome() -> TurnOutcome:
    return TurnOutcome(
        is_final=True, error_type=FailureType.SESSION_FINAL, error="the session ended first"
    )
