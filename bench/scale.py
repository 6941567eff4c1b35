"""Scale: many idle sessions, then many sessions talking at once.

On a fresh worker process: open `cold_sessions` web sessions; then `idle_sessions` SMS
sessions, each opened by one signed Twilio webhook (the message reaches the workflow by
signal, the reply is texted through the fake Twilio: signals only, nobody waits on an update);
then `active_sessions` web sessions. With everything idle, read the worker's resident memory
(target ≤ 400 MiB with 10,000 SMS sessions, PARLEY_MAX_CACHED_WORKFLOWS as sized here) and
the CPU each process uses over a few seconds (target: Parley's ≤ 1% of a core). Then:

- evicted sessions: the `cold_sessions` web sessions (no longer in the worker's cache) each
  send one message at once, so each is replayed first: their latency and the time until all
  answered;
- load: the `active_sessions` send messages in a closed loop for `load_seconds`: sustained
  turns/s over the window after warm-up, turn latency p50/p95 within it, CPU per process and
  per turn;
- floor under load, same run, same concurrency and window: bare workflows whose Update runs
  one activity calling the same model (bench/bare.py), driven by the Temporal client (target:
  Parley ≥ 0.8x its turns/s, API + worker CPU per turn ≤ 1.3x the bare worker's).

Every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

import httpx
from sqlalchemy import func, select

from bench.bare import FLOOR_WORKFLOW
from bench.client import create_agent, open_session, send
from bench.load import SESSIONS_PER_CLIENT, LoadWindow, Turn, client_groups, close_all, closed_loop
from bench.measure import CpuSample, rss_mib, summary_ms
from bench.sizes import Sizes
from bench.stack import BARE_TASK_QUEUE, Stack
from bench.turns import floor_update
from src.db.engine import create_engine, session_factory
from src.db.tables import ChatMessage, ChatSession
from src.sms.signatures import SIGNATURE_HEADER, signature_of

_PROCESSES = ("worker", "api", "temporal", "llm", "twilio", "bench", "bare")


async def run_scale_benchmarks(stack: Stack, sizes: Sizes) -> dict[str, Any]:
    await stack.restart_worker()
    worker = stack.pid("worker")
    fresh = rss_mib(worker)
    async with stack.http(connections=sizes.open_concurrency + 10) as http:
        agent = await create_agent(http, "echo")
        # Web sessions first (the oldest: evicted by the time they talk again), then the idle
        # SMS sessions, then the web sessions of the load.
        cold_sessions, _, _, cold_errors = await _open_many(http, agent, sizes.cold_sessions, sizes)
        texted = await _text_many(stack, http, agent, sizes)
        opened, open_seconds, open_latency, open_errors = await _open_many(
            http, agent, sizes.active_sessions, sizes
        )
    await asyncio.sleep(5)  # let the last records and visibility updates settle
    idle_rss = rss_mib(worker)
    idle = {name: CpuSample.now(stack.pid(name)) for name in _PROCESSES}
    await asyncio.sleep(sizes.idle_cpu_seconds)
    idle_cpu = {name: sample.percent_since() for name, sample in idle.items()}

    cold = await _first_messages(stack, cold_sessions)
    parley = await _parley_load(stack, opened, sizes)
    floor = await _floor_load(stack, len(opened), sizes)
    return {
        "idle_sms_sessions": texted,
        "open_concurrency": sizes.open_concurrency,
        "web_sessions_opened": len(cold_sessions) + len(opened),
        "open_seconds": round(open_seconds, 1),
        "opens_per_second": round(len(opened) / open_seconds, 1) if open_seconds else None,
        "open_latency": summary_ms(open_latency),
        "open_errors": dict(open_errors + cold_errors),
        "max_cached_workflows": sizes.max_cached_workflows,
        "worker_rss_fresh": fresh,
        "worker_rss_idle": idle_rss,
        "idle_cpu_percent_of_one_core": idle_cpu,
        "evicted_first_message": cold,
        "active_sessions": len(opened),
        "load_seconds": sizes.load_seconds,
        "load_warmup_seconds": sizes.load_warmup_seconds,
        "parley": parley,
        "floor": floor,
        "parley_over_floor_turns_per_second": round(
            parley["turns_per_second"] / floor["turns_per_second"], 2
        )
        if floor["turns_per_second"]
        else None,
        "worker_rss_after_load": rss_mib(worker),
        "targets": {
            "worker_rss_mib_at_most": 400,
            "idle_cpu_percent_of_one_core_at_most": 1,
            "parley_over_floor_turns_per_second_at_least": 0.8,
            "cpu_per_turn_over_floor_at_most": 1.3,
        },
    }


async def _open_many(
    http: Any, agent: str, count: int, sizes: Sizes
) -> tuple[list[str], float, list[float], Counter[str]]:
    opened: list[str] = []
    latency: list[float] = []
    errors: Counter[str] = Counter()
    remaining = iter(range(count))
    started = time.monotonic()
    deadline = started + sizes.open_deadline_seconds

    async def opener() -> None:
        for _ in remaining:
            if time.monotonic() > deadline:
                return
            result = await open_session(http, agent)
            if result.ok:
                opened.append(str(result.body["id"]))
                latency.append(result.seconds)
            else:
                errors[f"HTTP {result.status}"] += 1

    await asyncio.gather(*(opener() for _ in range(sizes.open_concurrency)))
    return opened, time.monotonic() - started, latency, errors


async def _text_many(stack: Stack, http: Any, agent: str, sizes: Sizes) -> dict[str, Any]:
    """`idle_sessions` SMS sessions, each opened by one text from its own sender to one number
    (Twilio's signed webhook, `open_concurrency` at a time): the message reaches its session
    by signal, nobody waits for the turn, and the reply is texted back through the fake
    Twilio. Done when every session has its reply recorded, or at `open_deadline_seconds`."""
    number = "+15550100000"
    added = await http.post(
        "/phone-numbers",
        json={
            "number": number,
            "provider": "twilio",
            "agent_id": agent,
            "twilio": {
                "account_sid": stack.twilio_account_sid,
                "auth_token": stack.twilio_auth_token,
            },
        },
    )
    added.raise_for_status()
    webhook = f"{stack.api_url}/channels/twilio/sms"
    errors: Counter[str] = Counter()
    latency: list[float] = []
    remaining = iter(range(sizes.idle_sessions))
    started = time.monotonic()
    deadline = started + sizes.open_deadline_seconds

    async def texter(client: httpx.AsyncClient) -> None:
        for n in remaining:
            if time.monotonic() > deadline:
                return
            params = {
                "MessageSid": f"SM{uuid.uuid4().hex}",
                "AccountSid": stack.twilio_account_sid,
                "From": f"+1556{n:07d}",
                "To": number,
                "Body": f"hello from sender {n}",
                "NumMedia": "0",
            }
            signature = signature_of(stack.twilio_auth_token, webhook, params)
            sent = time.monotonic()
            try:
                response = await client.post(
                    webhook, data=params, headers={SIGNATURE_HEADER: signature}
                )
            except httpx.HTTPError as error:
                errors[type(error).__name__] += 1
                continue
            if response.status_code == 200:
                latency.append(time.monotonic() - sent)
            else:
                errors[f"HTTP {response.status_code}"] += 1

    async with httpx.AsyncClient(timeout=60) as client:
        await asyncio.gather(*(texter(client) for _ in range(sizes.open_concurrency)))
    texted_seconds = time.monotonic() - started
    answered = await _replies_recorded(stack, len(latency), deadline)
    return {
        "requested": sizes.idle_sessions,
        "texted": len(latency),
        "webhook_latency": summary_ms(latency),
        "webhook_errors": dict(errors),
        "texted_seconds": round(texted_seconds, 1),
        "answered": answered,
        "all_answered_seconds": round(time.monotonic() - started, 1),
    }


async def _replies_recorded(stack: Stack, expected: int, deadline: float) -> int:
    """How many SMS sessions have their reply recorded, once all `expected` have (polled
    every 2 s) or at `deadline`."""
    engine = create_engine(stack.database_url)
    replied = (
        select(func.count(func.distinct(ChatMessage.session_id)))
        .join(ChatSession, ChatSession.id == ChatMessage.session_id)
        .where(ChatSession.channel == "twilio_sms", ChatMessage.role == "assistant")
    )
    try:
        while True:
            async with session_factory(engine)() as db:
                count = int(await db.scalar(replied) or 0)
            if count >= expected or time.monotonic() > deadline:
                return count
            await asyncio.sleep(2)
    finally:
        await engine.dispose()


async def _first_messages(stack: Stack, sessions: list[str]) -> dict[str, Any]:
    """One message from each of `sessions` at once (all evicted: each replays first)."""
    clients = client_groups(stack, len(sessions))
    started = time.monotonic()
    try:
        results = await asyncio.gather(
            *(
                send(clients[i // SESSIONS_PER_CLIENT], session_id, "back again")
                for i, session_id in enumerate(sessions)
            )
        )
    finally:
        await close_all(clients)
    return {
        "sessions": len(sessions),
        "all_answered_seconds": round(time.monotonic() - started, 1),
        "latency": summary_ms([r.seconds for r in results if r.ok]),
        "errors": sum(1 for r in results if not r.ok),
    }


async def _parley_load(stack: Stack, sessions: list[str], sizes: Sizes) -> dict[str, Any]:
    clients = client_groups(stack, len(sessions))
    errors: Counter[str] = Counter()

    def conversation(i: int, session_id: str) -> Turn:
        async def turn(n: int) -> bool:
            result = await send(clients[i // SESSIONS_PER_CLIENT], session_id, f"load {n}")
            if not result.ok:
                errors[f"HTTP {result.status}"] += 1
            return result.ok

        return turn

    try:
        found = await closed_loop(
            stack, [conversation(i, s) for i, s in enumerate(sessions)], _window(sizes), _PROCESSES
        )
    finally:
        await close_all(clients)
    return {**found, "errors": dict(errors)}


async def _floor_load(stack: Stack, count: int, sizes: Sizes) -> dict[str, Any]:
    handles = []
    for _ in range(count):
        handles.append(
            await stack.client.start_workflow(
                FLOOR_WORKFLOW, id=f"bench-floor-load-{uuid.uuid4()}", task_queue=BARE_TASK_QUEUE
            )
        )
    errors: Counter[str] = Counter()

    def conversation(handle: Any) -> Turn:
        async def turn(n: int) -> bool:
            try:
                await floor_update(handle, f"load {n}", "echo")
            except Exception as error:  # counted, reported by type
                errors[type(error).__name__] += 1
                return False
            return True

        return turn

    try:
        found = await closed_loop(
            stack, [conversation(h) for h in handles], _window(sizes), _PROCESSES
        )
    finally:
        await asyncio.gather(*(h.signal("stop") for h in handles), return_exceptions=True)
    return {**found, "errors": dict(errors)}


def _window(sizes: Sizes) -> LoadWindow:
    return LoadWindow(sizes.load_seconds, sizes.load_warmup_seconds, sizes.max_turns_per_session)
