"""A streamable-HTTP MCP server for tests, built with the SDK's `MCPServer` (FastMCP in mcp 1.x).

Tools:
  add(a, b)   the sum, as text and structured content
  whoami()    the `X-Test-Token` request header the server received ("" if none), so a
              test can prove the client sends its configured headers on the tool call
  sleep(s)    answers "awake" after s seconds, to run a client into its timeout

`CountingMcpServer` counts the calls it receives and can be told to hang.
"""

from __future__ import annotations

from collections import Counter
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


class CountingMcpServer:
    """An MCP server that counts the tool calls it receives, per marker, and keeps each call's
    `_meta`, so a test can tell how often a call reached it and with which idempotency key.

    Tools:
      record(marker)  answers "recorded <marker>"
      hang(marker)    never answers, until `release` is set (or a minute passes)

    `app()` builds a fresh app over the same counts: a test can stop the server and serve it
    again on the same port.
    """

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.metas: dict[str, list[dict[str, Any]]] = {}
        self.release = anyio.Event()
        self._arrived: dict[str, anyio.Event] = {}

    def _received(self, marker: str, ctx: Context) -> None:
        self.calls[marker] += 1
        self._arrived.setdefault(marker, anyio.Event()).set()
        self.metas.setdefault(marker, []).append(dict(ctx.request_context.meta or {}))

    def app(self) -> Starlette:
        server: MCPServer[Any] = MCPServer("parley-test-counting-mcp")

        @server.tool(description="Record a call.")
        def record(marker: str, ctx: Context) -> str:
            self._received(marker, ctx)
            return f"recorded {marker}"

        @server.tool(description="Receive a call and never answer it.")
        async def hang(marker: str, ctx: Context) -> str:
            self._received(marker, ctx)
            with anyio.move_on_after(60):
                await self.release.wait()
            return "released"

        return server.streamable_http_app()

    async def wait_for_call(self, marker: str) -> None:
        with anyio.fail_after(60):
            await self._arrived.setdefault(marker, anyio.Event()).wait()
