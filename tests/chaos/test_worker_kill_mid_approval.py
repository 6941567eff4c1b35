"""SIGKILL the worker while turns wait for an operator's approval of a tool call; approve half
of them while no worker runs and half after a new one started: every approval lands, each call
runs once (one side effect per Idempotency-Key), and every turn completes."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowHandle

from tests.chaos.harness import (
    SCALE,
    Asked,
    TranscriptCheck,
    ask,
    describe_errors,
    gather_all,
    marker,
    merge_errors,
    report,
    say_until_answered,
    transcript,
    worker_process,
)
from tests.conftest import AgentFactory, SettingsFactory, api_client
from tests.fakes.tool_server import FakeToolServer
from tests.sessions import audit_data, open_chat, stored_session
from tests.test_tool_approvals import pending

TURN_PATIENCE = 180


async def test_worker_killed_mid_approval_wait(
    make_settings: SettingsFactory,
    serve_api: Any,
    api_key: str,
    make_agent: AgentFactory,
    tools: tuple[FakeToolServer, str],
    db: async_sessionmaker[AsyncSession],
    temporal_client: Client,
    tmp_path: Path,
) -> None:
    server, base = tools
    tag = marker()
    settings = make_settings(TEMPORAL_TASK_QUEUE=f"chaos-approval-{tag}")
    agent_id = await make_agent(
        model="tool-charge",
        tools=[
            {
                "type": "webhook",
                "name": "charge",
                "description": "Charge the customer (a side effect, idempotent by key).",
                "parameters": {"type": "object", "properties": {"order": {"type": "string"}}},
                "url": f"{base}/effect/{tag}",
                "requires_approval": True,
            }
        ],
    )
    worker = worker_process(settings, tmp_path / "workers.log")
    await worker.start()
    check = TranscriptCheck()
    asked: list[Asked] = []
    decided: list[Asked] = []
    killed = approved_while_down = approved_after = 0
    session_ids: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    try:
        async with serve_api(settings) as url, api_client(url, api_key) as http:
            http.timeout = TURN_PATIENCE
            for _ in range(SCALE.feature_kills):
                sessions = [
                    (await open_chat(http, agent_id))["id"] for _ in range(SCALE.sessions_per_kill)
                ]
                session_ids += sessions
                questions = {sid: json.dumps({"order": marker()}) for sid in sessions}
                turns = [
                    asyncio.ensure_future(
                        say_until_answered(http, sid, question, f"q-{uuid.uuid4()}")
                    )
                    for sid, question in questions.items()
                ]
                waiting = {sid: (await pending(http, sid))[0]["tool_call_id"] for sid in sessions}
                handles = {sid: await workflow_of(temporal_client, db, sid) for sid in sessions}
                for handle in handles.values():
                    await until_quiet(handle)  # it waits for the approval and nothing else
                assert await worker.kill() == -signal.SIGKILL
                killed += 1
                # Half the approvals are sent while no worker runs: each one lands in its
                # workflow as a workflow task that waits for a worker.
                early = sessions[: len(sessions) // 2]
                approvals = [
                    asyncio.ensure_future(approve(http, sid, waiting[sid])) for sid in early
                ]
                for sid in early:
                    await until_waiting_for_a_worker(handles[sid])
                approved_while_down += len(early)
                await worker.start()
                late = sessions[len(sessions) // 2 :]
                approvals += [
                    asyncio.ensure_future(approve(http, sid, waiting[sid])) for sid in late
                ]
                approved_after += len(late)
                decided += await gather_all(approvals, TURN_PATIENCE)
                asked += await gather_all(turns, TURN_PATIENCE)
                for sid, question in questions.items():
                    messages = await transcript(http, sid)
                    tool_calls += [c for m in messages for c in m["tool_calls"]]
                    check.add(messages, [question], lambda _: None, per_turn=3)
    finally:
        await worker.stop()

    decisions = [
        row for sid in session_ids for row in await audit_data(db, sid, "tool.approval_decided")
    ]
    requests = [
        row for sid in session_ids for row in await audit_data(db, sid, "tool.approval_requested")
    ]
    effects, deliveries = server.effects(tag), server.deliveries(tag)
    duplicate_effects = sum(n - 1 for n in effects.values()) + (len(effects) - len(tool_calls))
    report(
        "worker SIGKILL mid-approval wait",
        f"{killed} kills, {len(decided)} approvals ({approved_while_down} sent while no worker "
        f"ran, {approved_after} after the restart), {len(decisions)} decisions recorded for "
        f"{len(requests)} requests, {check.line()}; {len(tool_calls)} tool calls → "
        f"{sum(effects.values())} side effects ({duplicate_effects} duplicate), "
        f"{sum(deliveries.values())} tool requests, "
        f"{describe_errors(merge_errors([*asked, *decided]))}",
    )
    check.assert_clean()
    assert all(item.body["approved"] is True for item in decided)
    assert len(requests) == len(decisions) == len(session_ids)
    assert all(row["approved"] and not row["timed_out"] for row in decisions)
    assert len(tool_calls) == len(session_ids) and duplicate_effects == 0
    responses = {json.loads(call["response"])["effect"] for call in tool_calls}
    assert responses == server.effect_numbers(tag)


async def approve(http: httpx.AsyncClient, session_id: str, tool_call_id: str) -> Asked:
    status, decided = await ask(
        http, f"/chats/{session_id}/approvals/{tool_call_id}", {"approved": True}, None
    )
    assert status == 200, (status, decided.body)
    return decided


async def workflow_of(
    temporal: Client, db: async_sessionmaker[AsyncSession], session_id: str
) -> WorkflowHandle[Any, Any]:
    return temporal.get_workflow_handle((await stored_session(db, session_id)).workflow_id)


async def until_quiet(handle: WorkflowHandle[Any, Any]) -> None:
    """Until the workflow runs nothing: no workflow task, no activity."""
    for _ in range(300):
        description = (await handle.describe()).raw_description
        if not description.HasField("pending_workflow_task") and not description.pending_activities:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{handle.id} never stopped to wait")


async def until_waiting_for_a_worker(handle: WorkflowHandle[Any, Any]) -> None:
    """Until the workflow has a task scheduled (that no worker has taken: none runs)."""
    for _ in range(300):
        if (await handle.describe()).raw_description.HasField("pending_workflow_task"):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"nothing reached {handle.id} while no worker ran")
