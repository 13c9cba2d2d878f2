"""Semantic search: `kb_embeddings` (a chunk's vector per embedding model, float32 bytes,
dropped with its chunk), `kb_documents.chunks_embedded` (progress), and an index by content
hash so a new version of a document reuses the vectors of its unchanged chunks.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 03:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("kb_documents") as batch:
        batch.add_column(
            sa.Column("chunks_embedded", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("kb_chunks") as batch:
        batch.create_index("ix_kb_chunks_hash", ["document_id", "content_hash"], unique=False)
    op.create_table(
        "kb_embeddings",
        sa.Column(
            "chunk_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("document_id", sa.Uuid(), nullable=False),
        sa.Column("dims", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["chunk_id"],
            ["kb_chunks.id"],
            name=op.f("fk_kb_embeddings_chunk_id_kb_chunks"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["kb_documents.id"],
            name=op.f("fk_kb_embeddings_document_id_kb_documents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_kb_embeddings_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("chunk_id", "model", name=op.f("pk_kb_embeddings")),
    )
    with op.batch_alter_table("kb_embeddings") as batch:
        batch.create_index("ix_kb_embeddings_document", ["document_id", "model"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("kb_embeddings") as batch:
        batch.drop_index("ix_kb_embeddings_document")
    op.drop_table("kb_embeddings")
    with op.batch_alter_table("kb_chunks") as batch:
        batch.drop_index("ix_kb_chunks_hash")
    with op.batch_alter_table("kb_documents") as batch:
        batch.drop_column("chunks_embedded")
