"""A stdio MCP server for tests, built with the SDK's `MCPServer`: its tool `where` reports
the server's working directory, what is in it, and its environment, so a test can see what a
stdio server is given; `pid` reports its process id, so a test can see which process
answered; `wait` leaves a file named `waiting` in its directory, then sleeps, so a test knows
a call is under way. Run as a script: `python tests/fakes/mcp_stdio_server.py`."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer

server: MCPServer[Any] = MCPServer("parley-test-stdio")


@server.tool(description="The server's working directory, its entries and its environment.")
def where() -> str:
    cwd = os.getcwd()
    return json.dumps({"cwd": cwd, "entries": os.listdir(cwd), "env": dict(os.environ)})


@server.tool(description="The server's process id.")
def pid() -> int:
    return os.getpid()


@server.tool(description="Leave a file named `waiting` in the working directory, then sleep.")
async def wait(seconds: float) -> str:
    await asyncio.to_thread(Path("waiting").write_text, "")
    await asyncio.sleep(seconds)
    return "waited"


if __name__ == "__main__":
    server.run()
