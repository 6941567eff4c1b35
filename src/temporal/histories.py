"""Finding, fetching and saving the recorded histories of Parley's workflows.

A session's workflow may span several runs (continue-as-new), a stateless conversation is one
workflow per turn, and webhook events are child workflows: each is fetched run by run, so
`parley replay` and `parley history export` see every history the session produced.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from temporalio.client import Client, WorkflowHistory

from src.config import Settings
from src.db.engine import create_engine, session_factory
from src.db.tables import ChatSession
from src.workflows.session_analysis import session_analysis_workflow_id

STATELESS_KIND = "stateless"  # ChatSession.kind of text-chat conversations


class HistoryNotFound(Exception):
    pass


async def session_queries(
    settings: Settings, session_id: str, *, children: bool = True
) -> list[str]:
    """Visibility queries selecting every run of a session, found by its `chat_sessions` row;
    with `children`, its analysis and webhook deliveries too."""
    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as db:
            row = await db.get(ChatSession, session_id)
    finally:
        await engine.dispose()
    if row is None:
        raise HistoryNotFound(f"no session {session_id!r} in the database")
    sid = _literal(session_id)
    if row.kind == STATELESS_KIND:
        # One StatelessTurnWorkflow per turn: text-chat-<call id>-<turn>.
        queries = [f"WorkflowId STARTS_WITH '{_literal(f'text-chat-{session_id}-')}'"]
    else:
        # An endpoint's workflow ID is reused by its next session: keep this session's runs.
        queries = [f"WorkflowId = '{_literal(row.workflow_id)}' AND ParleySessionId = '{sid}'"]
    if children:
        queries.append(f"WorkflowId = '{_literal(session_analysis_workflow_id(session_id))}'")
        queries.append(f"WorkflowId STARTS_WITH '{_literal(f'webhook-{session_id}:')}'")
    return queries


def workflow_query(workflow_id: str) -> str:
    """Every run of a workflow ID: the continue-as-new chain (and earlier uses of the ID)."""
    return f"WorkflowId = '{_literal(workflow_id)}'"


async def fetch_histories(client: Client, queries: Sequence[str]) -> list[WorkflowHistory]:
    """The full history of every run the queries select: query by query, oldest run first."""
    runs = []
    for query in queries:
        found = [execution async for execution in client.list_workflows(query)]
        runs += sorted(found, key=lambda run: (run.start_time, run.id))
    return [
        await client.get_workflow_handle(run.id, run_id=run.run_id).fetch_history() for run in runs
    ]


def dump_histories(histories: Sequence[WorkflowHistory]) -> str:
    """The export format: a JSON list of {"workflow_id", "run_id", "history"}, where history
    is the SDK's (and the Temporal CLI's) JSON form of the events."""
    return json.dumps(
        [
            {
                "workflow_id": history.workflow_id,
                "run_id": history.run_id,
                "history": history.to_json_dict(),
            }
            for history in histories
        ],
        indent=1,
    )


def load_histories(text: str) -> list[WorkflowHistory]:
    """Reads an export; also one bare history as `temporal workflow show -o json` writes it."""
    data: Any = json.loads(text)
    if isinstance(data, dict) and "events" in data:
        return [WorkflowHistory.from_json("unknown-workflow-id", data)]
    if not isinstance(data, list) or not all(isinstance(run, dict) for run in data):
        raise ValueError('expected a list of {"workflow_id", "run_id", "history"} objects')
    return [WorkflowHistory.from_json(str(run["workflow_id"]), run["history"]) for run in data]


def _literal(value: str) -> str:
    """A value for a visibility query: ids never contain quotes; refuse one that does."""
    if "'" in value or "\\" in value:
        raise ValueError(f"not a workflow or session id: {value!r}")
    return value
