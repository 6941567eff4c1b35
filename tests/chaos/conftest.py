"""Chaos suite fixtures and its report. Sizes: reduced by default (part of `make test`),
full with PARLEY_CHAOS=full (`make chaos`)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from src.db.engine import migrate_async
from tests.chaos.harness import FULL, REPORT

POSTGRES = os.environ.get(
    "PARLEY_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not REPORT:
        return
    title = f"chaos report ({'full' if FULL else 'reduced'} run)"
    terminalreporter.section(title)
    for line in REPORT:
        terminalreporter.write_line(line)
    target = os.environ.get("PARLEY_CHAOS_REPORT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(f"# {title}\n\n" + "".join(f"- {line}\n" for line in REPORT))


def _plain_dsn(url: str, database: str) -> str:
    """postgresql+asyncpg://user@host:port/db → postgresql://user@host:port/<database>."""
    base = url.replace("postgresql+asyncpg://", "postgresql://", 1).rsplit("/", 1)[0]
    return f"{base}/{database}"


async def _postgres_answers() -> bool:
    try:
        connection = await asyncpg.connect(_plain_dsn(POSTGRES, "postgres"), timeout=5)
    except (OSError, asyncpg.PostgresError):
        return False
    await connection.close()
    return True


PostgresFactory = Callable[[str], Any]


@pytest.fixture(scope="session")
async def chaos_postgres() -> AsyncIterator[PostgresFactory | None]:
    """Creates a fresh, migrated PostgreSQL database named from a prefix (dropped afterwards)
    and returns (its asyncpg URL, PostgreSQL's port); None when PostgreSQL does not answer."""
    if not await _postgres_answers():
        yield None
        return
    created: list[str] = []

    async def create(prefix: str) -> tuple[str, int]:
        # A name of its own: other test runs on this machine may use the same server.
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        admin = await asyncpg.connect(_plain_dsn(POSTGRES, "postgres"), timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        created.append(name)
        url = POSTGRES.rsplit("/", 1)[0] + f"/{name}"
        await migrate_async(url)
        port = int(POSTGRES.split("@", 1)[-1].split("/", 1)[0].rsplit(":", 1)[-1])
        return url, port

    yield create
    admin = await asyncpg.connect(_plain_dsn(POSTGRES, "postgres"), timeout=10)
    try:
        for name in created:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
