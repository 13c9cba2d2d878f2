"""Team workspaces: who created each workspace (a user's personal one is the one they created),
the roles a member may have, and invitations.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("workspaces", schema=None) as batch_op:
        batch_op.add_column(sa.Column("created_by_id", sa.Uuid(), nullable=True))
        batch_op.create_foreign_key(
            "fk_workspaces_created_by_id_users", "users", ["created_by_id"], ["id"],
            ondelete="SET NULL",
        )
        batch_op.create_index("ix_workspaces_created_by_id", ["created_by_id"], unique=False)
    # Until now every workspace was personal with its creator as its only member (the owner).
    op.execute(
        "UPDATE workspaces SET created_by_id = (SELECT user_id FROM workspace_members "
        "WHERE workspace_members.workspace_id = workspaces.id AND role = 'owner' LIMIT 1)"
    )
    with op.batch_alter_table("workspace_members", schema=None) as batch_op:
        batch_op.create_check_constraint("role", "role IN ('owner', 'admin', 'agent', 'viewer')")
    op.create_table(
        "invitations",
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("invited_by_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("accepted_by_id", sa.Uuid(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["accepted_by_id"], ["users.id"],
            name=op.f("fk_invitations_accepted_by_id_users"), ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["invited_by_id"], ["users.id"],
            name=op.f("fk_invitations_invited_by_id_users"), ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"],
            name=op.f("fk_invitations_workspace_id_workspaces"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invitations")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_invitations_token_hash")),
    )
    op.create_index(
        "ix_invitations_workspace_id_created_at", "invitations", ["workspace_id", "created_at"]
    )
    op.create_index("ix_invitations_workspace_id_email", "invitations", ["workspace_id", "email"])


def downgrade() -> None:
    op.drop_index("ix_invitations_workspace_id_email", table_name="invitations")
    op.drop_index("ix_invitations_workspace_id_created_at", table_name="invitations")
    op.drop_table("invitations")
    with op.batch_alter_table("workspace_members", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_workspace_members_role"), type_="check")
    with op.batch_alter_table("workspaces", schema=None) as batch_op:
        batch_op.drop_index("ix_workspaces_created_by_id")
        batch_op.drop_constraint("fk_workspaces_created_by_id_users", type_="foreignkey")
        batch_op.drop_column("created_by_id")
