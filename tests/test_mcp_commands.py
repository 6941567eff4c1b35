"""The MCP stdio allow-list (PARLEY_MCP_COMMANDS) allows whole command lines: argv patterns
with named holes, checked when an agent is saved (422 naming the command line) and again when
the server is spawned (tests/test_mcp_client.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from src.config import Settings
from src.tools.mcp_commands import McpCommandAllowlist
from tests.conftest import api_client

PYTHON_SCRIPTS = '[["python", "/srv/mcp/{name}.py"], ["mcp-server-time"]]'


def mcp_agent(command: list[str]) -> dict[str, Any]:
    return {
        "name": "stdio agent",
        "system_prompt": "Help.",
        "tools": [{"type": "mcp", "server": {"command": command}}],
    }


@pytest.mark.parametrize(
    "command",
    [
        ["python", "-c", "import os; os.system('id')"],
        ["python", "/srv/mcp/time.py", "-c", "import os"],
        ["python", "/srv/mcp/-c.py"],
        ["python", "/srv/mcp/../../tmp/evil.py"],
        ["python"],
        ["mcp-server-time", "--local-timezone", "UTC"],
    ],
)
async def test_an_agent_whose_command_line_fits_no_pattern_is_refused_naming_it(
    make_settings: Any, serve_api: Any, api_key: str, command: list[str]
) -> None:
    settings = make_settings(PARLEY_MCP_COMMANDS=PYTHON_SCRIPTS)
    async with serve_api(settings) as url, api_client(url, api_key) as http:
        response = await http.post("/agents", json=mcp_agent(command))

    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert "tools[0].server.command" in message
    assert "is not on the server's MCP command allow-list" in message
    assert json.dumps(command) in message  # the refused command line, as the setting spells it


@pytest.mark.parametrize(
    "command", [["python", "/srv/mcp/time.py"], ["python", "/srv/mcp/weather/v2.py"]]
)
async def test_an_agent_whose_command_line_fits_a_pattern_is_saved(
    make_settings: Any, serve_api: Any, api_key: str, command: list[str]
) -> None:
    settings = make_settings(PARLEY_MCP_COMMANDS=PYTHON_SCRIPTS)
    async with serve_api(settings) as url, api_client(url, api_key) as http:
        response = await http.post("/agents", json=mcp_agent(command))

    assert response.status_code == 201, response.text


def test_a_hole_matches_one_argument_never_an_option_an_absolute_path_or_a_way_up() -> None:
    allowlist = McpCommandAllowlist.parse(
        '[["npx", "-y", "@modelcontextprotocol/server-{pkg}"], ["tool", "--tz", "{zone}"]]'
    )

    assert allowlist.allows(["npx", "-y", "@modelcontextprotocol/server-filesystem"])
    assert allowlist.allows(["tool", "--tz", "Europe/Warsaw"])
    assert not allowlist.allows(["npx", "-y", "@modelcontextprotocol/server-"])
    assert not allowlist.allows(["npx", "-y", "@modelcontextprotocol/server-a", "--x"])
    assert not allowlist.allows(["npx", "-y", "evil-package"])
    assert not allowlist.allows(["npx", "-y", "@modelcontextprotocol/server-a b"])
    assert not allowlist.allows(["tool", "--tz", "-c"])
    assert not allowlist.allows(["tool", "--tz", "/etc/passwd"])
    assert not allowlist.allows(["tool", "--tz", "a/../../b"])
    assert not allowlist.allows(["/usr/bin/npx", "-y", "@modelcontextprotocol/server-a"])


def test_literal_braces_are_doubled() -> None:
    allowlist = McpCommandAllowlist.parse('[["tool", "--config={{\\"a\\":{n}}}"]]')

    assert allowlist.allows(["tool", '--config={"a":1}'])
    assert not allowlist.allows(["tool", "--config=1"])


def test_a_comma_list_of_bare_commands_allows_each_with_no_arguments() -> None:
    allowlist = McpCommandAllowlist.parse("mcp-server-time, /opt/bin/other")

    assert allowlist.allows(["mcp-server-time"])
    assert allowlist.allows(["/opt/bin/other"])
    assert not allowlist.allows(["mcp-server-time", "--local-timezone", "UTC"])
    assert McpCommandAllowlist.parse(allowlist.setting()) == allowlist
    assert json.loads(allowlist.setting()) == [["mcp-server-time"], ["/opt/bin/other"]]


def test_an_empty_setting_allows_no_command() -> None:
    assert not McpCommandAllowlist.parse("").allows(["mcp-server-time"])


@pytest.mark.parametrize(
    "setting",
    [
        '[["python", "{script"]]',
        '[["{program}", "x"]]',
        "[[]]",
        '["mcp-server-time"]',
        "[not json",
    ],
)
def test_a_malformed_setting_stops_the_server_at_startup(setting: str) -> None:
    with pytest.raises(ValidationError, match=r"PARLEY_MCP_COMMANDS|MCP command pattern"):
        Settings(_env_file=None, PARLEY_MCP_COMMANDS=setting)
