"""Through the product: a worker keeps a stdio MCP server warm for the sessions of one
account (not another's), and stopping the worker stops it."""

from __future__ import annotations

import json

import httpx

from src.worker import running_worker
from tests.conftest import api_client
from tests.sessions import open_chat, say
from tests.stack import Stack
from tests.test_mcp_client import STDIO_FAKE, is_running

# The fake model calls the fake server's `pid` tool.
PID_TOOLS = [{"type": "mcp", "server": {"command": STDIO_FAKE}}]


async def test_sessions_of_one_account_share_a_warm_server_and_stopping_the_worker_stops_it(
    stack: Stack, other_api_key: str
) -> None:
    settings = stack.own_queue("mcp-warm", PARLEY_MCP_COMMANDS=json.dumps([STDIO_FAKE]))
    async with running_worker(settings, stack.temporal):
        async with (
            stack.serve_api(settings) as url,
            api_client(url, stack.api_key) as mine,
            api_client(url, other_api_key) as theirs,
        ):
            my_agent = await stack.make_agent("tool-pid", client=mine, tools=PID_TOOLS)
            their_agent = await stack.make_agent("tool-pid", client=theirs, tools=PID_TOOLS)
            first = await server_pid(mine, my_agent)
            second = await server_pid(mine, my_agent)
            other_account = await server_pid(theirs, their_agent)

            assert first == second
            assert other_account != first
            assert is_running(first) and is_running(other_account)

    assert not is_running(first) and not is_running(other_account)


async def server_pid(http: httpx.AsyncClient, agent_id: str) -> int:
    """The pid the `pid` tool reported in a new session's first turn."""
    session = await open_chat(http, agent_id)
    turn = await say(http, session["id"], "{}")
    return int(turn["messages"][0]["tool_calls"][0]["response"])
