"""The search attributes Parley's workflows set, defined once.

The Temporal UI and `temporal workflow list` find a conversation's workflows by them
(`ParleySessionId = "..."`). The dev server registers them at start; a cluster needs them
created once (`temporal operator search-attribute create`, README).
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey, SearchAttributeUpdate

SESSION_ID = SearchAttributeKey.for_keyword("ParleySessionId")
AGENT_ID = SearchAttributeKey.for_keyword("ParleyAgentId")
CHANNEL = SearchAttributeKey.for_keyword("ParleyChannel")
STATUS = SearchAttributeKey.for_keyword("ParleyStatus")
FINAL_REASON = SearchAttributeKey.for_keyword("ParleyFinalReason")

ALL_KEYS = (SESSION_ID, AGENT_ID, CHANNEL, STATUS, FINAL_REASON)
# Name → Temporal's type name, as `temporal operator search-attribute create` takes them.
SEARCH_ATTRIBUTES: dict[str, str] = {key.name: "Keyword" for key in ALL_KEYS}


def conversation(session_id: str, agent_id: str, channel: str) -> list[SearchAttributeUpdate[str]]:
    """What names a conversation's workflows: its id, agent and channel."""
    return [
        SESSION_ID.value_set(session_id),
        AGENT_ID.value_set(agent_id),
        CHANNEL.value_set(channel),
    ]


def status(value: str, final_reason: str | None = None) -> list[SearchAttributeUpdate[str]]:
    updates: list[SearchAttributeUpdate[str]] = [STATUS.value_set(value)]
    if final_reason is not None:
        updates.append(FINAL_REASON.value_set(final_reason))
    return updates
