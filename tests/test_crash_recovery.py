"""A worker process killed mid-turn or mid-pipeline loses nothing, and side effects are not
repeated blindly: the tool sees the retry under the same idempotency key; the finish pipeline
resumes at the step it was killed in (analysis is not asked again, the completion webhook is
accepted once)."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from httpx_sse import aconnect_sse
from sqlalchemy import select
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import Client, WorkflowHandle

from src.db.engine import create_engine
from src.db.tables import AuditEvent, ChatSession
from src.workflows.session_analysis import session_analysis_workflow_id
from tests.conftest import WEBHOOK_SECRET
from tests.fakes.llm_server import FakeLLM
from tests.sessions import open_chat, say, stored_session
from tests.sse import STREAM, Event, named, text_of
from tests.stack import Child, Stack


async def test_worker_killed_during_a_tool_call_loses_no_turn(stack: Stack) -> None:
    server, base = stack.tools, stack.tools_url
    settings = stack.own_queue("crash")
    path = f"/hang-first/{uuid.uuid4().hex}"
    agent_id = await stack.make_agent(
        model="tool-lookup_order",
        tools=[
            {
                "type": "webhook",
                "name": "lookup_order",
                "parameters": {"type": "object", "properties": {}},
                "url": base + path,
            }
        ],
    )
    first = await stack.start_worker(settings)
    async with stack.api(settings) as http:
        session = await open_chat(http, agent_id)
        reply = asyncio.create_task(say(http, session["id"], "{}"))
        for _ in range(600):
            if server.calls_to(path):
                break
            await asyncio.sleep(0.05)
        await first.kill()
        server.release.set()
        second = await stack.start_worker(settings)
        try:
            turn = await asyncio.wait_for(reply, timeout=120)
            transcript = (await http.get(f"/chats/{session['id']}")).json()["messages"]
        finally:
            await second.stop()

    calls = server.calls_to(path)
    assert first.returncode == -signal.SIGKILL
    assert len(calls) == 2
    assert calls[0].headers["idempotency-key"] == calls[1].headers["idempotency-key"]
    assert turn["messages"][0]["tool_calls"][0]["response"] == '{"done":true,"attempt":2}'
    assert [m["role"] for m in transcript] == ["user", "assistant", "assistant"]
    assert transcript[1:] == turn["messages"]


async def test_worker_killed_mid_pipeline_resumes_without_repeating_steps(stack: Stack) -> None:
    hooks, url = stack.hooks, stack.hooks_url
    settings = stack.own_queue("pipeline")
    agent_id = await stack.make_agent(
        model="hang-analysis",
        analysis={"summary_prompt": "Summarise."},
        webhook={"url": url, "secret": WEBHOOK_SECRET},
    )
    first = await stack.start_worker(settings)
    async with stack.api(settings) as http:
        session = await open_chat(http, agent_id)
        await say(http, session["id"], f"pipeline crash {uuid.uuid4()}")
        ended = await http.post(f"/chats/{session['id']}/end")
        marker = "pipeline crash"
        for _ in range(600):  # until the analysis call is in flight
            analysing = [
                r
                for r in stack.llm.requests_for(marker)
                if r["messages"][0]["content"] == "Summarise."
            ]
            if analysing:
                break
            await asyncio.sleep(0.05)
        await first.kill()
        stack.llm.release.set()
        second = await stack.start_worker(settings)
        try:
            for _ in range(1200):
                if hooks.accepted(session["id"], "session.finished"):
                    break
                await asyncio.sleep(0.1)
            final = (await http.get(f"/chats/{session['id']}")).json()
            async with stack.db() as s:
                row = await s.get(ChatSession, session["id"])
        finally:
            await second.stop()
    assert row is not None
    runs = await finish_runs(stack.temporal, row.workflow_id, session["id"])

    assert ended.json()["is_final"] is True
    assert runs["session_store.persist_final"][0] == 1
    assert runs["analysis.analyze_session"][0] == 1  # one activity, retried inside
    assert runs["session_store.persist_artifact"][0] == 1  # one artifact
    assert final["artifact"]["summary"].startswith("summary of")
    assert len(hooks.accepted(session["id"], "session.finished")) == 1


# ---- the finish pipeline, killed at each of its steps --------------------------------------

FINISH_STEPS = (
    "session_store.persist_final",
    "analysis.analyze_session",
    "session_store.persist_artifact",
)


@asynccontextmanager
async def database_writes_held(database_url: str, session_id: str) -> AsyncIterator[None]:
    """Hold a lock the worker's next write to the session's row must wait for: the row itself
    on PostgreSQL (SELECT ... FOR UPDATE); the database's write lock on SQLite (BEGIN
    IMMEDIATE: SQLite locks no finer). Reads go on meanwhile; released on exit."""
    if database_url.startswith("sqlite"):
        sqlite = sqlite3.connect(database_url.split("///", 1)[-1], isolation_level=None)
        try:
            sqlite.execute("BEGIN IMMEDIATE")
            yield
        finally:
            sqlite.execute("ROLLBACK")
            sqlite.close()
        return
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection, connection.begin():
            await connection.execute(
                select(ChatSession.id).where(ChatSession.id == session_id).with_for_update()
            )
            yield
    finally:
        await engine.dispose()


async def wait_activity_started(handle: WorkflowHandle[Any, Any], activity: str) -> None:
    """Poll (bounded) until a worker has started `activity` for the workflow and not finished
    it; Temporal pushes no notice of that, so the description is polled."""
    for _ in range(600):
        description = await handle.describe()
        for pending in description.raw_description.pending_activities:
            started = pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
            if pending.activity_type.name == activity and started:
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{activity} never started in {handle.id}")


async def activity_runs(client: Client, workflow_id: str) -> dict[str, tuple[int, int]]:
    """Per activity type: (times scheduled, the attempt that completed it)."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    names: dict[int, str] = {}
    scheduled: Counter[str] = Counter()
    attempts: dict[str, int] = {}
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            names[event.event_id] = name
            scheduled[name] += 1
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = event.activity_task_started_event_attributes
            attempts[names[started.scheduled_event_id]] = started.attempt
    return {name: (count, attempts.get(name, 0)) for name, count in scheduled.items()}


async def finish_runs(
    client: Client, workflow_id: str, session_id: str
) -> dict[str, tuple[int, int]]:
    """`activity_runs` of the finish pipeline: the session's run writes the final record, its
    analysis workflow (started once that is written) the rest."""
    return {
        **await activity_runs(client, workflow_id),
        **await activity_runs(client, session_analysis_workflow_id(session_id)),
    }


def analysis_calls(llm: FakeLLM, summary_prompt: str) -> int:
    return sum(1 for r in llm.requests if r["messages"][0]["content"] == summary_prompt)


async def kill(worker: Child) -> None:
    assert await worker.kill() == -signal.SIGKILL


@pytest.mark.parametrize("step", ["session_store.persist_final", "session_store.persist_artifact"])
async def test_worker_killed_while_persisting_resumes_without_repeating_steps(
    stack: Stack, step: str
) -> None:
    hooks, url, llm = stack.hooks, stack.hooks_url, stack.llm
    settings = stack.own_queue("persist")
    tag = uuid.uuid4().hex[:12]
    summary_prompt = f"Summarise conversation {tag}."
    agent_id = await stack.make_agent(
        model=f"hold-{tag}",  # holds the analysis call until released
        first_message="Hello, how can I help?",
        analysis={"summary_prompt": summary_prompt},
        webhook={"url": url, "secret": WEBHOOK_SECRET},
    )
    first = await stack.start_worker(settings)
    async with stack.api(settings) as http:
        session = await open_chat(http, agent_id)
        workflow = stack.temporal.get_workflow_handle(
            (await stored_session(stack.db, session["id"])).workflow_id
        )
        if step == "session_store.persist_final":
            async with database_writes_held(settings.database_url, session["id"]):
                ended = await http.post(f"/chats/{session['id']}/end")
                await wait_activity_started(workflow, step)
                await kill(first)
        else:
            ended = await http.post(f"/chats/{session['id']}/end")
            await llm.wait_held(tag, 1)
            analysis = stack.temporal.get_workflow_handle(
                session_analysis_workflow_id(session["id"])
            )
            async with database_writes_held(settings.database_url, session["id"]):
                llm.release_held(tag)  # the analysis completes; its write waits for the lock
                await wait_activity_started(analysis, step)
                await kill(first)
        no_worker_up = (await http.get(f"/chats/{session['id']}")).json()
        second = await stack.start_worker(settings)
        try:
            if step == "session_store.persist_final":
                await llm.wait_held(tag, 1)  # analysis runs only once the record is written
                llm.release_held(tag)
            [delivery] = await hooks.wait_accepted(session["id"], "session.finished", within=120)
            await asyncio.wait_for(workflow.result(), 60)
            final = (await http.get(f"/chats/{session['id']}")).json()
        finally:
            await second.stop()
    runs = await finish_runs(stack.temporal, workflow.id, session["id"])
    async with stack.db() as s:
        finish_events = Counter(
            (
                await s.scalars(
                    select(AuditEvent.kind).where(
                        AuditEvent.session_id == session["id"],
                        AuditEvent.kind.in_(["session.finished", "finish.analysis"]),
                    )
                )
            ).all()
        )

    assert ended.json()["is_final"] is True
    # final as soon as it is, even with no worker up and the final record not yet written
    assert (no_worker_up["is_final"], no_worker_up["status"]) == (True, "final")
    assert (no_worker_up["final_reason"], no_worker_up["artifact"]) == ("user_end", None)
    assert {name: runs[name][0] for name in FINISH_STEPS} == dict.fromkeys(FINISH_STEPS, 1)
    assert runs[step][1] >= 2  # the killed attempt, then the one that wrote
    assert analysis_calls(llm, summary_prompt) == 1
    assert finish_events == Counter({"session.finished": 1, "finish.analysis": 1})
    assert (final["status"], final["artifact"]["summary"]) == ("final", "summary of 1 lines")
    assert delivery.body["data"]["artifact"] == final["artifact"]
    assert len(hooks.accepted(session["id"])) == 1


async def test_worker_killed_during_webhook_delivery_delivers_once(stack: Stack) -> None:
    hooks, url, llm = stack.hooks, stack.hooks_url, stack.llm
    settings = stack.own_queue("deliver")
    summary_prompt = f"Summarise conversation {uuid.uuid4()}."
    agent_id = await stack.make_agent(
        model="echo",
        first_message="Hello, how can I help?",
        analysis={"summary_prompt": summary_prompt},
        webhook={"url": url, "secret": WEBHOOK_SECRET},
    )
    first = await stack.start_worker(settings)
    async with stack.api(settings) as http:
        session = await open_chat(http, agent_id)
        hooks.hold.add(session["id"])  # the receiver holds the first delivery
        await http.post(f"/chats/{session['id']}/end")
        await hooks.wait_held(session["id"])
        await kill(first)
        # The held request ends with the killed worker's connection, unanswered.
        await hooks.wait_for(lambda: bool(hooks.attempts(session["id"], "session.finished")), 30)
        second = await stack.start_worker(settings)
        try:
            delivery = stack.temporal.get_workflow_handle(
                f"webhook-{session['id']}:session.finished"
            )
            delivered = await asyncio.wait_for(delivery.result(), 120)
            events = (await http.get(f"/chats/{session['id']}/events")).json()["items"]
        finally:
            await second.stop()
    session_runs = await finish_runs(
        stack.temporal, (await stored_session(stack.db, session["id"])).workflow_id, session["id"]
    )
    delivery_runs = await activity_runs(stack.temporal, delivery.id)

    attempts = hooks.attempts(session["id"], "session.finished")
    assert delivered is True
    assert [d.status for d in attempts] == [499, 200]  # 499: the client went away
    assert len({d.idempotency_key for d in attempts}) == 1
    assert len(hooks.accepted(session["id"])) == 1
    assert {name: session_runs[name][0] for name in FINISH_STEPS} == dict.fromkeys(FINISH_STEPS, 1)
    assert analysis_calls(llm, summary_prompt) == 1
    assert delivery_runs["webhooks.deliver"] == (1, 2)  # scheduled once, done by attempt 2
    # The killed attempt never got to record itself; the one that delivered did.
    recorded = [(e["data"]["attempt"], e["data"]["status_code"]) for e in events
                if e["kind"] == "webhook.attempt"]  # fmt: skip
    assert recorded == [(2, 200)]
    assert [e["data"]["attempts"] for e in events if e["kind"] == "webhook.delivered"] == [2]


async def test_worker_killed_mid_stream_discards_the_partial_text_then_streams_it_once(
    stack: Stack,
) -> None:
    settings = stack.own_queue("stream-crash")
    agent_id = await stack.make_agent(model="stream-150")
    words = " ".join(f"word{n}" for n in range(20))
    first = await stack.start_worker(settings)
    events: list[Event] = []
    async with stack.api(settings) as http:
        session = await open_chat(http, agent_id)
        url = f"/chats/{session['id']}/messages"
        async with aconnect_sse(
            http, "POST", url, json={"content": words}, headers=STREAM
        ) as source:
            second: Child | None = None
            try:
                async for sse in source.aiter_sse():
                    events.append(Event(sse.event, json.loads(sse.data), sse.id, 0.0))
                    if second is None and len(named(events, "message.delta")) >= 2:
                        await first.kill()
                        second = await stack.start_worker(settings)
            finally:
                if second is not None:
                    await second.stop()
        transcript = (await http.get(f"/chats/{session['id']}")).json()["messages"]

    assert first.returncode == -signal.SIGKILL
    names = [event.name for event in events]
    assert "discard" in names and names[-1] == "done"
    before_discard = names[: names.index("discard")]
    assert before_discard.count("message.delta") >= 2
    assert text_of(events) == f"echo: {words}"
    assert [m["content"] for m in transcript] == [words, f"echo: {words}"]
    assert named(events, "done")[0].data["messages"][0]["content"] == f"echo: {words}"


async def test_a_tool_call_waiting_for_approval_outlives_a_killed_worker(stack: Stack) -> None:
    server, base = stack.tools, stack.tools_url
    settings = stack.own_queue("approval")
    order = f"K-{uuid.uuid4().hex[:8]}"
    agent_id = await stack.make_agent(
        model="tool-lookup_order",
        tools=[
            {
                "type": "webhook",
                "name": "lookup_order",
                "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
                "url": base + "/echo",
                "requires_approval": True,
            }
        ],
    )
    first = await stack.start_worker(settings)
    async with stack.api(settings) as http:
        session = await open_chat(http, agent_id)
        reply = asyncio.create_task(say(http, session["id"], json.dumps({"id": order})))
        waiting: list[dict[str, Any]] = []
        for _ in range(600):
            waiting = (await http.get(f"/chats/{session['id']}")).json()["pending_approvals"]
            if waiting:
                break
            await asyncio.sleep(0.05)
        await kill(first)
        second = await stack.start_worker(settings)
        try:
            decided = await http.post(
                f"/chats/{session['id']}/approvals/{waiting[0]['tool_call_id']}",
                json={"approved": True},
            )
            turn = await asyncio.wait_for(reply, timeout=120)
        finally:
            await second.stop()

    assert decided.status_code == 200, decided.text
    assert turn["messages"][-1]["content"] == f'tool said: {{"received":{{"id":"{order}"}}}}'
    assert len([c for c in server.calls_to("/echo") if order in c.body.decode()]) == 1
