"""More than one process: two Parley workers and two API processes against one Temporal dev
server and one PostgreSQL database (its own stack, started for this benchmark).

- cross: `multi_cross_sessions` sessions, each opened through one API and talked to through
  the other, its transcript read back through the first; with both workers polling;
- one vs two workers: `multi_sessions` fresh sessions in a closed loop for
  `multi_load_seconds`, every request going to the other API than the last, first with one
  worker, then with two (fresh sessions again, so the second worker takes its share of
  workflows rather than the first keeping them sticky): turns/s, latency, CPU per process and
  the whole machine's busy CPU, so the note can say whether the dev server is the limit;
- kills: the same load; `multi_kill_at_seconds` in, worker-2 and api-2 are SIGKILLed and
  restarted. Clients re-ask after a connection error with the same Idempotency-Key (as
  tests/chaos/test_api_restart.py does). Counted: turns completed, client errors by kind,
  lost turns and duplicated transcript messages (targets: 0 and 0).

PostgreSQL: PARLEY_BENCH_DATABASE_URL when it names one, else a database created for the run
on 127.0.0.1:5432 (`parley_bench_multi`) and dropped after it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.client import create_agent, open_session, send
from bench.load import SESSIONS_PER_CLIENT, LoadWindow, Turn, client_groups, close_all, closed_loop
from bench.measure import machine_busy_cpu_seconds
from bench.sizes import Sizes
from bench.stack import PARLEY_TASK_QUEUE, Stack, StackOptions, running_stack
from tests.chaos.harness import TranscriptCheck, ask, echo_reply

MULTI_DATABASE = "parley_bench_multi"
_SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432"
APIS = ("api", "api-2")
_ONE_WORKER = ("temporal", "worker", "api", "api-2", "llm", "bench")
_TWO_WORKERS = (*_ONE_WORKER, "worker-2")
# Killed and restarted mid-load: their CPU is not sampled in that phase.
_SURVIVORS = ("temporal", "worker", "api", "llm", "bench")
_PATIENCE_SECONDS = 120.0

# HTTP clients of each API process, by API name, one per group of sessions.
Clients = dict[str, list[httpx.AsyncClient]]


async def run_multiprocess_benchmarks(options: StackOptions, sizes: Sizes) -> dict[str, Any]:
    async with _postgres_database() as database_url:
        own = dataclasses.replace(
            options, database_url=database_url, logs_dir=options.logs_dir / "multiprocess"
        )
        async with running_stack(own) as stack:
            await stack.start_api("api-2")
            async with stack.http(connections=2) as http:
                agent = await create_agent(http, "echo")
            one_worker = await _load(stack, agent, sizes, _ONE_WORKER)
            await stack.start_worker("worker-2")
            await stack.wait_for_pollers(PARLEY_TASK_QUEUE, "worker-2")
            cross = await _cross(stack, agent, sizes.multi_cross_sessions)
            two_workers = await _load(stack, agent, sizes, _TWO_WORKERS)
            kills = await _under_kills(stack, agent, sizes)
    return {
        "database": "postgresql",
        "sessions": sizes.multi_sessions,
        "load_seconds": sizes.multi_load_seconds,
        "load_warmup_seconds": sizes.load_warmup_seconds,
        "cross": cross,
        "one_worker": one_worker,
        "two_workers": two_workers,
        "two_over_one_turns_per_second": round(
            two_workers["turns_per_second"] / one_worker["turns_per_second"], 2
        )
        if one_worker["turns_per_second"]
        else None,
        "kills": kills,
        "targets": {"lost_turns": 0, "duplicated_messages": 0, "cross_failures": 0},
    }


async def require_postgres() -> None:
    """Stops the run before anything starts when the PostgreSQL this benchmark needs does not
    answer (rather than after the other benchmarks have run)."""
    given = os.environ.get("PARLEY_BENCH_DATABASE_URL", "")
    url = given if given.startswith("postgresql") else f"{_SERVER}/postgres"
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            await asyncio.wait_for(connection.execute(text("SELECT 1")), timeout=5)
    except Exception as error:
        raise SystemExit(
            f"the multiprocess benchmark needs PostgreSQL at {url.split('@')[-1]} "
            f"({type(error).__name__}); leave it out with PARLEY_BENCH_ONLY"
        ) from error
    finally:
        await engine.dispose()


@asynccontextmanager
async def _postgres_database() -> AsyncIterator[str]:
    given = os.environ.get("PARLEY_BENCH_DATABASE_URL", "")
    if given.startswith("postgresql"):
        yield given  # running_stack drops its tables first
        return
    admin = create_async_engine(f"{_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f"DROP DATABASE IF EXISTS {MULTI_DATABASE} WITH (FORCE)"))
            await connection.execute(text(f"CREATE DATABASE {MULTI_DATABASE}"))
        yield f"{_SERVER}/{MULTI_DATABASE}"
    finally:
        async with admin.connect() as connection:
            await connection.execute(text(f"DROP DATABASE IF EXISTS {MULTI_DATABASE} WITH (FORCE)"))
        await admin.dispose()


async def _cross(stack: Stack, agent: str, count: int) -> dict[str, Any]:
    """Sessions opened through one API, talked to through the other, read back through the
    first: what fails, by kind."""
    clients = {api: stack.http(connections=count, api=api) for api in APIS}

    async def one(i: int) -> str | None:
        opener, talker = APIS[i % 2], APIS[(i + 1) % 2]
        opened = await open_session(clients[opener], agent)
        if not opened.ok:
            return f"open through {opener}: HTTP {opened.status}"
        session_id = str(opened.body["id"])
        question = f"cross {i}"
        reply = await send(clients[talker], session_id, question)
        if not reply.ok:
            return f"send through {talker}: HTTP {reply.status}"
        if reply.body["messages"][-1]["content"] != echo_reply(question):
            return f"send through {talker}: wrong reply"
        read = await clients[opener].get(f"/chats/{session_id}")
        contents = [m["content"] for m in read.json()["messages"]] if read.is_success else []
        if contents != [question, echo_reply(question)]:
            return f"read through {opener}: HTTP {read.status_code}, transcript {contents[:4]}"
        return None

    try:
        outcomes = await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        await close_all(list(clients.values()))
    failures = Counter(outcome for outcome in outcomes if outcome is not None)
    return {
        "sessions": count,
        "worked": count - sum(failures.values()),
        "failures": dict(failures),
    }


async def _load(
    stack: Stack, agent: str, sizes: Sizes, processes: tuple[str, ...]
) -> dict[str, Any]:
    """Fresh sessions in a closed loop, alternating the APIs request by request."""
    clients = {api: client_groups(stack, sizes.multi_sessions, api) for api in APIS}
    errors: Counter[str] = Counter()

    def conversation(i: int, session_id: str) -> Turn:
        async def turn(n: int) -> bool:
            http = _client(clients, i, n)
            result = await send(http, session_id, f"load {n}")
            if not result.ok:
                errors[f"HTTP {result.status}" if result.status else str(result.error)] += 1
            return result.ok

        return turn

    try:
        sessions = await _open(clients, agent, sizes.multi_sessions)
        busy, began = machine_busy_cpu_seconds(), time.monotonic()
        found = await closed_loop(
            stack,
            [conversation(i, s) for i, s in enumerate(sessions)],
            _window(sizes),
            processes,
        )
        machine = _busy_percent(busy, began)
    finally:
        await close_all([http for group in clients.values() for http in group])
    return {**found, "machine_busy_percent_of_one_core": machine, "errors": dict(errors)}


async def _under_kills(stack: Stack, agent: str, sizes: Sizes) -> dict[str, Any]:
    clients = {api: client_groups(stack, sizes.multi_sessions, api) for api in APIS}
    asked: dict[str, list[str]] = {}
    errors: Counter[str] = Counter()
    re_asked: list[str] = []  # the questions that needed more than one attempt
    restart: dict[str, float] = {}

    def conversation(i: int, session_id: str) -> Turn:
        async def turn(n: int) -> bool:
            question = f"kills {i} turn {n}"
            asked[session_id].append(question)  # asked, so its answer must be kept
            try:
                status, seen = await ask(
                    _client(clients, i, n),
                    f"/chats/{session_id}/messages",
                    {"content": question},
                    f"multi-{uuid.uuid4()}",
                    patience=_PATIENCE_SECONDS,
                )
            except AssertionError:  # never answered within patience
                errors["never answered"] += 1
                return False
            errors.update(seen.errors)
            if seen.errors:
                re_asked.append(question)
            if status != 200:
                errors[f"HTTP {status}"] += 1
            return status == 200

        return turn

    async def kill_and_restart() -> None:
        await asyncio.sleep(sizes.multi_kill_at_seconds)
        killed = time.monotonic()
        await stack.kill("worker-2")
        await stack.kill("api-2")
        await stack.start_worker("worker-2")
        await stack.start_api("api-2")
        await stack.wait_for_pollers(PARLEY_TASK_QUEUE, "worker-2")
        restart["seconds"] = round(time.monotonic() - killed, 1)

    try:
        sessions = await _open(clients, agent, sizes.multi_sessions)
        asked.update({session_id: [] for session_id in sessions})
        found, _ = await asyncio.gather(
            closed_loop(
                stack,
                [conversation(i, s) for i, s in enumerate(sessions)],
                _window(sizes),
                _SURVIVORS,
            ),
            kill_and_restart(),
        )
        check = TranscriptCheck()
        reader = clients["api"][0]
        for session_id, questions in asked.items():
            read = await reader.get(f"/chats/{session_id}")
            read.raise_for_status()
            check.add(read.json()["messages"], questions, echo_reply)
    finally:
        await close_all([http for group in clients.values() for http in group])
    return {
        **found,
        "killed": ["worker-2", "api-2"],
        "killed_at_seconds": sizes.multi_kill_at_seconds,
        "restart_seconds": restart.get("seconds"),
        "turns_asked": check.turns_expected,
        "turns_in_transcripts": check.turns_completed,
        "lost_turns": len(check.missing),
        "duplicated_messages": check.duplicated + check.extra,
        "turns_re_asked": len(re_asked),
        "client_errors": dict(errors),
    }


async def _open(clients: Clients, agent: str, count: int) -> list[str]:
    """`count` sessions, opened through the APIs in turn."""
    opened = await asyncio.gather(
        *(open_session(_client(clients, i, 0), agent) for i in range(count))
    )
    failed = [o for o in opened if not o.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} opens failed, e.g. {failed[0].status} {failed[0].error}")
    return [str(o.body["id"]) for o in opened]


def _client(clients: Clients, session: int, turn: int) -> httpx.AsyncClient:
    """Turn `turn` of session `session` goes to the other API than its last one."""
    return clients[APIS[(session + turn) % 2]][session // SESSIONS_PER_CLIENT]


def _window(sizes: Sizes) -> LoadWindow:
    return LoadWindow(
        sizes.multi_load_seconds, sizes.load_warmup_seconds, sizes.max_turns_per_session
    )


def _busy_percent(busy_before: float, began: float) -> float:
    wall = time.monotonic() - began
    return round(100 * (machine_busy_cpu_seconds() - busy_before) / wall, 1) if wall else 0.0
