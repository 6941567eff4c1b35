"""the SMS channel: phone numbers, opt-outs, sent texts, delivery statuses, attachments

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 06:40:00.000000

Phone numbers (Twilio) answered by an agent; the senders who opted out; each text an
assistant message was sent as, written before it is sent; the status callbacks taken; and the
media URLs that came with a message.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(sa.JSON(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "phone_numbers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("config", _JSON, nullable=False),
        sa.Column("ttl_seconds", sa.Integer(), nullable=True),
        sa.Column("help_text", sa.Text(), nullable=True),
        sa.Column("created_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("number"),
    )
    op.create_index(
        "ix_phone_numbers_account_created",
        "phone_numbers",
        ["account_id", "created_time", "id"],
        unique=False,
    )
    op.create_table(
        "sms_opt_outs",
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("sender", sa.String(length=32), nullable=False),
        sa.Column("opted_out", sa.Boolean(), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("number", "sender"),
    )
    op.create_table(
        "sms_parts",
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("sender", sa.String(length=32), nullable=False),
        sa.Column("recipient", sa.String(length=32), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("provider_message_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("error_code", sa.String(length=16), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("session_id", "seq", "part"),
    )
    op.create_index(
        "uq_sms_parts_provider_message_id", "sms_parts", ["provider_message_id"], unique=True
    )
    op.create_table(
        "sms_status_events",
        sa.Column("provider_message_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("provider_message_id", "status"),
    )
    with op.batch_alter_table("chat_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attachments", _JSON, nullable=True))
    op.create_index("ix_chat_sessions_endpoint", "chat_sessions", ["endpoint_hash"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_chat_sessions_endpoint", table_name="chat_sessions")
    with op.batch_alter_table("chat_messages", schema=None) as batch_op:
        batch_op.drop_column("attachments")
    op.drop_table("sms_status_events")
    op.drop_index("uq_sms_parts_provider_message_id", table_name="sms_parts")
    op.drop_table("sms_parts")
    op.drop_table("sms_opt_outs")
    op.drop_index("ix_phone_numbers_account_created", table_name="phone_numbers")
    op.drop_table("phone_numbers")
