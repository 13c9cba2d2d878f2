"""Knowledge in chat turns: a project's `knowledge` settings (retrieval on or off, how many
chunks, the context budget, limit overrides) and a reply's `citations` (the numbered sources
its prompt was given).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 22:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("knowledge", sa.JSON(), nullable=True))
    with op.batch_alter_table("chat_messages") as batch:
        batch.add_column(sa.Column("citations", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chat_messages") as batch:
        batch.drop_column("citations")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("knowledge")
