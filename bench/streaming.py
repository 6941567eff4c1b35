"""Streaming: time to first delta through Parley's API (an account key) and through the
widget's route (a publishable key from an allowed Origin, with its visitor token), against the
openai client streaming straight from the same fake model, interleaved turn by turn (target:
p50 ≤ the model's own first-token time + 50 ms on both); history events and bytes of a
streamed turn with a short and a long reply (the text goes to the stream table, not to
history: both should cost the same events); 50 sessions streaming one turn each at once; and
`stream_sessions` sessions each followed live by `stream_followers` clients at once
(GET /chats/{id}/stream; 100 x 10 = 1,000 in the full run) while they take turns and end:
every client must see every event of its session once, in order.
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

from bench.client import create_agent, open_session, sse_events, stream_turn
from bench.measure import ratio, summary_count, summary_ms
from bench.sizes import Sizes
from bench.stack import Stack
from src.widget.access import VISITOR_HEADER

_STREAM = {"Accept": "text/event-stream"}
_CONCURRENT = 50
_WIDGET_ORIGIN = "http://bench.example"


async def run_streaming_benchmarks(stack: Stack, sizes: Sizes) -> dict[str, Any]:
    errors: Counter[str] = Counter()
    model = f"slow-{sizes.slow_model_ms}"
    direct = openai.AsyncOpenAI(base_url=stack.llm_base_url, api_key="sk-bench", max_retries=0)
    async with stack.http(connections=_CONCURRENT + 4) as http:
        agent = await create_agent(http, model)
        session = await _session(http, agent)
        widget_http, widget_session = await _widget_client(stack, http, agent)
        parley: list[float] = []
        widget: list[float] = []
        straight: list[float] = []
        for n in range(sizes.warmup_turns // 2 + sizes.slow_turns):
            through = await _first_delta(http, session, f"turn {n}", errors)
            by_widget = await _first_delta(widget_http, widget_session, f"turn {n}", errors)
            own = await _model_first_token(direct, model, f"turn {n}", errors)
            if n >= sizes.warmup_turns // 2 and None not in (through, by_widget, own):
                parley.append(through or 0)
                widget.append(by_widget or 0)
                straight.append(own or 0)
        await widget_http.aclose()
        history = {
            words: await _turn_history(stack, http, agent, words, errors) for words in (5, 200)
        }
        concurrent = await _concurrent(http, await create_agent(http, "stream-20"), errors)
    await direct.close()
    followed = await _followed(stack, sizes)
    parley_summary, model_summary = summary_ms(parley), summary_ms(straight)
    widget_summary = summary_ms(widget)
    return {
        "model": model,
        "first_delta_parley": parley_summary,
        "first_delta_widget": widget_summary,
        "first_token_model": model_summary,
        "first_delta_overhead_p50_ms": round(parley_summary["p50_ms"] - model_summary["p50_ms"], 1),
        "first_delta_widget_overhead_p50_ms": round(
            widget_summary["p50_ms"] - model_summary["p50_ms"], 1
        ),
        "first_delta_ratio_p50": ratio(parley_summary["p50_ms"], model_summary["p50_ms"]),
        "history_per_turn": history,
        "concurrent": concurrent,
        "followed": followed,
        "errors": dict(errors),
        "targets": {"first_delta_overhead_p50_ms_at_most": 50, "lost_events": 0},
    }


async def _widget_client(
    stack: Stack, http: httpx.AsyncClient, agent: str
) -> tuple[httpx.AsyncClient, str]:
    """A client calling as the widget does (a publishable key, from an allowed Origin, with
    its visitor token), and the visitor's session."""
    created = await http.post(
        "/widget-keys", json={"agent_id": agent, "allowed_origins": [_WIDGET_ORIGIN]}
    )
    created.raise_for_status()
    headers = {"Authorization": f"Bearer {created.json()['key']}", "Origin": _WIDGET_ORIGIN}
    widget = httpx.AsyncClient(base_url=f"{stack.api_url}/api/v1", headers=headers, timeout=120)
    opened = await widget.post("/widget/sessions", json={})
    opened.raise_for_status()
    widget.headers[VISITOR_HEADER] = opened.json()["visitor_token"]
    return widget, str(opened.json()["session"]["id"])


async def _followed(stack: Stack, sizes: Sizes) -> dict[str, Any]:
    """`stream_sessions` sessions, each followed by `stream_followers` live clients, take
    `stream_turns` streamed turns each and then end (the stream ends with session.final).
    Each client's events are compared with the session's whole stream read afterwards."""
    clients = sizes.stream_sessions * sizes.stream_followers
    errors: Counter[str] = Counter()
    async with stack.http(connections=clients + sizes.stream_sessions + 10, timeout=300) as http:
        agent = await create_agent(http, "stream-20")
        sessions = [await _session(http, agent) for _ in range(sizes.stream_sessions)]
        connected = asyncio.Semaphore(0)
        followers = [
            asyncio.create_task(_follow(http, session, connected, errors))
            for session in sessions
            for _ in range(sizes.stream_followers)
        ]
        for _ in followers:
            await asyncio.wait_for(connected.acquire(), timeout=120)
        started = time.perf_counter()

        async def talk(session: str) -> None:
            for n in range(sizes.stream_turns):
                if await _first_delta(http, session, f"followed turn {n}", errors) is None:
                    errors["turn without a first delta"] += 1
            ended = await http.post(f"/chats/{session}/end", json={})
            if ended.status_code != 200:
                errors[f"end: HTTP {ended.status_code}"] += 1

        await asyncio.gather(*(talk(session) for session in sessions))
        seen = await asyncio.wait_for(asyncio.gather(*followers), timeout=300)
        seconds = time.perf_counter() - started
        whole = {s: await _whole_stream(http, s) for s in sessions}
    # What a client should have seen: the session's stream as it is kept (deltas are dropped
    # once their message is recorded) and every event any client of the session saw.
    of_session = [s for s in sessions for _ in range(sizes.stream_followers)]
    expected = {session: set(ids) for session, ids in whole.items()}
    for session, (ids, _) in zip(of_session, seen, strict=True):
        expected[session] |= set(ids)
    lost = duplicated = out_of_order = unfinished = 0
    for session, (ids, finished) in zip(of_session, seen, strict=True):
        lost += len(expected[session] - set(ids))
        duplicated += len(ids) - len(set(ids))
        out_of_order += ids != sorted(ids)
        unfinished += not finished
    return {
        "sessions": sizes.stream_sessions,
        "clients": clients,
        "turns_per_session": sizes.stream_turns,
        "events_per_session": summary_count([len(ids) for ids in expected.values()]),
        "events_delivered": sum(len(ids) for ids, _ in seen),
        "lost_events": lost,
        "duplicated_events": duplicated,
        "clients_out_of_order": out_of_order,
        "clients_without_session_final": unfinished,
        "seconds": round(seconds, 1),
        "errors": dict(errors),
    }


async def _follow(
    http: httpx.AsyncClient, session: str, connected: asyncio.Semaphore, errors: Counter[str]
) -> tuple[list[int], bool]:
    """The ids of the events one live client of `session` receives, and whether its stream
    ended with session.final."""
    ids: list[int] = []
    last = ""
    try:
        async with aconnect_sse(http, "GET", f"/chats/{session}/stream") as source:
            connected.release()
            async for event in sse_events(source):
                ids.append(int(event.id))
                last = event.event
    except httpx.HTTPError as error:
        errors[f"follower {type(error).__name__}"] += 1
        connected.release()
    return ids, last == "session.final"


async def _whole_stream(http: httpx.AsyncClient, session: str) -> list[int]:
    """Every event id of a final session's stream, from the start."""
    async with aconnect_sse(http, "GET", f"/chats/{session}/stream", params={"after": 0}) as source:
        return [int(event.id) async for event in sse_events(source)]


async def _session(http: httpx.AsyncClient, agent: str) -> str:
    opened = await open_session(http, agent)
    if not opened.ok:
        raise RuntimeError(f"could not open a session: {opened.status} {opened.error}")
    return str(opened.body["id"])


async def _first_delta(
    http: httpx.AsyncClient, session: str, content: str, errors: Counter[str]
) -> float | None:
    """Seconds from sending the message to its first `message.delta`; reads to `done`."""
    turn = await stream_turn(http, session, content)
    if turn.error is not None:
        errors[f"parley {turn.error}"] += 1
        return None
    if turn.first_delta is None:
        errors["parley stream without delta"] += 1
    return turn.first_delta


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
    handle = stack.client.get_workflow_handle(await stack.workflow_id(session))
    before = await handle.fetch_history()
    content = " ".join(f"w{n}" for n in range(words))
    deltas = 0
    async with aconnect_sse(
        http, "POST", f"/chats/{session}/messages", json={"content": content}, headers=_STREAM
    ) as source:
        async for event in sse_events(source):
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
