"""Fallback models and a deadline per project; attempts per reply.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("fallback_models", sa.JSON(), nullable=False, server_default="[]")
        )
        batch_op.add_column(sa.Column("llm_timeout", sa.Double(), nullable=True))

    with op.batch_alter_table("chat_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chat_messages", schema=None) as batch_op:
        batch_op.drop_column("attempts")

    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_column("llm_timeout")
        batch_op.drop_column("fallback_models")
