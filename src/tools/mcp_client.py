"""List and call the tools of an MCP server, over streamable HTTP or an allow-listed stdio command.

An HTTP server gets a session per operation. A stdio server, given a `WarmStdio`, is kept
running between operations in the worker's pool, one per account, command line and
environment (src/tools/mcp_stdio_pool.py); without one, each operation starts and stops its
own. Every operation is bounded by the server's `timeout_seconds`. Errors come out in kinds,
so callers can choose what to retry:
`McpError` (unreachable, protocol error, timeout, all before a tool call was sent: retryable),
`McpCommandRefused` and `url_guard.UrlRefused` (the configuration is refused: not retryable;
`UrlRefused` is raised unwrapped, as for webhook tools), `McpToolFailed` (the server answered
the call with an error: the tool reported one, or refused the call), and `McpOutcomeUnknown`
(the call was sent and no answer came: the tool may or may not have run; retrying could run
it twice).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import anyio
import httpx2
from mcp import Client, MCPError, StdioServerParameters
from mcp.client import Transport
from mcp.client.streamable_http import streamable_http_client
from mcp.types import (
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    AudioContent,
    CallToolResult,
    ContentBlock,
    EmbeddedResource,
    ImageContent,
    Implementation,
    RequestParamsMeta,
    ResourceLink,
    TextContent,
    TextResourceContents,
)
from pydantic import BaseModel, ValidationError

from src.domain import McpServer
from src.tools.mcp_commands import McpCommandAllowlist
from src.tools.mcp_stdio_pool import StdioServerPool
from src.tools.pinned_http import pinned_client2, pinned_to
from src.tools.url_guard import Resolver, UrlAllowlist, resolve_checked, system_resolver

log = logging.getLogger(__name__)

_T = TypeVar("_T")

CLIENT_INFO = Implementation(name="parley", version="0.1.0")
# Variables a stdio server gets from the worker besides the SDK's own defaults (PATH and the
# identity ones: USER, LOGNAME, SHELL, TERM); HOME is replaced by the server's own empty
# directory. Never the worker's full environment, which holds API keys and database URLs.
EXTRA_CHILD_ENV_VARS = ("LANG",)
# The `_meta` key of a tools/call request that carries the call's idempotency key, the same on
# every attempt, so a server can recognise a call it has seen (reverse-DNS prefix, as the MCP
# spec asks of custom `_meta` keys).
IDEMPOTENCY_KEY_META = "io.parley/idempotency_key"
# JSON-RPC errors by which a server refuses a call without running it (unknown tool, invalid
# arguments). Any other error after the call was sent may come from a tool that ran partway.
_REFUSAL_CODES = frozenset({INVALID_PARAMS, METHOD_NOT_FOUND})
MAX_TOOL_PAGES = 50
MAX_MESSAGE_CHARS = 300


class ListedTool(BaseModel):
    """A tool as an MCP server lists it (the agent keeps it as a domain McpToolDefinition)."""

    name: str
    description: str
    input_schema: dict[str, Any]


class McpError(Exception):
    """The server is unreachable, broke the protocol, or did not answer in time: retryable."""


class McpCommandRefused(McpError):
    """The stdio command is not on the allow-list: the caller's configuration, not retryable."""


class McpToolFailed(Exception):
    """The server answered the call with an error: the tool reported one (an `isError`
    result), or the server refused the call (unknown tool, invalid arguments). The message is
    the server's text: conversation content, for the model's eyes."""


class McpOutcomeUnknown(Exception):
    """The tools/call request was sent (or an earlier attempt of the same call sent it) and no
    answer came: a timeout, a lost connection, a server that died. The tool may or may not
    have run; calling again could repeat its side effect, so this is not retryable."""


@dataclass(frozen=True)
class McpPolicy:
    """What MCP servers tools may use, set by the operator.

    A stdio command must match one of `allowed_commands`' argv patterns as a whole. Empty: no
    stdio servers. HTTP URLs must pass `url_allowlist`'s checks; the host is resolved with
    `resolver`, once, and connections go to the addresses checked. An HTTP response body
    longer than `response_max_bytes` fails the operation.
    """

    allowed_commands: McpCommandAllowlist
    url_allowlist: UrlAllowlist
    resolver: Resolver = system_resolver
    response_max_bytes: int = 4 * 1024 * 1024


@dataclass(frozen=True)
class WarmStdio:
    """Where stdio servers come from: the worker's pool of running ones, those of `account_id`."""

    pool: StdioServerPool
    account_id: str


async def list_tools(
    server: McpServer, policy: McpPolicy, warm: WarmStdio | None = None
) -> list[ListedTool]:
    """The server's tools, all pages.

    Raises McpError, McpCommandRefused or url_guard.UrlRefused.
    """

    async def operation(client: Client) -> list[ListedTool]:
        tools: list[ListedTool] = []
        cursor: str | None = None
        for _ in range(MAX_TOOL_PAGES):
            page = await client.list_tools(cursor=cursor)
            tools.extend(
                ListedTool(
                    name=tool.name,
                    description=tool.description or "",
                    input_schema=tool.input_schema,
                )
                for tool in page.tools
            )
            cursor = page.next_cursor
            if cursor is None:
                break
        return tools

    return await _with_session(server, policy, operation, warm)


async def call_tool(
    server: McpServer,
    policy: McpPolicy,
    name: str,
    arguments: dict[str, Any],
    *,
    idempotency_key: str | None = None,
    claim_send: Callable[[], Awaitable[bool]] | None = None,
    warm: WarmStdio | None = None,
) -> str:
    """The tool's result as text: text items joined by newlines; structured content as compact
    JSON when there is no text; other items described briefly, like "[image/png]".

    `idempotency_key` travels in the request's `_meta` (IDEMPOTENCY_KEY_META). `claim_send`,
    awaited once the session is up and just before the request goes out, records that it is
    about to go; when it returns False (an earlier attempt sent it) nothing is sent.

    Raises McpToolFailed, McpOutcomeUnknown, McpError (nothing was sent), McpCommandRefused or
    url_guard.UrlRefused.
    """
    sent = False
    meta = (
        cast(RequestParamsMeta, {IDEMPOTENCY_KEY_META: idempotency_key})
        if idempotency_key is not None
        else None
    )

    async def operation(client: Client) -> CallToolResult | MCPError | None:
        nonlocal sent
        if claim_send is not None and not await claim_send():
            return None
        sent = True
        try:
            return await client.call_tool(name, arguments, meta=meta)
        except MCPError as error:
            if error.code in _REFUSAL_CODES:
                return error
            raise

    try:
        outcome = await _with_session(server, policy, operation, warm)
    except McpError as error:
        if not sent:
            raise
        raise McpOutcomeUnknown(f"the call was sent, then: {error}") from None
    if outcome is None:
        raise McpOutcomeUnknown("an earlier attempt of this call sent it")
    if isinstance(outcome, MCPError):
        raise McpToolFailed(f"the server refused the call: {outcome.message}")
    text = result_text(outcome)
    if outcome.is_error:
        raise McpToolFailed(text or f"the MCP tool {name!r} reported an error")
    return text


def result_text(result: CallToolResult) -> str:
    parts = [_block_text(block) for block in result.content]
    has_text = any(_is_text(block) for block in result.content)
    if not has_text and result.structured_content is not None:
        structured = json.dumps(
            result.structured_content, separators=(",", ":"), ensure_ascii=False
        )
        parts.insert(0, structured)
    return "\n".join(parts)


def _is_text(block: ContentBlock) -> bool:
    return isinstance(block, TextContent) or (
        isinstance(block, EmbeddedResource) and isinstance(block.resource, TextResourceContents)
    )


def _block_text(block: ContentBlock) -> str:
    if isinstance(block, TextContent):
        return block.text
    if isinstance(block, ImageContent | AudioContent):
        return f"[{block.mime_type}]"
    if isinstance(block, ResourceLink):
        return f"[resource link {block.uri}]"
    if isinstance(block.resource, TextResourceContents):
        return block.resource.text
    return f"[{block.resource.mime_type or 'resource'} {block.resource.uri}]"


async def _with_session(
    server: McpServer,
    policy: McpPolicy,
    operation: Callable[[Client], Awaitable[_T]],
    warm: WarmStdio | None,
) -> _T:
    """Run one operation on a session, the whole of it within the server's timeout: a warm
    stdio server's, or one opened for it and closed after.

    A stdio server of its own is stopped on the way out even on timeout: the SDK's shutdown
    (close stdin, then SIGTERM, then SIGKILL to the process group) is shielded and bounded to
    a few seconds. A warm one that fails or times out leaves the pool and stops likewise.
    """
    where = _describe_server(server)
    try:
        with anyio.fail_after(server.timeout_seconds):
            if server.command is not None and warm is not None:
                parameters = _stdio_parameters(server.command, policy)
                session = warm.pool.session(warm.account_id, parameters, server.timeout_seconds)
                return await _run_reporting_errors(server, session, operation)
            async with _transport(server, policy) as transport:
                own = Client(transport, cache=None, client_info=CLIENT_INFO)
                return await _run_reporting_errors(server, own, operation)
    except TimeoutError:
        raise McpError(
            f"MCP server {where} did not answer within {server.timeout_seconds:g} s"
        ) from None


async def _run_reporting_errors(
    server: McpServer,
    session: AbstractAsyncContextManager[Client],
    operation: Callable[[Client], Awaitable[_T]],
) -> _T:
    try:
        async with session as client:
            return await operation(client)
    except Exception as error:
        where = _describe_server(server)
        log.debug("MCP server %s failed", where, exc_info=True)
        raise McpError(_redacted(f"MCP server {where}: {_describe(error)}", server)) from None


@asynccontextmanager
async def _transport(
    server: McpServer, policy: McpPolicy
) -> AsyncIterator[StdioServerParameters | Transport]:
    """What `mcp.Client` connects to, after the policy's checks; raises before any connection.

    A stdio server runs in a fresh empty directory, which is also its HOME, removed after."""
    if server.command is not None:
        parameters = _stdio_parameters(server.command, policy)
        with tempfile.TemporaryDirectory(
            prefix="parley-mcp-", ignore_cleanup_errors=True
        ) as workdir:
            env = {**(parameters.env or {}), "HOME": workdir}
            yield parameters.model_copy(update={"cwd": workdir, "env": env})
        return
    assert server.url is not None  # McpServer has exactly one of url and command
    target = await resolve_checked(server.url, policy.url_allowlist, policy.resolver)
    # The SDK follows redirects itself, and only within the URL's origin; the pin keeps even
    # those on the checked addresses. The SDK's tasks start inside this block and inherit it.
    with pinned_to(target):
        async with pinned_client2(
            policy.response_max_bytes,
            headers=server.headers,
            timeout=httpx2.Timeout(server.timeout_seconds),
        ) as http:
            yield streamable_http_client(server.url, http_client=http)


def _stdio_parameters(command: list[str], policy: McpPolicy) -> StdioServerParameters:
    program, *args = command
    if not policy.allowed_commands.allows(command):
        # The arguments are left out: they may carry tokens, and this message reaches history.
        raise McpCommandRefused(
            f"the command line of {program!r} with {len(args)} argument(s) is not on the MCP "
            "command allow-list (PARLEY_MCP_COMMANDS)"
        )
    executable = _resolve_executable(program)
    if executable is None:
        raise McpError(f"the MCP server command {program!r} was not found")
    env = {name: os.environ[name] for name in EXTRA_CHILD_ENV_VARS if name in os.environ}
    return StdioServerParameters(command=executable, args=args, env=env)


def _resolve_executable(program: str) -> str | None:
    """A bare name is looked up in this Python's bin directory first, so console scripts
    installed in the worker's virtualenv are found without activating it; paths are kept."""
    if os.sep in program or (os.altsep and os.altsep in program):
        return program
    search_path = os.pathsep.join(
        [str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)]
    )
    return shutil.which(program, path=search_path)


def _describe_server(server: McpServer) -> str:
    if server.command is not None:
        return repr(server.command[0])
    # Without userinfo, query and fragment: they may carry tokens.
    parts = urlsplit(server.url or "")
    return repr(f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}")


def _describe(error: BaseException) -> str:
    """A one-line reason, without stack traces; exception groups are reduced to their first
    leaf, since the SDK's task groups wrap transport errors in them."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    if isinstance(error, MCPError):
        reason = f"error {error.code}: {error.message}"
    elif isinstance(error, httpx2.TransportError):
        reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    elif isinstance(error, httpx2.HTTPError):
        reason = type(error).__name__
    elif isinstance(error, OSError):
        reason = f"cannot start or talk to the server: {error.strerror or type(error).__name__}"
    elif isinstance(error, ValidationError):
        reason = "the server sent a malformed message"
    elif isinstance(error, RuntimeError) and str(error):
        reason = str(error)
    else:
        reason = type(error).__name__
    return reason


def _redacted(message: str, server: McpServer) -> str:
    """Defence in depth: header values are secrets and must never reach an error message."""
    for value in server.headers.values():
        if len(value) >= 4:
            message = message.replace(value, "********")
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    return message
