"""Where a turn's milliseconds go, read from the workflow's own history.

Each turn is timed by the client (wall clock before the request, after the reply) and the
server stamps every history event; on one machine the clocks agree, so a turn splits into:

- `to_server`: request sent → the update's workflow task scheduled (Parley: HTTP, auth, the
  API's session lookup, the update RPC; floor: the update RPC);
- `first_task`: that workflow task scheduled → completed (the task's trip to the worker and
  back, the workflow code that accepts the update and schedules the activity);
- `activity_queue`: activity scheduled → started (its trip to the worker);
- `activity`: started → completed (Parley: transcript read, stream writes and the model call;
  floor: the model call);
- `last_task`: activity completed → the update completed (the workflow task that takes the
  result: Parley records the turn's messages there, in a local activity);
- `to_client`: update completed → reply received (the server answering the update, the API's
  response).

The parts add up to the client's latency; their medians are reported for Parley and the floor
side by side.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHandle

from bench.measure import percentile

PHASES = ("to_server", "first_task", "activity_queue", "activity", "last_task", "to_client")
_EVENTS = (
    "first_scheduled",
    "first_completed",
    "activity_scheduled",
    "activity_started",
    "activity_completed",
    "update_completed",
)


@dataclass
class TimedTurn:
    sent: float  # time.time() before the request
    answered: float  # time.time() after the reply


async def timed_turns(count: int, turn: Callable[[int], Awaitable[object]]) -> list[TimedTurn]:
    turns = []
    for n in range(count):
        sent = time.time()
        await turn(n)
        turns.append(TimedTurn(sent, time.time()))
    return turns


async def phases_ms(
    handle: WorkflowHandle[Any, Any], turns: list[TimedTurn]
) -> dict[str, float | int]:
    """The median of each phase over `turns`, all taken by the one workflow of `handle` (in
    its current run), in ms, with how many turns were matched: a turn is the update whose
    workflow task was scheduled while the client waited for it."""
    history = await handle.fetch_history()
    updates = [
        {name: _seconds(event) for name, event in events.items()}
        for events in _update_spans(history.events)
    ]
    parts: dict[str, list[float]] = {phase: [] for phase in PHASES}
    for timed in turns:
        matched = [
            at
            for at in updates
            if len(at) == len(_EVENTS) and timed.sent <= at["first_scheduled"] <= timed.answered
        ]
        if len(matched) != 1:
            continue  # an incomplete turn, or one the history does not tell apart: left out
        [at] = matched
        spans = {
            "to_server": at["first_scheduled"] - timed.sent,
            "first_task": at["first_completed"] - at["first_scheduled"],
            "activity_queue": at["activity_started"] - at["activity_scheduled"],
            "activity": at["activity_completed"] - at["activity_started"],
            "last_task": at["update_completed"] - at["activity_completed"],
            "to_client": timed.answered - at["update_completed"],
        }
        for phase, seconds in spans.items():
            parts[phase].append(seconds * 1000)
    found: dict[str, float | int] = {
        phase: round(percentile(values, 50), 2) for phase, values in parts.items()
    }
    found["turns"] = len(parts["to_server"])
    return found


def _update_spans(events: Sequence[HistoryEvent]) -> list[dict[str, HistoryEvent]]:
    """Per update, in order: the workflow task that accepted it, its first activity, and its
    completion."""
    spans: list[dict[str, HistoryEvent]] = []
    task: dict[str, HistoryEvent] = {}
    current: dict[str, HistoryEvent] | None = None
    for event in events:
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
            task = {"first_scheduled": event}
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            task["first_completed"] = event
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            current = dict(task)
            spans.append(current)
        elif current is None:
            continue
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            current.setdefault("activity_scheduled", event)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            current.setdefault("activity_started", event)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            current.setdefault("activity_completed", event)
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED:
            current["update_completed"] = event
            current = None
    return spans


def _seconds(event: HistoryEvent) -> float:
    return event.event_time.seconds + event.event_time.nanos / 1e9
