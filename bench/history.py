"""History growth and a long session across continue-as-new.

One session takes `history_turns` sequential turns (2,000 by default; PARLEY_TURNS_PER_RUN
500 puts continue-as-new in it): every `history_tool_every`th turn the model calls a webhook
tool (a fake on loopback), every `history_stream_every`th turn is streamed over SSE. Every run
must stay well under Temporal's history limits (51,200 events, 50 MB): reported are the
events and bytes of each run and the largest, per turn, and the continue-as-new count.

Afterwards every run's history is fetched and each event is attributed to the turn whose Update
was accepted last before it, so a turn's cost is the events and bytes written while it was the
newest message. Reported: the mean per turn over turns 1-10 and over the ten turns ending at
turn 500 (target ratio ≤ 1.2: no transcript copied into history), runs and the events each
held, client-visible errors (target zero) and whether the transcript read back is complete.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any, TypedDict

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

from bench.client import create_agent, open_session, send, stream_turn
from bench.measure import ratio, summary_ms
from bench.sizes import Sizes
from bench.stack import Stack
from tests.fakes.tool_server import FakeToolServer
from tests.servers import served

_WINDOW = 10
_TOOL = "lookup"
_SSE = {"Accept": "text/event-stream"}
# Temporal's limits on one run's history (the server refuses a run past them).
HISTORY_EVENTS_LIMIT = 51_200
HISTORY_BYTES_LIMIT = 50 * 1024 * 1024
_ACCEPTED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED


async def run_history_benchmarks(stack: Stack, sizes: Sizes) -> dict[str, Any]:
    errors: Counter[str] = Counter()
    latencies: list[float] = []
    tool_server = FakeToolServer()
    async with served(tool_server.app) as tools_url, stack.http(connections=2) as http:
        agent = await create_agent(http, f"maybe-{_TOOL}", [_lookup_tool(tools_url)])
        opened = await open_session(http, agent)
        if not opened.ok:
            raise RuntimeError(f"could not open a session: {opened.status} {opened.error}")
        session_id = str(opened.body["id"])
        slowest: list[tuple[float, int]] = []
        started = time.monotonic()
        for n in range(1, sizes.history_turns + 1):
            content = _content(n, sizes)
            if n % sizes.history_stream_every == 0:
                seconds, error = await _streamed_turn(http, session_id, content)
            else:
                seconds, error = await _plain_turn(http, session_id, content)
            if error is None:
                latencies.append(seconds)
                slowest = sorted([*slowest, (seconds, n)], reverse=True)[:5]
            else:
                errors[error] += 1
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
    expected = [_content(n, sizes) for n in range(1, sizes.history_turns + 1)]
    tool_turns = sum(1 for n in range(1, sizes.history_turns + 1) if _calls_tool(n, sizes))
    said = [m["content"] for m in transcript if m["role"] == "user"]
    sizes_of_runs = [
        {"events": len(events), "bytes": sum(e.ByteSize() for e in events)} for events in runs
    ]
    return {
        "turns": sizes.history_turns,
        "turns_per_run": sizes.turns_per_run,
        "tool_turns": tool_turns,
        "tool_calls_received": len(tool_server.calls_to("/echo")),
        "tool_calls_answered_in_transcript": _tool_calls_answered(transcript),
        "streamed_turns": sizes.history_turns // sizes.history_stream_every,
        "client_visible_errors": sum(errors.values()),
        "errors": dict(errors),
        "transcript_complete": said == expected
        and len(transcript) == 2 * len(expected) + tool_turns,
        "turn_latency": summary_ms(latencies),
        "turn_latency_first_100": summary_ms(latencies[:100]),
        "turn_latency_last_100": summary_ms(latencies[-100:]),
        "turns_per_second": round(sizes.history_turns / seconds, 1),
        "slowest_turns": [{"turn": n, "ms": round(1000 * s, 1)} for s, n in slowest],
        "run_first_turns": _first_turns(runs),
        "runs": sizes_of_runs,
        "continue_as_new_count": len(runs) - 1,
        "max_run_events": max(r["events"] for r in sizes_of_runs),
        "max_run_bytes": max(r["bytes"] for r in sizes_of_runs),
        "per_turn_overall": {
            "events": round(sum(r["events"] for r in sizes_of_runs) / sizes.history_turns, 1),
            "bytes": round(sum(r["bytes"] for r in sizes_of_runs) / sizes.history_turns, 1),
        },
        "per_turn_max": {
            "events": max(t["events"] for t in per_turn.values()),
            "bytes": max(t["bytes"] for t in per_turn.values()),
        },
        "per_turn_early": early,
        "per_turn_late": late,
        "per_turn_last": _window(per_turn, sizes.history_turns),
        "late_turn": middle,
        "bytes_ratio": ratio(late["bytes"], early["bytes"]),
        "events_ratio": ratio(late["events"], early["events"]),
        "per_turn_by_hundred": window_of_every_hundred,
        "targets": {
            "bytes_ratio_at_most": 1.2,
            "client_visible_errors": 0,
            "run_events_below": HISTORY_EVENTS_LIMIT,
            "run_bytes_below": HISTORY_BYTES_LIMIT,
        },
    }


def _lookup_tool(tools_url: str) -> dict[str, Any]:
    return {
        "type": "webhook",
        "name": _TOOL,
        "description": "Looks up the turn it is given.",
        "parameters": {"type": "object", "properties": {"turn": {"type": "integer"}}},
        "url": f"{tools_url}/echo",
        "method": "POST",
    }


def _tool_calls_answered(transcript: list[dict[str, Any]]) -> int:
    """Tool calls in the transcript whose response is what the tool echoed: their arguments
    (tests/fakes/tool_server.py answers /echo with {"received": <arguments>})."""
    calls = [c for m in transcript for c in m.get("tool_calls") or []]
    return sum(
        1
        for c in calls
        if c["response"] and _parsed(c["response"]) == {"received": _parsed(c["arguments"])}
    )


def _parsed(value: Any) -> Any:
    try:
        return json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError:
        return value


def _calls_tool(n: int, sizes: Sizes) -> bool:
    return n % sizes.history_tool_every == 0


def _content(n: int, sizes: Sizes) -> str:
    """What turn n says: a JSON object on tool turns (model maybe-lookup calls the tool with
    it as arguments), plain text otherwise."""
    return json.dumps({"turn": n}) if _calls_tool(n, sizes) else f"turn {n}"


def _expected_reply(content: str) -> str:
    # The fake model says goodbye after a tool result (tests/fakes/llm_server.py).
    return "Goodbye from the fake model." if content.startswith("{") else f"echo: {content}"


async def _plain_turn(
    http: httpx.AsyncClient, session_id: str, content: str
) -> tuple[float, str | None]:
    """The turn's seconds and what went wrong, if anything."""
    turn = await send(http, session_id, content)
    if not turn.ok:
        return turn.seconds, f"HTTP {turn.status}"
    if turn.body["messages"][-1]["content"] != _expected_reply(content):
        return turn.seconds, "wrong reply"
    return turn.seconds, None


async def _streamed_turn(
    http: httpx.AsyncClient, session_id: str, content: str
) -> tuple[float, str | None]:
    """The same turn over SSE, read to its `done` event; the reply is the last `message`."""
    turn = await stream_turn(http, session_id, content)
    if turn.error is not None:
        return turn.seconds, turn.error
    if not turn.replies or turn.replies[-1] != _expected_reply(content):
        return turn.seconds, "stream: wrong reply"
    return turn.seconds, None


async def _runs(stack: Stack, session_id: str) -> list[list[HistoryEvent]]:
    """Every run of the session's workflow, oldest first, as its events."""
    workflow_id = await stack.workflow_id(session_id)
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
    """The turn number in an accepted `send_message` ("turn <n>" or {"turn": n}); others keep
    `current`."""
    request = event.workflow_execution_update_accepted_event_attributes.accepted_request
    if request.input.name != "send_message" or not request.input.args.payloads:
        return current
    content = str(json.loads(request.input.args.payloads[0].data).get("content", ""))
    if content.startswith("{"):  # a tool turn: {"turn": n}
        return int(json.loads(content).get("turn", current))
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
