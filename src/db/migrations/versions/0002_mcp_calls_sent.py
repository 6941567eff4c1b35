"""mcp_calls_sent: MCP tool calls that may have reached their server

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mcp_calls_sent",
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("sent_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("idempotency_key"),
    )
    with op.batch_alter_table("mcp_calls_sent", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_mcp_calls_sent_session_id"), ["session_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("mcp_calls_sent", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mcp_calls_sent_session_id"))
    op.drop_table("mcp_calls_sent")
