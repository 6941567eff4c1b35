"""The human-in-the-loop part of ChatSessionWorkflow: the updates an operator sends (take
over, write to the user, whisper, hand back, decide a tool approval) and what the agent's own
calls for a human do (requestHuman, a call waiting for approval). A mixin of the workflow
class, so its handlers are the workflow's; the state lives in the desk (operator_desk.py) and
the approvals (tool_approvals.py), the rest is the workflow's own, declared below.
"""

from __future__ import annotations

from abc import abstractmethod

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from src.activities.session_store import SessionPresence
    from src.domain import Author, Message, Operator, PendingApproval, SessionAgent
    from src.llm.types import LLMToolCall
    from src.temporal.failures import FailureType
    from src.workflows.chat_session_models import (
        HandbackRequest,
        OperatorMessageResult,
        OperatorReply,
        OperatorWhisper,
        SessionStart,
        SessionState,
        TakeoverRequest,
        TurnOutcome,
        TurnResult,
    )
    from src.workflows.help_requests import HELP_REQUESTED, call_reason
    from src.workflows.message_checks import check_content
    from src.workflows.operator_desk import OperatorDesk
    from src.workflows.run_handover import RunHandover
    from src.workflows.tool_approvals import ApprovalDecision, ToolApprovals
    from src.workflows.transcript_recorder import TranscriptRecorder
    from src.workflows.webhook_events import SessionEvents


class OperatorUpdates:
    # The workflow's own, set in its __init__ and used here.
    _start: SessionStart
    _agent: SessionAgent
    _desk: OperatorDesk
    _approvals: ToolApprovals
    _transcript: TranscriptRecorder
    _events: SessionEvents
    _handover: RunHandover
    _turn_running: bool
    _turns_done: int
    _last_outcome: TurnOutcome
    _finishing: bool
    _handing_over: bool

    # The workflow's methods this part calls (abstract here: declared for the type checker;
    # the workflow class defines them all).
    @property
    @abstractmethod
    def _host(self) -> SessionAgent: ...

    @abstractmethod
    def _presence(self) -> SessionPresence: ...

    @abstractmethod
    def _state(self, with_messages: bool = True) -> SessionState: ...

    @abstractmethod
    def _refuse_other_session(self, session_id: str | None) -> None: ...

    @abstractmethod
    def _refuse_if_closing(self) -> None: ...

    @abstractmethod
    async def _record_and_raise(self, from_index: int) -> None: ...

    # ---- the agent's calls for a human --------------------------------------------------

    async def _request_help(self, call: LLMToolCall) -> str:
        """The agent asks for a human operator: the session says so (its view, the audit log,
        the `session.help_requested` webhook event) and the agent's reply still goes out."""
        reason = call_reason(call.arguments)
        self._desk.help_requested(reason)
        await self._operator_event("session.help_requested", f"help:{call.id}", {"reason": reason})
        return HELP_REQUESTED

    async def _await_approval(self, call: LLMToolCall) -> ApprovalDecision:
        """The call waits for an operator (`tool.approval_requested` on the stream and as a
        webhook event); the decision, or the timeout's refusal, goes to the audit log."""
        await self._operator_event(
            "tool.approval_requested",
            f"approval_requested:{call.id}",
            {"tool_call_id": call.id, "name": call.name, "arguments": call.arguments},
        )
        self._transcript.record_in_background()
        decision = await self._approvals.wait(call, self._agent.approval_timeout_seconds)
        self._transcript.audit(
            "tool.approval_decided",
            f"approval_decided:{call.id}",
            {
                "tool_call_id": call.id,
                "approved": decision.approved,
                "timed_out": decision.timed_out,
                "operator": decision.operator.model_dump() if decision.operator else None,
                "note": decision.note,
            },
        )
        self._transcript.record_in_background()
        return decision

    async def _hand_back(self, reason: str, operator: Operator | None) -> None:
        """The agent answers again (an operator handed back, or left a user message
        unanswered past operator_idle_seconds); a waiting user message is answered now."""
        held_by = self._desk.hand_back()
        by = operator or held_by
        await self._operator_event(
            "session.handback",
            f"handback:{workflow.uuid4()}",
            {"reason": reason, "operator": by.model_dump() if by else None},
        )
        self._transcript.record_in_background()

    async def _operator_event(self, kind: str, key: str, data: dict[str, object]) -> None:
        """An event of the operator desk: in the audit log (and the live stream), and raised
        as a webhook event of the same name."""
        self._transcript.audit(kind, key, data)
        self._transcript.set_presence(self._presence())
        await self._events.raise_event(self._host, kind, key, data)

    # ---- an operator's updates ----------------------------------------------------------

    @workflow.update(name="take_over")
    async def take_over(self, request: TakeoverRequest) -> SessionState:
        """An operator holds the session from now on: the agent stops answering. A turn in
        flight finishes first; its reply still goes out."""
        self._handover.updates += 1
        while self._turn_running:
            await workflow.wait_condition(
                lambda: not self._turn_running or bool(self._approvals.pending)
            )
            self._refuse_while_approvals_wait()
        self._refuse_if_closing()
        if self._desk.operator != request.operator:
            self._desk.take_over(request.operator)
            await self._operator_event(
                "session.takeover",
                f"takeover:{workflow.uuid4()}",
                {"operator": request.operator.model_dump()},
            )
            self._transcript.record_in_background()
        return self._state(with_messages=False)

    @take_over.validator
    def _validate_take_over(self, request: TakeoverRequest) -> None:
        self._refuse_other_session(request.session_id)
        self._refuse_if_closing()
        self._refuse_while_approvals_wait()
        held_by = self._desk.operator
        if held_by is not None and held_by.id != request.operator.id:
            raise ApplicationError(
                f"operator {held_by.id!r} ({held_by.name}) holds the session; "
                "they hand it back first",
                type=FailureType.MODE_CONFLICT,
            )

    @workflow.update(name="operator_message")
    async def operator_message(self, reply: OperatorReply) -> OperatorMessageResult:
        """The operator's message to the user, in the transcript as the assistant's with the
        operator as its author, and delivered like the agent's (text, stream, webhooks)."""
        self._handover.updates += 1
        operator = self._desk.operator
        assert operator is not None  # the validator refused it otherwise
        message = Message(
            role="assistant",
            content=reply.content,
            time=workflow.now(),
            author=Author.human(operator),
        )
        transcript = self._transcript
        transcript.append(message)
        seq = transcript.count - 1
        self._desk.operator_answered()
        transcript.audit(
            "operator.message",
            f"operator_message:{seq}",
            {"operator": operator.model_dump(), "seq": seq},
            message.time,
        )
        await self._record_and_raise(len(transcript.messages) - 1)
        return OperatorMessageResult(seq=seq, message=message)

    @operator_message.validator
    def _validate_operator_message(self, reply: OperatorReply) -> None:
        self._refuse_other_session(reply.session_id)
        self._refuse_if_closing()
        self._refuse_unless_held()
        check_content(reply.content, self._start.max_message_chars)

    @workflow.update(name="whisper")
    async def whisper(self, whisper: OperatorWhisper) -> TurnResult:
        """Guidance for the agent's next turn that the user never sees; with `reply_now` the
        agent answers at once, and the result holds its reply."""
        self._handover.updates += 1
        by = whisper.operator or self._desk.operator
        self._transcript.audit(
            "operator.whisper",
            f"whisper:{workflow.uuid4()}",
            {
                "operator": by.model_dump() if by else None,
                "length": len(whisper.content),
                "reply_now": whisper.reply_now,
            },
        )
        self._transcript.record_in_background()
        started = self._turns_done + (1 if self._turn_running else 0)
        self._desk.whisper(whisper.content, whisper.reply_now)
        if not whisper.reply_now:
            return TurnResult(messages=[], is_final=False, mode=self._desk.mode)
        await workflow.wait_condition(
            lambda: self._turns_done > started or self._finishing or self._handing_over
        )
        if self._turns_done <= started:  # the session ended, or the reply comes in the next run
            return TurnResult(messages=[], is_final=self._finishing)
        return TurnResult.of(self._last_outcome)

    @whisper.validator
    def _validate_whisper(self, whisper: OperatorWhisper) -> None:
        self._refuse_other_session(whisper.session_id)
        self._refuse_if_closing()
        check_content(whisper.content, self._start.max_message_chars)
        if whisper.reply_now and self._desk.holds_session():
            raise ApplicationError(
                "an operator holds the session, so the agent does not answer; "
                "hand it back first, or whisper without reply_now",
                type=FailureType.MODE_CONFLICT,
            )

    @workflow.update(name="hand_back")
    async def hand_back(self, request: HandbackRequest) -> SessionState:
        self._handover.updates += 1
        await self._hand_back("operator", request.operator)
        return self._state(with_messages=False)

    @hand_back.validator
    def _validate_hand_back(self, request: HandbackRequest) -> None:
        self._refuse_other_session(request.session_id)
        self._refuse_if_closing()
        self._refuse_unless_held()

    @workflow.update(name="decide_approval")
    async def decide_approval(self, decision: ApprovalDecision) -> PendingApproval:
        """An operator's decision on a tool call waiting for approval."""
        self._handover.updates += 1
        pending = self._approvals.pending[decision.tool_call_id]
        self._approvals.decide(
            decision.model_copy(update={"operator": decision.operator or self._desk.operator})
        )
        return pending

    @decide_approval.validator
    def _validate_decision(self, decision: ApprovalDecision) -> None:
        self._refuse_other_session(decision.session_id)
        if not self._approvals.is_pending(decision.tool_call_id):
            raise ApplicationError(
                f"no tool call {decision.tool_call_id!r} is waiting for approval "
                "(decided already, timed out, or never asked)",
                type=FailureType.APPROVAL_NOT_PENDING,
            )

    def _refuse_while_approvals_wait(self) -> None:
        """The agent's turn is parked on a tool approval: decide it first, or the takeover
        would wait as long as the approval may."""
        if self._approvals.pending:
            raise ApplicationError(
                "a tool call waits for approval (pending_approvals); decide it first",
                type=FailureType.MODE_CONFLICT,
            )

    def _refuse_unless_held(self) -> None:
        if not self._desk.holds_session():
            raise ApplicationError(
                "no operator holds the session; take it over first",
                type=FailureType.MODE_CONFLICT,
            )
