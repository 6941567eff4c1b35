"""`parley dev` starts the whole stack, prints what a newcomer needs, stops everything on
Ctrl-C, and keeps sessions across a restart (Temporal and the app database live in the data dir)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from tests.fakes.llm_server import FakeLLM

# Its own data dir and SQLite file: the PostgreSQL pass would only run it again.
pytestmark = pytest.mark.database_agnostic


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@asynccontextmanager
async def dev_stack(env: dict[str, str], output: list[str]) -> AsyncIterator[dict[str, str]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "src.cli", "dev",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    banner: dict[str, str] = {}
    drain: asyncio.Task[None] | None = None
    try:
        while "API key" not in banner:
            line = (await asyncio.wait_for(process.stdout.readline(), timeout=120)).decode()
            assert line, "parley dev exited early:\n" + "".join(output)
            output.append(line)
            found = re.match(
                r"\s+(API key|API|OpenAPI docs|Temporal UI|demo agent|widget demo)\s+(\S+)", line
            )
            if found:
                banner[found.group(1)] = found.group(2)
        drain = asyncio.create_task(_drain(process.stdout, output))
        yield banner
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)  # what Ctrl-C does
        await asyncio.wait_for(process.wait(), timeout=60)
        if drain is not None:
            await drain


async def _drain(stream: asyncio.StreamReader, output: list[str]) -> None:
    while line := await stream.readline():
        output.append(line.decode())


async def test_dev_stack_serves_the_walkthrough_and_survives_a_restart(tmp_path: Path) -> None:
    api_port, temporal_port, ui_port = _free_port(), _free_port(), _free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PARLEY_", "TEMPORAL_", "OPENAI_", "DATABASE_URL"))
    }
    env.update(
        PARLEY_DATA_DIR=str(tmp_path / "data"),
        PARLEY_PORT=str(api_port),
        PARLEY_DEV_TEMPORAL_PORT=str(temporal_port),
        PARLEY_DEV_UI_PORT=str(ui_port),
    )
    output: list[str] = []

    async with dev_stack(env, output) as banner:
        headers = {"Authorization": f"Bearer {banner['API key']}"}
        async with httpx.AsyncClient(base_url=banner["API"], headers=headers, timeout=30) as http:
            opened = await http.post(
                "/chats", json={"agent_id": banner["demo agent"], "channel": "web"}
            )
            session_id = opened.json()["id"]
            marker = f"hello {uuid.uuid4().hex}"
            first = await http.post(f"/chats/{session_id}/messages", json={"content": marker})
            async with httpx.AsyncClient() as plain:
                docs = await plain.get(banner["OpenAPI docs"])
                ui = await plain.get(f"http://127.0.0.1:{ui_port}/")
                root = banner["API"].removesuffix("/api/v1")
                codec = await plain.post(f"{root}/codec/decode", json={"payloads": []})
    stopped = [_listening(port) for port in (api_port, temporal_port, ui_port)]
    temporal_files = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("temporal.db*"))
    app_files = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("parley.db*"))

    async with dev_stack(env, output) as again:
        headers = {"Authorization": f"Bearer {again['API key']}"}
        async with httpx.AsyncClient(base_url=again["API"], headers=headers, timeout=30) as http:
            kept = (await http.get(f"/chats/{session_id}")).json()
            later = await http.post(f"/chats/{session_id}/messages", json={"content": "bye"})

    assert opened.status_code == 201, "".join(output)
    assert first.status_code == 200
    reply = first.json()["messages"][-1]
    assert "scripted model" in reply["content"]
    # Named for what it is in usage and in the Temporal UI, and free: not a paid model.
    assert reply["usage"]["model"] == "scripted"
    assert [(c["model"], c["cost"], c["priced"]) for c in kept["costs"]] == [("scripted", 0, True)]
    assert kept["cost"] == 0
    assert docs.status_code == 200 and ui.status_code == 200
    assert codec.status_code == 200  # what the Temporal UI calls, on loopback, without a key
    assert banner["Temporal UI"].startswith(f"http://127.0.0.1:{ui_port}/")
    assert stopped == [False, False, False]
    # Temporal's database holds only ciphertext of the conversation; Parley's own holds it.
    assert marker.encode() not in temporal_files and marker.encode() in app_files
    assert again["API key"] == banner["API key"]
    assert again["demo agent"] == banner["demo agent"]
    assert kept["status"] == "active"
    assert [m["role"] for m in kept["messages"]] == ["assistant", "user", "assistant"]
    assert later.status_code == 200 and later.json()["is_final"] is True


async def test_dev_stack_uses_the_configured_temporal_and_llm(
    tmp_path: Path, temporal_env: WorkflowEnvironment, fake_llm: tuple[FakeLLM, str]
) -> None:
    api_port, unused_temporal_port = _free_port(), _free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PARLEY_", "TEMPORAL_", "OPENAI_", "DATABASE_URL"))
    }
    env.update(
        PARLEY_DATA_DIR=str(tmp_path / "data"),
        PARLEY_PORT=str(api_port),
        PARLEY_DEV_TEMPORAL_PORT=str(unused_temporal_port),
        TEMPORAL_ADDRESS=temporal_env.client.service_client.config.target_host,
        TEMPORAL_TASK_QUEUE=f"dev-{uuid.uuid4().hex[:8]}",
        OPENAI_BASE_URL=fake_llm[1],
        PARLEY_DEFAULT_MODEL="echo",
    )
    output: list[str] = []

    async with dev_stack(env, output) as banner:
        headers = {"Authorization": f"Bearer {banner['API key']}"}
        async with httpx.AsyncClient(base_url=banner["API"], headers=headers, timeout=30) as http:
            opened = await http.post(
                "/chats", json={"agent_id": banner["demo agent"], "channel": "web"}
            )
            turn = await http.post(
                f"/chats/{opened.json()['id']}/messages", json={"content": "via the fake"}
            )
        own_server_started = _listening(unused_temporal_port)

    assert turn.status_code == 200, "".join(output)
    assert turn.json()["messages"][-1]["content"] == "echo: via the fake"
    assert own_server_started is False


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid`, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rpartition(")")[2].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.add(child)
            pending.append(child)
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def _wait_gone(pids: set[int], attempts: int = 300) -> set[int]:
    for _ in range(attempts):  # bounded guard, not a timing assertion
        left = {pid for pid in pids if _alive(pid)}
        if not left:
            return left
        await asyncio.sleep(0.1)
    return left


def _stack_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PARLEY_", "TEMPORAL_", "OPENAI_", "DATABASE_URL"))
    }
    env.update(
        PARLEY_DATA_DIR=str(tmp_path / "data"),
        PARLEY_PORT=str(_free_port()),
        PARLEY_DEV_TEMPORAL_PORT=str(_free_port()),
        PARLEY_DEV_UI_PORT=str(_free_port()),
        **extra,
    )
    return env


async def _started_stack(env: dict[str, str]) -> tuple[asyncio.subprocess.Process, list[str]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "src.cli", "dev",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    output: list[str] = []
    while not any("API key" in line for line in output):
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=120)).decode()
        assert line, "parley dev exited early:\n" + "".join(output)
        output.append(line)
    return process, output


async def test_a_killed_dev_stack_takes_its_processes_with_it(tmp_path: Path) -> None:
    process, output = await _started_stack(_stack_env(tmp_path))
    children = _descendants(process.pid)

    process.kill()  # SIGKILL: no chance to clean up itself
    await process.wait()
    left = await _wait_gone(children)

    assert len(children) >= 3, "".join(output)  # Temporal dev server, worker, API
    assert left == set()


async def test_ctrl_c_stops_everything_even_with_a_worker_stuck_in_a_call_and_quietly(
    tmp_path: Path, fake_llm: tuple[FakeLLM, str]
) -> None:
    fake, base = fake_llm
    tag = f"dev-{uuid.uuid4().hex[:8]}"
    env = _stack_env(tmp_path, OPENAI_BASE_URL=base, PARLEY_DEFAULT_MODEL=f"hold-{tag}")
    process, output = await _started_stack(env)
    assert process.stdout is not None
    drain = asyncio.create_task(_drain(process.stdout, output))
    banner: dict[str, str] = dict(
        (found[1], found[2])
        for line in output
        if (found := re.match(r"\s+(API key|API|demo agent)\s+(\S+)", line))
    )
    marker = f"stuck {uuid.uuid4().hex}"
    headers = {"Authorization": f"Bearer {banner['API key']}"}
    async with httpx.AsyncClient(base_url=banner["API"], headers=headers, timeout=30) as http:
        opened = await http.post(
            "/chats", json={"agent_id": banner["demo agent"], "channel": "web"}
        )
        stuck = asyncio.create_task(
            http.post(
                f"/chats/{opened.json()['id']}/messages", json={"content": marker}, timeout=600
            )
        )
        await fake.wait_held(tag, 1)  # the worker is inside an LLM call that does not end
        children = _descendants(process.pid)
        stopping_from = len(output)

        process.send_signal(signal.SIGINT)
        try:
            status = await asyncio.wait_for(process.wait(), timeout=120)  # generous guard
        finally:
            fake.release_held(tag)
        await drain
        left = await _wait_gone(children)
        stuck.cancel()

    after_ctrl_c = "".join(output[stopping_from:])
    assert len(children) >= 3, "".join(output)
    assert left == set()
    assert status == 0
    for noise in ("Traceback", "Connection refused", "ConnectionRefused", "transport error"):
        assert noise not in after_ctrl_c, after_ctrl_c
