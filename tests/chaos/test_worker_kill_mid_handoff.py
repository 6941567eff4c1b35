"""SIGKILL the worker during a squad handoff: triage has handed the turn to billing, whose
model call is held when the worker dies. After a restart the turn completes with one switch of
member (audit, transcript authors, the final record's transfers) and billing's reply once."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.chaos.harness import (
    SCALE,
    Asked,
    TranscriptCheck,
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
from tests.fakes.llm_server import FakeLLM
from tests.sessions import audit_data, open_chat
from tests.test_finish_pipeline import final_with_artifact
from tests.test_squads import billing_requests, make_squad

TURN_PATIENCE = 180
# What the fake model answers after a tool result: billing's reply to the handed-off turn.
BILLING_REPLY = "Goodbye from the fake model."


async def test_worker_killed_mid_handoff(
    make_settings: SettingsFactory,
    serve_api: Any,
    api_key: str,
    make_agent: AgentFactory,
    fake_llm: tuple[FakeLLM, str],
    db: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    fake = fake_llm[0]
    tag = marker()
    settings = make_settings(TEMPORAL_TASK_QUEUE=f"chaos-handoff-{tag}")
    worker = worker_process(settings, tmp_path / "workers.log")
    await worker.start()
    check = TranscriptCheck()
    asked: list[Asked] = []
    killed = 0
    reasons: dict[str, str] = {}
    handoffs: list[dict[str, Any]] = []
    transfers: list[dict[str, Any]] = []
    replies_by_member: list[list[str]] = []
    try:
        async with serve_api(settings) as url, api_client(url, api_key) as http:
            http.timeout = TURN_PATIENCE
            squad_id, triage, billing = await make_squad(http, make_agent, model=f"hold-{tag}")
            for _ in range(SCALE.feature_kills):
                sessions = [
                    (await open_chat(http, None, squad_id=squad_id))["id"]
                    for _ in range(SCALE.sessions_per_kill)
                ]
                questions = {sid: json.dumps({"reason": f"refund {marker()}"}) for sid in sessions}
                reasons.update({sid: json.loads(q)["reason"] for sid, q in questions.items()})
                turns = [
                    asyncio.ensure_future(
                        say_until_answered(http, sid, question, f"q-{uuid.uuid4()}")
                    )
                    for sid, question in questions.items()
                ]
                # Triage asked for the handoff; billing's model call is held.
                await fake.wait_held(tag, len(sessions))
                assert await worker.kill() == -signal.SIGKILL
                killed += 1
                fake.release_held(tag)
                await worker.start()
                asked += await gather_all(turns, TURN_PATIENCE)
                for sid, question in questions.items():
                    messages = await transcript(http, sid)
                    check.add(messages, [question], lambda _: BILLING_REPLY, per_turn=3)
                    replies_by_member.append(
                        [m["author"]["agent_id"] for m in messages if m["role"] == "assistant"]
                    )
                    assert (await http.post(f"/chats/{sid}/end")).status_code == 200
                    final = await final_with_artifact(http, sid)
                    transfers += final["artifact"]["transfers"]
                    handoffs += await audit_data(db, sid, "agent.handoff")
    finally:
        fake.release_held(tag)
        await worker.stop()

    one_switch = [[triage, billing]] * len(reasons)
    billing_calls = sum(len(billing_requests(fake, reason)) for reason in reasons.values())
    report(
        "worker SIGKILL during a squad handoff",
        f"{killed} kills, {len(reasons)} handoff turns: {check.line()}, "
        f"{len(handoffs)} handoffs audited, {len(transfers)} transfers in the final records, "
        f"{sum(authors == [triage, billing] for authors in replies_by_member)}/{len(reasons)} "
        f"turns answered by triage then billing once; {billing_calls} model calls of billing "
        f"(the killed one retried), {describe_errors(merge_errors(asked))}",
    )
    check.assert_clean()
    assert replies_by_member == one_switch
    assert handoffs == [
        {"from": "triage", "to": "billing", "reason": reason} for reason in reasons.values()
    ]
    assert [(t["from_member"], t["to_member"]) for t in transfers] == [("triage", "billing")] * len(
        reasons
    )
