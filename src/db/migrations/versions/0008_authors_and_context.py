"""who wrote each assistant message (the agent or a human operator); a session's context

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 16:40:00.000000

A human who takes a session over writes assistant messages too; the transcript says whose.
A final session keeps the context strings it finished with.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(sa.JSON(none_as_null=True), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("chat_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("author", _JSON, nullable=True))
    with op.batch_alter_table("chat_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("context", _JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chat_sessions", schema=None) as batch_op:
        batch_op.drop_column("context")
    with op.batch_alter_table("chat_messages", schema=None) as batch_op:
        batch_op.drop_column("author")
