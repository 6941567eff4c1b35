"""A worker asked to stop (SIGTERM, as docker and systemd do) lets the calls in flight finish
instead of cancelling them: a model call under way when the signal comes is answered once,
not cancelled and asked again by the next worker."""

from __future__ import annotations

import asyncio
import signal
import uuid
from datetime import timedelta
from pathlib import Path

from src.config import Settings
from src.workflows import activity_options
from tests.sessions import open_chat, say
from tests.stack import Stack


async def test_sigterm_lets_a_model_call_in_flight_finish(stack: Stack) -> None:
    fake, tag = stack.llm, f"stop-{uuid.uuid4().hex[:8]}"
    settings = stack.own_queue("shutdown")
    agent_id = await stack.make_agent(model=f"hold-{tag}")
    first = await stack.start_worker(settings)
    log = first.log
    async with stack.api(settings) as http:
        session = await open_chat(http, agent_id)
        reply = asyncio.create_task(say(http, session["id"], f"hello {tag}"))
        await fake.wait_held(tag, 1)
        first.send_signal(signal.SIGTERM)
        await wait_for_line(log, "stopping: calls in flight")
        fake.release_held(tag)
        # The first worker finishes the call, reports it and exits by itself.
        assert await asyncio.wait_for(first.wait(), timeout=120) == 0
        second = await stack.start_worker(settings)  # takes the rest of the turn
        try:
            turn = await asyncio.wait_for(reply, timeout=120)
        finally:
            await second.stop(signal.SIGTERM)

    assert turn["messages"][-1]["content"] == f"echo: hello {tag}"
    assert len(fake.requests_for(f"hello {tag}")) == 1  # answered once, not asked again


def test_the_default_shutdown_grace_outlasts_the_model_and_tool_calls() -> None:
    grace = timedelta(seconds=Settings.model_fields["worker_shutdown_seconds"].default)
    calls = [activity_options.LLM, activity_options.WEBHOOK_TOOL]
    longest = [config.get("start_to_close_timeout") for config in calls]
    assert all(timeout is not None and grace >= timeout for timeout in longest)


async def wait_for_line(log: Path, text: str, within: float = 60) -> None:
    for _ in range(int(within / 0.05)):
        if text in await asyncio.to_thread(log.read_text, errors="replace"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {log}")
