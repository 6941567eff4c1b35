"""The Temporal dev server (a `temporal server start-dev` child keeping its state in a SQLite
file) is stopped mid-conversation, during turns and between them, and started again on the
same file and port: every session goes on where it was. Clients meanwhile get a retryable
503 (or their call simply waits), and re-asking with the same Idempotency-Key adds nothing."""

from __future__ import annotations

import asyncio
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
    free_port,
    gather_all,
    marker,
    merge_errors,
    report,
    say_until_answered,
    temporal_process,
    transcript,
    wait_for_port,
    worker_process,
)
from tests.conftest import AgentFactory, SettingsFactory, api_client
from tests.fakes.llm_server import FakeLLM
from tests.sessions import open_chat

PATIENCE = 240


async def test_sessions_survive_temporal_restarts(
    make_settings: SettingsFactory,
    serve_api: Any,
    api_key: str,
    make_agent: AgentFactory,
    fake_llm: tuple[FakeLLM, str],
    tmp_path: Path,
) -> None:
    fake = fake_llm[0]
    tag = marker()
    port = free_port()
    temporal = temporal_process(tmp_path / "temporal.db", port, tmp_path / "temporal.log")
    await temporal.start()
    await wait_for_port(port, temporal)
    settings = make_settings(
        TEMPORAL_ADDRESS=f"127.0.0.1:{port}", TEMPORAL_TASK_QUEUE=f"chaos-temporal-{tag}"
    )
    worker = worker_process(settings, tmp_path / "workers.log")
    await worker.start()
    agent_id = await make_agent(model=f"hold-{tag}", tools=[])
    check = TranscriptCheck()
    asked: list[Asked] = []
    stops = {"during a turn (SIGKILL)": 0, "between turns (SIGTERM)": 0}
    try:
        async with serve_api(settings) as url, api_client(url, api_key) as http:
            http.timeout = PATIENCE
            sessions = [
                (await open_chat(http, agent_id))["id"] for _ in range(SCALE.temporal_sessions)
            ]
            questions: dict[str, list[str]] = {sid: [] for sid in sessions}
            for round_number in range(SCALE.temporal_restarts):
                during = round_number % 2 == 0
                refused = asyncio.Event()
                if during:
                    pending = _start_turns(http, sessions, questions, round_number, refused)
                    await fake.wait_held(tag, len(sessions))  # every turn is mid-LLM call
                    await temporal.kill(signal.SIGKILL)
                    fake.release_held(tag)  # the answers reach a worker cut off from Temporal
                    stops["during a turn (SIGKILL)"] += 1
                else:
                    await temporal.kill(signal.SIGTERM)
                    pending = _start_turns(http, sessions, questions, round_number, refused)
                    # Down long enough for every client to be told to retry.
                    await asyncio.wait_for(refused.wait(), PATIENCE)
                    stops["between turns (SIGTERM)"] += 1
                await temporal.start()
                await wait_for_port(port, temporal)
                if not during:
                    await fake.wait_held(tag, len(sessions))
                    fake.release_held(tag)
                asked += await gather_all(pending, PATIENCE)
            for sid in sessions:
                check.add(await transcript(http, sid), questions[sid], echo_reply)
    finally:
        fake.release_held(tag)
        await worker.stop()
        await temporal.stop()

    stopped = ", ".join(f"{n}x {how}" for how, n in stops.items())
    report(
        "Temporal dev server restarts",
        f"{stopped} on one SQLite file: {check.line()}, "
        f"{describe_errors(merge_errors(asked))} (each re-asked with its Idempotency-Key)",
    )
    check.assert_clean()
    assert worker.starts == 1  # the worker process rode out every outage


def _start_turns(
    http: Any,
    sessions: list[str],
    questions: dict[str, list[str]],
    round_number: int,
    refused: asyncio.Event,
) -> list[asyncio.Future[Asked]]:
    """One turn per session, each re-asked until answered; `refused` is set once every
    client has been told at least once to retry."""
    clients_refused: set[str] = set()
    pending: list[asyncio.Future[Asked]] = []
    for sid in sessions:
        question = f"round {round_number} {marker()}"
        questions[sid].append(question)

        def seen(_: str, sid: str = sid) -> None:
            clients_refused.add(sid)
            if len(clients_refused) == len(sessions):
                refused.set()

        pending.append(
            asyncio.ensure_future(
                say_until_answered(
                    http, sid, question, f"q-{uuid.uuid4()}", patience=PATIENCE, on_error=seen
                )
            )
        )
    return pending
