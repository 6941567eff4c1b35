"""Streaming: time to first delta through Parley against the openai client streaming straight
from the same fake model, interleaved turn by turn (goal: p50 ≤ the model's own first-token
time + 50 ms); history events and bytes of a streamed turn with a short and a long reply (the
text goes to the stream table, not to history: both should cost the same events); and
`streaming_sessions` sessions streaming one turn each at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import httpx
import openai
from httpx_sse import aconnect_sse
from sqlalchemy import select

from bench.client import create_agent, open_session
from bench.measure import ratio, summary_ms
from bench.sizes import Sizes
from bench.stack import Stack
from src.db.engine import create_engine, session_factory
from src.db.tables import ChatSession

_STREAM = {"Accept": "text/event-stream"}
_CONCURRENT = 50


async def run_streaming_benchmarks(stack: Stack, sizes: Sizes) -> dict[str, Any]:
    errors: Counter[str] = Counter()
    model = f"slow-{sizes.slow_model_ms}"
    direct = openai.AsyncOpenAI(base_url=stack.llm_base_url, api_key="sk-bench", max_retries=0)
    async with stack.http(connections=_CONCURRENT + 4) as http:
        agent = await create_agent(http, model)
        session = await _session(http, agent)
        parley: list[float] = []
        straight: list[float] = []
        for n in range(sizes.warmup_turns // 2 + sizes.slow_turns):
            through = await _first_delta(http, session, f"turn {n}", errors)
            own = await _model_first_token(direct, model, f"turn {n}", errors)
            if n >= sizes.warmup_turns // 2 and through is not None and own is not None:
                parley.append(through)
                straight.append(own)
        history = {
            words: await _turn_history(stack, http, agent, words, errors) for words in (5, 200)
        }
        concurrent = await _concurrent(http, await create_agent(http, "stream-20"), errors)
    await direct.close()
    parley_summary, model_summary = summary_ms(parley), summary_ms(straight)
    return {
        "model": model,
        "first_delta_parley": parley_summary,
        "first_token_model": model_summary,
        "first_delta_overhead_p50_ms": round(parley_summary["p50_ms"] - model_summary["p50_ms"], 1),
        "first_delta_ratio_p50": ratio(parley_summary["p50_ms"], model_summary["p50_ms"]),
        "history_per_turn": history,
        "concurrent": concurrent,
        "errors": dict(errors),
    }


async def _session(http: httpx.AsyncClient, agent: str) -> str:
    opened = await open_session(http, agent)
    if not opened.ok:
        raise RuntimeError(f"could not open a session: {opened.status} {opened.error}")
    return str(opened.body["id"])


async def _first_delta(
    http: httpx.AsyncClient, session: str, content: str, errors: Counter[str]
) -> float | None:
    """Seconds from sending the message to its first `message.delta`; reads to `done`."""
    started = time.perf_counter()
    first: float | None = None
    done = False
    try:
        async with aconnect_sse(
            http, "POST", f"/chats/{session}/messages", json={"content": content}, headers=_STREAM
        ) as source:
            async for event in source.aiter_sse():
                if event.event == "message.delta" and first is None:
                    first = time.perf_counter() - started
                done = done or event.event == "done"
    except httpx.HTTPError as error:
        errors[f"parley {type(error).__name__}"] += 1
        return None
    if first is None or not done:
        errors["parley stream without delta or done"] += 1
        return None
    return first


async def _model_first_token(
    client: openai.AsyncOpenAI, model: str, content: str, errors: Counter[str]
) -> float | None:
    started = time.perf_counter()
    first: float | None = None
    try:
        stream = await client.chat.completions.create(
            model=model,
            messages=[{"role": "system", "content": "bench"}, {"role": "user", "content": content}],
            stream=True,
        )
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - started
    except openai.OpenAIError as error:
        errors[f"model {type(error).__name__}"] += 1
        return None
    return first


async def _turn_history(
    stack: Stack, http: httpx.AsyncClient, agent: str, words: int, errors: Counter[str]
) -> dict[str, Any]:
    """Events and bytes one streamed turn adds to its session's history, for a reply of
    about `words` words (the fake model echoes the message)."""
    session = await _session(http, agent)
    engine = create_engine(stack.database_url)
    try:
        async with session_factory(engine)() as db:
            workflow_id = await db.scalar(
                select(ChatSession.workflow_id).where(ChatSession.id == session)
            )
    finally:
        await engine.dispose()
    handle = stack.client.get_workflow_handle(str(workflow_id))
    before = await handle.fetch_history()
    content = " ".join(f"w{n}" for n in range(words))
    deltas = 0
    async with aconnect_sse(
        http, "POST", f"/chats/{session}/messages", json={"content": content}, headers=_STREAM
    ) as source:
        async for event in source.aiter_sse():
            deltas += event.event == "message.delta"
            if event.event == "error":
                errors[f"history turn: {json.loads(event.data)['error']['code']}"] += 1
    await asyncio.sleep(0.5)  # the turn's record write lands in history just after
    after = await handle.fetch_history()
    added = after.events[len(before.events) :]
    return {
        "reply_words": words + 1,
        "delta_events": deltas,
        "history_events": len(added),
        "history_bytes": sum(event.ByteSize() for event in added),
    }


async def _concurrent(http: httpx.AsyncClient, agent: str, errors: Counter[str]) -> dict[str, Any]:
    sessions = await asyncio.gather(*(_session(http, agent) for _ in range(_CONCURRENT)))
    started = time.perf_counter()
    content = "one two three four five six seven eight nine ten"
    firsts = await asyncio.gather(*(_first_delta(http, s, content, errors) for s in sessions))
    return {
        "sessions": _CONCURRENT,
        "model": "stream-20",
        "first_delta": summary_ms([f for f in firsts if f is not None]),
        "all_done_seconds": round(time.perf_counter() - started, 2),
        "failed": sum(f is None for f in firsts),
    }
