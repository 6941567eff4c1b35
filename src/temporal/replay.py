"""Replaying recorded histories against the current workflow code, before it is deployed.

A workflow that is running (or sleeping for days) resumes on new code by replaying its history:
the new code must issue the same commands in the same order. Replay finds the change that would
break those sessions, with the event it breaks at and what to do about it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.runtime import Runtime
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from src.temporal.client import parley_plugin
from src.workflows.registry import WORKFLOWS

NONDETERMINISM_HINT = (
    "the workflow code now issues a different command at this point than the recorded history "
    "(another activity, timer, child workflow or marker, or the same ones in another order): "
    'guard the change with workflow.patched("<change-id>") so recorded runs keep the old path, '
    "or deploy it with worker versioning"
)
UNKNOWN_TYPE_HINT = (
    "the history is of a workflow type the current code does not register (renamed or "
    "removed?): workflow names are persisted API, keep the old name registered while runs of "
    "it may still exist"
)
PAYLOAD_HINT = (
    "a payload in the history could not be decoded: replay with the payload keys the workers "
    "used (PARLEY_PAYLOAD_KEYS), or a workflow input or update model changed incompatibly"
)
OTHER_HINT = "the workflow task failed during replay: read the error; the code cannot resume it"

# Core names the event in most messages ("... HistoryEvent(id: 6, TimerStarted)").
_EVENT_ID = re.compile(r"HistoryEvent\(id: (\d+)")
# The failure message inside Core's debug rendering of the failed activation.
_CORE_MESSAGE = re.compile(r'message: "((?:[^"\\]|\\.)*)"')
_QUOTED = re.compile(r"'([^']+)'")
# History events that record a command of the workflow code: where a replay can diverge.
_COMMAND_EVENTS = frozenset(
    {
        EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
        EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED,
        EventType.EVENT_TYPE_TIMER_STARTED,
        EventType.EVENT_TYPE_TIMER_CANCELED,
        EventType.EVENT_TYPE_MARKER_RECORDED,
        EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED,
        EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED,
        EventType.EVENT_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED,
        EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
        EventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
    }
)


@dataclass(frozen=True)
class RunReport:
    """The outcome of replaying one run; `error` is None when it replayed cleanly."""

    workflow_id: str
    run_id: str
    workflow_type: str
    error: str | None = None
    event_id: int | None = None
    hint: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


async def replay_histories(
    histories: Sequence[WorkflowHistory],
    data_converter: DataConverter,
    workflows: Sequence[type] = WORKFLOWS,
    runtime: Runtime | None = None,
) -> list[RunReport]:
    """Replay every history (in order) against `workflows`; never raises for a bad run.
    `runtime` lets the CLI replay with Core's console logging off."""
    if not histories:
        return []
    replayer = Replayer(
        workflows=list(workflows), plugins=[parley_plugin(data_converter)], runtime=runtime
    )
    failures = await _replay(replayer, histories)
    reports = []
    for history, failure in zip(histories, failures, strict=True):
        if failure is None:
            reports.append(_run(history))
            continue
        message = _core_message(str(failure))
        nondeterministic = _is_nondeterminism(failure, message)
        reports.append(
            replace(
                _run(history),
                error=f"{type(failure).__name__}: {message}",
                event_id=await _event_id(replayer, history, message) if nondeterministic else None,
                hint=NONDETERMINISM_HINT if nondeterministic else _hint(message),
            )
        )
    return reports


async def _replay(
    replayer: Replayer, histories: Sequence[WorkflowHistory]
) -> list[Exception | None]:
    """The replay failure of each history, in order; one replay worker for them all."""

    async def each() -> AsyncIterator[WorkflowHistory]:
        for history in histories:
            yield history

    async with replayer.workflow_replay_iterator(each()) as results:
        return [result.replay_failure async for result in results]


async def _event_id(replayer: Replayer, history: WorkflowHistory, message: str) -> int | None:
    """The event the replay broke at. Core names it in most messages. Otherwise bisect on
    prefixes of the history, cut between workflow tasks, for the first task that fails, and
    take its command event that the message quotes first (the recorded side), or its first."""
    named = _EVENT_ID.search(message)
    if named:
        return int(named.group(1))
    events = list(history.events)
    cuts = [
        index
        for index, event in enumerate(events)
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED and index > 1
    ] + [len(events)]
    low, high = 0, len(cuts) - 1  # the whole history (the last cut) fails
    while low < high:
        middle = (low + high) // 2
        prefix = WorkflowHistory(history.workflow_id, events[: cuts[middle]])
        [failure] = await _replay(replayer, [prefix])
        low, high = (middle + 1, high) if failure is None else (low, middle)
    failing = events[: cuts[low]]
    task_done = EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    completed = max((i for i, e in enumerate(failing) if e.event_type == task_done), default=0)
    commands = [e for e in failing[completed + 1 :] if e.event_type in _COMMAND_EVENTS]
    quoted = _QUOTED.findall(message)
    for event in commands:
        if quoted and quoted[0] in str(event):
            return int(event.event_id)
    return int(commands[0].event_id) if commands else int(failing[completed].event_id)


def _run(history: WorkflowHistory) -> RunReport:
    started = history.events[0].workflow_execution_started_event_attributes
    return RunReport(
        workflow_id=history.workflow_id,
        run_id=history.run_id,
        workflow_type=started.workflow_type.name,
    )


def _core_message(text: str) -> str:
    found = _CORE_MESSAGE.search(text)
    return found.group(1).replace('\\"', '"') if found else text


def _is_nondeterminism(failure: Exception, message: str) -> bool:
    return isinstance(failure, NondeterminismError) or "nondeterminism" in message.lower()


def _hint(message: str) -> str:
    lowered = message.lower()
    if "not registered" in lowered:
        return UNKNOWN_TYPE_HINT
    if "decod" in lowered or "payload" in lowered:
        return PAYLOAD_HINT
    return OTHER_HINT


def exit_status(reports: Sequence[RunReport]) -> int:
    """For a deploy gate: 0 when every run replayed cleanly, else 1."""
    return 0 if all(report.ok for report in reports) else 1


def format_reports(reports: Sequence[RunReport]) -> str:
    """One line per run, then the error and hint under a failed one, then a total."""
    lines = []
    for report in reports:
        where = f"{report.workflow_id} run {report.run_id} ({report.workflow_type})"
        if report.ok:
            lines.append(f"OK      {where}")
            continue
        at = f" at event {report.event_id}" if report.event_id is not None else ""
        lines.append(f"FAILED  {where}{at}")
        lines.append(f"        error: {report.error}")
        lines.append(f"        hint: {report.hint}")
    failed = sum(not report.ok for report in reports)
    lines.append(f"{len(reports)} run(s) replayed: {len(reports) - failed} OK, {failed} failed")
    return "\n".join(lines)
