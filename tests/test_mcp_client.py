"""The MCP client against real servers: the published `mcp-server-time` and an SDK-built
server over stdio, and SDK-built streamable-HTTP servers on loopback."""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
from pathlib import Path

import pytest
from mcp.types import CallToolResult, ImageContent, TextContent

from src.domain import McpServer
from src.tools.mcp_client import (
    IDEMPOTENCY_KEY_META,
    McpCommandRefused,
    McpError,
    McpOutcomeUnknown,
    McpPolicy,
    McpToolFailed,
    call_tool,
    list_tools,
    result_text,
)
from src.tools.mcp_commands import McpCommandAllowlist
from src.tools.url_guard import UrlAllowlist, UrlRefused
from tests.fakes.mcp_http_server import TOKEN_HEADER, CountingMcpServer, mcp_http_app
from tests.servers import served

# The MCP client against MCP servers only: the PostgreSQL pass would only run it again.
pytestmark = pytest.mark.database_agnostic

TIME_SERVER = McpServer(command=["mcp-server-time"], timeout_seconds=20)
STDIO_FAKE = [sys.executable, str(Path(__file__).parent / "fakes" / "mcp_stdio_server.py")]


def stdio_policy(*commands: list[str]) -> McpPolicy:
    """The time server and the given command lines, exactly."""
    return McpPolicy(
        allowed_commands=McpCommandAllowlist.of([["mcp-server-time"], *commands]),
        url_allowlist=UrlAllowlist.parse([]),
    )


STDIO_POLICY = stdio_policy()
LOOPBACK_POLICY = McpPolicy(
    allowed_commands=McpCommandAllowlist(), url_allowlist=UrlAllowlist.parse(["127.0.0.1"])
)
UTC_DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00")

# A stdio "server" that records its pid and environment, then either exits at once or
# hangs without ever answering.
FAKE_STDIO_SERVER = """
import json, os, sys, time
out = sys.argv[1]
with open(out + ".tmp", "w") as f:
    json.dump({"pid": os.getpid(), "env": dict(os.environ)}, f)
os.rename(out + ".tmp", out)
if sys.argv[2] == "hang":
    time.sleep(60)
"""


def fake_stdio_server(tmp_path: Path, behaviour: str, timeout: float) -> tuple[McpServer, Path]:
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE_STDIO_SERVER)
    record = tmp_path / "record.json"
    command = [sys.executable, str(script), str(record), behaviour]
    return McpServer(command=command, timeout_seconds=timeout), record


def is_running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def same_directory(a: str, b: str) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def directory_exists(path: str) -> bool:
    return Path(path).exists()


def closed_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_stdio_time_server_lists_its_tools() -> None:
    tools = await list_tools(TIME_SERVER, STDIO_POLICY)

    by_name = {tool.name: tool for tool in tools}
    assert {"get_current_time", "convert_time"} <= by_name.keys()
    assert "timezone" in by_name["get_current_time"].input_schema["properties"]
    assert by_name["get_current_time"].description


async def test_stdio_time_server_tells_the_time_in_utc() -> None:
    text = await call_tool(TIME_SERVER, STDIO_POLICY, "get_current_time", {"timezone": "UTC"})

    assert UTC_DATETIME.search(text), text
    assert json.loads(text)["timezone"] == "UTC"


async def test_stdio_tool_error_is_a_tool_failure() -> None:
    with pytest.raises(McpToolFailed, match="Invalid timezone"):
        await call_tool(TIME_SERVER, STDIO_POLICY, "get_current_time", {"timezone": "Mars/Base"})


async def test_unknown_tool_is_a_failure_the_server_answered() -> None:
    with pytest.raises(McpToolFailed, match="refused the call: Unknown tool: no_such_tool"):
        await call_tool(TIME_SERVER, STDIO_POLICY, "no_such_tool", {})


async def test_allow_listed_absolute_path_is_launched_with_arguments_its_pattern_allows() -> None:
    path = str(Path(sys.executable).parent / "mcp-server-time")
    server = McpServer(command=[path, "--local-timezone", "Europe/Warsaw"], timeout_seconds=20)
    policy = McpPolicy(
        allowed_commands=McpCommandAllowlist.of([[path, "--local-timezone", "{zone}"]]),
        url_allowlist=UrlAllowlist.parse([]),
    )

    tools = await list_tools(server, policy)

    assert "get_current_time" in {tool.name for tool in tools}


async def test_command_not_on_the_allow_list_is_refused_without_starting_it(
    tmp_path: Path,
) -> None:
    server, record = fake_stdio_server(tmp_path, "exit", timeout=5)
    assert server.command is not None
    python_anything = stdio_policy([sys.executable, "{script}", "{record}", "{behaviour}"])
    nothing = McpPolicy(McpCommandAllowlist(), UrlAllowlist.parse([]))

    with pytest.raises(McpCommandRefused):
        await list_tools(server, STDIO_POLICY)
    with pytest.raises(McpCommandRefused):  # a hole never matches an absolute path
        await list_tools(server, python_anything)
    with pytest.raises(McpCommandRefused):
        await list_tools(server.model_copy(update={"command": [*server.command, "x"]}),
                         stdio_policy(server.command))  # fmt: skip
    with pytest.raises(McpCommandRefused):
        await call_tool(TIME_SERVER, nothing, "get_current_time", {"timezone": "UTC"})
    assert not record.exists()


async def test_stdio_server_runs_in_an_empty_directory_with_a_minimal_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OPENAI_API_KEY", "PARLEY_API_KEY", "DATABASE_URL", "PARLEY_TEST_SECRET"):
        monkeypatch.setenv(name, "do-not-leak")
    server = McpServer(command=STDIO_FAKE, timeout_seconds=20)

    report = json.loads(await call_tool(server, stdio_policy(STDIO_FAKE), "where", {}))

    cwd, env = report["cwd"], report["env"]
    assert report["entries"] == []
    assert not same_directory(cwd, os.getcwd())
    assert env["HOME"] == cwd
    assert env["PATH"] == os.environ["PATH"]
    assert "do-not-leak" not in env.values()
    assert set(env) <= {"PATH", "HOME", "LANG", "USER", "LOGNAME", "SHELL", "TERM"}
    assert not directory_exists(cwd)  # removed once the server stopped


async def test_silent_stdio_server_times_out_and_is_stopped(tmp_path: Path) -> None:
    server, record = fake_stdio_server(tmp_path, "hang", timeout=0.5)
    assert server.command is not None
    started = time.monotonic()

    with pytest.raises(McpError, match=r"did not answer within 0\.5 s"):
        await list_tools(server, stdio_policy(server.command))

    # The SDK's shutdown grace: 2 s for the server to leave after stdin closes, then SIGTERM.
    assert time.monotonic() - started < 5
    assert not is_running(json.loads(record.read_text())["pid"])


async def test_http_server_lists_its_tools() -> None:
    async with served(mcp_http_app()) as base:
        tools = await list_tools(McpServer(url=f"{base}/mcp"), LOOPBACK_POLICY)

    by_name = {tool.name: tool for tool in tools}
    assert {"add", "whoami"} <= by_name.keys()
    assert by_name["add"].description == "Add two integers."
    assert by_name["add"].input_schema["required"] == ["a", "b"]


async def test_http_tool_call_returns_the_text_result() -> None:
    async with served(mcp_http_app()) as base:
        text = await call_tool(
            McpServer(url=f"{base}/mcp"), LOOPBACK_POLICY, "add", {"a": 2, "b": 3}
        )

    assert text == "5"


async def test_http_headers_reach_the_server() -> None:
    async with served(mcp_http_app()) as base:
        server = McpServer(url=f"{base}/mcp", headers={TOKEN_HEADER: "token-123"})
        text = await call_tool(server, LOOPBACK_POLICY, "whoami", {})

    assert text == "token-123"


async def test_loopback_url_is_refused_unless_allow_listed() -> None:
    closed = McpPolicy(allowed_commands=McpCommandAllowlist(), url_allowlist=UrlAllowlist.parse([]))
    async with served(mcp_http_app()) as base:
        server = McpServer(url=f"{base}/mcp")

        with pytest.raises(UrlRefused, match="not a public address"):
            await list_tools(server, closed)
        assert await call_tool(server, LOOPBACK_POLICY, "add", {"a": 1, "b": 1}) == "2"


async def test_unreachable_http_server_is_an_mcp_error_within_the_timeout() -> None:
    server = McpServer(
        url=f"http://127.0.0.1:{closed_loopback_port()}/mcp",
        headers={"Authorization": "Bearer secret-value"},
        timeout_seconds=3,
    )
    started = time.monotonic()

    with pytest.raises(McpError) as raised:
        await list_tools(server, LOOPBACK_POLICY)

    assert time.monotonic() - started < 3
    assert "secret-value" not in str(raised.value)
    assert "ConnectError" in str(raised.value)


async def test_a_call_to_an_unreachable_server_fails_before_it_is_sent() -> None:
    server = McpServer(url=f"http://127.0.0.1:{closed_loopback_port()}/mcp", timeout_seconds=3)

    with pytest.raises(McpError) as raised:
        await call_tool(server, LOOPBACK_POLICY, "record", {"marker": "m"}, idempotency_key="k")

    assert not isinstance(raised.value, McpOutcomeUnknown)  # retryable: nothing was sent


async def test_a_call_that_times_out_after_it_was_sent_has_an_unknown_outcome() -> None:
    counting = CountingMcpServer()
    async with served(counting.app()) as base:
        server = McpServer(url=f"{base}/mcp", timeout_seconds=1)

        with pytest.raises(McpOutcomeUnknown, match=r"sent, then: .*did not answer within 1 s"):
            await call_tool(server, LOOPBACK_POLICY, "hang", {"marker": "t"}, idempotency_key="k")
        counting.release.set()

    assert counting.calls["t"] == 1


async def test_the_idempotency_key_reaches_the_server_in_meta() -> None:
    counting = CountingMcpServer()
    async with served(counting.app()) as base:
        server = McpServer(url=f"{base}/mcp")

        text = await call_tool(
            server, LOOPBACK_POLICY, "record", {"marker": "m"}, idempotency_key="chat-1:key-1"
        )

    assert text == "recorded m"
    assert [meta[IDEMPOTENCY_KEY_META] for meta in counting.metas["m"]] == ["chat-1:key-1"]


async def test_a_call_whose_send_was_claimed_before_is_not_sent() -> None:
    counting = CountingMcpServer()

    async def already_claimed() -> bool:
        return False

    async with served(counting.app()) as base:
        server = McpServer(url=f"{base}/mcp")

        with pytest.raises(McpOutcomeUnknown, match="an earlier attempt of this call sent it"):
            await call_tool(server, LOOPBACK_POLICY, "record", {"marker": "c"},
                            idempotency_key="k", claim_send=already_claimed)  # fmt: skip

    assert counting.calls["c"] == 0


async def test_slow_http_tool_times_out_with_an_unknown_outcome() -> None:
    async with served(mcp_http_app()) as base:
        # Long enough for the session to open on a loaded machine (the call must be sent for
        # its outcome to be unknown), far shorter than the tool's sleep.
        server = McpServer(url=f"{base}/mcp", timeout_seconds=3)

        with pytest.raises(McpOutcomeUnknown, match=r"did not answer within 3 s"):
            await call_tool(server, LOOPBACK_POLICY, "sleep", {"seconds": 30})


def test_result_text_joins_text_and_describes_other_content() -> None:
    mixed = CallToolResult(
        content=[
            TextContent(text="first"),
            ImageContent(data="", mime_type="image/png"),
            TextContent(text="second"),
        ]
    )
    structured_only = CallToolResult(content=[], structured_content={"a": 1, "b": [2, 3]})

    assert result_text(mixed) == "first\n[image/png]\nsecond"
    assert result_text(structured_only) == '{"a":1,"b":[2,3]}'
