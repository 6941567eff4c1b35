"""The session's inactivity timeout: one timer, kept armed across turns.

A timer started and cancelled around every turn costs two history events and a timer task per
turn; instead one timer stays armed while the session talks, and when it fires after the
session was busy meanwhile it is armed again for the rest of the idle time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow


class IdleTimer:
    def __init__(self, ttl: timedelta) -> None:
        self._ttl = ttl
        self._timer: asyncio.Task[None] | None = None

    async def wait(
        self, has_work: Callable[[], bool], paused: Callable[[], bool] = lambda: False
    ) -> bool:
        """Waits until `has_work()`; False once the session has been idle for the TTL. While
        `paused()` (a human operator holds the session) the TTL does not run; it starts over
        when the pause ends."""
        idle_since = workflow.now()
        while not has_work():
            if paused():
                await workflow.wait_condition(lambda: has_work() or not paused())
                idle_since = workflow.now()
                continue
            if self._timer is None or self._timer.done():
                left = idle_since + self._ttl - workflow.now()
                if left <= timedelta(0):
                    return False
                self._timer = asyncio.create_task(
                    workflow.sleep(left, summary="inactivity timeout")
                )
            await workflow.wait_condition(lambda: has_work() or self._fired() or paused())
        return True

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _fired(self) -> bool:
        return self._timer is not None and self._timer.done()
