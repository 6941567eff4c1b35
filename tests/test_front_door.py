"""The front door: a request's key, type and size are checked before its body is read, and
every refusal is in the one error shape with a message that says what to do."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.config import Settings
from src.services.accounts import new_api_key, register_api_key
from tests.conftest import ApiFactory, SettingsFactory, api_client
from tests.test_api_errors import assert_error

CHUNK = b" " * 65536  # JSON whitespace: a valid start of a body, however much of it is read
MIB = 1024 * 1024
REPO = Path(__file__).resolve().parent.parent


class Upload:
    """A body streamed from a generator that counts the chunks the client had to pull, i.e.
    what the server read plus what the kernel's socket buffers took."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self.pulled = 0

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(self.chunks):
            self.pulled += 1
            yield CHUNK

    @property
    def size(self) -> int:
        return self.chunks * len(CHUNK)


def post_upload(url: str, upload: Upload, key: str | None, declare_length: bool) -> httpx.Response:
    """A plain blocking client (in a thread): it reads the early answer a server sends before
    closing the connection, where asyncio's transport drops it on the failed write."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if declare_length:
        headers["Content-Length"] = str(upload.size)  # else sent chunked
    with httpx.Client(timeout=60) as client:
        response = client.post(url, content=iter(upload), headers=headers)
        response.read()
        return response


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
async def test_an_anonymous_200_mb_body_is_401_and_hardly_read(
    api_url: str, declare_length: bool
) -> None:
    upload = Upload(chunks=200 * MIB // len(CHUNK))

    response = await asyncio.to_thread(
        post_upload, f"{api_url}/api/v1/chats", upload, None, declare_length
    )

    assert_error(response, 401, "unauthorized")
    # Socket buffers on loopback take a few MiB; the old server read all 200.
    assert upload.pulled * len(CHUNK) < 32 * MIB, upload.pulled


async def test_an_authenticated_3_mb_body_is_413_in_the_error_shape(
    api_url: str, api_key: str, settings: Settings
) -> None:
    upload = Upload(chunks=3 * MIB // len(CHUNK))

    response = await asyncio.to_thread(
        post_upload, f"{api_url}/api/v1/agents", upload, api_key, True
    )

    error = assert_error(response, 413, "payload_too_large")
    assert str(settings.max_request_bytes) in error["message"]
    assert upload.pulled * len(CHUNK) < 32 * MIB


async def test_a_chunked_body_over_the_cap_is_413_once_the_cap_is_read(
    api_url: str, api_key: str
) -> None:
    upload = Upload(chunks=64 * MIB // len(CHUNK))

    response = await asyncio.to_thread(
        post_upload, f"{api_url}/api/v1/agents", upload, api_key, False
    )

    assert_error(response, 413, "payload_too_large")
    assert upload.pulled * len(CHUNK) < 32 * MIB


async def test_a_chunked_body_under_the_cap_is_read_as_usual(http: httpx.AsyncClient) -> None:
    body = b'{"name": "streamed", "system_prompt": "Hi.", "tools": []}'

    async def pieces() -> Any:
        for start in range(0, len(body), 7):
            yield body[start : start + 7]

    response = await http.post(
        "/agents", content=pieces(), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 201, response.text
    assert response.json()["name"] == "streamed"


async def test_an_answer_given_without_reading_the_body_keeps_the_connection(
    http: httpx.AsyncClient,
) -> None:
    """An unknown route of a face answers before its body is read: the front door reads the
    rest instead of closing, since closing with unread bytes resets the connection (the fuzz
    saw answers cut off so)."""
    for path in ("/openai/nowhere", "/agents/none/nowhere"):
        response = await http.put(path, json={"some": "body"})
        assert response.status_code in (404, 405), response.text
        assert response.headers.get("connection") != "close"
        assert response.json()  # the whole answer arrived


async def test_an_anonymous_malformed_request_is_401_not_422(api_url: str) -> None:
    async with api_client(api_url, None) as client:
        response = await client.post(
            "/chats", content=b"{not json", headers={"Content-Type": "application/json"}
        )

    assert_error(response, 401, "unauthorized")


async def test_health_metrics_and_codec_keep_their_own_rules(api_url: str) -> None:
    async with httpx.AsyncClient(base_url=api_url) as plain:
        health = await plain.get("/health")
        metrics = await plain.get("/metrics")
        codec = await plain.post("/codec/decode", json={"payloads": []})

    assert health.status_code == 200
    assert metrics.status_code == 200 and "parley_http_requests_total" in metrics.text
    assert_error(codec, 401, "unauthorized")


@pytest.mark.parametrize(
    "headers",
    [{"Content-Type": "application/x-www-form-urlencoded"}, {}, {"Content-Type": "text/plain"}],
    ids=["curl -d", "none", "text"],
)
async def test_a_body_that_is_not_declared_json_is_415_with_a_hint(
    http: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await http.post(
        "/agents", content=b'{"name": "x", "system_prompt": "Hi."}', headers=headers
    )

    error = assert_error(response, 415, "unsupported_media_type")
    assert "Content-Type: application/json" in error["message"]


async def test_a_post_without_a_body_needs_no_content_type(
    http: httpx.AsyncClient, make_agent: Any
) -> None:
    session = (
        await http.post("/chats", json={"agent_id": await make_agent(), "channel": "web"})
    ).json()

    response = await http.post(f"/chats/{session['id']}/end")

    assert response.status_code == 200, response.text


async def test_an_authorization_header_without_bearer_says_what_is_wrong(
    api_url: str, api_key: str
) -> None:
    async with httpx.AsyncClient(base_url=f"{api_url}/api/v1") as client:
        response = await client.get("/chats", headers={"Authorization": api_key})

    error = assert_error(response, 401, "unauthorized")
    assert "must be 'Bearer <key>'" in error["message"]
    assert api_key not in response.text


async def test_malformed_json_says_the_body_is_not_json_and_where(
    http: httpx.AsyncClient,
) -> None:
    body = b'{\n  "name": "x",\n  oops\n}'

    response = await http.post(
        "/agents", content=body, headers={"Content-Type": "application/json"}
    )

    error = assert_error(response, 422, "invalid_input")
    assert "not valid JSON" in error["message"]
    assert "line 3, column 3" in error["message"]
    assert "body.16" not in error["message"]
    assert error["details"][0]["line"] == 3 and error["details"][0]["column"] == 3


async def test_a_revoked_key_is_401_once_its_cache_entry_expires(
    make_settings: SettingsFactory,
    serve_api: ApiFactory,
    db: async_sessionmaker[AsyncSession],
) -> None:
    settings = make_settings(PARLEY_API_KEY_CACHE_SECONDS=0.5)
    key = new_api_key()
    await register_api_key(db, key, account_id=f"revoked-{uuid.uuid4().hex[:8]}")
    async with serve_api(settings) as url, api_client(url, key) as client:
        assert (await client.get("/agents")).status_code == 200  # and now cached

        revoked = await revoke_with_the_cli(settings, key)
        statuses = []
        for _ in range(100):  # bounded polling, not a timing assertion
            statuses.append((await client.get("/agents")).status_code)
            if statuses[-1] == 401:
                break
            await asyncio.sleep(0.1)

    assert revoked.returncode == 0, revoked.stderr
    assert statuses[-1] == 401, statuses


async def test_revoking_an_unknown_key_fails_the_command(make_settings: SettingsFactory) -> None:
    result = await revoke_with_the_cli(make_settings(), new_api_key())

    assert result.returncode == 1
    assert "no such key" in result.stderr


async def revoke_with_the_cli(settings: Settings, key: str) -> subprocess.CompletedProcess[str]:
    """`parley revoke-key -`, the key on standard input (kept out of the process list)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")},
        "DATABASE_URL": settings.database_url,
        "PARLEY_DATA_DIR": str(settings.data_dir),
    }
    command = [sys.executable, "-m", "src.cli", "revoke-key", "-"]
    return await asyncio.to_thread(
        subprocess.run,
        command,
        input=key + "\n",
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("path", ["/agents/a%00b", "/widget-keys/a%00b", "/chats/a%00b"])
async def test_a_nul_in_the_path_is_422_not_a_database_error(
    http: httpx.AsyncClient, path: str
) -> None:
    response = await http.get(path)
    assert response.status_code == 422
    assert "NUL" in response.json()["error"]["message"]
