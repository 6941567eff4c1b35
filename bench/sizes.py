"""Benchmark sizes: `full` (the default, what docs/benchmarks.md reports) or `small`
(PARLEY_BENCH_SCALE=small: every benchmark in reduced form, a few minutes in all); any size can
be overridden by its own variable, e.g. PARLEY_BENCH_IDLE_SESSIONS=2000."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Sizes:
    scale: str
    # Turn overhead and anchor
    warmup_turns: int
    turns: int  # Parley turns in one session, and as many floor turns, interleaved
    opens: int  # sequential opens (update-with-start)
    anchor_turns: int
    breakdown_turns: int  # per side, timed against the workflow's history
    slow_model_ms: int  # the fixed-delay model's answer time
    slow_turns: int
    # Live followers
    stream_sessions: int
    stream_followers: int  # clients following each of them
    stream_turns: int
    # History growth
    history_turns: int
    turns_per_run: int  # PARLEY_TURNS_PER_RUN of the stack
    # Scale
    idle_sessions: int
    open_concurrency: int
    open_deadline_seconds: float
    max_cached_workflows: int  # PARLEY_MAX_CACHED_WORKFLOWS of the worker
    idle_cpu_seconds: float
    cold_sessions: int  # evicted sessions that send one message at once
    active_sessions: int
    load_seconds: float  # how long the active sessions send messages
    load_warmup_seconds: float  # left out of the sustained rate
    max_turns_per_session: int
    # More than one process (two workers, two APIs, one dev server, PostgreSQL)
    multi_cross_sessions: int  # opened through one API, talked to through the other
    multi_sessions: int  # in the closed loop, 1 worker vs 2 and under kills
    multi_load_seconds: float  # each closed-loop phase
    multi_kill_at_seconds: float  # into the kill phase: SIGKILL one worker and one API
    # History with tool calls and streaming
    history_tool_every: int  # every Nth turn the model calls a webhook tool
    history_stream_every: int  # every Nth turn is streamed over SSE
    # Tools: turns that call one stdio MCP tool, as many without, as many direct calls
    tool_turns: int
    cold_spawns: int  # the stdio server started, asked once and stopped, from the bench


FULL = Sizes(
    scale="full",
    warmup_turns=20,
    turns=300,
    opens=200,
    anchor_turns=100,
    breakdown_turns=100,
    slow_model_ms=200,
    slow_turns=30,
    stream_sessions=100,
    stream_followers=10,
    stream_turns=3,
    history_turns=2000,
    turns_per_run=500,
    idle_sessions=10_000,
    open_concurrency=50,
    open_deadline_seconds=900,
    # The worker's default: the 1,000 talking sessions fit, and the memory of 10,000 idle
    # ones is what a worker as shipped holds.
    max_cached_workflows=1000,
    idle_cpu_seconds=10,
    cold_sessions=200,
    active_sessions=1000,
    load_seconds=60,
    load_warmup_seconds=10,
    max_turns_per_session=1000,
    multi_cross_sessions=50,
    multi_sessions=200,
    multi_load_seconds=60,
    multi_kill_at_seconds=20,
    history_tool_every=10,
    history_stream_every=7,
    tool_turns=200,
    cold_spawns=10,
)

SMALL = dataclasses.replace(
    FULL,
    scale="small",
    warmup_turns=10,
    turns=60,
    opens=30,
    anchor_turns=20,
    breakdown_turns=40,
    slow_turns=10,
    stream_sessions=20,
    stream_followers=5,
    stream_turns=2,
    history_turns=120,
    turns_per_run=50,
    idle_sessions=500,
    open_deadline_seconds=120,
    max_cached_workflows=300,
    idle_cpu_seconds=5,
    cold_sessions=50,
    active_sessions=100,
    load_seconds=15,
    load_warmup_seconds=3,
    multi_cross_sessions=10,
    multi_sessions=40,
    multi_load_seconds=20,
    multi_kill_at_seconds=6,
    tool_turns=40,
    cold_spawns=4,
)


def sizes_from_environment() -> Sizes:
    scale = os.environ.get("PARLEY_BENCH_SCALE", "full").lower()
    if scale not in ("full", "small"):
        raise SystemExit(f"PARLEY_BENCH_SCALE must be full or small, not {scale!r}")
    chosen = FULL if scale == "full" else SMALL
    # Any: each value is parsed by its field's declared type, which mypy cannot follow.
    overrides: dict[str, Any] = {}
    for spec in dataclasses.fields(Sizes):
        value = os.environ.get(f"PARLEY_BENCH_{spec.name.upper()}")
        if value is not None and spec.name != "scale":
            overrides[spec.name] = float(value) if spec.type == "float" else int(value)
    return dataclasses.replace(chosen, **overrides)
