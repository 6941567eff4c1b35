"""vapi face: the names of sessions opened through /compat/vapi, and Vapi chats (one turn each)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 20:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(sa.JSON(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "vapi_sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(40), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.ForeignKeyConstraint(["id"], ["chat_sessions.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "vapi_chats",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("session_named", sa.Boolean(), nullable=False),
        sa.Column("previous_chat_id", sa.String(64), nullable=True),
        sa.Column("name", sa.String(40), nullable=True),
        sa.Column("assistant_id", sa.String(64), nullable=True),
        sa.Column("squad_id", sa.String(64), nullable=True),
        sa.Column("input", _JSON, nullable=False),
        sa.Column("output", _JSON, nullable=False),
        sa.Column("first_seq", sa.Integer(), nullable=False),
        sa.Column("state", sa.Text(), nullable=True),
        sa.Column("variables", _JSON, nullable=True),
        sa.Column("created_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.ForeignKeyConstraint(["session_id"], ["chat_sessions.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("vapi_chats", schema=None) as batch_op:
        batch_op.create_index(
            "ix_vapi_chats_account_created", ["account_id", "created_time", "id"], unique=False
        )
        batch_op.create_index("ix_vapi_chats_session", ["session_id", "first_seq"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("vapi_chats", schema=None) as batch_op:
        batch_op.drop_index("ix_vapi_chats_session")
        batch_op.drop_index("ix_vapi_chats_account_created")
    op.drop_table("vapi_chats")
    op.drop_table("vapi_sessions")
