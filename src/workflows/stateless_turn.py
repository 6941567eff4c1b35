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
    from src.activities.mcp_tools import (
        DISCOVERY_ACTIVITY_OPTIONS,
        DiscoveryRequest,
        McpToolActivities,
    )
    from src.activities.session_store import (
        STORE_ACTIVITY_OPTIONS,
        AuditEntry,
        MessagesProduced,
        SessionFinished,
        SessionOpened,
        SessionStoreActivities,
    )
    from src.domain import FinishReason, Message, SessionAgent, SessionStatus
    from src.workflows.agent_activities import ask_model, call_tool, failure_reason
    from src.workflows.agent_loop import run_agent_turn
    from src.workflows.chat_session import AGENT_ID, CHANNEL, FINAL_REASON, SESSION_ID, STATUS
    from src.workflows.finish_pipeline import run_finish_pipeline
    from src.workflows.stateless_finish import (
        StatelessFinish,
        StatelessFinishWorkflow,
        stateless_finish_workflow_id,
    )
    from src.workflows.webhook_events import WebhookRetry

TURN_FAILED = "TurnFailed"
STATELESS_KIND = "stateless"

# Patch ids (workflow.patched): persisted in history, never rename or reuse one.
# A first turn records the conversation after the model answered, not before asking it.
OPEN_WHEN_ANSWERED = "stateless-open-when-answered"
# A finishing turn records the conversation final and answers; analysis and the completion
# webhook run in a StatelessFinishWorkflow child the turn abandons.
ANSWER_BEFORE_FINISH = "stateless-answer-before-finish"
# A turn answered with the budget message (the LLM activity found the conversation's budget
# used up) finishes the conversation with reason `budget`; before, the conversation went on.
FINISH_WHEN_BUDGET_USED_UP = "stateless-finish-when-the-budget-is-used-up"


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
        agent = turn.agent
        started = workflow.now()
        workflow.upsert_search_attributes(
            [
                SESSION_ID.value_set(turn.call_id),
                AGENT_ID.value_set(agent.id),
                CHANNEL.value_set(turn.channel),
                STATUS.value_set(SessionStatus.ACTIVE.value),
            ]
        )
        open_when_answered = turn.first_turn and workflow.patched(OPEN_WHEN_ANSWERED)
        if turn.first_turn:
            agent = await self._discover(turn)
            if not open_when_answered:  # recorded before OPEN_WHEN_ANSWERED: open first
                await self._record_opened(turn, agent, started)
        opening = (
            UnrecordedOpening(
                account_id=turn.account_id, snapshot_id=agent.snapshot_id, channel=turn.channel
            )
            if open_when_answered
            else None
        )
        messages = list(turn.new_messages)
        audit: list[AuditEntry] = []
        agent_finished = budget_used_up = False
        if messages:
            try:
                ended = await run_agent_turn(
                    agent,
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
                    ),
                    lambda call: call_tool(turn.call_id, agent, call, audit),
                    messages.append,
                )
                agent_finished = ended.agent_finished
                budget_used_up = ended.budget_used_up and workflow.patched(
                    FINISH_WHEN_BUDGET_USED_UP
                )
            except ActivityError as error:
                # Nothing is recorded: the client may retry this turn with the same state.
                raise ApplicationError(
                    f"the agent could not answer: {failure_reason(error)}",
                    type=TURN_FAILED,
                    non_retryable=True,
                ) from None
        last_activity = messages[-1].time if messages else workflow.now()
        if open_when_answered:
            audit += _missing_variable_entries(turn.missing_variables, started)
        produced = MessagesProduced(
            session_id=turn.call_id,
            account_id=turn.account_id,
            first_seq=turn.seen_count,
            messages=messages,
            last_activity=last_activity,
            events=audit,
            additional_data=turn.additional_data,
        )
        count = turn.seen_count + len(messages)
        reason = (
            FinishReason.BUDGET
            if budget_used_up
            else FinishReason.AGENT_FINISH
            if agent_finished
            else FinishReason.USER_END
            if turn.end_conversation
            else None
        )
        if open_when_answered:
            await self._record_opened(turn, agent, started)
        if reason is not None and workflow.patched(ANSWER_BEFORE_FINISH):
            await self._finish_before_answering(turn, agent, reason, produced, count)
        else:
            await workflow.execute_activity_method(
                SessionStoreActivities.record_messages,
                produced,
                summary=f"record {len(messages)} message(s)",
                **STORE_ACTIVITY_OPTIONS,
            )
            if reason is not None:  # recorded before ANSWER_BEFORE_FINISH: the whole pipeline
                _mark_final(reason)
                await run_finish_pipeline(
                    agent=agent,
                    reason=reason,
                    note=None,
                    unrecorded=MessagesProduced(
                        session_id=turn.call_id,
                        account_id=turn.account_id,
                        first_seq=count,
                        messages=[],
                        last_activity=last_activity,
                    ),
                    finished_time=workflow.now(),
                    retry=turn.webhook_retry,
                )
        return StatelessTurnOutput(
            messages=messages[len(turn.new_messages) :],
            is_finished=reason is not None,
            final_reason=reason,
            agent=agent,
            message_count=count,
            input_digest=turn.input_digest,
        )

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
        _mark_final(reason)
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
            summary=f"persist final session ({reason.value})",
            **STORE_ACTIVITY_OPTIONS,
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

    async def _discover(self, turn: StatelessTurnInput) -> SessionAgent:
        """The first turn freezes the agent, discovering its MCP tools."""
        agent = turn.agent
        if not agent.needs_discovery:
            return agent
        try:
            return await workflow.execute_activity_method(
                McpToolActivities.discover,
                DiscoveryRequest(account_id=turn.account_id, snapshot_id=agent.snapshot_id),
                summary="discover MCP tools",
                **DISCOVERY_ACTIVITY_OPTIONS,
            )
        except ActivityError as error:
            raise ApplicationError(
                f"the agent's tools are unavailable: {failure_reason(error)}",
                type=TURN_FAILED,
                non_retryable=True,
            ) from None

    async def _record_opened(
        self, turn: StatelessTurnInput, agent: SessionAgent, opened_time: datetime
    ) -> None:
        await workflow.execute_activity_method(
            SessionStoreActivities.record_opened,
            SessionOpened(
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
            ),
            summary="record conversation opened",
            **STORE_ACTIVITY_OPTIONS,
        )


def _mark_final(reason: FinishReason) -> None:
    workflow.upsert_search_attributes(
        [STATUS.value_set(SessionStatus.FINAL.value), FINAL_REASON.value_set(reason.value)]
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
