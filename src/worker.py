"""The Temporal worker: session workflows and their activities on one task queue.

Workers scale horizontally: start as many as you like against the same task queue.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from src.activities.analysis import AnalysisActivities
from src.activities.llm import LLMActivities
from src.activities.mcp_tools import McpToolActivities
from src.activities.recorded_transcripts import RecordedTranscripts
from src.activities.session_store import SessionStoreActivities
from src.activities.sms import SmsActivities
from src.activities.webhook_tools import WebhookToolActivities
from src.activities.webhooks import WebhookActivities
from src.config import Settings
from src.db.engine import create_engine, session_factory
from src.db.mcp_calls import SentMcpCalls
from src.db.snapshots import SnapshotStore
from src.llm.providers import ModelProviders
from src.observability import worker_runtime
from src.sealing.secret_box import SecretBox
from src.temporal.client import carries_parley_plugin, connect_temporal, settings_plugin
from src.tools.mcp_client import CLIENT_INFO
from src.tools.mcp_stdio_pool import StdioServerPool, warm_stdio_servers
from src.tools.url_guard import Resolver, system_resolver

log = logging.getLogger(__name__)


@asynccontextmanager
async def running_worker(
    settings: Settings, client: Client, resolver: Resolver = system_resolver
) -> AsyncIterator[Worker]:
    """A started worker; when the block exits it stops polling and gives activities in flight
    `worker_shutdown_seconds` to finish before they are cancelled.
    `resolver` answers the DNS questions of outbound calls (tools, webhooks, MCP servers).
    The stdio MCP servers the worker kept warm are stopped after it."""
    async with _stdio_servers(settings) as stdio_servers:
        async with _started_worker(settings, client, resolver, stdio_servers) as worker:
            yield worker


@asynccontextmanager
async def _stdio_servers(settings: Settings) -> AsyncIterator[StdioServerPool | None]:
    if settings.mcp_stdio_max_servers == 0:
        yield None
        return
    async with warm_stdio_servers(
        settings.mcp_stdio_max_servers, settings.mcp_stdio_idle_seconds, CLIENT_INFO
    ) as pool:
        yield pool


@asynccontextmanager
async def _started_worker(
    settings: Settings,
    client: Client,
    resolver: Resolver,
    stdio_servers: StdioServerPool | None,
) -> AsyncIterator[Worker]:
    # No pre-ping: its round trip was a large share of the worker's database time under load
    # (docs/benchmarks.md).
    engine = create_engine(settings.database_url, pre_ping=False)
    sessions = session_factory(engine)
    box = SecretBox(settings.secret_keys())
    snapshots = SnapshotStore(sessions, box)
    transcripts = RecordedTranscripts()  # read by the LLM activity, extended by the recorder
    store = SessionStoreActivities(sessions, transcripts)
    models = ModelProviders(settings)
    llm = LLMActivities(
        models,
        sessions,
        snapshots,
        max_rendered_chars=settings.max_rendered_template_chars,
        prices=settings.model_prices,
        transcripts=transcripts,
    )
    webhook_tools = WebhookToolActivities(settings, snapshots, resolver)
    mcp_tools = McpToolActivities(
        settings, snapshots, SentMcpCalls(sessions), resolver, stdio_servers
    )
    analysis = AnalysisActivities(models, sessions, snapshots, settings.analysis_attempts)
    webhooks = WebhookActivities(settings, sessions, snapshots, resolver)
    sms = SmsActivities(settings, sessions, box)
    worker = Worker(
        client,
        task_queue=settings.temporal_task_queue,
        # The workflows and the sandbox come with the client's plugin (connect_temporal), or
        # with the same plugin here for a client made elsewhere.
        plugins=[] if carries_parley_plugin(client) else [settings_plugin(settings)],
        activities=[
            store.record_opened,
            store.record_messages,
            store.persist_final,
            store.persist_artifact,
            store.find_answered,
            analysis.analyze_session,
            webhooks.deliver,
            webhooks.record_failure,
            webhooks.record_delivery,
            llm.complete_session_turn,
            webhook_tools.call,
            mcp_tools.discover,
            mcp_tools.call,
            sms.send_text,
        ],
        max_cached_workflows=settings.max_cached_workflows,
        graceful_shutdown_timeout=timedelta(seconds=settings.worker_shutdown_seconds),
    )
    try:
        async with worker:
            yield worker
    finally:
        await webhook_tools.close()
        await webhooks.close()
        await sms.close()
        await engine.dispose()


async def run_worker(settings: Settings) -> None:
    """Run until SIGINT or SIGTERM, then shut down gracefully: calls in flight get
    `worker_shutdown_seconds` to finish. A second signal exits at once, like a crash: the
    calls it abandons time out and are retried by another worker."""
    client = await connect_temporal(settings, worker_runtime(settings))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            log.warning("second stop signal: exiting without waiting for the calls in flight")
            os._exit(130)
        log.info(
            "stopping: calls in flight have up to %.0f s to finish (signal again to exit now)",
            settings.worker_shutdown_seconds,
        )
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    log.info(
        "worker polling task queue %r on %s", settings.temporal_task_queue, settings.temporal_target
    )
    async with running_worker(settings, client):
        await stop.wait()
    log.info("worker stopped")
