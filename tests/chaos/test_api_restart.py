"""The API process (`python -m src.cli api`) is killed and restarted while clients send
messages concurrently: no session is lost, clients see only retryable failures (connection
errors, 503), and re-asking with the same Idempotency-Key completes each turn exactly once."""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path
from typing import Any

from src.services.accounts import new_api_key
from tests.chaos.harness import (
    SCALE,
    Asked,
    TranscriptCheck,
    api_process,
    ask,
    describe_errors,
    echo_reply,
    free_port,
    gather_all,
    marker,
    merge_errors,
    report,
    say_until_answered,
    transcript,
    wait_for_health,
)
from tests.conftest import AgentFactory, SettingsFactory, api_client
from tests.fakes.llm_server import FakeLLM

PATIENCE = 240


async def test_api_restarts_under_load(
    make_settings: SettingsFactory,
    worker: None,
    make_agent: AgentFactory,
    fake_llm: tuple[FakeLLM, str],
    tmp_path: Path,
) -> None:
    fake = fake_llm[0]
    tag = marker()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    key = new_api_key()
    api = api_process(make_settings(), port, key, tmp_path / "api.log")
    await api.start()
    await wait_for_health(base, api)
    check = TranscriptCheck()
    kills = {"SIGKILL": 0, "SIGTERM": 0}
    done = asyncio.Event()

    async def client(http: Any, agent_id: str, number: int) -> tuple[str, list[str], Asked]:
        # Opening with an external_id is safe to repeat: a retry joins the same session.
        status, opened = await ask(
            http,
            "/chats",
            {"agent_id": agent_id, "channel": "web", "external_id": {"chaos": tag, "n": number}},
            None,
            patience=PATIENCE,
        )
        assert status in (200, 201), (status, opened.body)
        session_id = opened.body["id"]
        questions, errors = [], opened.errors
        for turn in range(SCALE.api_turns):
            question = f"{tag} client {number} turn {turn}"
            asked = await say_until_answered(
                http, session_id, question, f"q-{uuid.uuid4()}", patience=PATIENCE
            )
            errors.update(asked.errors)
            questions.append(question)
        return session_id, questions, Asked({}, errors)

    async def restarter() -> None:
        for round_number in range(SCALE.api_restarts):
            # Wait (bounded) for a fresh wave of turns to be in flight, then kill.
            seen = len(fake.requests_for(tag))
            for _ in range(2400):
                if done.is_set() or len(fake.requests_for(tag)) >= seen + SCALE.api_clients:
                    break
                await asyncio.sleep(0.05)
            if done.is_set():
                return
            how = signal.SIGKILL if round_number % 2 == 0 else signal.SIGTERM
            await api.kill(how)
            kills[how.name] += 1
            await api.start()
            await wait_for_health(base, api)

    try:
        async with api_client(base, key) as http:
            http.timeout = PATIENCE
            agent_id = await make_agent(model="slow-300", client=http, tools=[])
            killing = asyncio.ensure_future(restarter())
            try:
                results = await gather_all(
                    [client(http, agent_id, n) for n in range(SCALE.api_clients)], PATIENCE * 2
                )
            finally:
                done.set()
                await killing
            listed = (await http.get("/chats", params={"limit": 100})).json()["items"]
            for session_id, questions, _ in results:
                check.add(await transcript(http, session_id), questions, echo_reply)
    finally:
        await api.stop()

    sessions = {session_id for session_id, _, _ in results}
    kept = sessions & {item["id"] for item in listed}
    errors = merge_errors([asked for _, _, asked in results])
    restarts = ", ".join(f"{n}x {how}" for how, n in kills.items())
    report(
        "API process restarts under load",
        f"{restarts} with {SCALE.api_clients} concurrent clients: {len(kept)}/{len(sessions)} "
        f"sessions kept, {check.line()}, {describe_errors(errors)}, 0 other errors",
    )
    check.assert_clean()
    assert len(sessions) == SCALE.api_clients and kept == sessions
    assert sum(kills.values()) == SCALE.api_restarts
