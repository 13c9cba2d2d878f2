"""Intents, project slugs and fallback replies, and the intent a reply came from.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 16:00:00
"""

import re
import unicodedata
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _slugify(name: str) -> str:
    # Frozen copy of app.projects.slugs.slugify as of this revision.
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48].strip("-") or "project"


def upgrade() -> None:
    op.create_table(
        "intents",
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("patterns", sa.JSON(), nullable=False),
        sa.Column("reply", sa.Text(), nullable=False),
        sa.Column("links", sa.JSON(), nullable=False),
        sa.Column("requires_login", sa.Boolean(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_intents_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_intents_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_intents")),
    )
    with op.batch_alter_table("intents", schema=None) as batch_op:
        batch_op.create_index("ix_intents_project_id", ["project_id"], unique=False)
        batch_op.create_index(
            "ix_intents_workspace_id_project_id", ["workspace_id", "project_id"], unique=False
        )

    with op.batch_alter_table("chat_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("intent", sa.String(length=100), nullable=True))

    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("slug", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("fallback_reply", sa.Text(), nullable=True))

    # Existing projects get a slug from their name, unique in their workspace.
    projects = sa.table(
        "projects",
        sa.column("id", sa.Uuid()),
        sa.column("workspace_id", sa.Uuid()),
        sa.column("name", sa.String()),
        sa.column("slug", sa.String()),
    )
    connection = op.get_bind()
    taken: set[tuple[uuid.UUID, str]] = set()
    rows = connection.execute(
        sa.select(projects.c.id, projects.c.workspace_id, projects.c.name)
    ).all()
    for project_id, workspace_id, name in rows:
        slug = _slugify(name)
        if (workspace_id, slug) in taken:
            slug = f"{slug[:41]}-{project_id.hex[:6]}"
        taken.add((workspace_id, slug))
        connection.execute(
            sa.update(projects).where(projects.c.id == project_id).values(slug=slug)
        )

    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.alter_column("slug", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_unique_constraint(
            "uq_projects_workspace_id_slug", ["workspace_id", "slug"]
        )


def downgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_constraint("uq_projects_workspace_id_slug", type_="unique")
        batch_op.drop_column("fallback_reply")
        batch_op.drop_column("slug")

    with op.batch_alter_table("chat_messages", schema=None) as batch_op:
        batch_op.drop_column("intent")

    with op.batch_alter_table("intents", schema=None) as batch_op:
        batch_op.drop_index("ix_intents_workspace_id_project_id")
        batch_op.drop_index("ix_intents_project_id")

    op.drop_table("intents")
