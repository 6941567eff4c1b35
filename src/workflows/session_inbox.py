"""The session's inbox: user messages queued in order, the callers waiting on them, and the
outcomes remembered to answer a client's retry.

Both ways in (the `send_message` update, the `receive_message` signal) put items here, and the
session answers them one at a time. An item's id is its idempotency key, or a request id the
API keeps across its retries, or a fresh id. Outcomes of answered keys are remembered for the
last `keys_kept` turns; older ones are in the database (the user message keeps its key).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from src.workflows.chat_session_models import CarriedState, InboxItem, TurnOutcome


class SessionInbox:
    def __init__(self, carried: CarriedState | None, keys_kept: int) -> None:
        self._queued: deque[InboxItem] = deque(carried.inbox if carried else [])
        # Ids queued or being answered, whichever way they came in.
        self._taken: set[str] = {item.id for item in self._queued}
        # Callers waiting on an item, and the outcomes they are about to read.
        self._waiters: Counter[str] = Counter()
        self._outcomes: dict[str, TurnOutcome] = {}
        # Successful outcomes by item id, to answer a retry; the oldest are let go.
        self._answered: dict[str, TurnOutcome] = dict(carried.answered) if carried else {}
        self._keys_kept = keys_kept
        self.keys_forgotten = carried.keys_forgotten if carried else False

    def __bool__(self) -> bool:
        return bool(self._queued)

    def answered(self, item_id: str | None) -> TurnOutcome | None:
        return self._answered.get(item_id) if item_id is not None else None

    def is_taken(self, item_id: str | None) -> bool:
        return item_id is not None and item_id in self._taken

    def may_be_recorded(self, key: str) -> bool:
        """Whether a key unknown here may belong to a turn answered long ago (only once some
        key was let go: then the database is asked)."""
        return self.keys_forgotten and key not in self._answered and key not in self._taken

    def put(self, item: InboxItem) -> None:
        """Queues the item unless it is queued or being answered already."""
        if item.id not in self._taken:
            self._taken.add(item.id)
            self._queued.append(item)

    def next(self) -> InboxItem:
        return self._queued.popleft()

    async def outcome(self, item_id: str, released: Callable[[], bool]) -> TurnOutcome | None:
        """Waits for the item's outcome; None when `released()` first (the run hands over:
        the caller retries against the next run, and the item stays counted as awaited)."""
        self._waiters[item_id] += 1
        await workflow.wait_condition(lambda: item_id in self._outcomes or released())
        outcome = self._outcomes.get(item_id)
        if outcome is None:
            return None
        self._waiters[item_id] -= 1
        if self._waiters[item_id] <= 0:
            del self._waiters[item_id]
            del self._outcomes[item_id]
        return outcome

    def settle(self, item: InboxItem, outcome: TurnOutcome) -> None:
        """The item is answered: its waiters read the outcome; a successful one is remembered
        by key (a failed turn is not: retrying the same key runs the turn again)."""
        self._taken.discard(item.id)
        if self._waiters[item.id] > 0:
            self._outcomes[item.id] = outcome
        if outcome.error_type is None and (item.idempotency_key is not None or item.awaited):
            self._answered[item.id] = outcome
            while len(self._answered) > self._keys_kept:
                del self._answered[next(iter(self._answered))]
                self.keys_forgotten = True

    def close(self, outcome: TurnOutcome) -> None:
        """Settles every queued item with the same outcome (the session ended first)."""
        for item in self._queued:
            self.settle(item, outcome)
        self._queued.clear()

    def carried_items(self) -> list[InboxItem]:
        """The queue for the next run; items a caller waits on are marked `awaited`, so the
        next run remembers their outcome for the caller's retry."""
        return [
            item.model_copy(update={"awaited": True}) if item.id in self._waiters else item
            for item in self._queued
        ]

    def carried_answers(self) -> dict[str, TurnOutcome]:
        """Remembered outcomes without their messages (the API reads those back)."""
        return {
            key: outcome.model_copy(update={"messages": [], "messages_dropped": True})
            for key, outcome in self._answered.items()
        }
