"""Records the golden histories in tests/histories/ from real sessions.

Not part of the normal suite: it runs only with PARLEY_RECORD_HISTORIES=1, against the same
fixtures as the tests (dev server, fake LLM, fake tool server, webhook receiver, worker, API):

    .venv/bin/python -m tests.record_histories [--suffix v2] [-k plain_chat]

It never overwrites a file: after a deliberate, versioned workflow change (see docs/replay.md)
record the new path beside the old files with `--suffix`, and keep the old ones while runs
recorded by the old code may still exist.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from src.config import Settings
from src.temporal.histories import dump_histories, fetch_histories, session_queries
from src.workflows.chat_session import ChatSessionWorkflow
from src.workflows.chat_session_models import UserMessage
from tests.conftest import AgentFactory, api_client
from tests.fakes.tool_server import FakeToolServer
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.sessions import open_chat, say, stored_session, wait_until_final
from tests.test_budget import PRICED_MODEL, TINY_BUDGET
from tests.test_finish_pipeline import accepted_deliveries, finishing_agent
from tests.test_text_chat import turn, user
from tests.test_tools import webhook_tool

HISTORIES = Path(__file__).parent / "histories"
RECORD_VARIABLE = "PARLEY_RECORD_HISTORIES"
SUFFIX_VARIABLE = "PARLEY_HISTORIES_SUFFIX"

pytestmark = pytest.mark.skipif(
    os.environ.get(RECORD_VARIABLE) != "1",
    reason=f"records golden histories: set {RECORD_VARIABLE}=1",
)


async def record(client: Client, settings: Settings, session_id: str, name: str) -> None:
    """Waits for every workflow of the session to close, then writes tests/histories/<name>."""
    queries = await session_queries(settings, session_id)
    for query in queries:
        async for run in client.list_workflows(query):
            await client.get_workflow_handle(run.id).result()
    histories = await fetch_histories(client, queries)
    suffix = os.environ.get(SUFFIX_VARIABLE)
    path = HISTORIES / (f"{name}-{suffix}.json" if suffix else f"{name}.json")
    if path.exists():
        pytest.fail(f"{path} exists: golden histories are kept; record with --suffix")
    HISTORIES.mkdir(exist_ok=True)
    path.write_text(dump_histories(histories) + "\n")


async def test_record_plain_chat(
    http: httpx.AsyncClient, make_agent: AgentFactory, temporal_client: Client, settings: Settings
) -> None:
    session = await open_chat(http, await make_agent(first_message="Hello, how can I help?"))
    await say(http, session["id"], "where is my order?")
    await say(http, session["id"], "thanks")
    await http.post(f"/chats/{session['id']}/end", json={"note": "resolved"})
    await record(temporal_client, settings, session["id"], "plain_chat")


async def test_record_tool_calls(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    tools: tuple[FakeToolServer, str],
    temporal_client: Client,
    settings: Settings,
) -> None:
    _, base = tools
    agent_id = await make_agent(model="tool-lookup_order", tools=[webhook_tool(f"{base}/echo")])
    session = await open_chat(http, agent_id)
    await say(http, session["id"], '{"id": "A-17"}')
    await http.post(f"/chats/{session['id']}/end")
    await record(temporal_client, settings, session["id"], "tool_calls")


async def test_record_ttl_finish(
    http: httpx.AsyncClient, make_agent: AgentFactory, temporal_client: Client, settings: Settings
) -> None:
    session = await open_chat(http, await make_agent(), ttl_seconds=1)
    await say(http, session["id"], "hello?")
    await wait_until_final(http, session["id"])
    await record(temporal_client, settings, session["id"], "ttl_finish")


async def test_record_agent_finish(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    receiver: tuple[WebhookReceiver, str],
    temporal_client: Client,
    settings: Settings,
) -> None:
    hooks, url = receiver
    session = await open_chat(http, await finishing_agent(make_agent, url))
    await say(http, session["id"], "please finish")
    await accepted_deliveries(hooks, session["id"], "session.finished")
    await record(temporal_client, settings, session["id"], "agent_finish")


async def test_record_continue_as_new(
    make_settings: Any,
    serve_api: Any,
    api_key: str,
    worker: None,
    make_agent: AgentFactory,
    temporal_client: Client,
    settings: Settings,
) -> None:
    agent_id = await make_agent()
    async with (
        serve_api(make_settings(PARLEY_TURNS_PER_RUN=2)) as url,
        api_client(url, api_key) as http,
    ):
        session = await open_chat(http, agent_id)
        for n in range(4):
            await say(http, session["id"], f"turn {n}")
        await http.post(f"/chats/{session['id']}/end")
    await record(temporal_client, settings, session["id"], "continue_as_new")


async def test_record_backlog_handover(
    make_settings: Any,
    serve_api: Any,
    api_key: str,
    worker: None,
    make_agent: AgentFactory,
    temporal_client: Client,
    settings: Settings,
    db: async_sessionmaker[AsyncSession],
) -> None:
    """Hand-overs with messages queued, a refused channel message, a key answered from the
    database (continue-as-new-with-a-backlog, validate-channel-messages,
    idempotency-keys-in-database)."""
    agent_id = await make_agent(model="slow-100")
    stack = make_settings(PARLEY_HISTORY_HANDOVER_FRACTION=0.001, PARLEY_ANSWERED_KEYS_KEPT=1)
    async with serve_api(stack) as url, api_client(url, api_key) as http:
        session = await open_chat(http, agent_id)
        row = await stored_session(db, session["id"])
        handle = temporal_client.get_workflow_handle(row.workflow_id)
        await handle.signal(ChatSessionWorkflow.receive_message, UserMessage(content=" "))
        for n in range(4):
            await handle.signal(
                ChatSessionWorkflow.receive_message, UserMessage(content=f"sms {n}")
            )
        for n in range(3):
            await say(http, session["id"], f"turn {n}", headers={"Idempotency-Key": f"g-{n}"})
        await say(http, session["id"], "turn 0", headers={"Idempotency-Key": "g-0"})
        await http.post(f"/chats/{session['id']}/end")
    await record(temporal_client, settings, session["id"], "backlog_handover")


async def test_record_stateless_turns(
    http: httpx.AsyncClient, make_agent: AgentFactory, temporal_client: Client, settings: Settings
) -> None:
    agent_id = await make_agent()
    first = (await turn(http, {"id": agent_id}, [user("hi")])).json()
    history = [user("hi"), *first["messages"], user("please finish")]
    await turn(http, {"id": agent_id}, history, first["state"])
    await record(temporal_client, settings, first["call_id"], "stateless_turns")


async def test_record_budget_finish(
    http: httpx.AsyncClient, make_agent: AgentFactory, temporal_client: Client, settings: Settings
) -> None:
    agent_id = await make_agent(model=PRICED_MODEL, budget_usd=TINY_BUDGET)
    session = await open_chat(http, agent_id)
    await say(http, session["id"], "hello")
    await say(http, session["id"], "and now?")  # answered with the budget message: final
    await record(temporal_client, settings, session["id"], "budget_finish")


async def test_record_stateless_budget(
    http: httpx.AsyncClient, make_agent: AgentFactory, temporal_client: Client, settings: Settings
) -> None:
    agent_id = await make_agent(model=PRICED_MODEL, budget_usd=TINY_BUDGET)
    first = (await turn(http, {"id": agent_id}, [user("hi")])).json()
    history = [user("hi"), *first["messages"], user("and now?")]
    await turn(http, {"id": agent_id}, history, first["state"])
    await record(temporal_client, settings, first["call_id"], "stateless_budget")


if __name__ == "__main__":
    options = argparse.ArgumentParser(
        description="Record the golden histories; other arguments go to pytest (e.g. -k plain)."
    )
    options.add_argument("--suffix", default="", help="file names <kind>-<suffix>.json")
    known, pytest_args = options.parse_known_args()
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__]
    env = {**os.environ, RECORD_VARIABLE: "1", SUFFIX_VARIABLE: known.suffix}
    sys.exit(subprocess.call([*command, *pytest_args], env=env))
