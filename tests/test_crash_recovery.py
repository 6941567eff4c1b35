"""A worker process killed mid-turn loses nothing, and side effects are not repeated blindly:
the tool sees the retry under the same idempotency key."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

from src.config import Settings
from tests.conftest import AgentFactory, api_client
from tests.fakes.tool_server import FakeToolServer
from tests.sessions import open_chat, say


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
