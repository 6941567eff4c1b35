"""squads: agents that hand a conversation to each other; the squad a session or a phone
number runs

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 19:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(sa.JSON(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "squad_versions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("spec", _JSON, nullable=False),
        sa.Column("created_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.PrimaryKeyConstraint("id", "version"),
    )
    with op.batch_alter_table("squad_versions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_squad_versions_account_id"), ["account_id"], unique=False
        )
    with op.batch_alter_table("chat_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("squad_id", sa.String(64), nullable=True))
    # A phone number answered by a squad has no agent.
    with op.batch_alter_table("phone_numbers", schema=None) as batch_op:
        batch_op.alter_column("agent_id", existing_type=sa.String(64), nullable=True)
        batch_op.add_column(sa.Column("squad_id", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("phone_numbers", schema=None) as batch_op:
        batch_op.drop_column("squad_id")
        batch_op.alter_column("agent_id", existing_type=sa.String(64), nullable=False)
    with op.batch_alter_table("chat_sessions", schema=None) as batch_op:
        batch_op.drop_column("squad_id")
    with op.batch_alter_table("squad_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_squad_versions_account_id"))
    op.drop_table("squad_versions")
