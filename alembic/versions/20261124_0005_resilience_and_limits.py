"""Fallback models, a deadline and limits per project; limits per API key; attempts per reply;
the turn holding each session; idempotency keys.

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

LIMIT_COLUMNS = (
    "rate_limit_per_minute",
    "end_user_rate_limit_per_minute",
    "tokens_per_day",
    "end_user_tokens_per_day",
)


def upgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("fallback_models", sa.JSON(), nullable=False, server_default="[]")
        )
        batch_op.add_column(sa.Column("llm_timeout", sa.Double(), nullable=True))
        for column in LIMIT_COLUMNS:
            batch_op.add_column(sa.Column(column, sa.Integer(), nullable=True))

    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rate_limit_per_minute", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("tokens_per_day", sa.Integer(), nullable=True))

    with op.batch_alter_table("chat_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=True))

    op.create_table(
        "idempotency_keys",
        sa.Column("caller", sa.String(length=80), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.Column("response_headers", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_idempotency_keys_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
        sa.UniqueConstraint(
            "workspace_id", "caller", "key", name="uq_idempotency_keys_workspace_id_caller_key"
        ),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index(
            "ix_idempotency_keys_workspace_id_expires_at",
            ["workspace_id", "expires_at"],
            unique=False,
        )

    with op.batch_alter_table("chat_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("turn_owner", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("turn_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_idempotency_keys_workspace_id_expires_at")
    op.drop_table("idempotency_keys")

    with op.batch_alter_table("chat_sessions", schema=None) as batch_op:
        batch_op.drop_column("turn_until")
        batch_op.drop_column("turn_owner")

    with op.batch_alter_table("chat_messages", schema=None) as batch_op:
        batch_op.drop_column("attempts")

    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("tokens_per_day")
        batch_op.drop_column("rate_limit_per_minute")

    with op.batch_alter_table("projects", schema=None) as batch_op:
        for column in reversed(LIMIT_COLUMNS):
            batch_op.drop_column(column)
        batch_op.drop_column("llm_timeout")
        batch_op.drop_column("fallback_models")
