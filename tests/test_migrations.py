"""The schema comes from Alembic migrations, and they match the SQLAlchemy tables."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from src.db.engine import alembic_config, create_engine, migrate_async
from src.db.tables import Base


async def _schema_differences(url: str) -> list[Any]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
    finally:
        await engine.dispose()


async def test_migrated_database_matches_the_tables(database_url: str) -> None:
    assert await _schema_differences(database_url) == []


async def test_migrations_upgrade_downgrade_and_upgrade_again(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'roundtrip.db'}"

    await migrate_async(url)
    await asyncio.to_thread(command.downgrade, alembic_config(url), "base")
    engine = create_engine(url)
    async with engine.connect() as connection:
        left = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    await engine.dispose()
    await migrate_async(url)

    assert left == ["alembic_version"]
    assert await _schema_differences(url) == []
