"""StatelessTurnWorkflow: one short workflow per turn of a stateless text-chat conversation.

The client carries the transcript and an encrypted state; the server keeps its own copy of the
transcript in the database (under the call id), so the LLM activity still reads it by
reference. The agent loop, tools, templates and finish pipeline are the sessions' own; the
agent is frozen at the first turn, but each turn renders with its own `additional_data`.

A first turn records the conversation only once it has been answered: a turn that fails leaves
nothing behind. A finishing turn records the conversation final, starts the rest of the finish
pipeline as a child workflow that outlives it, and answers without waiting for it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, ApplicationError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from src.activities.llm import UnrecordedOpening
    from src.activities.session_store import (
        AuditEntry,
        MessagesProduced,
        SessionFinished,
        SessionOpened,
        SessionStoreActivities,
    )
    from src.activities.turn_stream import TurnStream
    from src.domain import FinishReason, Message, SessionAgent
    from src.temporal.failures import FailureType
    from src.workflows import activity_options
    from src.workflows.agent_calls import ask_model, call_tool_unattended, failure_reason
    from src.workflows.agent_loop import run_agent_turn
    from src.workflows.conversation_open import (
        ToolsUnavailable,
        freeze_agent,
        mark_final,
        name_conversation,
        record_opened,
    )
    from src.workflows.stateless_finish import (
        StatelessFinish,
        StatelessFinishWorkflow,
        stateless_finish_workflow_id,
    )
    from src.workflows.webhook_events import WebhookRetry

STATELESS_KIND = "stateless"


class StatelessTurnInput(BaseModel):
    call_id: str
    account_id: str
    agent: SessionAgent
    channel: str
    additional_data: dict[str, Any] = Field(default_factory=dict)
    first_turn: bool
    # How many messages of the conversation the database already holds.
    seen_count: int
    new_messages: list[Message]
    end_conversation: bool = False
    max_tool_steps: int
    # USD of LLM cost (across the conversation's turns) past which the turn is answered with
    # the budget message and the conversation finishes.
    budget_usd: float | None = None
    # Identifies the request, so a replayed state can be told from a different message.
    input_digest: str
    webhook_retry: WebhookRetry = Field(default_factory=WebhookRetry)
    # The system prompt's variables this turn's `additional_data` lacks (first turns only):
    # audited with the turn, since the LLM activity has no conversation to audit them in yet.
    missing_variables: list[str] = Field(default_factory=list)


class StatelessTurnOutput(BaseModel):
    messages: list[Message]
    is_finished: bool
    final_reason: FinishReason | None = None
    agent: SessionAgent
    message_count: int
    input_digest: str


@workflow.defn(name="StatelessTurnWorkflow")
class StatelessTurnWorkflow:
    @workflow.run
    async def run(self, turn: StatelessTurnInput) -> StatelessTurnOutput:
        started = workflow.now()
        name_conversation(turn.call_id, turn.agent.id, turn.channel)
        agent = await _frozen_agent(turn) if turn.first_turn else turn.agent
        messages, reason, audit = await self._answer(turn, agent)
        if turn.first_turn:
            audit += _missing_variable_entries(turn.missing_variables, started)
        produced = MessagesProduced(
            session_id=turn.call_id,
            account_id=turn.account_id,
            first_seq=turn.seen_count,
            messages=messages,
            last_activity=messages[-1].time if messages else workflow.now(),
            events=audit,
            additional_data=turn.additional_data,
        )
        count = turn.seen_count + len(messages)
        if turn.first_turn:  # recorded once answered: a failed first turn leaves nothing
            await record_opened(_opened_record(turn, agent, started), "record conversation opened")
        if reason is not None:
            await self._finish_before_answering(turn, agent, reason, produced, count)
        else:
            await workflow.execute_activity_method(
                SessionStoreActivities.record_messages,
                produced,
                **activity_options.titled(
                    activity_options.STORE, f"record {len(messages)} message(s)"
                ),
            )
        return StatelessTurnOutput(
            messages=messages[len(turn.new_messages) :],
            is_finished=reason is not None,
            final_reason=reason,
            agent=agent,
            message_count=count,
            input_digest=turn.input_digest,
        )

    async def _answer(
        self, turn: StatelessTurnInput, agent: SessionAgent
    ) -> tuple[list[Message], FinishReason | None, list[AuditEntry]]:
        """The turn's messages (the client's new ones, then the agent's), why the
        conversation finishes with it if it does, and the tool calls' audit entries."""
        messages = list(turn.new_messages)
        audit: list[AuditEntry] = []
        # The conversation is recorded after the first answer: the LLM activity learns what
        # it needs to render the prompt from the opening instead of the database.
        opening = (
            UnrecordedOpening(
                account_id=turn.account_id, snapshot_id=agent.snapshot_id, channel=turn.channel
            )
            if turn.first_turn
            else None
        )
        if not messages:
            return messages, FinishReason.USER_END if turn.end_conversation else None, audit
        try:
            ended = await run_agent_turn(
                lambda: agent,
                turn.max_tool_steps,
                lambda allow: ask_model(
                    turn.call_id,
                    agent,
                    turn.seen_count,
                    messages,
                    allow,
                    turn.additional_data,
                    opening,
                    turn.budget_usd,
                    TurnStream(
                        turn=workflow.info().workflow_id,
                        message_index=len(messages) - len(turn.new_messages),
                    ),
                ),
                lambda call: call_tool_unattended(
                    turn.account_id, turn.call_id, agent, call, audit
                ),
                messages.append,
            )
        except ActivityError as error:
            # Nothing is recorded: the client may retry this turn with the same state.
            raise ApplicationError(
                f"the agent could not answer: {failure_reason(error)}",
                type=FailureType.TURN_FAILED,
                non_retryable=True,
            ) from None
        reason = ended.finish_reason
        if reason is None and turn.end_conversation:
            reason = FinishReason.USER_END
        return messages, reason, audit

    async def _finish_before_answering(
        self,
        turn: StatelessTurnInput,
        agent: SessionAgent,
        reason: FinishReason,
        produced: MessagesProduced,
        count: int,
    ) -> None:
        """Record the turn's messages and the final status in one write, so the conversation
        reads final when the client has its answer; then leave analysis and the completion
        webhook to a child workflow that outlives this turn."""
        mark_final(reason.value)
        finished_time = workflow.now()
        await workflow.execute_activity_method(
            SessionStoreActivities.persist_final,
            SessionFinished(
                session_id=turn.call_id,
                account_id=turn.account_id,
                reason=reason,
                note=None,
                unrecorded=produced,
                finished_time=finished_time,
            ),
            **activity_options.titled(
                activity_options.STORE, f"persist final session ({reason.value})"
            ),
        )
        try:
            await workflow.start_child_workflow(
                StatelessFinishWorkflow.run,
                StatelessFinish(
                    call_id=turn.call_id,
                    account_id=turn.account_id,
                    agent=agent,
                    channel=turn.channel,
                    reason=reason,
                    message_count=count,
                    last_activity=produced.last_activity,
                    finished_time=finished_time,
                    webhook_retry=turn.webhook_retry,
                ),
                id=stateless_finish_workflow_id(turn.call_id),
                # A conversation finishes once: a finish child that ran already is not rerun.
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                parent_close_policy=ParentClosePolicy.ABANDON,
                static_summary=f"finish pipeline ({reason.value})",
            )
        except WorkflowAlreadyStartedError:
            pass  # started before: the pipeline runs once


async def _frozen_agent(turn: StatelessTurnInput) -> SessionAgent:
    """The first turn freezes the agent, discovering its MCP tools."""
    try:
        return await freeze_agent(turn.account_id, turn.agent)
    except ToolsUnavailable as error:
        raise ApplicationError(
            str(error), type=FailureType.TURN_FAILED, non_retryable=True
        ) from None


def _opened_record(
    turn: StatelessTurnInput, agent: SessionAgent, opened_time: datetime
) -> SessionOpened:
    return SessionOpened(
        session_id=turn.call_id,
        account_id=turn.account_id,
        workflow_id=workflow.info().workflow_id,
        agent=agent,
        channel=turn.channel,
        external_id=None,
        endpoint_hash=None,
        additional_data=turn.additional_data,
        ttl_seconds=0,
        time=opened_time,
        kind=STATELESS_KIND,
    )


def _missing_variable_entries(names: list[str], time: datetime) -> list[AuditEntry]:
    """The `template.missing_variable` events the LLM activity records on later turns, under
    the same keys, so each is written once per conversation."""
    return [
        AuditEntry(
            key=f"template.missing_variable:system_prompt:{name}",
            kind="template.missing_variable",
            data={"variable": name, "template": "system_prompt"},
            time=time,
        )
        for name in sorted(set(names))
    ]
