"""With the database unreachable, the API answers 503 `unavailable` (retry the same request),
in the one error shape, never a 500."""

from __future__ import annotations

import socket

import httpx

from tests.conftest import ApiFactory, SettingsFactory


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens there once the socket closes


async def test_unreachable_database_is_a_retryable_503(
    make_settings: SettingsFactory, serve_api: ApiFactory
) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{_closed_port()}/parley"
    settings = make_settings(DATABASE_URL=url)
    async with serve_api(settings) as base, httpx.AsyncClient(base_url=base) as http:
        headers = {"Authorization": "Bearer pk_whatever"}
        responses = [
            await http.get("/api/v1/chats", headers=headers),
            await http.get("/api/v1/agents", headers=headers),
            await http.get("/health"),
        ]
    for response in responses:
        assert response.status_code == 503, response.text
        body = response.json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
        assert body["error"]["code"] == "unavailable"
