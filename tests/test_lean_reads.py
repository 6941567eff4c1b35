"""Reads that many tenants make often stay cheap and stable: the session list reads no
transcripts, /metrics does not count a table on every scrape, and agent pages do not shift
while agents are updated."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.api.app import create_app
from src.config import Settings
from src.db.tables import ChatSession
from src.services.accounts import new_api_key, register_api_key
from tests.conftest import AgentFactory, SettingsFactory, api_client
from tests.servers import served
from tests.sessions import open_chat, say


@asynccontextmanager
async def api_with_app(settings: Settings) -> AsyncIterator[tuple[str, FastAPI]]:
    """The API served over HTTP, and its app, to watch the SQL its own engine sends."""
    app = create_app(settings)
    async with served(app) as url:
        yield url, app


@contextmanager
def statements_sent(app: FastAPI) -> Iterator[list[str]]:
    sent: list[str] = []

    def record(*args: Any) -> None:
        sent.append(str(args[2]).lower())  # (connection, cursor, statement, ...)

    engine = app.state.services.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def test_listing_sessions_reads_no_transcripts(
    settings: Settings, api_key: str, make_agent: AgentFactory, worker: None
) -> None:
    async with api_with_app(settings) as (url, app), api_client(url, api_key) as http:
        agent_id = await make_agent(client=http)
        session = await open_chat(http, agent_id)
        await say(http, session["id"], "a transcript to leave unread")
        with statements_sent(app) as sent:
            listed = await http.get("/chats", params={"agent_id": agent_id})

    assert listed.status_code == 200, listed.text
    [item] = listed.json()["items"]
    assert item["id"] == session["id"] and "messages" not in item
    assert any("from chat_sessions" in statement for statement in sent)
    assert not [statement for statement in sent if "chat_messages" in statement]


async def test_metrics_count_active_sessions_at_most_once_per_cache_period(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(PARLEY_METRICS_CACHE_SECONDS=600)
    async with api_with_app(settings) as (url, app), httpx.AsyncClient(base_url=url) as plain:
        with statements_sent(app) as sent:
            scrapes = [await plain.get("/metrics") for _ in range(3)]

    assert all(s.status_code == 200 and "parley_active_sessions " in s.text for s in scrapes)
    assert len([s for s in sent if "count(" in s and "chat_sessions" in s]) == 1


async def test_metrics_report_the_active_sessions_in_the_database(
    make_settings: SettingsFactory,
    api_key: str,
    make_agent: AgentFactory,
    db: async_sessionmaker[AsyncSession],
    worker: None,
) -> None:
    settings = make_settings(PARLEY_METRICS_CACHE_SECONDS=0)
    async with api_with_app(settings) as (url, _), api_client(url, api_key) as http:
        await open_chat(http, await make_agent(client=http))
        for _ in range(20):  # other tests' sessions may finish meanwhile: until counts agree
            counted_before = await count_active(db)
            reported = active_sessions_metric((await http.get(f"{url}/metrics")).text)
            if counted_before == await count_active(db):
                break

    assert counted_before >= 1
    assert reported == counted_before


async def count_active(db: async_sessionmaker[AsyncSession]) -> int:
    async with db() as s:
        found = await s.scalar(
            select(func.count()).select_from(ChatSession).where(ChatSession.status == "active")
        )
    return int(found or 0)


def active_sessions_metric(text: str) -> float:
    [line] = [line for line in text.splitlines() if line.startswith("parley_active_sessions ")]
    return float(line.split()[-1])


async def test_agent_pages_stay_stable_while_agents_are_updated(
    api_url: str, db: async_sessionmaker[AsyncSession]
) -> None:
    key = new_api_key()
    await register_api_key(db, key, account_id=f"pages-{uuid.uuid4().hex[:8]}")
    async with api_client(api_url, key) as http:
        created = []
        for name in ("first", "second", "third"):
            response = await http.post("/agents", json={"name": name, "system_prompt": "Hi."})
            created.append(response.json()["id"])
        page = (await http.get("/agents", params={"limit": 1})).json()
        seen = [item["id"] for item in page["items"]]
        for agent_id in created[:2]:  # each update is a new, newer version
            patched = await http.patch(f"/agents/{agent_id}", json={"system_prompt": "Hello."})
            assert patched.status_code == 200, patched.text
        while page["next_cursor"]:
            params = {"limit": 1, "cursor": page["next_cursor"]}
            page = (await http.get("/agents", params=params)).json()
            seen += [item["id"] for item in page["items"]]
        everything = (await http.get("/agents", params={"limit": 100})).json()["items"]

    assert seen == list(reversed(created))
    assert [item["id"] for item in everything] == list(reversed(created))
    assert [item["version"] for item in everything] == [1, 2, 2]
