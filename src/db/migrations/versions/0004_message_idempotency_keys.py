"""idempotency keys recorded with the user messages they answered

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 13:30:00.000000

A session's workflow remembers the outcomes of its most recent idempotency keys only; an older
key is looked up here (unique per session), so its retry is answered, not run again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("chat_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=200), nullable=True))
        batch_op.create_index(
            "uq_chat_messages_session_idempotency_key",
            ["session_id", "idempotency_key"],
            unique=True,
        )


def downgrade() -> None:
    with op.batch_alter_table("chat_messages", schema=None) as batch_op:
        batch_op.drop_index("uq_chat_messages_session_idempotency_key")
        batch_op.drop_column("idempotency_key")
