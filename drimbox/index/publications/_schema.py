"""Tables of the publication store (the migrations create the same schema)."""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["exams", "metadata", "outbox"]

metadata = sa.MetaData()

exams = sa.Table(
    "publication_exams",
    metadata,
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

outbox = sa.Table(
    "publication_outbox",
    metadata,
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
    sa.Index("ix_publication_outbox_due", "state", "next_attempt_at"),
    sa.Index("ix_publication_outbox_study", "study_instance_uid", "job_id"),
)
