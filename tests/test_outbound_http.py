"""Outbound calls (webhook tools, completion webhooks, MCP over HTTP) go only where the URL
guard looked: a name that rebinds after the check, a redirect and an endless answer all fail
to take a call elsewhere or to fill the worker's memory."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from src.activities.webhook_tools import WebhookToolActivities
from src.db.snapshots import SnapshotStore
from src.domain import McpServer, WebhookTool
from src.sealing.secret_box import SecretBox
from src.tools.mcp_client import McpError, McpPolicy, list_tools
from src.tools.mcp_commands import McpCommandAllowlist
from src.tools.pinned_http import pinned_client, pinned_to
from src.tools.url_guard import CheckedTarget, UrlAllowlist
from src.worker import running_worker
from tests.conftest import WEBHOOK_SECRET, AgentFactory, api_client
from tests.fakes.mcp_http_server import mcp_http_app
from tests.fakes.rebinding_resolver import RebindingResolver
from tests.fakes.recording_server import RecordingServer
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.servers import served
from tests.sessions import open_chat, say
from tests.test_finish_pipeline import audit_log, delivery_outcome, recorded_attempts
from tests.test_tools import invocation, stored_snapshot, tool_agent, webhook_tool

CHECKED, STRAY = "127.0.0.1", "127.0.0.2"
# Far less than the 1 GiB an endless answer offers: what sits in socket buffers when the
# client hangs up, and a little more.
FEW_BYTES = 64 * 1024 * 1024
LOOPBACK_ONLY = McpPolicy(
    allowed_commands=McpCommandAllowlist.parse(""), url_allowlist=UrlAllowlist.parse([CHECKED])
)


def twin_sockets() -> tuple[socket.socket, socket.socket]:
    """Two loopback sockets on one port, on the checked address and on the stray one, so a
    URL's host:port can reach either depending only on what the name resolves to."""
    while True:
        first = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        first.bind((CHECKED, 0))
        second = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            second.bind((STRAY, first.getsockname()[1]))
        except OSError:
            first.close()
            second.close()
            continue
        return first, second


@dataclass
class Rebinding:
    """A worker whose DNS answers the checked address first and the stray one after; the
    stray address is not allow-listed (the allow-list is 127.0.0.1)."""

    resolver: RebindingResolver
    client: httpx.AsyncClient
    port: int
    checked: RecordingServer
    stray: RecordingServer
    hooks_port: int
    hooks: WebhookReceiver
    stray_hooks: RecordingServer


@pytest.fixture(scope="module")
async def rebinding(
    make_settings: Any, serve_api: Any, api_key: str, temporal_client: Client
) -> AsyncIterator[Rebinding]:
    resolver = RebindingResolver(first=CHECKED, later=STRAY)
    settings = make_settings(TEMPORAL_TASK_QUEUE=f"rebind-{uuid.uuid4().hex[:8]}")
    checked, stray, stray_hooks = RecordingServer(), RecordingServer(), RecordingServer()
    hooks = WebhookReceiver(secret=WEBHOOK_SECRET)
    tool_socks, hook_socks = twin_sockets(), twin_sockets()
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(served(checked.app, tool_socks[0]))
        await stack.enter_async_context(served(stray.app, tool_socks[1]))
        await stack.enter_async_context(served(hooks.app, hook_socks[0]))
        await stack.enter_async_context(served(stray_hooks.app, hook_socks[1]))
        await stack.enter_async_context(running_worker(settings, temporal_client, resolver))
        api = await stack.enter_async_context(serve_api(settings))
        client = await stack.enter_async_context(api_client(api, api_key))
        yield Rebinding(
            resolver, client, tool_socks[0].getsockname()[1], checked, stray,
            hook_socks[0].getsockname()[1], hooks, stray_hooks,
        )  # fmt: skip


async def rebinding_agent(client: httpx.AsyncClient, **spec: Any) -> str:
    body = {"name": "rebinding", "model": {"provider": "openai", "name": "tool-lookup_order"}}
    response = await client.post("/agents", json={**body, **spec})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_a_tool_host_that_rebinds_after_the_check_is_called_at_the_checked_address(
    rebinding: Rebinding,
) -> None:
    host = rebinding.resolver.name(f"tool-{uuid.uuid4().hex[:8]}")
    path = f"/echo/{uuid.uuid4().hex}"
    url = f"http://{host}:{rebinding.port}{path}"
    agent = await rebinding_agent(rebinding.client, tools=[webhook_tool(url)])
    session = await open_chat(rebinding.client, agent)

    turn = await say(rebinding.client, session["id"], '{"id": "R-1"}')

    assert turn["messages"][0]["tool_calls"][0]["response"] == "ok"
    assert [r for r in rebinding.checked.requests if r[1] == path] == [
        ("POST", path, f"{host}:{rebinding.port}")
    ]
    assert rebinding.stray.requests == []
    assert rebinding.resolver.asked[host] == 1
    # Had the name been looked up again, it would have gone elsewhere:
    assert [str(a) for a in await rebinding.resolver(host, rebinding.port)] == [STRAY]


async def test_a_completion_webhook_host_that_rebinds_is_delivered_at_the_checked_address(
    rebinding: Rebinding, temporal_client: Client, db: async_sessionmaker[AsyncSession]
) -> None:
    host = rebinding.resolver.name(f"hook-{uuid.uuid4().hex[:8]}")
    webhook = {"url": f"http://{host}:{rebinding.hooks_port}/hooks", "secret": WEBHOOK_SECRET}
    agent = await rebinding_agent(rebinding.client, webhook=webhook)
    session = await open_chat(rebinding.client, agent)

    await rebinding.client.post(f"/chats/{session['id']}/end")
    delivered = await delivery_outcome(temporal_client, db, session["id"])

    assert delivered is True
    assert len(rebinding.hooks.accepted(session["id"], "session.finished")) == 1
    assert rebinding.stray_hooks.requests == []
    assert rebinding.resolver.asked[host] == 1


async def test_an_mcp_server_host_that_rebinds_is_reached_at_the_checked_address() -> None:
    resolver = RebindingResolver(first=CHECKED, later=STRAY)
    host = resolver.name("mcp")
    stray = RecordingServer()
    first, second = twin_sockets()
    policy = McpPolicy(
        allowed_commands=McpCommandAllowlist.parse(""), url_allowlist=UrlAllowlist.parse([CHECKED]),
        resolver=resolver,
    )  # fmt: skip
    async with served(mcp_http_app([f"{host}:*"]), first), served(stray.app, second):
        server = McpServer(url=f"http://{host}:{first.getsockname()[1]}/mcp", timeout_seconds=20)
        tools = await list_tools(server, policy)

    assert "add" in {tool.name for tool in tools}
    assert stray.requests == []
    assert resolver.asked[host] == 1


async def test_a_pinned_https_call_verifies_the_certificate_of_the_name_not_the_address(
    tmp_path: Path,
) -> None:
    host = "tls.rebind.test"
    authority = trustme.CA()
    authority.issue_cert(host).private_key_and_cert_chain_pem.write_to_path(tmp_path / "cert.pem")
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)
    server = RecordingServer()
    cert = tmp_path / "cert.pem"
    async with served(server.app, ssl_certfile=cert) as base, pinned_client(trusting) as http:
        port = base.rsplit(":", 1)[1]
        url = f"https://{host}:{port}/secure"
        with pinned_to(CheckedTarget(host, (ipaddress.ip_address(CHECKED),))):
            response = await http.get(url)
        # The same address under a name the certificate does not carry fails the check.
        other = "other.rebind.test"
        with pinned_to(CheckedTarget(other, (ipaddress.ip_address(CHECKED),))):
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await http.get(url.replace(host, other))

    assert response.status_code == 200
    assert server.requests == [("GET", "/secure", f"{host}:{port}")]


async def test_a_request_to_a_host_nobody_checked_is_never_sent() -> None:
    server = RecordingServer()
    async with served(server.app) as base, pinned_client() as http:
        with pytest.raises(httpx.ConnectError, match="not checked by the URL guard"):
            await http.get(f"{base}/anything")

    assert server.requests == []


@pytest.fixture(scope="module")
async def recording() -> AsyncIterator[tuple[RecordingServer, RecordingServer, str, str]]:
    """A misbehaving endpoint on 127.0.0.1 and a bystander on 127.0.0.2 (not allow-listed)."""
    checked, stray = RecordingServer(), RecordingServer()
    first, second = twin_sockets()
    async with served(checked.app, first) as base, served(stray.app, second):
        yield checked, stray, base, base.replace(CHECKED, STRAY)


async def test_a_tool_answering_with_a_redirect_is_an_error_and_the_redirect_is_not_followed(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    recording: tuple[RecordingServer, RecordingServer, str, str],
) -> None:
    _, stray, base, stray_base = recording
    url = f"{base}/redirect?to={stray_base}/stolen"
    session = await open_chat(http, await tool_agent(make_agent, webhook_tool(url)))

    turn = await say(http, session["id"], '{"id": "X-1"}')

    response = turn["messages"][0]["tool_calls"][0]["response"]
    assert "HTTP 302, a redirect, which is not followed" in response
    assert stray.requests == []


async def test_a_completion_webhook_answered_with_a_redirect_is_not_a_delivery(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
    recording: tuple[RecordingServer, RecordingServer, str, str],
) -> None:
    _, stray, base, stray_base = recording
    webhook = {"url": f"{base}/redirect?to={stray_base}/hooks", "secret": WEBHOOK_SECRET}
    session = await open_chat(http, await make_agent(webhook=webhook))

    await http.post(f"/chats/{session['id']}/end")
    delivered = await delivery_outcome(temporal_client, db, session["id"])
    events = await audit_log(http, session["id"])

    assert delivered is False
    assert recorded_attempts(events) == [(1, 302, "HTTP 302: redirects are not followed")]
    assert [e["kind"] for e in events if e["kind"].startswith("webhook.")] == [
        "webhook.attempt", "webhook.failed"
    ]  # fmt: skip
    assert stray.requests == []


async def test_an_endless_tool_answer_is_cut_at_the_limit_without_being_read_whole(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    settings: Any,
    recording: tuple[RecordingServer, RecordingServer, str, str],
) -> None:
    checked, _, base, _ = recording
    tag = uuid.uuid4().hex
    session = await open_chat(
        http, await tool_agent(make_agent, webhook_tool(f"{base}/endless/{tag}"))
    )

    turn = await say(http, session["id"], '{"id": "E-1"}')

    response = turn["messages"][0]["tool_calls"][0]["response"]
    limit = settings.tool_response_max_chars
    assert response == "y" * limit + (
        f"... [truncated: the response was longer than {limit} characters]"
    )
    assert turn["messages"][-1]["content"].startswith("tool said: yyy")
    assert await checked.finished(tag) < FEW_BYTES


async def test_a_tool_answer_that_trickles_on_is_cut_off_at_the_tools_timeout(
    settings: Any,
    db: async_sessionmaker[AsyncSession],
    recording: tuple[RecordingServer, RecordingServer, str, str],
) -> None:
    checked, _, base, _ = recording
    tag = uuid.uuid4().hex
    tool = WebhookTool(name="lookup_order", url=f"{base}/trickle/{tag}", timeout_seconds=1)
    snapshot_id = await stored_snapshot(settings, db, tool, [])
    activities = WebhookToolActivities(
        settings, SnapshotStore(db, SecretBox(settings.secret_keys()))
    )

    # One attempt (the activity's retries are Temporal's): each byte comes well within the
    # timeout, the whole answer never does. (The outer bound only keeps a failure from hanging.)
    with pytest.raises(ApplicationError, match="did not answer within 1 s"):
        async with asyncio.timeout(60):
            await ActivityEnvironment().run(
                activities.call, invocation(snapshot_id, "lookup_order")
            )

    assert await checked.finished(tag) > 0


async def test_an_endless_completion_webhook_answer_is_not_read(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
    recording: tuple[RecordingServer, RecordingServer, str, str],
) -> None:
    checked, _, base, _ = recording
    tag = uuid.uuid4().hex
    webhook = {"url": f"{base}/endless/{tag}", "secret": WEBHOOK_SECRET}
    session = await open_chat(http, await make_agent(webhook=webhook))

    await http.post(f"/chats/{session['id']}/end")
    delivered = await delivery_outcome(temporal_client, db, session["id"])

    assert delivered is True
    assert await checked.finished(tag) < FEW_BYTES


async def test_an_endless_mcp_answer_fails_the_call_past_the_byte_cap(
    recording: tuple[RecordingServer, RecordingServer, str, str],
) -> None:
    checked, _, base, _ = recording
    tag = uuid.uuid4().hex
    policy = McpPolicy(
        allowed_commands=McpCommandAllowlist.parse(""), url_allowlist=UrlAllowlist.parse([CHECKED]),
        response_max_bytes=65_536,
    )  # fmt: skip
    server = McpServer(url=f"{base}/endless-json/{tag}", timeout_seconds=20)

    with pytest.raises(McpError, match="longer than 65536 bytes"):
        await list_tools(server, policy)

    assert await checked.finished(tag) < FEW_BYTES
