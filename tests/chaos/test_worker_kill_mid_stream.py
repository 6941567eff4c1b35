"""SIGKILL the worker while a turn's reply streams to its client over SSE: the client reads
half the reply, then `discard`, then the whole reply from the retried model call, once; the
transcript has it once."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.chaos.harness import (
    SCALE,
    TranscriptCheck,
    echo_reply,
    gather_all,
    marker,
    report,
    transcript,
    worker_process,
)
from tests.conftest import AgentFactory, SettingsFactory, api_client
from tests.fakes.llm_server import FakeLLM
from tests.sessions import open_chat
from tests.sse import Event, follow, named, stream_post

# The retried model call starts after the LLM activity's heartbeat timeout (~10 s).
TURN_PATIENCE = 180


@dataclass
class StreamedTurn:
    """What one SSE client read of one turn's reply (message 0), split at the `discard`."""

    reply: str
    discards: int
    before: str  # the text streamed before the first discard
    after: str  # the text streamed after the last discard
    message: str | None  # the complete `message` event's content
    done: list[str]  # the contents in `done`

    @classmethod
    def read(cls, events: list[Event], reply: str) -> StreamedTurn:
        before, after, discards = "", "", 0
        messages = named(events, "message")
        for event in events:
            if event.data.get("message_index") != 0:
                continue
            if event.name == "discard":
                discards += 1
                after = ""
            elif event.name == "message.delta":
                if discards:
                    after += event.data["delta"]
                else:
                    before += event.data["delta"]
        done = named(events, "done")
        return cls(
            reply=reply,
            discards=discards,
            before=before,
            after=after,
            message=messages[0].data["message"]["content"] if len(messages) == 1 else None,
            done=[m["content"] for m in done[0].data["messages"]] if len(done) == 1 else [],
        )

    @property
    def clean(self) -> bool:
        """Half the reply, one discard, then the reply exactly once, and nothing else."""
        return (
            self.discards == 1
            and bool(self.before)
            and self.reply.startswith(self.before)
            and self.before != self.reply
            and self.after == self.reply
            and self.message == self.reply
            and self.done == [self.reply]
        )


async def test_worker_killed_mid_stream(
    make_settings: SettingsFactory,
    serve_api: Any,
    api_key: str,
    make_agent: AgentFactory,
    fake_llm: tuple[FakeLLM, str],
    tmp_path: Path,
) -> None:
    fake = fake_llm[0]
    tag = marker()
    settings = make_settings(TEMPORAL_TASK_QUEUE=f"chaos-stream-{tag}")
    agent_id = await make_agent(model=f"midhold-{tag}", tools=[])
    worker = worker_process(settings, tmp_path / "workers.log")
    await worker.start()
    check = TranscriptCheck()
    turns: list[StreamedTurn] = []
    killed = 0
    try:
        async with serve_api(settings) as url, api_client(url, api_key) as http:
            http.timeout = TURN_PATIENCE
            for _ in range(SCALE.feature_kills):
                sessions = [
                    (await open_chat(http, agent_id))["id"] for _ in range(SCALE.sessions_per_kill)
                ]
                questions = {sid: f"where is my parcel {marker()} now" for sid in sessions}
                streams = [
                    asyncio.ensure_future(
                        stream_post(http, f"/chats/{sid}/messages", {"content": question})
                    )
                    for sid, question in questions.items()
                ]
                # Every reply is held halfway, and its first half has reached the stream.
                await fake.wait_held(tag, len(sessions))
                await gather_all(
                    [
                        follow(http, f"/chats/{sid}/stream?after=0", until="message.delta")
                        for sid in sessions
                    ],
                    60,
                )
                assert await worker.kill() == -signal.SIGKILL
                killed += 1
                fake.release_held(tag)  # the dead worker's calls stream into closed sockets
                await worker.start()
                for question, events in zip(
                    questions.values(), await gather_all(streams, TURN_PATIENCE), strict=True
                ):
                    turns.append(StreamedTurn.read(events, echo_reply(question)))
                for sid, question in questions.items():
                    check.add(await transcript(http, sid), [question], echo_reply)
    finally:
        fake.release_held(tag)
        await worker.stop()

    clean = sum(turn.clean for turn in turns)
    repeated = sum(turn.after != turn.reply for turn in turns)
    report(
        "worker SIGKILL mid-stream",
        f"{killed} kills, {len(turns)} streamed turns: {clean}/{len(turns)} clients read half "
        f"the reply, 1 discard, then the reply once ({sum(t.discards for t in turns)} discards, "
        f"{repeated} replies with repeated or missing text after the discard), {check.line()}",
    )
    assert clean == len(turns), [turn for turn in turns if not turn.clean][:3]
    check.assert_clean()
