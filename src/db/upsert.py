"""Dialect-aware `INSERT ... ON CONFLICT DO NOTHING`, so retried activities write rows once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import CursorResult, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase


async def insert_missing(
    session: AsyncSession,
    table: type[DeclarativeBase],
    rows: Sequence[Mapping[str, Any]],
    conflict_columns: Sequence[str],
) -> None:
    """Insert those of `rows` not there already, in their order: one statement, compiled
    once and cached, executed for each row."""
    if rows:
        await session.execute(_insert(session, table, conflict_columns), list(rows))


async def insert_if_missing(
    session: AsyncSession,
    table: type[DeclarativeBase],
    row: Mapping[str, Any],
    conflict_columns: Sequence[str],
) -> bool:
    """Whether `row` was inserted (False: it was there already)."""
    result = await session.execute(_insert(session, table, conflict_columns), dict(row))
    return cast(CursorResult[Any], result).rowcount > 0


def _insert(
    session: AsyncSession, table: type[DeclarativeBase], conflict_columns: Sequence[str]
) -> Any:
    """On the table itself (Core): the ORM's bulk path reports no row count."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    core_table = cast(Table, table.__table__)
    return insert(core_table).on_conflict_do_nothing(index_elements=list(conflict_columns))
