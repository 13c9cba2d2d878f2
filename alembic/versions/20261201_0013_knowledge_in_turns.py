"""Knowledge in chat turns: a project's `knowledge` settings (retrieval on or off, how many
chunks, the context budget, limit overrides) and a reply's `citations` (the numbered sources
its prompt was given). On Postgres also `kb_terms`: per project, how many chunks hold each
lexeme, for IDF-weighted ranking (SQLite's FTS5 `bm25` keeps its own statistics).

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
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE TABLE kb_terms ("
            " project_id uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,"
            " term text NOT NULL,"
            " workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,"
            " chunks integer NOT NULL,"
            " PRIMARY KEY (project_id, term))"
        )
        op.execute(  # the chunks indexed before this migration
            "INSERT INTO kb_terms (project_id, term, workspace_id, chunks)"
            " SELECT c.project_id, t.lexeme, c.workspace_id, count(*)"
            " FROM kb_chunks AS c, unnest(c.tsv) AS t"
            " GROUP BY c.project_id, c.workspace_id, t.lexeme"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TABLE kb_terms")
    with op.batch_alter_table("chat_messages") as batch:
        batch.drop_column("citations")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("knowledge")
