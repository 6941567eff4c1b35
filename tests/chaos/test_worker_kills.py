"""SIGKILL the worker process while turns wait on the model, and while they wait on a tool:
every turn completes after a restart, each tool side effect happens once per idempotency key,
no transcript message is duplicated, and the waiting clients get their replies (or a 503 they
re-ask with the same Idempotency-Key)."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from pathlib import Path
from typing import Any

from tests.chaos.harness import (
    SCALE,
    Asked,
    TranscriptCheck,
    describe_errors,
    echo_reply,
    gather_all,
    marker,
    merge_errors,
    report,
    say_until_answered,
    transcript,
    worker_process,
)
from tests.conftest import AgentFactory, SettingsFactory, api_client
from tests.fakes.llm_server import FakeLLM
from tests.fakes.tool_server import FakeToolServer
from tests.sessions import open_chat

# A turn waits ~10 s (the LLM activity's heartbeat timeout) for the dead worker to be noticed.
TURN_PATIENCE = 180


async def test_worker_killed_during_llm_calls(
    make_settings: SettingsFactory,
    serve_api: Any,
    api_key: str,
    make_agent: AgentFactory,
    fake_llm: tuple[FakeLLM, str],
    tmp_path: Path,
) -> None:
    fake = fake_llm[0]
    tag = marker()
    settings = make_settings(TEMPORAL_TASK_QUEUE=f"chaos-llm-{tag}")
    agent_id = await make_agent(model=f"hold-{tag}", tools=[])
    worker = worker_process(settings, tmp_path / "workers.log")
    await worker.start()
    check = TranscriptCheck()
    asked: list[Asked] = []
    killed = 0
    try:
        async with serve_api(settings) as url, api_client(url, api_key) as http:
            http.timeout = TURN_PATIENCE
            sessions = [
                (await open_chat(http, agent_id))["id"] for _ in range(SCALE.sessions_per_kill)
            ]
            questions: dict[str, list[str]] = {sid: [] for sid in sessions}
            for round_number in range(SCALE.worker_kills):
                turns = []
                for sid in sessions:
                    question = f"round {round_number} {marker()}"
                    questions[sid].append(question)
                    turns.append(say_until_answered(http, sid, question, f"q-{uuid.uuid4()}"))
                pending = [asyncio.ensure_future(turn) for turn in turns]
                await fake.wait_held(tag, len(sessions))  # every turn is inside its LLM call
                assert await worker.kill() == -signal.SIGKILL
                killed += 1
                fake.release_held(tag)  # the dead worker's calls answer into closed sockets
                await worker.start()
                asked += await gather_all(pending, TURN_PATIENCE)
            for sid in sessions:
                check.add(await transcript(http, sid), questions[sid], echo_reply)
    finally:
        fake.release_held(tag)
        await worker.stop()

    report(
        "worker SIGKILL during LLM calls",
        f"{killed} kills, {check.line()}, {describe_errors(merge_errors(asked))}",
    )
    check.assert_clean()


async def test_worker_killed_during_tool_calls(
    make_settings: SettingsFactory,
    serve_api: Any,
    api_key: str,
    make_agent: AgentFactory,
    tools: tuple[FakeToolServer, str],
    tmp_path: Path,
) -> None:
    server, base = tools
    tag = marker()
    settings = make_settings(TEMPORAL_TASK_QUEUE=f"chaos-tool-{tag}")
    agent_id = await make_agent(
        model="tool-charge",
        tools=[
            {
                "type": "webhook",
                "name": "charge",
                "description": "Charge the customer (a side effect, idempotent by key).",
                "parameters": {"type": "object", "properties": {"order": {"type": "string"}}},
                "url": f"{base}/effect-hold/{tag}",
            }
        ],
    )
    worker = worker_process(settings, tmp_path / "workers.log")
    await worker.start()
    check = TranscriptCheck()
    asked: list[Asked] = []
    killed = 0
    tool_calls: list[dict[str, Any]] = []
    try:
        async with serve_api(settings) as url, api_client(url, api_key) as http:
            http.timeout = TURN_PATIENCE
            sessions = [
                (await open_chat(http, agent_id))["id"] for _ in range(SCALE.sessions_per_kill)
            ]
            questions: dict[str, list[str]] = {sid: [] for sid in sessions}
            for _ in range(SCALE.worker_kills):
                pending = []
                for sid in sessions:
                    question = json.dumps({"order": marker()})
                    questions[sid].append(question)
                    pending.append(
                        asyncio.ensure_future(
                            say_until_answered(http, sid, question, f"q-{uuid.uuid4()}")
                        )
                    )
                # Every turn's side effect is applied; the tool has not answered yet.
                await server.wait_effects_held(tag, len(sessions))
                assert await worker.kill() == -signal.SIGKILL
                killed += 1
                server.release_effects(tag)
                await worker.start()
                asked += await gather_all(pending, TURN_PATIENCE)
            for sid in sessions:
                messages = await transcript(http, sid)
                tool_calls += [
                    c for m in messages for c in m["tool_calls"] if c["name"] == "charge"
                ]
                check.add(messages, questions[sid], lambda _: None, per_turn=3)
    finally:
        server.release_effects(tag)
        await worker.stop()

    effects, deliveries = server.effects(tag), server.deliveries(tag)
    seen_in_transcripts = {json.loads(c["response"])["effect"] for c in tool_calls}
    duplicate_effects = sum(n - 1 for n in effects.values()) + (len(effects) - len(tool_calls))
    redelivered = sum(1 for n in deliveries.values() if n > 1)
    report(
        "worker SIGKILL during tool calls",
        f"{killed} kills, {check.line()}, {len(tool_calls)} tool calls → {len(effects)} "
        f"idempotency keys, {sum(effects.values())} side effects applied "
        f"({duplicate_effects} duplicate), {redelivered} keys redelivered after a kill, "
        f"{describe_errors(merge_errors(asked))}",
    )
    check.assert_clean()
    assert len(tool_calls) == check.turns_expected
    assert duplicate_effects == 0
    assert seen_in_transcripts == server.effect_numbers(tag)
    # Every call was cut after its effect and before its answer, then retried with its key.
    assert redelivered == len(tool_calls)
