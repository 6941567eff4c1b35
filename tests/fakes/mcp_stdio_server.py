"""A stdio MCP server for tests, built with the SDK's `MCPServer`: its tool `where` reports
the server's working directory, what is in it, and its environment, so a test can see what a
stdio server is given; `pid` reports its process id, so a test can see which process
answered. Run as a script: `python tests/fakes/mcp_stdio_server.py`."""

from __future__ import annotations

import json
import os
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


if __name__ == "__main__":
    server.run()
