"""Turn overhead and the anchor comparison.

Parley: API message → reply over sequential turns of one session (model `echo`). The floor,
measured in the same run and interleaved with Parley in blocks of ten turns so that both see
the same machine: a bare workflow whose one Update runs one activity making the same model
call (and, for reference, one whose activity does nothing). The anchor: the same turn done
the temporal-ai-agent way, a Signal then a Query polled every 50 ms until the reply appears.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from temporalio.client import Client, WithStartWorkflowOperation, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy

from bench.bare import ANCHOR_WORKFLOW, FLOOR_WORKFLOW, Conversation, Turn
from bench.breakdown import TimedTurn, phases_ms, timed_turns
from bench.client import Timed, create_agent, open_session, send
from bench.measure import cpu_seconds, ratio, summary_ms
from bench.sizes import Sizes
from bench.stack import BARE_TASK_QUEUE, Stack

_BLOCK = 10
_POLL_SECONDS = 0.05
_MAX_POLLS = 400  # 20 s: a reply not seen by then counts as an error


async def run_turn_benchmarks(stack: Stack, sizes: Sizes) -> dict[str, Any]:
    errors: Counter[str] = Counter()
    async with stack.http(connections=4) as http:
        echo = await create_agent(http, "echo")
        slow = await create_agent(http, f"slow-{sizes.slow_model_ms}")
        session = await _open(http, echo)
        floor = await _start(stack.client, FLOOR_WORKFLOW)
        anchor = await _start(stack.client, ANCHOR_WORKFLOW)

        async def parley_turn(n: int) -> float | None:
            return _ok(await send(http, session, f"turn {n}"), errors, "parley_turn")

        async def floor_turn(n: int) -> float | None:
            return await _timed_call(floor_update(floor, f"turn {n}", "echo"), errors, "floor")

        async def noop_turn(n: int) -> float | None:
            update = floor_update(floor, f"turn {n}", "echo", call_model=False)
            return await _timed_call(update, errors, "floor_noop")

        async def local_turn(n: int) -> float | None:
            update = floor_update(floor, f"turn {n}", "echo", local_activity=True)
            return await _timed_call(update, errors, "floor_local")

        drivers = {
            "parley": parley_turn,
            "floor": floor_turn,
            "floor_noop": noop_turn,
            "floor_local": local_turn,
        }
        for driver in drivers.values():
            for n in range(sizes.warmup_turns):
                await driver(-n)
        pids = {name: stack.pid(name) for name in ("temporal", "worker", "api", "bare", "llm")}
        cpu: dict[str, dict[str, float]] = {}
        turns = await _interleaved(drivers, sizes.turns, cpu, pids)

        anchor_turns: list[float] = []
        for n in range(sizes.warmup_turns + sizes.anchor_turns):
            elapsed = await _anchor_turn(anchor, f"turn {n}", 2 * (n + 1), errors)
            if elapsed is not None and n >= sizes.warmup_turns:
                anchor_turns.append(elapsed)

        async def parley_open(n: int) -> float | None:
            return _ok(await open_session(http, echo), errors, "parley_open")

        async def floor_open(n: int) -> float | None:
            return await _timed_call(_floor_open(stack.client), errors, "floor_open")

        opens = await _interleaved({"parley": parley_open, "floor": floor_open}, sizes.opens)

        slow_session = await _open(http, slow)
        slow_model = f"slow-{sizes.slow_model_ms}"

        async def parley_slow(n: int) -> float | None:
            return _ok(await send(http, slow_session, f"slow {n}"), errors, "parley_slow")

        async def floor_slow(n: int) -> float | None:
            return await _timed_call(floor_update(floor, f"s {n}", slow_model), errors, "floor")

        slow_turns = await _interleaved(
            {"parley": parley_slow, "floor": floor_slow}, sizes.slow_turns
        )
        breakdown = await _breakdown(stack, http, echo, floor, sizes.breakdown_turns)
        for handle in (floor, anchor):
            await handle.signal("stop")

    parley, floor_s = summary_ms(turns["parley"]), summary_ms(turns["floor"])
    anchor_s = summary_ms(anchor_turns)
    early, late = turns["parley"][:50], turns["parley"][-50:]
    return {
        "parley_turn": parley,
        "floor_turn": floor_s,
        "floor_turn_noop_activity": summary_ms(turns["floor_noop"]),
        "floor_turn_local_activity": summary_ms(turns["floor_local"]),
        "ratio_p50": ratio(parley["p50_ms"], floor_s["p50_ms"]),
        "ratio_p95": ratio(parley["p95_ms"], floor_s["p95_ms"]),
        "cpu_ms_per_turn": _cpu_ms_per_turn(cpu, turns),
        "parley_turn_first_50": summary_ms(early),
        "parley_turn_last_50": summary_ms(late),
        "parley_open": summary_ms(opens["parley"]),
        "floor_open": summary_ms(opens["floor"]),
        "anchor_turn": anchor_s,
        "anchor_over_parley_p50": ratio(anchor_s["p50_ms"], parley["p50_ms"]),
        "slow_model": {
            "model_ms": sizes.slow_model_ms,
            "parley_turn": summary_ms(slow_turns["parley"]),
            "floor_turn": summary_ms(slow_turns["floor"]),
        },
        "breakdown_ms": breakdown,
        "errors": dict(errors),
        "targets": {
            "parley_over_floor_p50_at_most": 1.2,
            "parley_over_floor_p95_at_most": 1.3,
            "open_over_floor_p50_at_most": 1.2,
        },
    }


async def _breakdown(
    stack: Stack,
    http: Any,
    agent: str,
    floor: WorkflowHandle[Any, Any],
    count: int,
) -> dict[str, dict[str, float | int]]:
    """Where the milliseconds of a turn go (bench/breakdown.py), Parley beside the floor, in
    alternating blocks, on a fresh session (so that no continue-as-new falls among them)."""
    session = await _open(http, agent)
    handle = stack.client.get_workflow_handle(await stack.workflow_id(session))
    parley_turns: list[TimedTurn] = []
    floor_turns: list[TimedTurn] = []
    for start in range(0, count, 2 * _BLOCK):
        block = min(2 * _BLOCK, count - start)
        parley_turns += await timed_turns(block, lambda n: send(http, session, f"b {n}"))
        floor_turns += await timed_turns(block, lambda n: floor_update(floor, f"b {n}", "echo"))
    return {
        "parley": await phases_ms(handle, parley_turns),
        "floor": await phases_ms(floor, floor_turns),
    }


def floor_update(
    handle: WorkflowHandle[Any, Any],
    content: str,
    model: str,
    call_model: bool = True,
    local_activity: bool = False,
) -> Awaitable[str]:
    turn = Turn(content=content, model=model, call_model=call_model, local_activity=local_activity)
    return handle.execute_update("turn", turn, result_type=str)


async def _interleaved(
    drivers: Mapping[str, Callable[[int], Awaitable[float | None]]],
    count: int,
    cpu: dict[str, dict[str, float]] | None = None,
    pids: dict[str, int] | None = None,
) -> dict[str, list[float]]:
    """`count` calls of each driver, alternating blocks of ten, successful latencies only.
    With `pids`, the CPU each process spent during each driver's blocks adds to `cpu`."""
    found: dict[str, list[float]] = {name: [] for name in drivers}
    for start in range(0, count, _BLOCK):
        for name, driver in drivers.items():
            before = {process: cpu_seconds(pid) for process, pid in (pids or {}).items()}
            for n in range(start, min(start + _BLOCK, count)):
                elapsed = await driver(n)
                if elapsed is not None:
                    found[name].append(elapsed)
            if cpu is not None and pids:
                spent = cpu.setdefault(name, {})
                for process, pid in pids.items():
                    spent[process] = spent.get(process, 0.0) + cpu_seconds(pid) - before[process]
    return found


def _cpu_ms_per_turn(
    cpu: dict[str, dict[str, float]], turns: dict[str, list[float]]
) -> dict[str, dict[str, float]]:
    return {
        name: {
            process: round(1000 * seconds / max(1, len(turns[name])), 2)
            for process, seconds in spent.items()
        }
        for name, spent in cpu.items()
    }


async def _open(http: Any, agent_id: str) -> str:
    opened = await open_session(http, agent_id)
    if not opened.ok:
        raise RuntimeError(f"could not open a session: {opened.status} {opened.error}")
    return str(opened.body["id"])


async def _start(client: Client, workflow: str) -> WorkflowHandle[Any, Any]:
    return await client.start_workflow(
        workflow, id=f"bench-{workflow}-{uuid.uuid4()}", task_queue=BARE_TASK_QUEUE
    )


async def _floor_open(client: Client) -> str:
    """The floor of an open: update-with-start whose update runs one (empty) activity."""
    workflow_id = f"bench-open-{uuid.uuid4()}"
    result: str = await client.execute_update_with_start_workflow(
        "turn",
        Turn(content="open", call_model=False),
        start_workflow_operation=WithStartWorkflowOperation(
            FLOOR_WORKFLOW,
            id=workflow_id,
            task_queue=BARE_TASK_QUEUE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        ),
        result_type=str,
    )
    await client.get_workflow_handle(workflow_id).signal("stop")
    return result


async def _anchor_turn(
    handle: WorkflowHandle[Any, Any], content: str, expected: int, errors: Counter[str]
) -> float | None:
    started = time.perf_counter()
    try:
        await handle.signal("user_prompt", Turn(content=content))
        for _ in range(_MAX_POLLS):
            await asyncio.sleep(_POLL_SECONDS)
            history = await handle.query("get_conversation_history", result_type=Conversation)
            if len(history.messages) >= expected:
                return time.perf_counter() - started
    except Exception as error:  # counted, reported by type
        errors[f"anchor: {type(error).__name__}"] += 1
        return None
    errors["anchor: no reply in time"] += 1
    return None


async def _timed_call(call: Awaitable[Any], errors: Counter[str], name: str) -> float | None:
    started = time.perf_counter()
    try:
        await call
    except Exception as error:  # counted, reported by type
        errors[f"{name}: {type(error).__name__}"] += 1
        return None
    return time.perf_counter() - started


def _ok(timed: Timed, errors: Counter[str], name: str) -> float | None:
    if timed.ok:
        return timed.seconds
    errors[f"{name}: HTTP {timed.status}"] += 1
    return None
