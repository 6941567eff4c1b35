"""Async engine and session factory, and migrations applied through Alembic."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def create_engine(database_url: str, pre_ping: bool = True) -> AsyncEngine:
    """`pre_ping` tests each pooled connection before use (one round trip per transaction) so a
    request after a database restart does not fail; activities can go without it, Temporal
    retries the one write or read that meets a dead connection."""
    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # hide_parameters: a failing statement's values (message text, secrets) stay out of
        # exception messages, and so out of logs and Temporal history.
        # One connection per process: SQLite takes one writer at a time, and writers that
        # collide wait in its busy handler, which sleeps up to 100 ms a try. A single
        # connection queues them in the process instead (docs/benchmarks.md).
        engine = create_async_engine(
            database_url,
            connect_args={"timeout": 30},
            hide_parameters=True,
            pool_size=1,
            max_overflow=0,
            pool_timeout=60,
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        database_url,
        pool_size=10,
        max_overflow=20,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
        hide_parameters=True,
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while the worker writes; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def migrate(database_url: str) -> None:
    """Bring the schema to the latest migration (blocking; call before serving)."""
    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(database_url), "head")


async def migrate_async(database_url: str) -> None:
    await asyncio.to_thread(migrate, database_url)
