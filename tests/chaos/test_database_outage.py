"""The database becomes unreachable for the worker while sessions finish: the finish pipeline
waits (its persistence activity retries) and writes the final records once the database is
back, each exactly once.

"Unreachable" is real: the worker reaches PostgreSQL through a loopback TCP proxy; cutting it
aborts the worker's pooled connections and resets every new one, so each write attempt fails
at the network level, as with a database host that is down. The API keeps its own direct
connection, so clients can still end and read sessions meanwhile. PostgreSQL only (SQLite
cannot be made unreachable to one process: the tests run as root, which ignores file modes);
the case is skipped when no PostgreSQL answers.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import func, select
from temporalio.client import Client

from src.db.engine import create_engine, session_factory
from src.db.tables import AuditEvent, ChatMessage, ChatSession
from src.services.accounts import new_api_key, register_api_key
from src.worker import running_worker
from tests.chaos.conftest import PostgresFactory
from tests.chaos.harness import (
    SCALE,
    CuttableProxy,
    TranscriptCheck,
    echo_reply,
    gather_all,
    marker,
    report,
    say_until_answered,
    transcript,
)
from tests.conftest import AgentFactory, SettingsFactory, api_client
from tests.sessions import open_chat


async def test_finish_pipeline_waits_for_the_database(
    chaos_postgres: PostgresFactory | None,
    make_settings: SettingsFactory,
    serve_api: Any,
    make_agent: AgentFactory,
    temporal_client: Client,
) -> None:
    if chaos_postgres is None:
        pytest.skip("needs PostgreSQL (see the module docstring)")
    url, pg_port = await chaos_postgres("parley_chaos_db")
    proxy = CuttableProxy(upstream_port=pg_port)
    await proxy.start()
    queue = f"chaos-db-{marker()}"
    through_proxy = url.replace(f":{pg_port}/", f":{proxy.port}/")
    assert through_proxy != url
    worker_settings = make_settings(DATABASE_URL=through_proxy, TEMPORAL_TASK_QUEUE=queue)
    api_settings = make_settings(DATABASE_URL=url, TEMPORAL_TASK_QUEUE=queue)
    engine = create_engine(url)
    db = session_factory(engine)
    key = new_api_key()
    await register_api_key(db, key, account_id=f"chaos-{marker()}")
    check = TranscriptCheck()
    loop = asyncio.get_running_loop()
    try:
        async with (
            running_worker(worker_settings, temporal_client),
            serve_api(api_settings) as base,
            api_client(base, key) as http,
        ):
            agent_id = await make_agent(model="echo", client=http, tools=[])
            sessions = [(await open_chat(http, agent_id))["id"] for _ in range(SCALE.db_sessions)]
            questions = {sid: [f"before the outage {marker()}"] for sid in sessions}
            await gather_all(
                [
                    say_until_answered(http, sid, questions[sid][0], f"q-{uuid.uuid4()}")
                    for sid in sessions
                ],
                within=120,
            )

            proxy.cut()
            cut_at = loop.time()
            ended = await gather_all(
                [http.post(f"/chats/{sid}/end", json={"note": "chaos"}) for sid in sessions],
                within=120,
            )
            # Persistence has failed and been retried: a few attempts per session.
            await proxy.wait_refused(4 * len(sessions), within=120)
            async with db() as s:
                still_active = await s.scalar(
                    select(func.count())
                    .select_from(ChatSession)
                    .where(ChatSession.id.in_(sessions), ChatSession.status == "active")
                )
            refused_while_cut = proxy.refused
            proxy.restore()
            outage = loop.time() - cut_at
            rows = await _wait_final(db, sessions, within=180)
            written_after = loop.time() - cut_at - outage
            for sid in sessions:
                check.add(await transcript(http, sid), questions[sid], echo_reply)
        async with db() as s:
            message_rows = Counter(
                (
                    await s.scalars(
                        select(ChatMessage.session_id).where(ChatMessage.session_id.in_(sessions))
                    )
                ).all()
            )
            finished_events = Counter(
                (
                    await s.scalars(
                        select(AuditEvent.session_id).where(
                            AuditEvent.session_id.in_(sessions),
                            AuditEvent.kind == "session.finished",
                        )
                    )
                ).all()
            )
    finally:
        proxy.restore()
        await proxy.close()
        await engine.dispose()
    duplicate_rows = sum(max(0, n - 2) for n in message_rows.values()) + sum(
        max(0, n - 1) for n in finished_events.values()
    )
    final = [row for row in rows if row.status == "final" and row.final_reason == "user_end"]
    report(
        "database unreachable during persistence",
        f"{len(sessions)} sessions ended while PostgreSQL was cut for {outage:.1f} s "
        f"({refused_while_cut} connection attempts reset, {still_active} records still "
        f"pending); {len(final)}/{len(sessions)} final records written "
        f"{written_after:.1f} s after the restore, {duplicate_rows} duplicate rows; {check.line()}",
    )
    assert all(r.status_code == 200 and r.json()["is_final"] for r in ended)
    assert still_active == len(sessions)  # nothing could be written during the outage
    assert len(final) == len(sessions)
    assert message_rows == Counter({sid: 2 for sid in sessions})
    assert finished_events == Counter({sid: 1 for sid in sessions})
    check.assert_clean()


async def _wait_final(db: Any, sessions: list[str], within: float) -> list[ChatSession]:
    """Poll the database (bounded) until every session's final record is written."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        async with db() as s:
            rows = list(
                (await s.scalars(select(ChatSession).where(ChatSession.id.in_(sessions)))).all()
            )
        if all(row.status == "final" for row in rows) or loop.time() > deadline:
            return rows
        await asyncio.sleep(0.2)
