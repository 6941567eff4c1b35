"""SIGKILL the worker between Twilio's accept of a text and Parley's record of it, over and
over: every part of every reply reaches the person exactly once (the retry finds the text in
Twilio's message list instead of sending it again)."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from src.sms.texts import text_parts
from tests.chaos.harness import SCALE, marker, report, worker_process
from tests.conftest import AgentFactory, SettingsFactory, api_client
from tests.fakes.twilio_server import FakeTwilio
from tests.sms import add_number, new_number, pair_sessions, text_in

# A send cut by a kill is retried once its heartbeat times out (10 s, SMS_SEND).
SEND_PATIENCE = 120.0
# A question of ~3,400 characters: its echo is three texts.
QUESTION_WORDS = 220


async def sends_recorded(http: httpx.AsyncClient, session_id: str) -> list[dict[str, Any]]:
    """The transcript once every part a text went out for has its Twilio id: the fake sees a
    send a moment before Parley records Twilio's answer to it (bounded polling)."""
    messages: list[dict[str, Any]] = []
    for _ in range(300):
        messages = (await http.get(f"/chats/{session_id}")).json()["messages"]
        parts = [p for m in messages if m["role"] == "assistant" for p in m["delivery"] or []]
        if parts and all(p["provider_message_id"] for p in parts):
            break
        await asyncio.sleep(0.1)
    return messages


async def test_worker_killed_during_sms_sends(
    make_settings: SettingsFactory,
    serve_api: Any,
    api_key: str,
    make_agent: AgentFactory,
    fake_twilio: tuple[FakeTwilio, str],
    tmp_path: Path,
) -> None:
    fake = fake_twilio[0]
    settings = make_settings(TEMPORAL_TASK_QUEUE=f"chaos-sms-{marker()}")
    worker = worker_process(settings, tmp_path / "workers.log")
    await worker.start()
    person = new_number()
    expected: list[str] = []
    killed = 0
    try:
        async with serve_api(settings) as url, api_client(url, api_key) as http:
            agent_id = await make_agent(client=http)
            number = (await add_number(http, fake, agent_id))["number"]
            async with httpx.AsyncClient(base_url=url, timeout=30) as twilio:
                for round_number in range(SCALE.worker_kills):
                    tag = marker()
                    question = " ".join(f"r{round_number}-{tag}-{i}" for i in range(QUESTION_WORDS))
                    # Kill after Twilio took the first part (even rounds) or the second (odd).
                    fake.hang_next(to=person, after=round_number % 2)
                    answer = await text_in(twilio, settings, person, number, question)
                    assert answer.status_code == 200, answer.text
                    await fake.wait_hanging(within=SEND_PATIENCE)
                    assert await worker.kill() == -signal.SIGKILL
                    killed += 1
                    await worker.start()
                    expected.append("echo: " + question)
                    await fake.wait_for(
                        lambda: "".join(t.body for t in fake.sent(person)).endswith(expected[-1]),
                        SEND_PATIENCE,
                    )
            [session] = await pair_sessions(http, agent_id)
            messages = await sends_recorded(http, session["id"])
    finally:
        fake.release()
        await worker.stop()

    texts = fake.sent(person)
    bodies = Counter(t.body for t in texts)
    duplicates = sum(n - 1 for n in bodies.values())
    parts = [p for m in messages if m["role"] == "assistant" for p in m["delivery"] or []]
    report(
        "worker SIGKILL during SMS sends",
        f"{killed} kills, {len(parts)} parts → {len(texts)} texts sent "
        f"({duplicates} duplicate), {len(fake.sends(person))} send requests, "
        f"{sum(1 for p in parts if p['status'] == 'queued')} recorded as queued",
    )
    assert duplicates == 0
    assert "".join(t.body for t in texts) == "".join(expected)
    assert len(texts) == len(parts) == sum(len(text_parts(e)) for e in expected)
    assert all(p["provider_message_id"] for p in parts)
