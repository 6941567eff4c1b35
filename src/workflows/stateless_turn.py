"""StatelessTurnWorkflow: one short workflow per turn of a stateless text-chat conversation.

The client carries the transcript and an encrypted state; the server keeps its own copy of the
transcript in the database (under the call id), so the LLM activity still reads it by
reference. The agent loop, tools, templates and finish pipeline are the sessions' own; the
agent is frozen at the first turn, but each turn renders with its own `additional_data`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from src.activities.mcp_tools import (
        DISCOVERY_ACTIVITY_OPTIONS,
        DiscoveryRequest,
        McpToolActivities,
    )
    from src.activities.session_store import (
        STORE_ACTIVITY_OPTIONS,
        AuditEntry,
        MessagesProduced,
        SessionOpened,
        SessionStoreActivities,
    )
    from src.domain import FinishReason, Message, SessionAgent, SessionStatus
    from src.workflows.agent_activities import ask_model, call_tool, failure_reason
    from src.workflows.agent_loop import run_agent_turn
    from src.workflows.chat_session import AGENT_ID, CHANNEL, FINAL_REASON, SESSION_ID, STATUS
    from src.workflows.finish_pipeline import run_finish_pipeline
    from src.workflows.webhook_events import WebhookRetry

TURN_FAILED = "TurnFailed"
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
    # Identifies the request, so a replayed state can be told from a different message.
    input_digest: str
    webhook_retry: WebhookRetry = Field(default_factory=WebhookRetry)


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
        workflow.upsert_search_attributes(
            [
                SESSION_ID.value_set(turn.call_id),
                AGENT_ID.value_set(agent.id),
                CHANNEL.value_set(turn.channel),
                STATUS.value_set(SessionStatus.ACTIVE.value),
            ]
        )
        if turn.first_turn:
            agent = await self._open(turn)
        messages = list(turn.new_messages)
        audit: list[AuditEntry] = []
        agent_finished = False
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
                    ),
                    lambda call: call_tool(turn.call_id, agent, call, audit),
                    messages.append,
                )
                agent_finished = ended.agent_finished
            except ActivityError as error:
                # Nothing is recorded: the client may retry this turn with the same state.
                raise ApplicationError(
                    f"the agent could not answer: {failure_reason(error)}",
                    type=TURN_FAILED,
                    non_retryable=True,
                ) from None
        last_activity = messages[-1].time if messages else workflow.now()
        await workflow.execute_activity_method(
            SessionStoreActivities.record_messages,
            MessagesProduced(
                session_id=turn.call_id,
                account_id=turn.account_id,
                first_seq=turn.seen_count,
                messages=messages,
                last_activity=last_activity,
                events=audit,
                additional_data=turn.additional_data,
            ),
            summary=f"record {len(messages)} message(s)",
            **STORE_ACTIVITY_OPTIONS,
        )
        count = turn.seen_count + len(messages)
        reason = (
            FinishReason.AGENT_FINISH
            if agent_finished
            else FinishReason.USER_END
            if turn.end_conversation
            else None
        )
        if reason is not None:
            workflow.upsert_search_attributes(
                [STATUS.value_set(SessionStatus.FINAL.value), FINAL_REASON.value_set(reason.value)]
            )
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

    async def _open(self, turn: StatelessTurnInput) -> SessionAgent:
        """The first turn freezes the agent (discovering MCP tools) and records the call."""
        agent = turn.agent
        if agent.needs_discovery:
            try:
                agent = await workflow.execute_activity_method(
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
                time=workflow.now(),
                kind=STATELESS_KIND,
            ),
            summary="record conversation opened",
            **STORE_ACTIVITY_OPTIONS,
        )
        return agent
