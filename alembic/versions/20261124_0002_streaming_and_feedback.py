"""Streaming and conversation features: reply heartbeats and cancellation, feedback, and token
totals per session.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 15:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("chat_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("feedback_rating", sa.String(length=10), nullable=True))
        batch_op.add_column(sa.Column("feedback_comment", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("feedback_at", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("chat_sessions", schema=None) as batch_op:
        for column in ("prompt_tokens", "completion_tokens", "total_tokens"):
            batch_op.add_column(
                sa.Column(column, sa.Integer(), server_default="0", nullable=False)
            )


def downgrade() -> None:
    with op.batch_alter_table("chat_sessions", schema=None) as batch_op:
        for column in ("total_tokens", "completion_tokens", "prompt_tokens"):
            batch_op.drop_column(column)

    with op.batch_alter_table("chat_messages", schema=None) as batch_op:
        for column in (
            "feedback_at",
            "feedback_comment",
            "feedback_rating",
            "cancel_requested_at",
            "heartbeat_at",
        ):
            batch_op.drop_column(column)
