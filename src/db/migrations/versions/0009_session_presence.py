"""who holds each session: the agent or a human operator, and whether help was asked

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 19:45:00.000000

The session list (the operator console's) shows which sessions asked for a human and which an
operator holds, without asking each session's workflow.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(sa.JSON(none_as_null=True), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("chat_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mode", sa.String(16), nullable=True))
        batch_op.add_column(
            sa.Column("help_requested", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("active_human", _JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chat_sessions", schema=None) as batch_op:
        batch_op.drop_column("active_human")
        batch_op.drop_column("help_requested")
        batch_op.drop_column("mode")
