"""The two write transactions of the SQL index: add and remove one instance.

Both run inside a transaction opened by the caller and lock rows top-down (patient, study,
series, instance), so that concurrent writers on PostgreSQL never deadlock one another.
"""

from __future__ import annotations

from functools import cache
from typing import Any, TypeAlias

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from drimbox.index._dicomjson import VALUE_SEPARATOR
from drimbox.index._records import list_with
from drimbox.index._schema import instances, patients, series, studies
from drimbox.index._sqlsearch import parent_joins
from drimbox.model import AddOutcome, Level

__all__ = ["AnyRow", "DuplicateInstanceError", "add_instance_in", "remove_instance_in"]

_IDENTITY_COLUMNS = frozenset(
    {"PatientID", "IssuerOfPatientID", "StudyInstanceUID", "SeriesInstanceUID"}
)

_PARENT_KEYS = frozenset({"patient_pk", "study_pk", "last_received_at"})
_UPSERT_RETURNING = {"studies": ("patient_pk",), "series": ("study_pk", "Modality")}

_Values = dict[Level, dict[str, Any]]

AnyRow: TypeAlias = "sa.Row[*tuple[Any, ...]]"
"""A result row of any shape."""


class DuplicateInstanceError(Exception):
    """The SOP Instance UID is already indexed: the transaction is rolled back."""


@cache
def _upsert_statement(
    dialect: str, table: sa.Table, keys: tuple[str, ...], columns: tuple[str, ...]
) -> Any:
    """``INSERT ... ON CONFLICT DO UPDATE`` keeping existing values, filling empty ones.

    Built once per table and column set, then executed with parameters (statement
    construction dominates the cost of an add otherwise).
    """
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table)
    fill = {
        name: sa.func.coalesce(table.c[name], statement.excluded[name])
        for name in columns
        if name not in _IDENTITY_COLUMNS and name not in _PARENT_KEYS
    }
    returning = [table.c.id, table.c.number_of_instances]
    returning.extend(table.c[name] for name in _UPSERT_RETURNING.get(table.name, ()))
    return statement.on_conflict_do_update(index_elements=list(keys), set_=fill).returning(
        *returning
    )


@cache
def _insert_instance_statement(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(instances)
        .on_conflict_do_nothing(index_elements=["SOPInstanceUID"])
        .returning(instances.c.id)
    )


_LOCK_STUDY = (
    sa.select(
        studies.c.patient_pk,
        studies.c.number_of_instances,
        studies.c.modalities_in_study,
        studies.c.sop_classes_in_study,
    )
    .where(studies.c.id == sa.bindparam("study_pk"))
    .with_for_update()
)
_COUNT_IN_SERIES = (
    sa.update(series)
    .where(series.c.id == sa.bindparam("series_pk"))
    .values(number_of_instances=series.c.number_of_instances + 1)
)


@cache
def _count_in_study(dialect: str) -> sa.Update:
    received_at = sa.bindparam("received_at", type_=sa.BigInteger)
    if dialect == "postgresql":
        latest = sa.func.greatest(studies.c.last_received_at, received_at)
    else:
        latest = sa.func.max(studies.c.last_received_at, received_at)
    return (
        sa.update(studies)
        .where(studies.c.id == sa.bindparam("study_pk"))
        .values(
            number_of_instances=studies.c.number_of_instances + 1,
            number_of_series=studies.c.number_of_series + sa.bindparam("new_series"),
            modalities_in_study=sa.bindparam("modalities"),
            sop_classes_in_study=sa.bindparam("sop_classes"),
            last_received_at=latest,
            stable=False,
            revision=studies.c.revision + 1,
        )
    )


_COUNT_FOR_PATIENT = (
    sa.update(patients)
    .where(patients.c.id == sa.bindparam("patient_pk"))
    .values(
        number_of_instances=patients.c.number_of_instances + 1,
        number_of_series=patients.c.number_of_series + sa.bindparam("new_series"),
        number_of_studies=patients.c.number_of_studies + sa.bindparam("new_study"),
    )
)


def _upsert(
    connection: sa.Connection, table: sa.Table, keys: tuple[str, ...], values: dict[str, Any]
) -> AnyRow:
    statement = _upsert_statement(connection.dialect.name, table, keys, tuple(values))
    row: AnyRow = connection.execute(statement, values).one()
    return row


def add_instance_in(connection: sa.Connection, values: _Values) -> AddOutcome:
    """Add one instance (values per level, as stored) in the caller's transaction.

    Raises
    ------
    DuplicateInstanceError
        The SOP Instance UID is already indexed (the caller rolls back).
    """
    dialect = connection.dialect.name
    image = values[Level.IMAGE]
    received_at = image["received_at"]
    patient = _upsert(
        connection, patients, ("PatientID", "IssuerOfPatientID"), values[Level.PATIENT]
    )
    study = _upsert(
        connection,
        studies,
        ("StudyInstanceUID",),
        {**values[Level.STUDY], "patient_pk": patient.id, "last_received_at": received_at},
    )
    series_row = _upsert(
        connection, series, ("SeriesInstanceUID",), {**values[Level.SERIES], "study_pk": study.id}
    )
    study_pk = series_row.study_pk
    study_now = connection.execute(_LOCK_STUDY, {"study_pk": study_pk}).one()
    inserted = connection.execute(
        _insert_instance_statement(dialect), {**image, "series_pk": series_row.id}
    ).first()
    if inserted is None:
        raise DuplicateInstanceError(image["SOPInstanceUID"])
    new_series = int(series_row.number_of_instances == 0)
    new_study = int(study_now.number_of_instances == 0)
    connection.execute(_COUNT_IN_SERIES, {"series_pk": series_row.id})
    connection.execute(
        _count_in_study(dialect),
        {
            "study_pk": study_pk,
            "new_series": new_series,
            "modalities": list_with(study_now.modalities_in_study, series_row.Modality),
            "sop_classes": list_with(study_now.sop_classes_in_study, image["SOPClassUID"]),
            "received_at": received_at,
        },
    )
    connection.execute(
        _COUNT_FOR_PATIENT,
        {"patient_pk": study_now.patient_pk, "new_series": new_series, "new_study": new_study},
    )
    # Parents created for this instance but superseded by the existing hierarchy.
    if study.id != study_pk and study.number_of_instances == 0:
        connection.execute(sa.delete(studies).where(studies.c.id == study.id))
    if patient.id != study_now.patient_pk and patient.number_of_instances == 0:
        connection.execute(sa.delete(patients).where(patients.c.id == patient.id))
    return AddOutcome.STORED


def _study_lists(connection: sa.Connection, study_pk: int) -> dict[str, str | None]:
    modalities = connection.execute(
        sa.select(series.c.Modality)
        .where(series.c.study_pk == study_pk, series.c.Modality.is_not(None))
        .distinct()
    ).scalars()
    sop_classes = connection.execute(
        sa.select(instances.c.SOPClassUID)
        .join(series, instances.c.series_pk == series.c.id)
        .where(series.c.study_pk == study_pk)
        .distinct()
    ).scalars()
    return {
        "modalities_in_study": VALUE_SEPARATOR.join(sorted(modalities)) or None,
        "sop_classes_in_study": VALUE_SEPARATOR.join(sorted(sop_classes)) or None,
    }


def remove_instance_in(
    connection: sa.Connection, sop_instance_uid: str, columns: tuple[Any, ...]
) -> AnyRow | None:
    """Remove one instance and its emptied parents; return its row of ``columns`` or ``None``."""
    row = connection.execute(
        sa.select(
            *columns,
            instances.c.id.label("instance_pk"),
            series.c.id.label("series_pk"),
            studies.c.id.label("study_pk"),
            studies.c.patient_pk.label("patient_pk"),
        )
        .select_from(parent_joins(Level.IMAGE, Level.STUDY))
        .where(instances.c.SOPInstanceUID == sop_instance_uid)
    ).first()
    if row is None:
        return None
    # Lock top-down, like add_instance_in, before changing anything.
    connection.execute(
        sa.select(patients.c.id).where(patients.c.id == row.patient_pk).with_for_update()
    )
    connection.execute(
        sa.select(studies.c.id).where(studies.c.id == row.study_pk).with_for_update()
    )
    removed = connection.execute(sa.delete(instances).where(instances.c.id == row.instance_pk))
    if removed.rowcount != 1:
        return None
    left_in_series = connection.execute(
        sa.update(series)
        .where(series.c.id == row.series_pk)
        .values(number_of_instances=series.c.number_of_instances - 1)
        .returning(series.c.number_of_instances)
    ).scalar_one()
    series_gone = int(left_in_series == 0)
    if series_gone:
        connection.execute(sa.delete(series).where(series.c.id == row.series_pk))
    left_in_study = connection.execute(
        sa.update(studies)
        .where(studies.c.id == row.study_pk)
        .values(
            number_of_instances=studies.c.number_of_instances - 1,
            number_of_series=studies.c.number_of_series - series_gone,
        )
        .returning(studies.c.number_of_instances)
    ).scalar_one()
    study_gone = int(left_in_study == 0)
    if study_gone:
        connection.execute(sa.delete(studies).where(studies.c.id == row.study_pk))
    else:
        connection.execute(
            sa.update(studies)
            .where(studies.c.id == row.study_pk)
            .values(**_study_lists(connection, row.study_pk))
        )
    left_for_patient = connection.execute(
        sa.update(patients)
        .where(patients.c.id == row.patient_pk)
        .values(
            number_of_instances=patients.c.number_of_instances - 1,
            number_of_series=patients.c.number_of_series - series_gone,
            number_of_studies=patients.c.number_of_studies - study_gone,
        )
        .returning(patients.c.number_of_instances)
    ).scalar_one()
    if left_for_patient == 0:
        connection.execute(sa.delete(patients).where(patients.c.id == row.patient_pk))
    return row
