"""A streamable-HTTP MCP server whose tools advertise input schemas a client must not trust.

Tools:
  order(item)       a nested model: the schema refers to `#/$defs/Item` (as pydantic writes
                    it); answers "ordered <sku>"; `sku` must match ^A-[0-9]+$
  backtrack(q)      `q` has the pattern ^(a+)+$, which backtracking engines take forever on
  remote_ref(q)     `q`'s schema is a `$ref` to `remote_url`
  file_ref(q)       `q`'s schema is a `$ref` to `file_url` (file://...)
  lookaround(q)     `q` has a pattern with a lookahead, which RE2 cannot compile
  huge(q)           `q`'s schema carries a description of 70,000 characters
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.types import Tool
from pydantic import BaseModel, Field
from starlette.applications import Starlette


class Item(BaseModel):
    sku: str = Field(pattern=r"^A-[0-9]+$")


def _one_string(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"q": schema}, "required": ["q"]}


class _AdvertisedSchemas(MCPServer[Any]):
    """Lists some tools with the input schemas given here instead of their own."""

    def __init__(self, schemas: dict[str, dict[str, Any]]) -> None:
        super().__init__("parley-test-mcp-schemas")
        self._schemas = schemas

    async def list_tools(self) -> list[Tool]:
        return [
            tool.model_copy(
                update={"input_schema": self._schemas.get(tool.name, tool.input_schema)}
            )
            for tool in await super().list_tools()
        ]


def mcp_schema_app(remote_url: str, file_url: str) -> Starlette:
    """A fresh app per use: the SDK's session manager can only be run once."""
    server = _AdvertisedSchemas(
        {
            "backtrack": _one_string({"type": "string", "pattern": "^(a+)+$"}),
            "remote_ref": _one_string({"$ref": remote_url}),
            "file_ref": _one_string({"$ref": file_url}),
            "lookaround": _one_string({"type": "string", "pattern": "(?=a)a"}),
            "huge": _one_string({"type": "string", "description": "x" * 70_000}),
        }
    )

    @server.tool(description="Order an item.")
    def order(item: Item) -> str:
        return f"ordered {item.sku}"

    for name in ("backtrack", "remote_ref", "file_ref", "lookaround", "huge"):
        server.add_tool(_echo, name=name, description=f"Echo q ({name}).")

    return server.streamable_http_app()


def _echo(q: str) -> str:
    return q
