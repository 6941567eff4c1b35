"""One active session per external endpoint, however many opens race for it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.db.tables import ChatSession
from tests.conftest import AgentFactory
from tests.sessions import endpoint_open_body


async def test_concurrent_opens_for_one_endpoint_share_one_session(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    agent_id = await make_agent()
    body = endpoint_open_body(agent_id)

    responses = await asyncio.gather(*(http.post("/chats", json=body) for _ in range(50)))

    ids = {r.json()["id"] for r in responses}
    statuses = sorted(r.status_code for r in responses)
    assert len(ids) == 1
    assert statuses == [200] * 49 + [201]
    listed = (await http.get("/chats", params={"agent_id": agent_id, "limit": 100})).json()
    assert [s["id"] for s in listed["items"]] == list(ids)


async def test_an_endpoint_gets_a_new_session_after_the_old_one_is_final(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    body = endpoint_open_body(await make_agent())
    first = (await http.post("/chats", json=body)).json()
    await http.post(f"/chats/{first['id']}/end")

    second = await http.post("/chats", json=body)

    assert second.status_code == 201
    assert second.json()["id"] != first["id"]
    assert second.json()["status"] == "active"
    assert (await http.get(f"/chats/{first['id']}")).json()["status"] == "final"


async def test_same_external_id_on_another_channel_or_account_is_another_session(
    http: httpx.AsyncClient, other_http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    external_id = {"phone": str(uuid.uuid4())}
    mine = await http.post(
        "/chats",
        json={"agent_id": await make_agent(), "channel": "sms", "external_id": external_id},
    )
    other_channel = await http.post(
        "/chats",
        json={"agent_id": await make_agent(), "channel": "web", "external_id": external_id},
    )
    theirs = await other_http.post(
        "/chats",
        json={
            "agent_id": await make_agent(client=other_http),
            "channel": "sms",
            "external_id": external_id,
        },
    )

    assert [r.status_code for r in (mine, other_channel, theirs)] == [201, 201, 201]
    assert len({r.json()["id"] for r in (mine, other_channel, theirs)}) == 3


async def test_database_refuses_two_active_sessions_on_one_endpoint(
    db: async_sessionmaker[AsyncSession],
    api_key: str,
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
) -> None:
    session = (
        await http.post("/chats", json={"agent_id": await make_agent(), "channel": "web"})
    ).json()
    async with db() as s:
        template = await s.get(ChatSession, session["id"])
    assert template is not None
    endpoint = uuid.uuid4().hex

    def row(status: str) -> ChatSession:
        return ChatSession(
            id=str(uuid.uuid4()),
            account_id=template.account_id,
            agent_id="a",
            agent_version=1,
            snapshot_id=template.snapshot_id,
            channel="sms",
            external_id={"x": 1},
            endpoint_hash=endpoint,
            workflow_id="w",
            additional_data={},
            ttl_seconds=60,
            status=status,
            created_time=datetime.now(UTC),
            last_activity=datetime.now(UTC),
        )

    async with db.begin() as s:
        s.add_all([row("final"), row("final"), row("active")])
    with pytest.raises(IntegrityError):
        async with db.begin() as s:
            s.add(row("active"))
