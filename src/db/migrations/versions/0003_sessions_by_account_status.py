"""an index for counting an account's active sessions

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 08:30:00.000000

PARLEY_MAX_ACTIVE_SESSIONS counts an account's active sessions at every open; without this
index that count reads every session the account ever had.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("chat_sessions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_chat_sessions_account_status", ["account_id", "status"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("chat_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_chat_sessions_account_status")
