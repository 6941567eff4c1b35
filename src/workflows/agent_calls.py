"""The activities behind an agent turn, shared by stateful sessions and stateless turns: the
LLM call (transcript by reference) and tool calls (webhook or MCP), with their audit entries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from src.activities.llm import (
        LLMActivities,
        SessionTurnRequest,
        UnrecordedOpening,
    )
    from src.activities.mcp_tools import McpToolActivities
    from src.activities.session_store import AuditEntry
    from src.activities.turn_record import TurnRecord
    from src.activities.turn_stream import TurnStream
    from src.activities.webhook_tools import (
        ToolInvocation,
        WebhookToolActivities,
    )
    from src.domain import REQUEST_HUMAN, Message, SessionAgent
    from src.llm.types import LLMReply, LLMToolCall
    from src.workflows import activity_options


async def ask_model(
    conversation_id: str,
    agent: SessionAgent,
    recorded_count: int,
    unrecorded: list[Message],
    allow_tools: bool,
    additional_data: dict[str, Any] | None = None,
    opening: UnrecordedOpening | None = None,
    budget_usd: float | None = None,
    stream: TurnStream | None = None,
    context: list[str] | None = None,
    guidance: list[str] | None = None,
    snapshot_id: str | None = None,
    visible_from: int = 0,
    record: TurnRecord | None = None,
) -> LLMReply:
    """The model's next step; messages before `recorded_count` are read from the database,
    and so is the context, unless a stateless turn gives its own `additional_data` (and, on
    its first turn, the `opening` it has not recorded yet). With a `budget_usd` the
    conversation has used up, the reply is the budget message and the model is not called.
    With a `stream`, the reply's text goes to the conversation's live stream as it comes.
    `context` (the session's context strings) and `guidance` (an operator's whispers) reach
    the model as parts of its instructions the user never sees. A squad's active member is
    `snapshot_id`, reading the transcript from message `visible_from` on. With a `record`, a
    plain reply comes back recorded with the turn (src/activities/turn_record.py)."""
    return await workflow.execute_activity_method(
        LLMActivities.complete_session_turn,
        SessionTurnRequest(
            session_id=conversation_id,
            recorded_count=recorded_count,
            unrecorded=unrecorded,
            allow_tools=allow_tools,
            additional_data=additional_data,
            opening=opening,
            budget_usd=budget_usd,
            stream=stream,
            context=context or [],
            guidance=guidance or [],
            snapshot_id=snapshot_id,
            visible_from=visible_from,
            record=record,
        ),
        **activity_options.titled(activity_options.LLM, f"LLM {agent.model_name}"),
    )


async def call_tool_unattended(
    account_id: str,
    conversation_id: str,
    agent: SessionAgent,
    call: LLMToolCall,
    audit: list[AuditEntry],
) -> str:
    """A tool call in a conversation no human attends (a stateless one): requestHuman is told
    no human can join, and a call that needs an operator's approval is not made."""
    if call.name == REQUEST_HUMAN:
        return "error: no human can join this conversation; go on helping the user yourself"
    if call.name in agent.approval_required:
        return (
            "error: this tool needs an operator's approval, which this conversation cannot wait for"
        )
    return await call_tool(account_id, conversation_id, agent, call, audit)


async def call_tool(
    account_id: str,
    conversation_id: str,
    agent: SessionAgent,
    call: LLMToolCall,
    audit: list[AuditEntry],
) -> str:
    """One tool call as an activity; a failure becomes a result the model can read. The
    idempotency key is fixed here, so every retry of the call carries the same one."""
    invocation = ToolInvocation(
        snapshot_id=agent.snapshot_id,
        session_id=conversation_id,
        call_id=call.id,
        idempotency_key=f"{conversation_id}:{workflow.uuid4()}",
        name=call.name,
        arguments=call.arguments,
        account_id=account_id,
    )
    started = workflow.now()
    try:
        if agent.tools.get(call.name) == "mcp":
            result = await workflow.execute_activity_method(
                McpToolActivities.call,
                invocation,
                **activity_options.titled(activity_options.MCP_CALL, f"tool {call.name} (MCP)"),
            )
        else:
            result = await workflow.execute_activity_method(
                WebhookToolActivities.call,
                invocation,
                **activity_options.titled(activity_options.WEBHOOK_TOOL, f"tool {call.name}"),
            )
    except ActivityError as error:
        audit.append(_tool_audit(invocation, started, failure_reason(error)))
        return f"error: {failure_reason(error)}"
    # A rejection the model reads in full (the tool's answer) comes back as a result, so its
    # content stays in the (encrypted) payload and out of the failure message.
    audit.append(_tool_audit(invocation, started, result.error))
    return str(result.response)


def failure_reason(error: ActivityError) -> str:
    cause = error.cause
    return str(cause.message if isinstance(cause, ApplicationError) else error.message)


def _tool_audit(invocation: ToolInvocation, started: datetime, error: str | None) -> AuditEntry:
    finished = workflow.now()
    return AuditEntry(
        key=f"tool:{invocation.idempotency_key}",
        kind="tool.call",
        data={
            "name": invocation.name,
            "duration_ms": round((finished - started).total_seconds() * 1000),
            "outcome": "error" if error else "ok",
            "error": error,
        },
        time=finished,
    )
