"""The model endpoint answers 429, 500 and too slowly (past PARLEY_LLM_TIMEOUT_SECONDS) in
bursts: every turn is retried and completes. A 400 fails only its own turn, with a clear
502 agent_error, and the session goes on."""

from __future__ import annotations

import uuid
from typing import Any

from temporalio.client import Client

from src.worker import running_worker
from tests.chaos.harness import (
    SCALE,
    TranscriptCheck,
    ask,
    echo_reply,
    gather_all,
    marker,
    report,
    say_until_answered,
    transcript,
)
from tests.conftest import AgentFactory, SettingsFactory, api_client
from tests.fakes.llm_server import FakeLLM
from tests.sessions import open_chat

LLM_TIMEOUT_SECONDS = 1.0
SLOW_MS = 2500  # past the timeout
# Per conversation state: <429s>-<500s>-<slow answers>-<slow ms>.
BURSTS = [
    f"burst-3-0-0-{SLOW_MS}",
    f"burst-0-3-0-{SLOW_MS}",
    f"burst-0-0-2-{SLOW_MS}",
    f"burst-1-1-1-{SLOW_MS}",
]


async def test_llm_errors_and_timeouts_in_bursts(
    make_settings: SettingsFactory,
    serve_api: Any,
    api_key: str,
    make_agent: AgentFactory,
    fake_llm: tuple[FakeLLM, str],
    temporal_client: Client,
) -> None:
    fake = fake_llm[0]
    settings = make_settings(
        TEMPORAL_TASK_QUEUE=f"chaos-bursts-{marker()}",
        PARLEY_LLM_TIMEOUT_SECONDS=LLM_TIMEOUT_SECONDS,
    )
    agents = {model: await make_agent(model=model, tools=[]) for model in BURSTS}
    before = fake.failures.copy()
    check = TranscriptCheck()
    rejected: list[tuple[int, dict[str, Any]]] = []

    async def conversation(http: Any, agent_id: str) -> tuple[str, list[str]]:
        session_id = (await open_chat(http, agent_id))["id"]
        questions = []
        for turn in range(SCALE.burst_turns):
            question = f"turn {turn} {marker()}"
            await say_until_answered(http, session_id, question, f"q-{uuid.uuid4()}")
            questions.append(question)
            if turn == 0:  # a request the model refuses: that turn fails, nothing else
                status, asked = await ask(
                    http,
                    f"/chats/{session_id}/messages",
                    {"content": f"[400] {marker()}"},
                    f"q-{uuid.uuid4()}",
                )
                rejected.append((status, asked.body))
        return session_id, questions

    async with running_worker(settings, temporal_client):
        async with serve_api(settings) as url, api_client(url, api_key) as http:
            http.timeout = 180
            conversations = await gather_all(
                [
                    conversation(http, agents[BURSTS[i % len(BURSTS)]])
                    for i in range(SCALE.burst_sessions)
                ],
                within=600,
            )
            for session_id, questions in conversations:
                messages = await transcript(http, session_id)
                # The refused turn leaves its user message, without a reply.
                refused = [m for m in messages if (m["content"] or "").startswith("[400]")]
                assert len(refused) == 1
                kept = [m for m in messages if m not in refused]
                check.add(kept, questions, echo_reply)

    failures = fake.failures - before
    codes = sorted({body["error"]["code"] for _, body in rejected})
    report(
        "LLM 429/500/timeout bursts",
        f"{check.line()} after {failures['429']}x 429, {failures['500']}x 500 and "
        f"{failures['timeout']} answers past the {LLM_TIMEOUT_SECONDS:g} s timeout; "
        f"{len(rejected)}/{SCALE.burst_sessions} turns answered 400 by the model → "
        f"{sorted({s for s, _ in rejected})} {codes}, each session went on",
    )
    check.assert_clean()
    assert failures["429"] and failures["500"] and failures["timeout"]
    assert all(status == 502 for status, _ in rejected), rejected
    assert all(
        body["error"]["code"] == "agent_error" and "malformed" in body["error"]["message"]
        for _, body in rejected
    ), rejected
