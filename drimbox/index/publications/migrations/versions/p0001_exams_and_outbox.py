"""Exams and the registry outbox.

Revision ID: p0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "p0001"
down_revision: str | None = None
branch_labels: tuple[str, ...] | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create the tables."""
    op.create_table(
        "publication_exams",
        sa.Column("study_instance_uid", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("report", sa.Text, nullable=False),
        sa.Column("kos_sop_instance_uid", sa.String(64)),
        sa.Column("registry_entry_id", sa.String(128)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("referenced_digest", sa.String(64)),
    )
    op.create_table(
        "publication_outbox",
        sa.Column("job_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("kos_sop_instance_uid", sa.String(64)),
        sa.Column("kos_blob_key", sa.String(128)),
        sa.Column("submission", sa.Text),
        sa.Column("replaces", sa.String(128)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("registry_entry_id", sa.String(128)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_publication_outbox_due", "publication_outbox", ["state", "next_attempt_at"])
    op.create_index(
        "ix_publication_outbox_study", "publication_outbox", ["study_instance_uid", "job_id"]
    )


def downgrade() -> None:
    """Drop the tables."""
    op.drop_table("publication_outbox")
    op.drop_table("publication_exams")
