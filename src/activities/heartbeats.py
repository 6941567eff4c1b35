"""Heartbeats for activities that may outlast a worker: a worker that dies mid-call is noticed
after the activity's heartbeat timeout (seconds), not after its whole start-to-close timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from temporalio import activity


@asynccontextmanager
async def heartbeating(interval: float = 1.0) -> AsyncIterator[None]:
    """Heartbeat every `interval` seconds while the block runs. The first beat waits one
    interval: each beat is a write on the Temporal server, and most calls are done sooner.
    Local activities cannot heartbeat (the workflow task's own timeout watches them): there
    the block just runs."""
    if activity.info().is_local:
        yield
        return

    async def beat() -> None:
        while True:
            await asyncio.sleep(interval)
            activity.heartbeat()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
