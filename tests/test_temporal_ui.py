"""What an operator sees of a session in the Temporal UI: a workflow summary, write summaries
in words, the transcript tail as current details, and search by status and final reason."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from tests.conftest import AgentFactory
from tests.sessions import event_summaries, open_chat, say, stored_session


async def test_a_session_workflow_is_summarised_with_its_agent_and_channel(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
) -> None:
    agent_id = await make_agent()
    session = await open_chat(http, agent_id)
    row = await stored_session(db, session["id"])

    description = await temporal_client.get_workflow_handle(row.workflow_id).describe()

    assert await description.static_summary() == "chat with test agent (echo) on web"
    details = await description.static_details()
    assert details is not None and session["id"] in details and agent_id in details


async def test_current_details_show_the_transcript_tail(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
) -> None:
    session = await open_chat(http, await make_agent())
    await say(http, session["id"], "where is my parcel?")
    row = await stored_session(db, session["id"])

    metadata = await temporal_client.get_workflow_handle(row.workflow_id).query(
        "__temporal_workflow_metadata"
    )

    details = metadata.current_details
    assert details.startswith("**active** · 2 messages")
    assert "- user: where is my parcel?" in details
    assert "- assistant: echo: where is my parcel?" in details


async def test_message_writes_say_what_they_hold(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
) -> None:
    """A turn that ends in a plain reply is written by its model call; what is left for the
    session's own writes (here the first message) says what it holds."""
    session = await open_chat(http, await make_agent(first_message="Hi there"))
    await say(http, session["id"], "hello")
    row = await stored_session(db, session["id"])

    history = await temporal_client.get_workflow_handle(row.workflow_id).fetch_history()
    summaries = event_summaries(temporal_client, history, EventType.EVENT_TYPE_MARKER_RECORDED)

    assert "record assistant" in summaries
    assert not any("user" in summary for summary in summaries)  # the turn was not written here


async def test_final_sessions_are_found_by_status_and_final_reason(
    http: httpx.AsyncClient, make_agent: AgentFactory, temporal_client: Client
) -> None:
    session = await open_chat(http, await make_agent())
    await say(http, session["id"], "hello")
    await http.post(f"/chats/{session['id']}/end")
    query = (
        f'ParleySessionId = "{session["id"]}" AND ParleyStatus = "final" '
        'AND ParleyFinalReason = "user_end"'
    )

    found = []
    for _ in range(100):  # visibility follows the workflow within moments; bounded
        found = [execution.id async for execution in temporal_client.list_workflows(query)]
        if found:
            break
        await asyncio.sleep(0.1)

    assert len(found) == 1
    active = 'ParleyStatus = "active" AND ParleySessionId = "' + session["id"] + '"'
    assert [e.id async for e in temporal_client.list_workflows(active)] == []
