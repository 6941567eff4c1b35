"""History growth and a long session across continue-as-new.

One session takes `history_turns` sequential turns (1,000 by default; PARLEY_TURNS_PER_RUN
500 puts at least one continue-as-new in it). Afterwards every run's history is fetched and
each event is attributed to the turn whose Update was accepted last before it, so a turn's
cost is the events and bytes written while it was the newest message. Reported: the mean per
turn over turns 1-10 and over the ten turns ending at turn 500 (target ratio ≤ 1.2: no
transcript copied into history), runs and the events each held, client-visible errors
(target zero) and whether the transcript read back is complete.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any, TypedDict

from sqlalchemy import select
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

from bench.client import create_agent, open_session, send
from bench.measure import ratio, summary_ms
from bench.sizes import Sizes
from bench.stack import Stack
from src.db.engine import create_engine, session_factory
from src.db.tables import ChatSession

_WINDOW = 10
_ACCEPTED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED


async def run_history_benchmarks(stack: Stack, sizes: Sizes) -> dict[str, Any]:
    errors: Counter[str] = Counter()
    latencies: list[float] = []
    async with stack.http(connections=2) as http:
        agent = await create_agent(http, "echo")
        opened = await open_session(http, agent)
        if not opened.ok:
            raise RuntimeError(f"could not open a session: {opened.status} {opened.error}")
        session_id = str(opened.body["id"])
        slowest: list[tuple[float, int]] = []
        started = time.monotonic()
        for n in range(1, sizes.history_turns + 1):
            turn = await send(http, session_id, f"turn {n}")
            if turn.ok and turn.body["messages"][-1]["content"] == f"echo: turn {n}":
                latencies.append(turn.seconds)
                slowest = sorted([*slowest, (turn.seconds, n)], reverse=True)[:5]
            else:
                errors[f"HTTP {turn.status}" if not turn.ok else "wrong reply"] += 1
        seconds = time.monotonic() - started
        transcript = (await http.get(f"/chats/{session_id}")).json()["messages"]

    runs = await _runs(stack, session_id)
    per_turn = _attribute(runs)
    middle = min(500, sizes.history_turns)
    early = _window(per_turn, _WINDOW)
    late = _window(per_turn, middle)
    window_of_every_hundred = {
        str(end): _window(per_turn, end) for end in range(100, sizes.history_turns + 1, 100)
    }
    expected = [f"turn {n}" for n in range(1, sizes.history_turns + 1)]
    said = [m["content"] for m in transcript if m["role"] == "user"]
    return {
        "turns": sizes.history_turns,
        "turns_per_run": sizes.turns_per_run,
        "client_visible_errors": sum(errors.values()),
        "errors": dict(errors),
        "transcript_complete": said == expected and len(transcript) == 2 * len(expected),
        "turn_latency": summary_ms(latencies),
        "turn_latency_first_100": summary_ms(latencies[:100]),
        "turn_latency_last_100": summary_ms(latencies[-100:]),
        "turns_per_second": round(sizes.history_turns / seconds, 1),
        "slowest_turns": [{"turn": n, "ms": round(1000 * s, 1)} for s, n in slowest],
        "run_first_turns": _first_turns(runs),
        "runs": [
            {"events": len(events), "bytes": sum(e.ByteSize() for e in events)} for events in runs
        ],
        "per_turn_early": early,
        "per_turn_late": late,
        "late_turn": middle,
        "bytes_ratio": ratio(late["bytes"], early["bytes"]),
        "events_ratio": ratio(late["events"], early["events"]),
        "per_turn_by_hundred": window_of_every_hundred,
        "targets": {"bytes_ratio_at_most": 1.2, "client_visible_errors": 0},
    }


async def _runs(stack: Stack, session_id: str) -> list[list[HistoryEvent]]:
    """Every run of the session's workflow, oldest first, as its events."""
    engine = create_engine(stack.database_url)
    try:
        async with session_factory(engine)() as db:
            workflow_id = await db.scalar(
                select(ChatSession.workflow_id).where(ChatSession.id == session_id)
            )
    finally:
        await engine.dispose()
    client: Client = stack.client
    executions = [e async for e in client.list_workflows(f'WorkflowId = "{workflow_id}"')]
    executions.sort(key=lambda e: e.start_time)
    histories = []
    for execution in executions:
        handle = client.get_workflow_handle(workflow_id, run_id=execution.run_id)
        histories.append(list((await handle.fetch_history()).events))
    return histories


def _attribute(runs: list[list[HistoryEvent]]) -> dict[int, dict[str, int]]:
    """Events and bytes by turn (0: the open, before the first message)."""
    per_turn: dict[int, dict[str, int]] = {}
    turn = 0
    for events in runs:
        for event in events:
            if event.event_type == _ACCEPTED:
                turn = _turn_of(event, turn)
            totals = per_turn.setdefault(turn, {"events": 0, "bytes": 0})
            totals["events"] += 1
            totals["bytes"] += event.ByteSize()
    return per_turn


def _first_turns(runs: list[list[HistoryEvent]]) -> list[int]:
    """The first turn answered by each run (where the continue-as-new boundaries fell)."""
    firsts = []
    for events in runs:
        turns = [_turn_of(e, 0) for e in events if e.event_type == _ACCEPTED]
        firsts.append(next((t for t in turns if t > 0), 0))
    return firsts


def _turn_of(event: HistoryEvent, current: int) -> int:
    """The turn number in an accepted `send_message` ("turn <n>"); others keep `current`."""
    request = event.workflow_execution_update_accepted_event_attributes.accepted_request
    if request.input.name != "send_message" or not request.input.args.payloads:
        return current
    content = str(json.loads(request.input.args.payloads[0].data).get("content", ""))
    return int(content.split()[1]) if content.startswith("turn ") else current


class Window(TypedDict):
    """Mean events and bytes per turn over the turns `first-last`."""

    turns: str
    events: float
    bytes: float


def _window(per_turn: dict[int, dict[str, int]], last: int) -> Window:
    """Mean events and bytes per turn over the `_WINDOW` turns ending at `last`."""
    turns = [
        per_turn.get(n, {"events": 0, "bytes": 0}) for n in range(last - _WINDOW + 1, last + 1)
    ]
    return {
        "turns": f"{last - _WINDOW + 1}-{last}",
        "events": round(sum(t["events"] for t in turns) / len(turns), 1),
        "bytes": round(sum(t["bytes"] for t in turns) / len(turns), 1),
    }
