"""MCP tools: discovered from the agent's MCP servers when a session opens (and frozen into
its snapshot), then called through the official `mcp` SDK.

Stdio servers are kept warm by the worker's pool (src/tools/mcp_stdio_pool.py), one per
account, command line and environment. A call is sent at most once: failures before the
request goes out (spawn, connect, session set-up) are retried; once it may have reached the
server (recorded in the database before sending), a timeout, a lost connection or a killed
worker ends the call with a result telling the model its outcome is unknown, never with a
second request."""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from src.activities.heartbeats import heartbeating
from src.activities.webhook_tools import (
    ToolInvocation,
    ToolRejected,
    ToolResult,
    parse_arguments,
    refuse,
    rejections_as_results,
    truncate,
)
from src.config import Settings
from src.db.mcp_calls import SentMcpCalls
from src.db.snapshots import SnapshotStore
from src.domain import McpToolDefinition, McpTools, SessionAgent
from src.observability import measured_tool_call
from src.temporal.failures import FailureType
from src.tools.json_schemas import schema_problem
from src.tools.mcp_client import (
    McpCommandRefused,
    McpError,
    McpOutcomeUnknown,
    McpPolicy,
    McpToolFailed,
    WarmStdio,
    call_tool,
    list_tools,
)
from src.tools.mcp_stdio_pool import StdioServerPool
from src.tools.url_guard import Resolver, UrlRefused, system_resolver

OUTCOME_UNKNOWN = "the tool call may or may not have run"


class DiscoveryRequest(BaseModel):
    account_id: str
    snapshot_id: str


class McpToolActivities:
    def __init__(
        self,
        settings: Settings,
        snapshots: SnapshotStore,
        sent: SentMcpCalls,
        resolver: Resolver = system_resolver,
        stdio_servers: StdioServerPool | None = None,
    ) -> None:
        """Without `stdio_servers`, every stdio call starts and stops its own server."""
        self._stdio_servers = stdio_servers
        self._snapshots = snapshots
        self._settings = settings
        self._sent = sent
        self._policy = McpPolicy(
            allowed_commands=settings.mcp_commands,
            url_allowlist=settings.tool_url_allowlist,
            resolver=resolver,
            response_max_bytes=settings.mcp_response_max_bytes,
        )

    @activity.defn(name="mcp_tools.discover")
    async def discover(self, request: DiscoveryRequest) -> SessionAgent:
        """List each MCP server's tools and freeze them into a new snapshot."""
        snapshot = await self._snapshots.load(request.snapshot_id)
        taken = set(snapshot.tool_kinds())
        found: list[McpToolDefinition] = []
        async with heartbeating():
            for index, entry in enumerate(snapshot.spec.tools):
                if not isinstance(entry, McpTools):
                    continue
                try:
                    offered = await list_tools(
                        entry.server, self._policy, self._warm(request.account_id)
                    )
                except (McpCommandRefused, UrlRefused) as error:
                    raise ApplicationError(
                        f"MCP server tools[{index}] refused: {error}",
                        type=FailureType.TOOL_DISCOVERY_FAILED,
                        non_retryable=True,
                    ) from None
                except McpError as error:
                    raise ApplicationError(f"MCP server tools[{index}]: {error}") from None
                for tool in offered:
                    if entry.allowed_tools is not None and tool.name not in entry.allowed_tools:
                        continue
                    problem = schema_problem(
                        tool.input_schema, self._settings.max_tool_schema_bytes
                    )
                    if problem is not None:
                        # Dropped, like the SDK drops tools it cannot use: the others still work.
                        activity.logger.warning(
                            "MCP server tools[%d]: tool %r dropped: %s", index, tool.name, problem
                        )
                        continue
                    if tool.name in taken:
                        raise ApplicationError(
                            f"MCP server tools[{index}] offers {tool.name!r}, a name another "
                            "tool of this agent already has",
                            type=FailureType.TOOL_DISCOVERY_FAILED,
                            non_retryable=True,
                        )
                    taken.add(tool.name)
                    found.append(
                        McpToolDefinition(
                            name=tool.name,
                            description=tool.description,
                            input_schema=tool.input_schema,
                            server_index=index,
                        )
                    )
        resolved = snapshot.model_copy(update={"mcp_tools": found, "mcp_discovered": True})
        await self._snapshots.save(request.account_id, resolved)
        return resolved.summary()

    @activity.defn(name="mcp_tools.call")
    async def call(self, invocation: ToolInvocation) -> ToolResult:
        return await measured_tool_call(
            invocation.name, "mcp", rejections_as_results(self._call(invocation))
        )

    async def _call(self, invocation: ToolInvocation) -> ToolResult:
        snapshot = await self._snapshots.load(invocation.snapshot_id)
        tool = next((t for t in snapshot.mcp_tools if t.name == invocation.name), None)
        if tool is None:
            raise refuse(f"no MCP tool named {invocation.name!r}")
        server = snapshot.spec.tools[tool.server_index]
        assert isinstance(server, McpTools)
        arguments = parse_arguments(invocation.arguments, tool.input_schema or {"type": "object"})
        key = invocation.idempotency_key
        # A call scheduled before invocations carried the account is scoped to its session:
        # never a server another account's calls could reach.
        account = invocation.account_id or f"session:{invocation.session_id}"
        if await self._sent.was_sent(key):
            return outcome_unknown("an earlier attempt sent the call and did not finish")

        async def claim_send() -> bool:
            return await self._sent.claim(key, invocation.session_id)

        async with heartbeating():
            try:
                text = await call_tool(
                    server.server, self._policy, tool.name, arguments,
                    idempotency_key=key, claim_send=claim_send, warm=self._warm(account),
                )  # fmt: skip
            except McpToolFailed as error:
                raise ToolRejected("the MCP server answered with an error", str(error)) from None
            except McpOutcomeUnknown as error:
                return outcome_unknown(str(error))
            except (McpCommandRefused, UrlRefused) as error:
                raise refuse(f"the MCP server was refused: {error}") from None
            except McpError as error:  # nothing was sent: retried
                raise ApplicationError(f"MCP server error: {error}") from None
        return ToolResult(response=truncate(text, self._settings.tool_response_max_chars))

    def _warm(self, account_id: str) -> WarmStdio | None:
        if self._stdio_servers is None:
            return None
        return WarmStdio(self._stdio_servers, account_id)


def outcome_unknown(detail: str) -> ToolResult:
    """What the model hears when the call may have run: the truth, and that it was not
    repeated, so it can tell the user or check before asking again."""
    return ToolResult(
        response=f"error: {OUTCOME_UNKNOWN} ({detail}); its outcome is unknown, and it was "
        "not repeated, so that it does not run twice",
        error=OUTCOME_UNKNOWN,
    )
