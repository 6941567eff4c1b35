"""Opening a conversation, shared by the session and the stateless-turn workflows: name it
for the Temporal UI, freeze its agent (discovering MCP tools), record it opened."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from src.activities.mcp_tools import DiscoveryRequest, McpToolActivities
    from src.activities.session_store import SessionOpened, SessionStoreActivities
    from src.domain import SessionAgent, SessionStatus
    from src.temporal import search_attributes
    from src.workflows import activity_options
    from src.workflows.agent_calls import failure_reason


class ToolsUnavailable(Exception):
    """The agent's MCP tools could not be discovered; the message says why."""


def name_conversation(session_id: str, agent_id: str, channel: str) -> None:
    workflow.upsert_search_attributes(
        search_attributes.conversation(session_id, agent_id, channel)
        + search_attributes.status(SessionStatus.ACTIVE.value)
    )


def mark_final(reason: str) -> None:
    workflow.upsert_search_attributes(search_attributes.status(SessionStatus.FINAL.value, reason))


async def freeze_agent(account_id: str, agent: SessionAgent) -> SessionAgent:
    """The agent as the conversation keeps it: with its MCP tools discovered once, at open."""
    if not agent.needs_discovery:
        return agent
    try:
        return await workflow.execute_activity_method(
            McpToolActivities.discover,
            DiscoveryRequest(account_id=account_id, snapshot_id=agent.snapshot_id),
            **activity_options.titled(activity_options.MCP_DISCOVERY, "discover MCP tools"),
        )
    except ActivityError as error:
        reason = failure_reason(error)
        raise ToolsUnavailable(f"the agent's tools are unavailable: {reason}") from None


async def record_opened(opened: SessionOpened, summary: str) -> None:
    await workflow.execute_activity_method(
        SessionStoreActivities.record_opened,
        opened,
        **activity_options.titled(activity_options.STORE, summary),
    )
