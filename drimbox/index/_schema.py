"""The index's tables, as SQLAlchemy Core metadata (the migrations create the same schema).

One table per level (patients, studies, series, instances) with surrogate integer keys; every
attribute of :data:`drimbox.dicom.attributes.INDEXED_ATTRIBUTES` is a column named by its
keyword; PN attributes also have an upper-cased (``_ci``) and a fuzzy (``_fuzzy``) column.
Instances rejected by IOCM leave the level tables for ``rejected_instances``.
Counters (``number_of_*``) and the study's modality / SOP class lists are maintained by
``add_instance`` and ``remove_instance`` so that listings need no aggregation.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeEngine

from drimbox.dicom.attributes import INDEXED_ATTRIBUTES, PERSON_NAME_ATTRIBUTES
from drimbox.index._query import CASE_FOLDED_SUFFIX, FUZZY_SUFFIX
from drimbox.model import Level

__all__ = [
    "LEVEL_TABLES",
    "instances",
    "metadata",
    "patients",
    "rejected_instances",
    "series",
    "studies",
    "text_type",
]

metadata = sa.MetaData()


def text_type() -> TypeEngine[str]:
    """Text with byte-order comparison everywhere (``COLLATE "C"`` on PostgreSQL).

    Range matching and ``LIKE`` prefix searches rely on code-point order, and PostgreSQL only
    uses a B-tree index for ``LIKE 'abc%'`` under the C collation.
    """
    return sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")


def _attribute_columns(level: Level, *required: str) -> list[sa.Column[str]]:
    columns: list[sa.Column[str]] = []
    for keyword in INDEXED_ATTRIBUTES[level]:
        if keyword in required:
            columns.append(sa.Column(keyword, text_type(), nullable=False))
        else:
            columns.append(sa.Column(keyword, text_type(), nullable=True))
        if keyword in PERSON_NAME_ATTRIBUTES:
            columns.append(sa.Column(keyword + CASE_FOLDED_SUFFIX, text_type()))
            columns.append(sa.Column(keyword + FUZZY_SUFFIX, text_type()))
    return columns


def _counter(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.Integer, nullable=False, server_default="0")


patients = sa.Table(
    "patients",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    *_attribute_columns(Level.PATIENT, "PatientID", "IssuerOfPatientID"),
    _counter("number_of_studies"),
    _counter("number_of_series"),
    _counter("number_of_instances"),
    sa.UniqueConstraint("PatientID", "IssuerOfPatientID", name="uq_patients_identity"),
)
sa.Index("ix_patients_name_ci", patients.c["PatientName" + CASE_FOLDED_SUFFIX])
sa.Index("ix_patients_birth_date", patients.c.PatientBirthDate)

studies = sa.Table(
    "studies",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("patient_pk", sa.Integer, sa.ForeignKey("patients.id"), nullable=False),
    *_attribute_columns(Level.STUDY, "StudyInstanceUID"),
    _counter("number_of_series"),
    _counter("number_of_instances"),
    sa.Column("modalities_in_study", text_type()),
    sa.Column("sop_classes_in_study", text_type()),
    sa.Column("last_received_at", sa.BigInteger, nullable=False),
    sa.Column("stable", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("revision", sa.Integer, nullable=False, server_default="0"),
    sa.UniqueConstraint("StudyInstanceUID", name="uq_studies_uid"),
)
sa.Index("ix_studies_patient", studies.c.patient_pk)
sa.Index("ix_studies_date", studies.c.StudyDate, studies.c.StudyTime)
sa.Index("ix_studies_accession", studies.c.AccessionNumber)
sa.Index("ix_studies_stability", studies.c.stable, studies.c.last_received_at)

series = sa.Table(
    "series",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("study_pk", sa.Integer, sa.ForeignKey("studies.id"), nullable=False),
    *_attribute_columns(Level.SERIES, "SeriesInstanceUID"),
    sa.Column("series_number_order", sa.Integer),
    _counter("number_of_instances"),
    sa.UniqueConstraint("SeriesInstanceUID", name="uq_series_uid"),
)
sa.Index("ix_series_study", series.c.study_pk)
sa.Index("ix_series_modality", series.c.Modality)

instances = sa.Table(
    "instances",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("series_pk", sa.Integer, sa.ForeignKey("series.id"), nullable=False),
    *_attribute_columns(Level.IMAGE, "SOPInstanceUID", "SOPClassUID"),
    sa.Column("instance_number_order", sa.Integer),
    sa.Column("transfer_syntax_uid", text_type(), nullable=False),
    sa.Column("blob_key", text_type(), nullable=False),
    sa.Column("blob_size", sa.BigInteger, nullable=False),
    sa.Column("blob_sha256", text_type(), nullable=False),
    sa.Column("number_of_frames", sa.Integer, nullable=False),
    sa.Column("pixel_data_offset", sa.BigInteger),
    sa.Column("received_at", sa.BigInteger, nullable=False),
    sa.Column("metadata", sa.Text, nullable=False),
    sa.UniqueConstraint("SOPInstanceUID", name="uq_instances_uid"),
)
sa.Index("ix_instances_series", instances.c.series_pk)

rejected_instances = sa.Table(
    "rejected_instances",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("SOPInstanceUID", text_type(), nullable=False),
    sa.Column("StudyInstanceUID", text_type()),
    sa.Column("blob_key", text_type()),
    sa.Column("blob_size", sa.BigInteger),
    sa.Column("rejected_at", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("SOPInstanceUID", name="uq_rejected_instances_uid"),
)
"""Instances rejected by IOCM: hidden for good, their bytes kept until retention removes them."""

LEVEL_TABLES: dict[Level, sa.Table] = {
    Level.PATIENT: patients,
    Level.STUDY: studies,
    Level.SERIES: series,
    Level.IMAGE: instances,
}
"""Table of each level."""
