"""Replay guards determinism: recorded histories must replay against the current workflow code,
and a change that would break running sessions is caught, with the event it breaks at."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter

from src.config import Settings
from src.db.tables import ChatSession
from src.sealing.state_envelope import new_key_setting
from src.temporal.client import connect_temporal
from src.temporal.histories import load_histories
from src.temporal.replay import exit_status, replay_histories
from src.worker import running_worker
from src.workflows.chat_session import ChatSessionWorkflow
from src.workflows.chat_session_models import SessionStart, SessionState
from src.workflows.registry import WORKFLOWS
from src.workflows.session_analysis import session_analysis_workflow_id
from tests.conftest import AgentFactory, api_client
from tests.sessions import open_chat, say
from tests.test_text_chat import turn, user

HISTORIES = Path(__file__).parent / "histories"
GOLDEN = sorted(HISTORIES.glob("*.json"))
ROOT = Path(__file__).parent.parent


@workflow.defn(name="ChatSessionWorkflow", sandboxed=False)
class ChatSessionWithExtraTimer(ChatSessionWorkflow):
    """A careless change: the session now pauses before it records being opened."""

    @workflow.run
    async def run(self, start: SessionStart) -> SessionState:
        return await super().run(start)

    async def _open(self) -> None:
        await workflow.sleep(0.01)
        await super()._open()


def golden(name: str) -> list[WorkflowHistory]:
    return load_histories((HISTORIES / f"{name}.json").read_text())


def events_of(path: Path, run: int = 0) -> list[dict[str, Any]]:
    return list(json.loads(path.read_text())[run]["history"]["events"])


async def parley(*args: str, **env: str) -> tuple[int, str]:
    """Runs the `parley` CLI (`python -m src.cli`) and returns its exit status and output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "src.cli",
        *args,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


def cli_env(settings: Settings) -> dict[str, str]:
    """The settings of the test stack, as environment variables for the CLI."""
    return {
        "PARLEY_DATA_DIR": str(settings.data_dir),
        "TEMPORAL_ADDRESS": settings.temporal_target,
        "DATABASE_URL": settings.database_url,
    }


def test_golden_histories_cover_every_kind_of_session() -> None:
    assert {path.stem for path in GOLDEN} >= {
        "plain_chat",
        "tool_calls",
        "ttl_finish",
        "agent_finish",
        "continue_as_new",
        "stateless_turns",
        "budget_finish",
        "stateless_budget",
        "backlog_handover",
    }


@pytest.mark.parametrize("path", GOLDEN, ids=[path.stem for path in GOLDEN])
async def test_golden_history_replays_against_the_current_code(path: Path) -> None:
    histories = golden(path.stem)

    reports = await replay_histories(histories, pydantic_data_converter)

    assert [(r.workflow_id, r.error) for r in reports] == [(h.workflow_id, None) for h in histories]


async def test_continue_as_new_golden_holds_the_whole_chain_of_runs() -> None:
    histories = golden("continue_as_new")

    assert len({h.workflow_id for h in histories}) == 1
    assert len({h.run_id for h in histories}) == len(histories) >= 3


async def test_a_nondeterministic_change_is_reported_with_the_event_it_breaks_at() -> None:
    path = HISTORIES / "plain_chat.json"
    changed = [ChatSessionWithExtraTimer, *WORKFLOWS[1:]]

    [report] = await replay_histories(golden("plain_chat"), pydantic_data_converter, changed)

    assert exit_status([report]) == 1
    assert report.error is not None and "Nondeterminism" in report.error
    # The first command of the recorded open: where the new timer now stands instead.
    first_command = next(
        e
        for e in events_of(path)
        if e["eventType"] == "EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES"
    )
    assert report.event_id == int(first_command["eventId"])
    assert report.hint is not None and "workflow.patched" in report.hint


async def test_the_child_analysis_golden_holds_the_session_its_analysis_and_its_webhook() -> None:
    histories = golden("agent_finish")

    [session, analysis, delivery] = [h.workflow_id for h in histories]
    assert session.startswith("chat-")
    assert analysis.startswith("analysis-")
    assert delivery == f"webhook-{analysis.removeprefix('analysis-')}:session.finished"


async def test_replay_command_passes_a_golden_history(tmp_path: Path) -> None:
    status, output = await parley(
        "replay", "--file", str(HISTORIES / "plain_chat.json"), PARLEY_DATA_DIR=str(tmp_path)
    )

    assert status == 0, output
    assert output.splitlines()[0].startswith("OK ")
    assert "1 run(s) replayed: 1 OK, 0 failed" in output


async def test_replay_command_fails_a_history_that_references_another_activity(
    tmp_path: Path,
) -> None:
    events = events_of(HISTORIES / "plain_chat.json")
    scheduled = next(e for e in events if e["eventType"] == "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED")
    attributes = scheduled["activityTaskScheduledEventAttributes"]
    attributes["activityType"]["name"] = "session_store.record_opened_v0"
    edited = tmp_path / "edited.json"
    edited.write_text(
        json.dumps([{"workflow_id": "edited", "run_id": "r", "history": {"events": events}}])
    )

    status, output = await parley("replay", "--file", str(edited), PARLEY_DATA_DIR=str(tmp_path))

    assert status == 1, output
    assert "FAILED  edited run " in output
    assert f"at event {scheduled['eventId']}" in output
    assert "session_store.record_opened_v0" in output
    assert "workflow.patched" in output


async def test_replay_command_fails_a_workflow_type_the_code_does_not_register(
    tmp_path: Path,
) -> None:
    events = events_of(HISTORIES / "tool_calls.json")
    events[0]["workflowExecutionStartedEventAttributes"]["workflowType"]["name"] = "ChatSession"
    edited = tmp_path / "renamed.json"
    edited.write_text(
        json.dumps([{"workflow_id": "renamed", "run_id": "r", "history": {"events": events}}])
    )

    status, output = await parley("replay", "--file", str(edited), PARLEY_DATA_DIR=str(tmp_path))

    assert status == 1, output
    assert "not registered" in output and "workflow names are persisted API" in output


async def test_export_and_replay_a_live_session_with_all_its_runs(
    make_settings: Any,
    serve_api: Any,
    api_key: str,
    worker: None,
    make_agent: AgentFactory,
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
    settings: Settings,
    tmp_path: Path,
) -> None:
    agent_id = await make_agent()
    async with (
        serve_api(make_settings(PARLEY_TURNS_PER_RUN=2)) as url,
        api_client(url, api_key) as http,
    ):
        session = await open_chat(http, agent_id)
        for n in range(3):
            await say(http, session["id"], f"turn {n}")
        ended = await http.post(f"/chats/{session['id']}/end")
    async with db() as s:
        row = await s.get(ChatSession, session["id"])
    assert row is not None
    await temporal_client.get_workflow_handle(row.workflow_id).result()  # the finish pipeline
    exported = tmp_path / "session.json"

    exported_status, _ = await parley(
        "history", "export", "--session", session["id"], "-o", str(exported), **cli_env(settings)
    )
    replay_status, replay_output = await parley(
        "replay", "--session", session["id"], **cli_env(settings)
    )
    file_status, file_output = await parley("replay", "--file", str(exported), **cli_env(settings))

    assert ended.status_code == 200
    runs = json.loads(exported.read_text())
    listed = [
        run async for run in temporal_client.list_workflows(f"WorkflowId = '{row.workflow_id}'")
    ]
    assert exported_status == 0 and len(runs) == len(listed) >= 2
    assert len({run["workflow_id"] for run in runs}) == 1
    assert len({run["run_id"] for run in runs}) == len(runs)
    assert replay_status == 0, replay_output
    assert file_status == 0, file_output
    assert replay_output.count("OK ") == file_output.count("OK ") == len(runs)


async def test_a_session_on_a_reused_endpoint_exports_only_its_own_runs(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
    settings: Settings,
    tmp_path: Path,
) -> None:
    agent_id = await make_agent()
    endpoint = {"phone": str(uuid.uuid4())}
    sessions = []
    for _ in range(2):
        session = await open_chat(http, agent_id, external_id=endpoint)
        await http.post(f"/chats/{session['id']}/end")
        async with db() as s:
            row = await s.get(ChatSession, session["id"])
        assert row is not None
        workflow_id = row.workflow_id  # the endpoint's: the same for both sessions
        await temporal_client.get_workflow_handle(workflow_id).result()
        sessions.append(session["id"])
    by_session, by_workflow = tmp_path / "session.json", tmp_path / "workflow.json"

    await parley(
        "history", "export", "--session", sessions[0], "-o", str(by_session), **cli_env(settings)
    )
    await parley(
        "history", "export", "--workflow-id", workflow_id, "-o", str(by_workflow),
        **cli_env(settings),
    )  # fmt: skip

    first_runs = json.loads(by_session.read_text())
    all_runs = json.loads(by_workflow.read_text())
    assert len(first_runs) == 1 and len(all_runs) == 2
    assert first_runs[0]["run_id"] == all_runs[0]["run_id"]  # the older of the two


async def test_replay_of_a_stateless_conversation_covers_each_turn(
    http: httpx.AsyncClient, make_agent: AgentFactory, settings: Settings
) -> None:
    agent_id = await make_agent()
    first = (await turn(http, {"id": agent_id}, [user("one")])).json()
    history = [user("one"), *first["messages"], user("two")]
    await turn(http, {"id": agent_id}, history, first["state"])

    status, output = await parley("replay", "--session", first["call_id"], **cli_env(settings))

    assert status == 0, output
    assert f"OK      text-chat-{first['call_id']}-1 run" in output
    assert f"OK      text-chat-{first['call_id']}-2 run" in output


async def test_replay_of_an_unknown_session_says_so(settings: Settings) -> None:
    status, output = await parley("replay", "--session", "no-such-session", **cli_env(settings))

    assert status == 2
    assert "no session 'no-such-session'" in output


async def test_a_session_ended_now_replays_without_patch_markers(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
) -> None:
    session = await open_chat(http, await make_agent())
    await say(http, session["id"], "hello")
    await http.post(f"/chats/{session['id']}/end", json={"note": "done"})
    async with db() as s:
        row = await s.get(ChatSession, session["id"])
    assert row is not None
    handle = temporal_client.get_workflow_handle(row.workflow_id)
    await handle.result()
    history = await handle.fetch_history()

    [report] = await replay_histories([history], pydantic_data_converter)
    events = (await http.get(f"/chats/{session['id']}/events")).json()["items"]

    markers = [
        e.marker_recorded_event_attributes.marker_name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
    ]
    # Parley has not been released: every change so far is the one path, no patch guards it.
    assert "core_patch" not in markers
    assert report.ok, report.error
    [requested] = [e for e in events if e["kind"] == "session.end_requested"]
    assert requested["data"] == {"note": "done", "reason": "user_end"}


async def test_a_session_with_analysis_ended_now_analyses_in_a_child_and_both_replay(
    http: httpx.AsyncClient,
    make_agent: AgentFactory,
    temporal_client: Client,
    db: async_sessionmaker[AsyncSession],
) -> None:
    session = await open_chat(http, await make_agent(analysis={"summary_prompt": "Summarise."}))
    await say(http, session["id"], "hello")
    await http.post(f"/chats/{session['id']}/end")
    async with db() as s:
        row = await s.get(ChatSession, session["id"])
    assert row is not None
    handles = [
        temporal_client.get_workflow_handle(row.workflow_id),
        temporal_client.get_workflow_handle(session_analysis_workflow_id(session["id"])),
    ]
    for handle in handles:
        await handle.result()
    histories = [await handle.fetch_history() for handle in handles]

    reports = await replay_histories(histories, pydantic_data_converter)

    assert [r.workflow_type for r in reports] == ["ChatSessionWorkflow", "SessionAnalysisWorkflow"]
    assert all(r.ok for r in reports), [r.error for r in reports]
    session_steps, analysis_steps = (scheduled_activities(h) for h in histories)
    assert "analysis.analyze_session" not in session_steps
    assert analysis_steps == ["analysis.analyze_session", "session_store.persist_artifact"]


def scheduled_activities(history: WorkflowHistory) -> list[str]:
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]


async def test_replay_reads_encrypted_histories_with_the_payload_keys(
    make_settings: Any,
    serve_api: Any,
    api_key: str,
    make_agent: AgentFactory,
    db: async_sessionmaker[AsyncSession],
) -> None:
    keys = new_key_setting("r1")
    settings = make_settings(
        TEMPORAL_TASK_QUEUE=f"replay-codec-{uuid.uuid4().hex[:8]}", PARLEY_PAYLOAD_KEYS=keys
    )
    encrypted_client = await connect_temporal(settings)
    agent_id = await make_agent()
    async with (
        running_worker(settings, encrypted_client),
        serve_api(settings) as url,
        api_client(url, api_key) as http,
    ):
        session = await open_chat(http, agent_id)
        await say(http, session["id"], "a secret")
        await http.post(f"/chats/{session['id']}/end")
        async with db() as s:
            row = await s.get(ChatSession, session["id"])
        assert row is not None
        await encrypted_client.get_workflow_handle(row.workflow_id).result()

    with_keys, output = await parley(
        "replay", "--session", session["id"], **cli_env(settings), PARLEY_PAYLOAD_KEYS=keys
    )
    without_keys, refused = await parley("replay", "--session", session["id"], **cli_env(settings))

    assert with_keys == 0, output
    assert without_keys == 1, refused
    assert "payload keys" in refused, refused
