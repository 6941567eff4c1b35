"""A worker process killed mid-turn loses nothing, and side effects are not repeated blindly:
the tool sees the retry under the same idempotency key."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from src.config import Settings
from src.db.engine import create_engine, session_factory
from src.db.tables import ChatSession
from tests.conftest import WEBHOOK_SECRET, AgentFactory, api_client
from tests.fakes.llm_server import FakeLLM
from tests.fakes.tool_server import FakeToolServer
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.sessions import open_chat, say


@asynccontextmanager
async def settings_db(settings: Settings) -> AsyncIterator[Any]:
    engine = create_engine(settings.database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def start_worker_process(settings: Settings, log: Path) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PARLEY_", "TEMPORAL_"))}
    env.update(
        TEMPORAL_ADDRESS=settings.temporal_target,
        TEMPORAL_TASK_QUEUE=settings.temporal_task_queue,
        DATABASE_URL=settings.database_url,
        OPENAI_BASE_URL=settings.openai_base_url or "",
        OPENAI_API_KEY="sk-test-not-secret",
        PARLEY_DATA_DIR=str(settings.data_dir),
        PARLEY_TOOL_URL_ALLOWLIST=settings.tool_url_allowlist_setting,
    )
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "src.cli", "worker", env=env, stdout=out, stderr=out
        )


async def test_worker_killed_during_a_tool_call_loses_no_turn(
    make_settings: Any,
    serve_api: Any,
    api_key: str,
    make_agent: AgentFactory,
    tools: tuple[FakeToolServer, str],
    tmp_path: Path,
) -> None:
    server, base = tools
    settings = make_settings(TEMPORAL_TASK_QUEUE=f"crash-{uuid.uuid4().hex[:8]}")
    path = f"/hang-first/{uuid.uuid4().hex}"
    agent_id = await make_agent(
        model="tool-lookup_order",
        tools=[
            {
                "type": "webhook",
                "name": "lookup_order",
                "parameters": {"type": "object", "properties": {}},
                "url": base + path,
            }
        ],
    )
    log = tmp_path / "workers.log"
    first = await start_worker_process(settings, log)
    async with serve_api(settings) as url, api_client(url, api_key) as http:
        session = await open_chat(http, agent_id)
        reply = asyncio.create_task(say(http, session["id"], "{}"))
        for _ in range(600):
            if server.calls_to(path):
                break
            await asyncio.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        server.release.set()
        second = await start_worker_process(settings, log)
        try:
            turn = await asyncio.wait_for(reply, timeout=120)
            transcript = (await http.get(f"/chats/{session['id']}")).json()["messages"]
        finally:
            second.send_signal(signal.SIGINT)
            await second.wait()

    calls = server.calls_to(path)
    assert first.returncode == -signal.SIGKILL
    assert len(calls) == 2
    assert calls[0].headers["idempotency-key"] == calls[1].headers["idempotency-key"]
    assert turn["messages"][0]["tool_calls"][0]["response"] == '{"done":true,"attempt":2}'
    assert [m["role"] for m in transcript] == ["user", "assistant", "assistant"]
    assert transcript[1:] == turn["messages"]


async def test_worker_killed_mid_pipeline_resumes_without_repeating_steps(
    make_settings: Any,
    serve_api: Any,
    api_key: str,
    make_agent: AgentFactory,
    receiver: tuple[WebhookReceiver, str],
    fake_llm: tuple[FakeLLM, str],
    temporal_client: Client,
    tmp_path: Path,
) -> None:
    hooks, url = receiver
    settings = make_settings(TEMPORAL_TASK_QUEUE=f"pipeline-{uuid.uuid4().hex[:8]}")
    agent_id = await make_agent(
        model="hang-analysis",
        analysis={"summary_prompt": "Summarise."},
        webhook={"url": url, "secret": WEBHOOK_SECRET},
    )
    log = tmp_path / "workers.log"
    first = await start_worker_process(settings, log)
    async with serve_api(settings) as api, api_client(api, api_key) as http:
        session = await open_chat(http, agent_id)
        await say(http, session["id"], f"pipeline crash {uuid.uuid4()}")
        ended = await http.post(f"/chats/{session['id']}/end")
        marker = "pipeline crash"
        for _ in range(600):  # until the analysis call is in flight
            analysing = [
                r
                for r in fake_llm[0].requests_for(marker)
                if r["messages"][0]["content"] == "Summarise."
            ]
            if analysing:
                break
            await asyncio.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        fake_llm[0].release.set()
        second = await start_worker_process(settings, log)
        try:
            for _ in range(1200):
                if hooks.accepted(session["id"], "session.finished"):
                    break
                await asyncio.sleep(0.1)
            final = (await http.get(f"/chats/{session['id']}")).json()
            async with settings_db(settings) as db, db() as s:
                row = await s.get(ChatSession, session["id"])
        finally:
            second.send_signal(signal.SIGINT)
            await second.wait()
    assert row is not None
    history = await temporal_client.get_workflow_handle(row.workflow_id).fetch_history()
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]

    assert ended.json()["is_final"] is True
    assert scheduled.count("session_store.persist_final") == 1
    assert scheduled.count("analysis.analyze_session") == 1  # one activity, retried inside
    assert final["artifact"]["summary"].startswith("summary of")
    assert len(hooks.accepted(session["id"], "session.finished")) == 1
