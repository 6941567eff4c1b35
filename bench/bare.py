"""Bench-only workflows with no Parley code, run by their own worker process
(`python -m bench.bare`), so they are measured the way Parley's worker is:

- `BenchFloorWorkflow`: one Update whose handler runs one activity (the model call, or
  nothing) and returns its answer: the floor a Temporal chat turn cannot go below.
- `BenchAnchorWorkflow`: the temporal-ai-agent way: a Signal delivers the message, the
  workflow answers it with the same activity, and the client polls a Query for the reply.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections import deque
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from openai import AsyncOpenAI

FLOOR_WORKFLOW = "BenchFloorWorkflow"
ANCHOR_WORKFLOW = "BenchAnchorWorkflow"
_ACTIVITY_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=60),
    "retry_policy": RetryPolicy(maximum_attempts=3),
}


class Turn(BaseModel):
    content: str
    model: str = "echo"
    call_model: bool = True
    local_activity: bool = False


class Conversation(BaseModel):
    messages: list[str]


class ModelCall:
    """The same call Parley's LLM activity makes: the `openai` client, Temporal owns retries."""

    def __init__(self, base_url: str) -> None:
        self._client = AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)

    @activity.defn(name="bench.complete")
    async def complete(self, turn: Turn) -> str:
        if not turn.call_model:
            return f"noop: {turn.content}"
        reply = await self._client.chat.completions.create(
            model=turn.model,
            messages=[
                {"role": "system", "content": "You help customers."},
                {"role": "user", "content": turn.content},
            ],
        )
        return reply.choices[0].message.content or ""


@workflow.defn(name=FLOOR_WORKFLOW)
class FloorWorkflow:
    def __init__(self) -> None:
        self._stop = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self._stop)
        await workflow.wait_condition(workflow.all_handlers_finished)

    @workflow.update(name="turn")
    async def turn(self, turn: Turn) -> str:
        reply: str
        if turn.local_activity:
            reply = await workflow.execute_local_activity(
                "bench.complete", turn, result_type=str, **_ACTIVITY_OPTIONS
            )
        else:
            reply = await workflow.execute_activity(
                "bench.complete", turn, result_type=str, **_ACTIVITY_OPTIONS
            )
        return reply

    @workflow.signal(name="stop")
    def stop(self) -> None:
        self._stop = True


@workflow.defn(name=ANCHOR_WORKFLOW)
class AnchorWorkflow:
    def __init__(self) -> None:
        self._stop = False
        self._inbox: deque[Turn] = deque()
        self._messages: list[str] = []

    @workflow.run
    async def run(self) -> None:
        while True:
            await workflow.wait_condition(lambda: bool(self._inbox) or self._stop)
            if self._stop:
                return
            turn = self._inbox.popleft()
            self._messages.append(turn.content)
            reply = await workflow.execute_activity(
                "bench.complete", turn, result_type=str, **_ACTIVITY_OPTIONS
            )
            self._messages.append(reply)

    @workflow.signal(name="user_prompt")
    def user_prompt(self, turn: Turn) -> None:
        self._inbox.append(turn)

    @workflow.query(name="get_conversation_history")
    def get_conversation_history(self) -> Conversation:
        return Conversation(messages=self._messages)

    @workflow.signal(name="stop")
    def stop(self) -> None:
        self._stop = True


async def _serve(address: str, task_queue: str, llm_base_url: str) -> None:
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    model = ModelCall(llm_base_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[FloorWorkflow, AnchorWorkflow],
        activities=[model.complete],
    ):
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="worker for the bench-only workflows")
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--llm-base-url", required=True)
    args = parser.parse_args()
    asyncio.run(_serve(args.address, args.task_queue, args.llm_base_url))


if __name__ == "__main__":
    main()
