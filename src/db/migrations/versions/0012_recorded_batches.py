"""recorded batches: each write of a session's transcript numbered, with a digest, and the
rows it stored tagged with its number

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 07:00:00.000000

A session writes its transcript from a local activity, inside the workflow task that produced
it, so the write can land before Temporal has stored that task. When the server loses the task,
the next one writes the same batch number with what really happened; the rows the lost one
left are then replaced (src/db/recorded_batches.py).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TAGGED = ("chat_messages", "audit_events", "stream_events")


def upgrade() -> None:
    op.create_table(
        "recorded_batches",
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("batch", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("session_id", "batch"),
    )
    for table in _TAGGED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("batch", sa.Integer(), nullable=True))


def downgrade() -> None:
    for table in _TAGGED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("batch")
    op.drop_table("recorded_batches")
