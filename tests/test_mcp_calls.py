"""An MCP tool call is sent at most once: a call that may have reached the server is never
sent again (not after a timeout, not after its worker was killed); the model hears that its
outcome is unknown. Failures before the call was sent are retried. The server sees the call's
idempotency key in `_meta`."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowHandle

from src.tools.mcp_client import IDEMPOTENCY_KEY_META
from tests.conftest import AgentFactory, api_client
from tests.fakes.mcp_http_server import CountingMcpServer
from tests.servers import served
from tests.sessions import open_chat, say, stored_session
from tests.stack import worker_process
from tests.test_crash_recovery import kill

UNKNOWN = "error: the tool call may or may not have run"


def mcp_agent(base: str, tool: str, timeout_seconds: float = 30) -> dict[str, Any]:
    return {
        "model": f"tool-{tool}",
        "tools": [
            {"type": "mcp", "server": {"url": f"{base}/mcp", "timeout_seconds": timeout_seconds}}
        ],
    }


def tool_response(turn: dict[str, Any]) -> str:
    return str(turn["messages"][0]["tool_calls"][0]["response"])


def socket_on_port(port: int) -> socket.socket:
    """A loopback socket bound to `port` again, not listening yet."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


async def wait_for_retry(handle: WorkflowHandle[Any, Any], activity: str) -> None:
    """Poll (bounded) until `activity` failed once and waits for, or runs, its second attempt."""
    for _ in range(600):
        description = await handle.describe()
        for pending in description.raw_description.pending_activities:
            if pending.activity_type.name == activity and pending.attempt >= 2:
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{activity} was never retried in {handle.id}")


async def test_an_mcp_call_that_times_out_after_reaching_the_server_is_made_once(
    http: httpx.AsyncClient, make_agent: AgentFactory
) -> None:
    counting = CountingMcpServer()
    marker = f"timeout-{uuid.uuid4().hex[:8]}"
    async with served(counting.app()) as base:
        agent_id = await make_agent(**mcp_agent(base, "hang", timeout_seconds=1))
        session = await open_chat(http, agent_id)

        turn = await say(http, session["id"], json.dumps({"marker": marker}))
        counting.release.set()

    assert counting.calls[marker] == 1
    assert tool_response(turn).startswith(UNKNOWN)
    assert "not repeated" in tool_response(turn)
    assert turn["messages"][-1]["content"].startswith("tool said: error: the tool call may")


async def test_an_mcp_call_to_a_server_down_at_first_is_retried_and_runs_once(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
) -> None:
    counting = CountingMcpServer()
    marker = f"down-{uuid.uuid4().hex[:8]}"
    async with served(counting.app()) as base:  # up while the session opens: discovery
        agent_id = await make_agent(**mcp_agent(base, "record"))
        session = await open_chat(http, agent_id)
    down = socket_on_port(int(base.rsplit(":", 1)[1]))  # not listening: connections refused
    workflow = temporal_client.get_workflow_handle(
        (await stored_session(db, session["id"])).workflow_id
    )

    reply = asyncio.create_task(say(http, session["id"], json.dumps({"marker": marker})))
    await wait_for_retry(workflow, "mcp_tools.call")
    async with served(counting.app(), down):
        turn = await asyncio.wait_for(reply, timeout=120)

    assert counting.calls[marker] == 1
    assert tool_response(turn) == f"recorded {marker}"
    [meta] = counting.metas[marker]
    assert meta[IDEMPOTENCY_KEY_META].startswith(f"{session['id']}:")


async def test_a_worker_killed_mid_mcp_call_does_not_make_the_call_again(
    make_settings: Any,
    serve_api: Any,
    api_key: str,
    make_agent: AgentFactory,
    tmp_path: Path,
) -> None:
    counting = CountingMcpServer()
    marker = f"kill-{uuid.uuid4().hex[:8]}"
    settings = make_settings(TEMPORAL_TASK_QUEUE=f"mcp-crash-{uuid.uuid4().hex[:8]}")
    log = tmp_path / "workers.log"
    async with served(counting.app()) as base:
        agent_id = await make_agent(**mcp_agent(base, "hang"))
        first = worker_process(settings, log)
        await first.start()
        async with serve_api(settings) as url, api_client(url, api_key) as http:
            session = await open_chat(http, agent_id)
            reply = asyncio.create_task(say(http, session["id"], json.dumps({"marker": marker})))
            await counting.wait_for_call(marker)
            await kill(first)
            second = worker_process(settings, log)
            await second.start()
            try:
                turn = await asyncio.wait_for(reply, timeout=120)
            finally:
                await second.stop()
                counting.release.set()

    assert first.returncode == -signal.SIGKILL
    assert counting.calls[marker] == 1
    assert tool_response(turn).startswith(UNKNOWN)
    assert "an earlier attempt sent the call" in tool_response(turn)
