"""What a benchmark does through Parley's HTTP API, timed: create an agent, open, send."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Timed:
    seconds: float
    ok: bool
    status: int  # 0 when no response came back
    body: Any = None
    error: str | None = None


async def create_agent(
    http: httpx.AsyncClient, model: str, tools: list[dict[str, Any]] | None = None
) -> str:
    """An agent answered by the fake model `model`, with finishTheConversation and `tools`."""
    response = await http.post(
        "/agents",
        json={
            "name": f"bench agent ({model})",
            "system_prompt": "You help customers of {{company}} on {{channel}}.",
            "variables": {"company": "Bench Inc."},
            "model": {"provider": "openai", "name": model},
            "tools": [{"type": "builtin", "name": "finishTheConversation"}, *(tools or [])],
        },
    )
    response.raise_for_status()
    return str(response.json()["id"])


async def open_session(http: httpx.AsyncClient, agent_id: str, ttl_seconds: int = 3600) -> Timed:
    return await _timed(
        http, "/chats", {"agent_id": agent_id, "channel": "web", "ttl_seconds": ttl_seconds}, 201
    )


async def send(http: httpx.AsyncClient, session_id: str, content: str) -> Timed:
    return await _timed(http, f"/chats/{session_id}/messages", {"content": content}, 200)


async def _timed(http: httpx.AsyncClient, path: str, body: dict[str, Any], expect: int) -> Timed:
    started = time.perf_counter()
    try:
        response = await http.post(path, json=body)
    except httpx.HTTPError as error:
        return Timed(time.perf_counter() - started, False, 0, error=type(error).__name__)
    elapsed = time.perf_counter() - started
    ok = response.status_code == expect
    return Timed(
        elapsed,
        ok,
        response.status_code,
        body=response.json() if ok else None,
        error=None if ok else response.text[:300],
    )
