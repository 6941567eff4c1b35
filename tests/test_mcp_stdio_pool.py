"""Warm stdio MCP servers: a call reuses the server the last call of the same account and
command line started, a dead one is started again, idle ones and the least recently used past
the bound are stopped, accounts never share one, and closing the pool stops them all. Real
server processes (tests/fakes/mcp_stdio_server.py), real pids."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from src.domain import McpServer
from src.tools.mcp_client import (
    CLIENT_INFO,
    McpError,
    McpOutcomeUnknown,
    McpPolicy,
    WarmStdio,
    call_tool,
)
from src.tools.mcp_commands import McpCommandAllowlist
from src.tools.mcp_stdio_pool import StdioServerPool, warm_stdio_servers
from src.tools.url_guard import UrlAllowlist
from tests.test_mcp_client import STDIO_FAKE, directory_exists, fake_stdio_server, is_running

pytestmark = pytest.mark.database_agnostic

SERVER = McpServer(command=STDIO_FAKE, timeout_seconds=20)
OTHER_ARGUMENTS = McpServer(command=[*STDIO_FAKE, "--other"], timeout_seconds=20)
POLICY = McpPolicy(
    allowed_commands=McpCommandAllowlist.of([STDIO_FAKE, [*STDIO_FAKE, "--other"]]),
    url_allowlist=UrlAllowlist.parse([]),
)


@asynccontextmanager
async def pool(max_servers: int = 8, idle_seconds: float = 300) -> AsyncIterator[StdioServerPool]:
    async with warm_stdio_servers(max_servers, idle_seconds, CLIENT_INFO) as servers:
        yield servers


async def pid_of(servers: StdioServerPool, account: str, server: McpServer = SERVER) -> int:
    return int(await call_tool(server, POLICY, "pid", {}, warm=WarmStdio(servers, account)))


async def eventually(condition: Callable[[], bool], within: float = 30) -> None:
    """Poll (bounded) until `condition()` holds: a process's end takes a moment to be seen."""
    for _ in range(int(within / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the condition never held")


def gone(pid: int) -> Callable[[], bool]:
    return lambda: not is_running(pid)


async def test_a_second_call_is_answered_by_the_same_server_process() -> None:
    async with pool() as servers:
        first = await pid_of(servers, "acct-a")
        second = await pid_of(servers, "acct-a")

        assert second == first
        assert servers.running_count() == 1


async def test_concurrent_calls_share_one_server() -> None:
    async with pool() as servers:
        pids = await asyncio.gather(*(pid_of(servers, "acct-a") for _ in range(6)))

        assert len(set(pids)) == 1
        assert servers.running_count() == 1


async def test_two_accounts_get_different_server_processes() -> None:
    async with pool() as servers:
        mine = await pid_of(servers, "acct-a")
        theirs = await pid_of(servers, "acct-b")

        assert mine != theirs
        assert await pid_of(servers, "acct-a") == mine
        assert servers.running_count() == 2


async def test_a_different_command_line_gets_its_own_server() -> None:
    async with pool() as servers:
        plain = await pid_of(servers, "acct-a")
        other = await pid_of(servers, "acct-a", OTHER_ARGUMENTS)

        assert plain != other


async def test_a_killed_server_is_started_again_on_the_next_call() -> None:
    async with pool() as servers:
        first = await pid_of(servers, "acct-a")
        os.kill(first, signal.SIGKILL)
        await eventually(gone(first))

        second = await pid_of(servers, "acct-a")

        assert second != first
        assert is_running(second)


async def test_a_server_killed_mid_call_leaves_it_unknown_and_the_next_call_starts_anew() -> None:
    async with pool() as servers:
        warm = WarmStdio(servers, "acct-a")
        first = await pid_of(servers, "acct-a")
        home = Path(json.loads(await call_tool(SERVER, POLICY, "where", {}, warm=warm))["cwd"])
        call = asyncio.create_task(call_tool(SERVER, POLICY, "wait", {"seconds": 60}, warm=warm))
        await eventually((home / "waiting").exists)
        os.kill(first, signal.SIGKILL)

        with pytest.raises(McpOutcomeUnknown, match="the call was sent"):
            await call
        assert await pid_of(servers, "acct-a") != first


async def test_an_idle_server_is_stopped_and_the_next_call_starts_another() -> None:
    async with pool(idle_seconds=0.5) as servers:
        first = await pid_of(servers, "acct-a")

        await eventually(gone(first))
        await eventually(lambda: servers.running_count() == 0)
        assert await pid_of(servers, "acct-a") != first


async def test_past_the_bound_the_least_recently_used_server_is_stopped() -> None:
    async with pool(max_servers=2) as servers:
        oldest = await pid_of(servers, "acct-a")
        recent = await pid_of(servers, "acct-b")
        assert await pid_of(servers, "acct-a") == oldest  # now acct-b's is the least recent

        newest = await pid_of(servers, "acct-c")

        await eventually(gone(recent))
        await eventually(lambda: servers.running_count() == 2)
        assert is_running(oldest) and is_running(newest)


async def test_closing_the_pool_stops_every_server() -> None:
    async with pool() as servers:
        pids = [await pid_of(servers, account) for account in ("acct-a", "acct-b", "acct-c")]

    assert not any(is_running(pid) for pid in pids)
    assert servers.running_count() == 0


async def test_a_warm_server_runs_in_its_own_empty_home_with_a_minimal_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PARLEY_TEST_SECRET", "do-not-leak")
    async with pool() as servers:
        warm = WarmStdio(servers, "acct-a")
        report = json.loads(await call_tool(SERVER, POLICY, "where", {}, warm=warm))
        other = json.loads(await call_tool(SERVER, POLICY, "where", {}, warm=warm))
        theirs = json.loads(
            await call_tool(SERVER, POLICY, "where", {}, warm=WarmStdio(servers, "acct-b"))
        )

        cwd, env = report["cwd"], report["env"]
        assert report["entries"] == [] and env["HOME"] == cwd
        assert other["cwd"] == cwd  # the same server, the same directory
        assert theirs["cwd"] != cwd
        assert "do-not-leak" not in env.values()
        assert set(env) <= {"PATH", "HOME", "LANG", "USER", "LOGNAME", "SHELL", "TERM"}

    assert not directory_exists(cwd)  # removed once the server stopped


async def test_a_server_that_never_answers_is_stopped_when_its_start_times_out(
    tmp_path: Path,
) -> None:
    silent, record = fake_stdio_server(tmp_path, "hang", timeout=1)
    assert silent.command is not None
    policy = McpPolicy(McpCommandAllowlist.of([silent.command]), UrlAllowlist.parse([]))
    async with pool() as servers:
        with pytest.raises(McpError, match=r"did not answer within 1 s"):
            await call_tool(silent, policy, "pid", {}, warm=WarmStdio(servers, "acct-a"))

        pid = json.loads(record.read_text())["pid"]
        await eventually(gone(pid))
        await eventually(lambda: servers.running_count() == 0)
