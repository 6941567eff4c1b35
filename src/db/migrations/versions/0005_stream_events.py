"""the live stream of each conversation: model text as it comes, tool calls, messages, the end

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 22:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stream_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("turn", sa.String(length=200), nullable=True),
        sa.Column("event_key", sa.String(length=200), nullable=True),
        sa.Column(
            "data", sa.JSON().with_variant(sa.JSON(none_as_null=True), "postgresql"), nullable=False
        ),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "uq_stream_events_position", "stream_events", ["session_id", "position"], unique=True
    )
    op.create_index(
        "uq_stream_events_key", "stream_events", ["session_id", "event_key"], unique=True
    )


def downgrade() -> None:
    op.drop_index("uq_stream_events_key", table_name="stream_events")
    op.drop_index("uq_stream_events_position", table_name="stream_events")
    op.drop_table("stream_events")
