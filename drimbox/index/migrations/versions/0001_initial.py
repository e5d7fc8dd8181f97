"""Initial index schema: patients, studies, series, instances.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeEngine

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _text() -> TypeEngine[str]:
    """Text compared in code-point order (``COLLATE "C"`` on PostgreSQL)."""
    return sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")


def upgrade() -> None:
    """Create the four level tables and their indexes."""
    op.create_table(
        "patients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("PatientID", _text(), nullable=False),
        sa.Column("IssuerOfPatientID", _text(), nullable=False),
        sa.Column("PatientName", _text(), nullable=True),
        sa.Column("PatientName_ci", _text(), nullable=True),
        sa.Column("PatientName_fuzzy", _text(), nullable=True),
        sa.Column("PatientBirthDate", _text(), nullable=True),
        sa.Column("PatientSex", _text(), nullable=True),
        sa.Column("number_of_studies", sa.Integer(), server_default="0", nullable=False),
        sa.Column("number_of_series", sa.Integer(), server_default="0", nullable=False),
        sa.Column("number_of_instances", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("PatientID", "IssuerOfPatientID", name="uq_patients_identity"),
    )
    op.create_index("ix_patients_birth_date", "patients", ["PatientBirthDate"], unique=False)
    op.create_index("ix_patients_name_ci", "patients", ["PatientName_ci"], unique=False)
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("StudyInstanceUID", _text(), nullable=False),
        sa.Column("StudyDate", _text(), nullable=True),
        sa.Column("StudyTime", _text(), nullable=True),
        sa.Column("AccessionNumber", _text(), nullable=True),
        sa.Column("ReferringPhysicianName", _text(), nullable=True),
        sa.Column("ReferringPhysicianName_ci", _text(), nullable=True),
        sa.Column("ReferringPhysicianName_fuzzy", _text(), nullable=True),
        sa.Column("StudyID", _text(), nullable=True),
        sa.Column("StudyDescription", _text(), nullable=True),
        sa.Column("SpecificCharacterSet", _text(), nullable=True),
        sa.Column("TimezoneOffsetFromUTC", _text(), nullable=True),
        sa.Column("InstitutionName", _text(), nullable=True),
        sa.Column("number_of_series", sa.Integer(), server_default="0", nullable=False),
        sa.Column("number_of_instances", sa.Integer(), server_default="0", nullable=False),
        sa.Column("modalities_in_study", _text(), nullable=True),
        sa.Column("sop_classes_in_study", _text(), nullable=True),
        sa.Column("last_received_at", sa.BigInteger(), nullable=False),
        sa.Column("stable", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("revision", sa.Integer(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_pk"],
            ["patients.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("StudyInstanceUID", name="uq_studies_uid"),
    )
    op.create_index("ix_studies_accession", "studies", ["AccessionNumber"], unique=False)
    op.create_index("ix_studies_date", "studies", ["StudyDate", "StudyTime"], unique=False)
    op.create_index("ix_studies_patient", "studies", ["patient_pk"], unique=False)
    op.create_index("ix_studies_stability", "studies", ["stable", "last_received_at"], unique=False)
    op.create_table(
        "series",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_pk", sa.Integer(), nullable=False),
        sa.Column("SeriesInstanceUID", _text(), nullable=False),
        sa.Column("Modality", _text(), nullable=True),
        sa.Column("SeriesNumber", _text(), nullable=True),
        sa.Column("SeriesDescription", _text(), nullable=True),
        sa.Column("SeriesDate", _text(), nullable=True),
        sa.Column("SeriesTime", _text(), nullable=True),
        sa.Column("BodyPartExamined", _text(), nullable=True),
        sa.Column("PerformedProcedureStepStartDate", _text(), nullable=True),
        sa.Column("PerformedProcedureStepStartTime", _text(), nullable=True),
        sa.Column("series_number_order", sa.Integer(), nullable=True),
        sa.Column("number_of_instances", sa.Integer(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["study_pk"],
            ["studies.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("SeriesInstanceUID", name="uq_series_uid"),
    )
    op.create_index("ix_series_modality", "series", ["Modality"], unique=False)
    op.create_index("ix_series_study", "series", ["study_pk"], unique=False)
    op.create_table(
        "instances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("series_pk", sa.Integer(), nullable=False),
        sa.Column("SOPInstanceUID", _text(), nullable=False),
        sa.Column("SOPClassUID", _text(), nullable=False),
        sa.Column("InstanceNumber", _text(), nullable=True),
        sa.Column("Rows", _text(), nullable=True),
        sa.Column("Columns", _text(), nullable=True),
        sa.Column("BitsAllocated", _text(), nullable=True),
        sa.Column("NumberOfFrames", _text(), nullable=True),
        sa.Column("ContentDate", _text(), nullable=True),
        sa.Column("ContentTime", _text(), nullable=True),
        sa.Column("AcquisitionDateTime", _text(), nullable=True),
        sa.Column("instance_number_order", sa.Integer(), nullable=True),
        sa.Column("transfer_syntax_uid", _text(), nullable=False),
        sa.Column("blob_key", _text(), nullable=False),
        sa.Column("blob_size", sa.BigInteger(), nullable=False),
        sa.Column("blob_sha256", _text(), nullable=False),
        sa.Column("number_of_frames", sa.Integer(), nullable=False),
        sa.Column("pixel_data_offset", sa.BigInteger(), nullable=True),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.Column("metadata", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["series_pk"],
            ["series.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("SOPInstanceUID", name="uq_instances_uid"),
    )
    op.create_index("ix_instances_series", "instances", ["series_pk"], unique=False)


def downgrade() -> None:
    """Drop every table of the index."""
    op.drop_index("ix_instances_series", table_name="instances")
    op.drop_table("instances")
    op.drop_index("ix_series_study", table_name="series")
    op.drop_index("ix_series_modality", table_name="series")
    op.drop_table("series")
    op.drop_index("ix_studies_stability", table_name="studies")
    op.drop_index("ix_studies_patient", table_name="studies")
    op.drop_index("ix_studies_date", table_name="studies")
    op.drop_index("ix_studies_accession", table_name="studies")
    op.drop_table("studies")
    op.drop_index("ix_patients_name_ci", table_name="patients")
    op.drop_index("ix_patients_birth_date", table_name="patients")
    op.drop_table("patients")
