"""Dialect-aware `INSERT ... ON CONFLICT DO NOTHING`, so retried activities write rows once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import CursorResult
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase


async def insert_missing(
    session: AsyncSession,
    table: type[DeclarativeBase],
    rows: Sequence[Mapping[str, Any]],
    conflict_columns: Sequence[str],
) -> int:
    """How many of `rows` were inserted (the others were there already)."""
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(table)
        .values(list(rows))
        .on_conflict_do_nothing(index_elements=list(conflict_columns))
    )
    result = cast(CursorResult[Any], await session.execute(statement))
    return result.rowcount
