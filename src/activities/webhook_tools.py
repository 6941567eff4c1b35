"""Webhook tools: the agent's HTTP endpoints, called with httpx, signed, idempotent."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable
from typing import Any

import httpx
from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from src.activities.heartbeats import heartbeating
from src.config import Settings
from src.db.snapshots import SnapshotStore
from src.observability import measured_tool_call
from src.temporal.failures import FailureType
from src.tools.json_schemas import SchemaRefused, validation_errors
from src.tools.pinned_http import pinned_client, pinned_to, read_capped
from src.tools.signing import signature_headers
from src.tools.url_guard import Resolver, UrlRefused, resolve_checked, system_resolver
from src.tools.vapi_tool_calls import tool_calls_body, tool_calls_result

_RETRYABLE_STATUSES = {408, 425, 429}


class ToolInvocation(BaseModel):
    snapshot_id: str
    session_id: str
    call_id: str
    # Chosen by the workflow, so every retry of this call carries the same key.
    idempotency_key: str
    name: str
    arguments: str
    # Whose call it is: stdio MCP servers are shared within an account, never across. None
    # in calls scheduled before it was added.
    account_id: str | None = None


class ToolResult(BaseModel):
    response: str
    # Set when the call failed in a way the model should hear in full: what failed, with no
    # content (for the audit log and metrics); `response` then carries the details.
    error: str | None = None


class ToolRejected(Exception):
    """A failure retrying cannot fix whose details (argument values, the tool's answer) are
    conversation content: they reach the model through the activity's result, which the
    payload codec encrypts, never through a failure message."""

    def __init__(self, reason: str, details: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details

    def result(self) -> ToolResult:
        return ToolResult(response=f"error: {self.reason}: {self.details}", error=self.reason)


async def rejections_as_results(call: Awaitable[ToolResult]) -> ToolResult:
    try:
        return await call
    except ToolRejected as rejected:
        return rejected.result()


def refuse(message: str) -> ApplicationError:
    """A failure retrying cannot fix; the model sees the message as the tool's result. The
    message is a failure's, in Temporal history: it must hold no conversation content."""
    return ApplicationError(message, type=FailureType.TOOL_REFUSED, non_retryable=True)


def parse_arguments(arguments: str, schema: dict[str, Any]) -> dict[str, Any]:
    try:
        parsed = json.loads(arguments or "{}")
    except json.JSONDecodeError as error:
        raise refuse(f"the arguments are not valid JSON: {error.msg}") from None
    if not isinstance(parsed, dict):
        raise refuse("the arguments must be a JSON object")
    try:
        problems = validation_errors(schema, parsed)
    except SchemaRefused as unusable:
        raise refuse(f"the tool's schema cannot be used: {unusable}") from None
    if problems:
        where = "/".join(str(p) for p in problems[0].path) or "(root)"
        # jsonschema's message quotes the offending value: for the model's eyes only.
        raise ToolRejected(
            f"the arguments do not match the tool's schema at {where}", problems[0].message
        )
    return parsed


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"... [truncated: {len(text) - limit} more characters]"


def response_byte_cap(max_chars: int) -> int:
    """Bytes to read for `max_chars` characters of any UTF-8 text, and one more, so a cut
    shows."""
    return 4 * max_chars + 4


def capped_text(body: bytes, more: bool, limit: int) -> str:
    """The first `limit` characters of a body read up to `response_byte_cap(limit)` bytes."""
    text = body.decode("utf-8", errors="replace")
    if not more:
        return truncate(text, limit)
    if len(text) > limit:
        text = text[:limit]
    return text + f"... [truncated: the response was longer than {limit} characters]"


class WebhookToolActivities:
    def __init__(
        self, settings: Settings, snapshots: SnapshotStore, resolver: Resolver = system_resolver
    ) -> None:
        self._settings = settings
        self._snapshots = snapshots
        self._resolver = resolver
        # Connects only to the addresses `resolve_checked` vetted; never follows a redirect.
        self._http = pinned_client()

    @activity.defn(name="webhook_tools.call")
    async def call(self, invocation: ToolInvocation) -> ToolResult:
        return await measured_tool_call(
            invocation.name, "webhook", rejections_as_results(self._call(invocation))
        )

    async def _call(self, invocation: ToolInvocation) -> ToolResult:
        snapshot = await self._snapshots.load(invocation.snapshot_id)
        tool = snapshot.webhook_tool(invocation.name)
        if tool is None:
            raise refuse(f"no webhook tool named {invocation.name!r}")
        arguments = parse_arguments(invocation.arguments, tool.parameters)
        try:
            target = await resolve_checked(
                tool.url, self._settings.tool_url_allowlist, self._resolver
            )
        except UrlRefused as error:
            raise refuse(f"the tool URL was refused: {error}") from None

        sends_body = tool.method not in ("GET", "DELETE") or tool.payload == "vapi"
        if tool.payload == "vapi":
            body = tool_calls_body(tool, invocation.call_id, invocation.session_id, arguments)
        else:
            body = json.dumps(arguments, separators=(",", ":")).encode() if sends_body else b""
        headers = {
            **tool.headers,
            "Idempotency-Key": invocation.idempotency_key,
            "X-Parley-Session-Id": invocation.session_id,
            "X-Parley-Tool-Call-Id": invocation.call_id,
            "X-Parley-Tool-Name": tool.name,
        }
        if sends_body:
            headers["Content-Type"] = "application/json"
        if snapshot.spec.webhook is not None:
            headers.update(
                signature_headers([snapshot.spec.webhook.secret], body, int(time.time()))
            )
        params = None if sends_body else {k: _query_value(v) for k, v in arguments.items()}
        limit = self._settings.tool_response_max_chars
        async with heartbeating():
            try:
                request = self._http.build_request(
                    tool.method, tool.url, content=body or None, params=params,
                    headers=headers, timeout=tool.timeout_seconds,
                )  # fmt: skip
                # The timeout bounds the whole exchange, so a trickling answer is cut off too.
                with pinned_to(target):
                    async with asyncio.timeout(tool.timeout_seconds):
                        # Streamed and cut at the limit: a huge answer is never read whole.
                        response = await self._http.send(request, stream=True)
                        try:
                            raw, more = await read_capped(response, response_byte_cap(limit))
                        finally:
                            await response.aclose()
            except (httpx.TimeoutException, TimeoutError):
                raise ApplicationError(
                    f"the tool did not answer within {tool.timeout_seconds:g} s"
                ) from None
            except httpx.HTTPError as error:
                raise ApplicationError(f"cannot reach the tool: {type(error).__name__}") from None
        text = capped_text(raw, more, limit)
        status = response.status_code
        if status >= 500 or status in _RETRYABLE_STATUSES:
            raise ApplicationError(f"the tool answered HTTP {status}")
        if 300 <= status < 400:
            # Following it would reach an address nobody checked; the tool's URL is to be
            # configured as the final one.
            raise refuse(f"the tool answered HTTP {status}, a redirect, which is not followed")
        if status >= 400:
            raise ToolRejected(f"the tool answered HTTP {status}", text[:500])
        if tool.payload == "vapi":
            return ToolResult(response=tool_calls_result(text, invocation.call_id))
        return ToolResult(response=text)

    async def close(self) -> None:
        await self._http.aclose()


def _query_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
