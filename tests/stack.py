"""One object for the tests that run Parley as processes (crash, shutdown, chaos): the
settings, the fakes, the Temporal client, the database, the API and the worker, by attribute,
instead of a fixture each. Also the one way to run a worker or API child process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from src.config import Settings
from tests.fakes.llm_server import FakeLLM
from tests.fakes.tool_server import FakeToolServer
from tests.fakes.webhook_receiver import WebhookReceiver

if TYPE_CHECKING:  # tests.conftest imports this module
    from tests.conftest import AgentFactory, ApiFactory, SettingsFactory

REPO = Path(__file__).resolve().parents[1]


# ---- child processes ------------------------------------------------------------------------


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a `python -m src.cli ...` child configured like `settings`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PARLEY_", "TEMPORAL_", "OPENAI_", "DATABASE_URL"))
    }
    env.update(
        TEMPORAL_ADDRESS=settings.temporal_target,
        TEMPORAL_TASK_QUEUE=settings.temporal_task_queue,
        DATABASE_URL=settings.database_url,
        OPENAI_BASE_URL=settings.openai_base_url or "",
        OPENAI_API_KEY="sk-test-not-secret",
        PARLEY_DATA_DIR=str(settings.data_dir),
        PARLEY_TOOL_URL_ALLOWLIST=settings.tool_url_allowlist_setting,
        PARLEY_MIN_TTL_SECONDS=str(settings.min_ttl_seconds),
        PARLEY_LLM_TIMEOUT_SECONDS=str(settings.llm_timeout_seconds),
        PARLEY_RATE_LIMIT_PER_MINUTE=str(settings.rate_limit_per_minute),
        PARLEY_MAX_ACTIVE_SESSIONS=str(settings.max_active_sessions),
        PARLEY_TWILIO_API_URL=settings.twilio_api_url,
    )
    if settings.public_url_setting:
        # Only when set: unset, each child derives it from its own PARLEY_HOST/PARLEY_PORT.
        env["PARLEY_PUBLIC_URL"] = settings.public_url_setting
    env.update(extra)
    return env


@dataclass
class Child:
    """One restartable child process; its output goes to `log`."""

    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    process: asyncio.subprocess.Process | None = None
    starts: int = 0

    async def start(self) -> None:
        assert self.process is None or self.process.returncode is not None
        with self.log.open("ab") as out:
            out.write(f"\n==== {self.name} start {self.starts + 1} ====\n".encode())
            out.flush()
            self.process = await asyncio.create_subprocess_exec(
                *self.command, env=self.env, cwd=REPO, stdout=out, stderr=out
            )
        self.starts += 1

    def send_signal(self, signum: int) -> None:
        assert self.process is not None and self.process.returncode is None, self.tail()
        self.process.send_signal(signum)

    async def wait(self) -> int:
        assert self.process is not None
        return await self.process.wait()

    async def kill(self, signum: int = signal.SIGKILL) -> int:
        """Send `signum` and wait (bounded: SIGKILL after 60 s) for the exit; its code."""
        self.send_signal(signum)
        assert self.process is not None
        try:
            return await asyncio.wait_for(self.process.wait(), timeout=60)
        except TimeoutError:
            self.process.kill()
            return await self.process.wait()

    async def stop(self, signum: int = signal.SIGINT) -> None:
        if self.alive():
            await self.kill(signum)

    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def worker_process(settings: Settings, log: Path, **extra: str) -> Child:
    """A `python -m src.cli worker` child configured like `settings` (not started)."""
    command = [sys.executable, "-m", "src.cli", "worker"]
    return Child("worker", command, process_env(settings, **extra), log)


def api_process(settings: Settings, port: int, api_key: str, log: Path) -> Child:
    """A `python -m src.cli api` child on 127.0.0.1:`port` (not started)."""
    env = process_env(
        settings, PARLEY_HOST="127.0.0.1", PARLEY_PORT=str(port), PARLEY_API_KEY=api_key
    )
    return Child("api", [sys.executable, "-m", "src.cli", "api"], env, log)


# ---- the stack ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    """What a process-level test needs, built from the session fixtures (see `stack` in
    tests/conftest.py). The in-process worker of the suite is up; tests that run their own
    worker give it a task queue of its own (`own_queue`)."""

    settings: Settings
    make_settings: SettingsFactory
    temporal: Client
    db: async_sessionmaker[AsyncSession]
    llm: FakeLLM
    llm_url: str
    tools: FakeToolServer
    tools_url: str
    hooks: WebhookReceiver
    hooks_url: str
    api_key: str
    make_agent: AgentFactory
    serve_api: ApiFactory
    logs: Path

    def own_queue(self, prefix: str, **overrides: Any) -> Settings:
        """Settings on a task queue no other worker polls: `<prefix>-<random>`."""
        queue = f"{prefix}-{uuid.uuid4().hex[:8]}"
        return self.make_settings(TEMPORAL_TASK_QUEUE=queue, **overrides)

    @asynccontextmanager
    async def api(self, settings: Settings | None = None) -> AsyncIterator[httpx.AsyncClient]:
        """The API configured by `settings` served in-process over real HTTP, and a client
        authenticated with the suite's key."""
        from tests.conftest import api_client  # tests.conftest imports this module

        async with self.serve_api(settings or self.settings) as url:
            async with api_client(url, self.api_key) as http:
                yield http

    def worker(self, settings: Settings, **extra: str) -> Child:
        """A worker child process (not started) logging to `logs`/workers.log."""
        return worker_process(settings, self.logs / "workers.log", **extra)

    async def start_worker(self, settings: Settings, **extra: str) -> Child:
        child = self.worker(settings, **extra)
        await child.start()
        return child
