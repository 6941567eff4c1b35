"""A closed-loop load: many conversations, each sending its next turn as soon as the last is
answered, for a bounded time; the sustained rate, latency and CPU per process over the window
after a warm-up. Used by the scale and the multi-process benchmarks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from bench.measure import CpuSample, summary_ms
from bench.stack import Stack

# One turn of one conversation: n → whether it succeeded.
Turn = Callable[[int], Awaitable[bool]]

# httpx's pool does work per pooled connection on every request: one client per group of
# sessions keeps the benchmark's own CPU small next to what it measures.
SESSIONS_PER_CLIENT = 20


@dataclass(frozen=True)
class LoadWindow:
    seconds: float  # how long conversations start new turns
    warmup_seconds: float  # left out of the sustained rate
    max_turns_per_session: int


@dataclass
class _Done:
    started: float  # seconds since the load began
    seconds: float
    ok: bool


async def closed_loop(
    stack: Stack, conversations: list[Turn], window: LoadWindow, processes: Sequence[str]
) -> dict[str, Any]:
    """Each conversation sends its next turn as soon as the last is answered, until
    `window.seconds` (at most `max_turns_per_session` turns); the rate and latency count the
    turns answered between the warm-up and `window.seconds`, CPU is sampled over the same
    span for each of `processes`. (Counting only turns also begun after the warm-up counts
    almost none once a turn takes longer than the window: with 1,000 conversations in a
    closed loop a turn waits ~1,000 / rate s.)"""
    done: list[_Done] = []
    cpu: dict[str, float] = {}
    began = time.monotonic()

    async def talk(turn: Turn) -> None:
        for n in range(window.max_turns_per_session):
            at = time.monotonic() - began
            if at >= window.seconds:
                return
            ok = await turn(n)
            done.append(_Done(at, time.monotonic() - began - at, ok))

    async def sample_cpu() -> None:
        await asyncio.sleep(window.warmup_seconds)
        samples = {name: CpuSample.now(stack.pid(name)) for name in processes}
        await asyncio.sleep(window.seconds - window.warmup_seconds)
        cpu.update({name: sample.percent_since() for name, sample in samples.items()})

    await asyncio.gather(sample_cpu(), *(talk(turn) for turn in conversations))
    span = window.seconds - window.warmup_seconds
    steady = [
        d for d in done if d.ok and window.warmup_seconds <= d.started + d.seconds <= window.seconds
    ]
    rate = len(steady) / span if span > 0 else 0.0
    return {
        "turns_completed": sum(1 for d in done if d.ok),
        "turns_per_second": round(rate, 1),
        "turn_latency": summary_ms([d.seconds for d in steady]),
        "cpu_percent_of_one_core": cpu,
        # % of a core at `rate` turns a second: 10 * % / rate ms of CPU a turn.
        "cpu_ms_per_turn": {name: round(10 * pct / rate, 2) for name, pct in cpu.items()}
        if rate
        else {},
    }


def client_groups(stack: Stack, sessions: int, api: str = "api") -> list[httpx.AsyncClient]:
    """HTTP clients of API process `api` for `sessions` conversations: session i uses
    client i // SESSIONS_PER_CLIENT."""
    groups = max(1, -(-sessions // SESSIONS_PER_CLIENT))
    return [
        stack.http(connections=SESSIONS_PER_CLIENT, timeout=120, api=api) for _ in range(groups)
    ]


async def close_all(clients: Sequence[httpx.AsyncClient]) -> None:
    for http in clients:
        await http.aclose()
