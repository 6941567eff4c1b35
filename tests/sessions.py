"""Small steps the session tests share: open a chat, send a message, wait for a state."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowHistory

from src.db.tables import AuditEvent, ChatSession


async def open_chat(http: httpx.AsyncClient, agent_id: str | None, **fields: Any) -> dict[str, Any]:
    chosen = {"agent_id": agent_id} if agent_id is not None else {}
    response = await http.post("/chats", json={**chosen, "channel": "web", **fields})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def say(http: httpx.AsyncClient, session_id: str, content: str, **kw: Any) -> dict[str, Any]:
    response = await http.post(f"/chats/{session_id}/messages", json={"content": content}, **kw)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def wait_until_final(
    http: httpx.AsyncClient, session_id: str, attempts: int = 600
) -> dict[str, Any]:
    """Poll until the session is final (bounded; not a timing assertion)."""
    for _ in range(attempts):
        session = (await http.get(f"/chats/{session_id}")).json()
        if session["is_final"]:
            return dict(session)
        await asyncio.sleep(0.1)
    raise AssertionError(f"session {session_id} did not become final")


def endpoint_open_body(agent_id: str, channel: str = "sms") -> dict[str, Any]:
    """An open request for a fresh external endpoint (a new phone number)."""
    return {"agent_id": agent_id, "channel": channel, "external_id": {"phone": str(uuid.uuid4())}}


async def stored_session(db: async_sessionmaker[AsyncSession], session_id: str) -> ChatSession:
    async with db() as s:
        row = await s.get(ChatSession, session_id)
    assert row is not None, f"session {session_id} is not in the database"
    return row


def event_summaries(client: Client, history: WorkflowHistory, event_type: int) -> list[str]:
    """The user-metadata summaries (what the Temporal UI shows) of a history's events of one
    type."""
    converter = client.data_converter.payload_converter
    return [
        converter.from_payload(event.user_metadata.summary, str)
        for event in history.events
        if event.event_type == event_type and event.HasField("user_metadata")
    ]


async def audit_data(
    db: async_sessionmaker[AsyncSession], session_id: str, kind: str
) -> list[dict[str, Any]]:
    """The `data` of a session's audit events of one kind, oldest first."""
    async with db() as s:
        rows = await s.scalars(
            select(AuditEvent.data)
            .where(AuditEvent.session_id == session_id, AuditEvent.kind == kind)
            .order_by(AuditEvent.id)
        )
        return list(rows.all())
