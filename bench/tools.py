"""Tool-call overhead: turns whose model calls one stdio MCP tool (`mcp-server-time`'s
`get_current_time`), against the same turn with no tool, and against calling the same
server's tool from this process with the MCP SDK on a warm session; the three interleaved in
blocks of ten so that all see the same machine.

tool-call overhead = (tool turn - plain turn) - direct warm call, at p50 (and the same sum of
p95s, a rougher figure). A tool turn also asks the model a second time (it reads the tool's
answer), so that call is part of the overhead. The cold figures: the server started,
initialised and asked once from here, and tool turns through a worker that starts a server
per call (PARLEY_MCP_STDIO_MAX_SERVERS=0, as every call did before servers were kept warm).
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from mcp import Client, StdioServerParameters
from temporalio.api.enums.v1 import EventType

from bench.client import Timed, create_agent, open_session, send
from bench.history import _runs
from bench.measure import summary_ms
from bench.sizes import Sizes
from bench.stack import Stack
from bench.turns import _interleaved

TIME_SERVER = "mcp-server-time"
TOOL = "get_current_time"
ARGUMENTS = {"timezone": "UTC"}
_WARMUP = 5
SERVERS_SETTING = "PARLEY_MCP_STDIO_MAX_SERVERS"


async def run_tool_benchmarks(stack: Stack, sizes: Sizes) -> dict[str, Any]:
    errors: Counter[str] = Counter()
    mcp_tool = {"type": "mcp", "server": {"command": [TIME_SERVER]}}
    async with stack.http(connections=4) as http:
        tool_agent = await create_agent(http, f"tool-{TOOL}", [mcp_tool])
        plain_agent = await create_agent(http, "echo")
        # The worker's first open of the agent discovers its tools: the server's cold start.
        first_open = await open_session(http, tool_agent)
        tool_session = _session_id(first_open)
        first_tool_turn = await send(http, tool_session, json.dumps(ARGUMENTS))
        plain_session = _session_id(await open_session(http, plain_agent))

        async with _direct_session() as direct:

            async def tool_turn(n: int) -> float | None:
                turn = await send(http, tool_session, json.dumps(ARGUMENTS))
                return _tool_answered(turn, errors)

            async def plain_turn(n: int) -> float | None:
                turn = await send(http, plain_session, f"turn {n}")
                if turn.ok:
                    return turn.seconds
                errors[f"plain turn: HTTP {turn.status}"] += 1
                return None

            async def direct_call(n: int) -> float | None:
                started = time.perf_counter()
                result = await direct.call_tool(TOOL, ARGUMENTS)
                if result.is_error:
                    errors["direct call: tool error"] += 1
                    return None
                return time.perf_counter() - started

            drivers = {"tool": tool_turn, "plain": plain_turn, "direct": direct_call}
            for driver in drivers.values():
                for n in range(_WARMUP):
                    await driver(-n)
            found = await _interleaved(drivers, sizes.tool_turns)

        inside = await _activity_times(stack, tool_session)
        spawning = await _tool_turns_spawning_per_call(stack, http, tool_agent, sizes, errors)

    cold_answer, cold_total = [], []
    for _ in range(sizes.cold_spawns):
        answered, stopped = await _cold_call()
        cold_answer.append(answered)
        cold_total.append(stopped)
    tool, plain, direct_s = (summary_ms(found[name]) for name in ("tool", "plain", "direct"))
    return {
        "server": TIME_SERVER,
        "tool_turn": tool,
        "plain_turn": plain,
        "direct_warm_call": direct_s,
        "tool_call_overhead_p50_ms": _overhead(tool, plain, direct_s, "p50_ms"),
        "tool_call_overhead_p95_ms": _overhead(tool, plain, direct_s, "p95_ms"),
        "tool_turn_activities": inside,
        "tool_turn_server_per_call": summary_ms(spawning),
        "first_open_with_discovery_ms": round(first_open.seconds * 1000, 1),
        "first_tool_turn_ms": round(first_tool_turn.seconds * 1000, 1),
        "cold_spawn_to_answer": summary_ms(cold_answer),
        "cold_spawn_with_stop": summary_ms(cold_total),
        "errors": dict(errors),
    }


async def _tool_turns_spawning_per_call(
    stack: Stack, http: httpx.AsyncClient, agent_id: str, sizes: Sizes, errors: Counter[str]
) -> list[float]:
    """Tool turns through a worker with no warm servers, then the usual worker again."""
    stack.options.worker_env[SERVERS_SETTING] = "0"
    try:
        await stack.restart_worker()
        session = _session_id(await open_session(http, agent_id))
        found = []
        for _ in range(sizes.cold_spawns):
            elapsed = _tool_answered(await send(http, session, json.dumps(ARGUMENTS)), errors)
            if elapsed is not None:
                found.append(elapsed)
    finally:
        del stack.options.worker_env[SERVERS_SETTING]
        await stack.restart_worker()
    return found


async def _activity_times(stack: Stack, session_id: str) -> dict[str, dict[str, Any]]:
    """Per activity type in the session's history: scheduled -> started (waiting for a
    worker) and started -> completed (running), from the server's event times."""
    waits: dict[str, list[float]] = {}
    runs: dict[str, list[float]] = {}
    for events in await _runs(stack, session_id):
        scheduled: dict[int, tuple[str, float]] = {}
        started: dict[int, float] = {}
        for event in events:
            at = event.event_time.ToNanoseconds() / 1e9
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                name = event.activity_task_scheduled_event_attributes.activity_type.name
                scheduled[event.event_id] = (name, at)
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                started[event.activity_task_started_event_attributes.scheduled_event_id] = at
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                key = event.activity_task_completed_event_attributes.scheduled_event_id
                name, scheduled_at = scheduled[key]
                waits.setdefault(name, []).append(started[key] - scheduled_at)
                runs.setdefault(name, []).append(at - started[key])
    return {
        name: {"waiting": summary_ms(waits[name]), "running": summary_ms(runs[name])}
        for name in runs
    }


def _overhead(
    tool: dict[str, float], plain: dict[str, float], direct: dict[str, float], key: str
) -> float:
    return round(tool[key] - plain[key] - direct[key], 2)


def _time_server() -> StdioServerParameters:
    """The server as Parley's worker finds it: the console script beside this Python."""
    return StdioServerParameters(command=str(Path(sys.executable).parent / TIME_SERVER))


@asynccontextmanager
async def _direct_session() -> AsyncIterator[Client]:
    async with Client(_time_server(), cache=None) as client:
        yield client


async def _cold_call() -> tuple[float, float]:
    """Seconds until the first answer of a newly started server, and until it has stopped."""
    started = time.perf_counter()
    async with _direct_session() as client:
        await client.call_tool(TOOL, ARGUMENTS)
        answered = time.perf_counter() - started
    return answered, time.perf_counter() - started


def _session_id(opened: Timed) -> str:
    if not opened.ok:
        raise RuntimeError(f"could not open a session: {opened.status} {opened.error}")
    return str(opened.body["id"])


def _tool_answered(turn: Timed, errors: Counter[str]) -> float | None:
    """The turn's time if the tool answered (not an error result the model was given)."""
    if not turn.ok:
        errors[f"tool turn: HTTP {turn.status}"] += 1
        return None
    response = str(turn.body["messages"][0]["tool_calls"][0]["response"])
    if response.startswith("error"):
        errors["tool turn: tool error"] += 1
        return None
    return turn.seconds
