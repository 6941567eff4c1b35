"""A receiver that accepted an event does not get it again because Parley failed afterwards:
the audit write that follows a 2xx is retried on its own."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowHandle

from src.db.engine import create_engine
from tests.conftest import AgentFactory
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.sessions import open_chat
from tests.test_finish_pipeline import (
    audit_log,
    delivery_outcome,
    finishing_agent,
    recorded_attempts,
)


@asynccontextmanager
async def audit_attempts_refused(database_url: str, session_id: str) -> AsyncIterator[None]:
    """While the block runs, the database itself refuses (a trigger) to store a webhook
    attempt in the session's audit log; every other write goes through."""
    name = f"refuse_audit_{session_id.replace('-', '_')}"
    condition = f"NEW.session_id = '{session_id}' AND NEW.kind = 'webhook.attempt'"
    if database_url.startswith("sqlite"):
        connection = sqlite3.connect(database_url.split("///", 1)[-1], isolation_level=None)
        try:
            connection.execute(
                f"CREATE TRIGGER {name} BEFORE INSERT ON audit_events WHEN {condition} "
                "BEGIN SELECT RAISE(ABORT, 'audit write refused by the test'); END"
            )
            yield
        finally:
            connection.execute(f"DROP TRIGGER {name}")
            connection.close()
        return
    engine = create_engine(database_url)
    try:
        async with engine.begin() as db:
            await db.execute(text(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'audit write refused by the test'; END $$"
            ))  # fmt: skip
            await db.execute(text(
                f"CREATE TRIGGER {name} BEFORE INSERT ON audit_events FOR EACH ROW "
                f"WHEN ({condition}) EXECUTE FUNCTION {name}()"
            ))  # fmt: skip
        yield
    finally:
        async with engine.begin() as db:
            await db.execute(text(f"DROP TRIGGER IF EXISTS {name} ON audit_events"))
            await db.execute(text(f"DROP FUNCTION IF EXISTS {name}()"))
        await engine.dispose()


async def wait_for_a_retry(handle: WorkflowHandle[object, object]) -> None:
    """Poll (bounded) until one of the workflow's activities failed and waits to run again."""
    for _ in range(600):
        try:
            description = await handle.describe()
        except Exception:  # not started yet
            description = None
        if description is not None and any(
            p.attempt >= 2 for p in description.raw_description.pending_activities
        ):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no activity of {handle.id} was retried")


async def test_an_accepted_event_is_not_posted_again_when_its_audit_write_fails(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    receiver: tuple[WebhookReceiver, str],
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
    database_url: str,
) -> None:
    hooks, url = receiver
    session = await open_chat(http, await finishing_agent(make_agent, url))
    delivery = temporal_client.get_workflow_handle(f"webhook-{session['id']}:session.finished")

    async with audit_attempts_refused(database_url, session["id"]):
        await http.post(f"/chats/{session['id']}/end")
        await hooks.wait_accepted(session["id"], "session.finished", within=30)
        await wait_for_a_retry(delivery)
    delivered = await delivery_outcome(temporal_client, db, session["id"])
    events = await audit_log(http, session["id"])

    assert delivered is True
    assert len(hooks.attempts(session["id"], "session.finished")) == 1
    assert recorded_attempts(events) == [(1, 200, None)]
    assert [e["kind"] for e in events if e["kind"].startswith("webhook.")] == [
        "webhook.attempt", "webhook.delivered"
    ]  # fmt: skip
