"""When a session's run hands over to the next one (continue-as-new).

A run's history must stay under the server's limits (50 MB, 51,200 events, 2,000 updates per
run), so a run hands over between turns: after `turns_per_run` updates, when the server
suggests it, or once history passes a set fraction of the limits, even with messages queued
(the inbox is carried).
"""

from __future__ import annotations

from temporalio import workflow

HISTORY_BYTES_LIMIT = 50 * 1024 * 1024
HISTORY_EVENTS_LIMIT = 51_200
# Updates a run may take beyond `turns_per_run` while a backlog drains; with turns_per_run
# at most 1,500 this stays under the server's 2,000 updates per run.
BACKLOG_UPDATES = 300


class RunHandover:
    def __init__(self, turns_per_run: int, history_fraction: float) -> None:
        self._turns_per_run = turns_per_run
        self._history_fraction = history_fraction
        self.updates = 0  # updates this run took, retries of inherited callers included
        self.turns = 0  # turns this run answered

    def due(self, queued: bool, end_requested: bool) -> bool:
        """Whether to hand over before the next turn; not when only the end request is left
        (the session is about to finish)."""
        if end_requested and not queued:
            return False
        at_limit = (
            self.updates >= self._turns_per_run or workflow.info().is_continue_as_new_suggested()
        )
        if at_limit and not queued:
            return True
        # With a backlog a run hands over only once it has answered a turn: the retries of the
        # callers it inherited count as updates, and its start alone may pass a very small
        # fraction; without this, runs would hand the backlog on without ever answering.
        return self.turns > 0 and (at_limit or self._history_near_limit())

    def backlog_never_empties(self) -> bool:
        """Past this the run refuses new updates (the API retries them against the next run)
        before the server's per-run update limit."""
        return self.updates >= self._turns_per_run + BACKLOG_UPDATES

    def _history_near_limit(self) -> bool:
        info, fraction = workflow.info(), self._history_fraction
        return (
            info.get_current_history_size() > fraction * HISTORY_BYTES_LIMIT
            or info.get_current_history_length() > fraction * HISTORY_EVENTS_LIMIT
        )
