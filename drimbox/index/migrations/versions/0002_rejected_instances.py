"""Instances rejected by IOCM (PS3.4 / IHE RAD TF-2 IOCM): tombstones.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeEngine

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def _text() -> TypeEngine[str]:
    """Text compared in code-point order (``COLLATE "C"`` on PostgreSQL)."""
    return sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")


def upgrade() -> None:
    """Create the table of rejected instances."""
    op.create_table(
        "rejected_instances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("SOPInstanceUID", _text(), nullable=False),
        sa.Column("StudyInstanceUID", _text(), nullable=True),
        sa.Column("blob_key", _text(), nullable=True),
        sa.Column("blob_size", sa.BigInteger(), nullable=True),
        sa.Column("rejected_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("SOPInstanceUID", name="uq_rejected_instances_uid"),
    )


def downgrade() -> None:
    """Drop the table of rejected instances."""
    op.drop_table("rejected_instances")
