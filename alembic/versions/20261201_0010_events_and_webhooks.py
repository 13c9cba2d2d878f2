"""Events (the transactional outbox), webhooks and their deliveries; ordered jobs; retention
settings.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ORDERED = "ordering_key IS NOT NULL AND status IN ('queued', 'running')"
UNDISPATCHED = "position IS NULL"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("ordering_key", sa.String(length=200), nullable=True))
    op.create_index(
        "ix_jobs_ordering_key_created_at", "jobs", ["ordering_key", "created_at"],
        sqlite_where=sa.text(ORDERED), postgresql_where=sa.text(ORDERED),
    )
    with op.batch_alter_table("chat_sessions") as batch:
        batch.add_column(sa.Column("event_seq", sa.Integer(), server_default="0", nullable=False))
    with op.batch_alter_table("chat_messages") as batch:
        batch.add_column(sa.Column("event_seq", sa.Integer(), nullable=True))
    with op.batch_alter_table("projects") as batch:
        batch.add_column(
            sa.Column(
                "events_include_content", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )
        batch.add_column(sa.Column("session_ttl_days", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("message_retention_days", sa.Integer(), nullable=True))
    with op.batch_alter_table("workspaces") as batch:
        batch.add_column(sa.Column("session_ttl_days", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("message_retention_days", sa.Integer(), nullable=True))

    op.create_table(
        "events",
        sa.Column("project_id", sa.Uuid(), nullable=True),
        sa.Column("session_id", sa.Uuid(), nullable=True),
        sa.Column("sequence", sa.Integer(), nullable=True),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"],
            name=op.f("fk_events_workspace_id_workspaces"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("position", name=op.f("uq_events_position")),
    )
    op.create_index(
        "ix_events_undispatched", "events", ["created_at"],
        sqlite_where=sa.text(UNDISPATCHED), postgresql_where=sa.text(UNDISPATCHED),
    )
    op.create_index("ix_events_project_id_position", "events", ["project_id", "position"])
    op.create_index("ix_events_created_at", "events", ["created_at"])

    op.create_table(
        "webhooks",
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("event_types", sa.JSON(), nullable=False),
        sa.Column("signing_secret", sa.String(length=100), nullable=False),
        sa.Column("is_enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"],
            name=op.f("fk_webhooks_project_id_projects"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"],
            name=op.f("fk_webhooks_workspace_id_workspaces"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhooks")),
    )
    op.create_index(
        "ix_webhooks_workspace_id_project_id", "webhooks", ["workspace_id", "project_id"]
    )

    op.create_table(
        "webhook_deliveries",
        sa.Column("webhook_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["webhook_id"], ["webhooks.id"],
            name=op.f("fk_webhook_deliveries_webhook_id_webhooks"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"],
            name=op.f("fk_webhook_deliveries_workspace_id_workspaces"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index(
        "ix_webhook_deliveries_webhook_id_created_at", "webhook_deliveries",
        ["webhook_id", "created_at"],
    )
    op.create_index("ix_webhook_deliveries_created_at", "webhook_deliveries", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_created_at", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_webhook_id_created_at", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_webhooks_workspace_id_project_id", table_name="webhooks")
    op.drop_table("webhooks")
    op.drop_index("ix_events_created_at", table_name="events")
    op.drop_index("ix_events_project_id_position", table_name="events")
    op.drop_index("ix_events_undispatched", table_name="events")
    op.drop_table("events")
    with op.batch_alter_table("workspaces") as batch:
        batch.drop_column("message_retention_days")
        batch.drop_column("session_ttl_days")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("message_retention_days")
        batch.drop_column("session_ttl_days")
        batch.drop_column("events_include_content")
    with op.batch_alter_table("chat_messages") as batch:
        batch.drop_column("event_seq")
    with op.batch_alter_table("chat_sessions") as batch:
        batch.drop_column("event_seq")
    op.drop_index("ix_jobs_ordering_key_created_at", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("ordering_key")
