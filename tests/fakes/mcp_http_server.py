"""A streamable-HTTP MCP server for tests, built with the SDK's `MCPServer` (FastMCP in mcp 1.x).

Tools:
  add(a, b)   the sum, as text and structured content
  whoami()    the `X-Test-Token` request header the server received ("" if none), so a
              test can prove the client sends its configured headers on the tool call
  sleep(s)    answers "awake" after s seconds, to run a client into its timeout
"""

from __future__ import annotations

from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette

TOKEN_HEADER = "X-Test-Token"


def mcp_http_app(host_names: list[str] | None = None) -> Starlette:
    """A fresh app per use: the SDK's session manager can only be run once. The SDK refuses
    requests whose Host is not loopback; `host_names` ("name:*") are accepted too."""
    server: MCPServer[Any] = MCPServer("parley-test-mcp")

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    @server.tool(description=f"The {TOKEN_HEADER} header of this request.")
    def whoami(ctx: Context) -> str:
        headers = ctx.headers or {}
        return headers.get(TOKEN_HEADER.lower(), "")

    @server.tool(description="Answer after a delay.")
    async def sleep(seconds: float) -> str:
        await anyio.sleep(seconds)
        return "awake"

    if host_names is None:
        return server.streamable_http_app()
    security = TransportSecuritySettings(allowed_hosts=["127.0.0.1:*", *host_names])
    return server.streamable_http_app(transport_security=security)
