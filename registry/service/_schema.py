"""Tables of the registry store (SQLAlchemy Core), shared by the store and the loader.

Designed for national scale: searches always start from the patient, so the one composite index
``(patient_oid, patient_value, status, period_start)`` answers them with a short range scan; KOS
bytes live in their own table so the entry rows stay small and hot in cache.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

__all__ = ["documents", "entries", "metadata"]

#: PS3.5 §9.1: a UID is at most 64 characters.
UID_LENGTH = 64
#: A FHIR id is at most 64 characters (FHIR R4 §2.24.0.1 id).
ID_LENGTH = 64

metadata = MetaData()

_PK = BigInteger().with_variant(Integer, "sqlite")  # SQLite: INTEGER PRIMARY KEY is the rowid

entries = Table(
    "registry_entry",
    metadata,
    Column("pk", _PK, primary_key=True, autoincrement=True),
    Column("entry_id", String(ID_LENGTH), nullable=False, unique=True),
    Column("kos_sop_instance_uid", String(UID_LENGTH), nullable=False, unique=True),
    Column("patient_oid", String(UID_LENGTH), nullable=False),
    Column("patient_value", String(15), nullable=False),
    Column("status", String(16), nullable=False),
    Column("period_start", Date, nullable=False),
    Column("period_end", Date, nullable=False),
    Column("study_instance_uid", String(UID_LENGTH), nullable=False),
    Column("accession_number", String(64)),
    # " system|code system|code " : the context.event tokens, filtered with LIKE inside one patient
    Column("event_tokens", Text, nullable=False),
    Column("type_token", String(256), nullable=False),
    Column("source_box_id", String(256), nullable=False),
    Column("custodian_id", String(256)),
    Column("author_id", String(256)),
    Column("confidentiality", String(1), nullable=False),
    Column("masked", Boolean, nullable=False),
    Column("replaces_id", String(ID_LENGTH)),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("updated", DateTime(timezone=True), nullable=False),
    # the rest of the metadata (displays, author, custodian, regions, title) as compact JSON
    Column("details", Text, nullable=False),
    Column("content_size", Integer, nullable=False),
    Column("content_sha256", String(64), nullable=False),
    Index("ix_registry_entry_patient", "patient_oid", "patient_value", "status", "period_start"),
)

documents = Table(
    "registry_document",
    metadata,
    Column(
        "entry_pk",
        _PK,
        ForeignKey("registry_entry.pk", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("content", LargeBinary, nullable=False),
)
