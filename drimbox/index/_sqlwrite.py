"""The two write transactions of the SQL index: add and remove one instance.

Both run inside a transaction opened by the caller and lock rows top-down (patient, study,
series, instance), so that concurrent writers on PostgreSQL never deadlock one another.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import sqlalchemy as sa

from drimbox.index._dicomjson import VALUE_SEPARATOR
from drimbox.index._records import list_with
from drimbox.index._schema import instances, patients, series, studies
from drimbox.index._sqlsearch import parent_joins
from drimbox.model import AddOutcome, Level

__all__ = ["AnyRow", "DuplicateInstanceError", "add_instance_in", "remove_instance_in"]

_IDENTITY_COLUMNS = frozenset(
    {"PatientID", "IssuerOfPatientID", "StudyInstanceUID", "SeriesInstanceUID"}
)

_Values = dict[Level, dict[str, Any]]

AnyRow: TypeAlias = "sa.Row[*tuple[Any, ...]]"
"""A result row of any shape."""


class DuplicateInstanceError(Exception):
    """The SOP Instance UID is already indexed: the transaction is rolled back."""


def _fill_empty(table: sa.Table, statement: Any, values: dict[str, Any]) -> dict[str, Any]:
    """``SET`` clause keeping existing values and filling the empty ones (first value wins)."""
    return {
        name: sa.func.coalesce(table.c[name], statement.excluded[name])
        for name in values
        if name not in _IDENTITY_COLUMNS
    }


def _upsert(
    connection: sa.Connection,
    insert: Callable[[sa.Table], Any],
    table: sa.Table,
    keys: list[str],
    values: dict[str, Any],
    returning: tuple[sa.ColumnElement[Any], ...],
) -> AnyRow:
    statement = insert(table).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=keys, set_=_fill_empty(table, statement, values)
    ).returning(*returning)
    row: AnyRow = connection.execute(statement).one()
    return row


def add_instance_in(
    connection: sa.Connection, insert: Callable[[sa.Table], Any], values: _Values
) -> AddOutcome:
    """Add one instance (values per level, as stored) in the caller's transaction.

    Raises
    ------
    DuplicateInstanceError
        The SOP Instance UID is already indexed (the caller rolls back).
    """
    image = values[Level.IMAGE]
    received_at = image["received_at"]
    patient = _upsert(
        connection,
        insert,
        patients,
        ["PatientID", "IssuerOfPatientID"],
        values[Level.PATIENT],
        (patients.c.id, patients.c.number_of_instances),
    )
    study = _upsert(
        connection,
        insert,
        studies,
        ["StudyInstanceUID"],
        {**values[Level.STUDY], "patient_pk": patient.id, "last_received_at": received_at},
        (studies.c.id, studies.c.patient_pk, studies.c.number_of_instances),
    )
    series_row = _upsert(
        connection,
        insert,
        series,
        ["SeriesInstanceUID"],
        {**values[Level.SERIES], "study_pk": study.id},
        (series.c.id, series.c.study_pk, series.c.number_of_instances, series.c.Modality),
    )
    study_pk = series_row.study_pk
    study_now = connection.execute(
        sa.select(
            studies.c.patient_pk,
            studies.c.number_of_instances,
            studies.c.modalities_in_study,
            studies.c.sop_classes_in_study,
        )
        .where(studies.c.id == study_pk)
        .with_for_update()
    ).one()
    inserted = connection.execute(
        insert(instances)
        .values(**image, series_pk=series_row.id)
        .on_conflict_do_nothing(index_elements=["SOPInstanceUID"])
        .returning(instances.c.id)
    ).first()
    if inserted is None:
        raise DuplicateInstanceError(image["SOPInstanceUID"])
    new_series = int(series_row.number_of_instances == 0)
    new_study = int(study_now.number_of_instances == 0)
    connection.execute(
        sa.update(series)
        .where(series.c.id == series_row.id)
        .values(number_of_instances=series.c.number_of_instances + 1)
    )
    connection.execute(
        sa.update(studies)
        .where(studies.c.id == study_pk)
        .values(
            number_of_instances=studies.c.number_of_instances + 1,
            number_of_series=studies.c.number_of_series + new_series,
            modalities_in_study=list_with(study_now.modalities_in_study, series_row.Modality),
            sop_classes_in_study=list_with(study_now.sop_classes_in_study, image["SOPClassUID"]),
            last_received_at=sa.func.greatest(studies.c.last_received_at, received_at)
            if connection.dialect.name == "postgresql"
            else sa.func.max(studies.c.last_received_at, received_at),
            stable=False,
            revision=studies.c.revision + 1,
        )
    )
    connection.execute(
        sa.update(patients)
        .where(patients.c.id == study_now.patient_pk)
        .values(
            number_of_instances=patients.c.number_of_instances + 1,
            number_of_series=patients.c.number_of_series + new_series,
            number_of_studies=patients.c.number_of_studies + new_study,
        )
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
