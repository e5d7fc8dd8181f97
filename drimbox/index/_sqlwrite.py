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
from drimbox.index._schema import instances, patients, rejected_instances, series, studies
from drimbox.index._sqlsearch import parent_joins
from drimbox.model import AddOutcome, Level

__all__ = [
    "AnyRow",
    "DuplicateInstanceError",
    "ReparentError",
    "add_instance_in",
    "reject_instances_in",
    "remove_instance_in",
]

_IDENTITY_COLUMNS = frozenset(
    {"PatientID", "IssuerOfPatientID", "StudyInstanceUID", "SeriesInstanceUID"}
)

_NOT_FILLED = frozenset(
    {
        "patient_pk",
        "study_pk",
        "last_received_at",
        "number_of_instances",
        "number_of_series",
        "number_of_studies",
        "modalities_in_study",
        "sop_classes_in_study",
        "stable",
        "revision",
    }
)
"""Columns an upsert never fills from the new row (parents, counters, stability)."""

_UPSERT_RETURNING = {
    "patients": (),
    "studies": ("patient_pk", "modalities_in_study", "sop_classes_in_study"),
    "series": ("study_pk", "Modality"),
}

_Values = dict[Level, dict[str, Any]]

AnyRow: TypeAlias = "sa.Row[*tuple[Any, ...]]"
"""A result row of any shape."""


class DuplicateInstanceError(Exception):
    """The SOP Instance UID is already indexed: the transaction is rolled back."""


class ReparentError(Exception):
    """The instance's series (or study) is indexed under other parents: roll back and redo.

    Attributes
    ----------
    parents
        The identifying values of the parents already indexed (``StudyInstanceUID``,
        ``PatientID``, ``IssuerOfPatientID``), to substitute in the instance's values.
    """

    def __init__(self, parents: dict[str, str]) -> None:
        super().__init__("instance indexed under its existing parents")
        self.parents = parents


def _increments(table: sa.Table, excluded: Any, dialect: str) -> dict[str, Any]:
    """``SET`` clauses counting one more instance into an existing row."""
    changes: dict[str, Any] = {"number_of_instances": table.c.number_of_instances + 1}
    if table is studies:
        latest = sa.func.greatest if dialect == "postgresql" else sa.func.max
        changes.update(
            last_received_at=latest(studies.c.last_received_at, excluded.last_received_at),
            stable=False,
            revision=studies.c.revision + 1,
        )
    return changes


@cache
def _upsert_statement(
    dialect: str, table: sa.Table, keys: tuple[str, ...], columns: tuple[str, ...]
) -> Any:
    """``INSERT ... ON CONFLICT DO UPDATE``: count the instance, fill empty attributes.

    Existing values are kept (first value wins). Built once per table and column set, then
    executed with parameters: statement construction would otherwise dominate an add.
    ``RETURNING number_of_instances`` tells whether the row is new (it then counts 1).
    """
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table)
    changes: dict[str, Any] = {
        name: sa.func.coalesce(table.c[name], statement.excluded[name])
        for name in columns
        if name not in _IDENTITY_COLUMNS and name not in _NOT_FILLED
    }
    changes.update(_increments(table, statement.excluded, dialect))
    returning = [table.c.id, table.c.number_of_instances]
    returning.extend(table.c[name] for name in _UPSERT_RETURNING[table.name])
    return statement.on_conflict_do_update(index_elements=list(keys), set_=changes).returning(
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


_STUDY_LISTS = (
    sa.update(studies)
    .where(studies.c.id == sa.bindparam("study_pk"))
    .values(
        number_of_series=studies.c.number_of_series + sa.bindparam("new_series"),
        modalities_in_study=sa.bindparam("modalities"),
        sop_classes_in_study=sa.bindparam("sop_classes"),
    )
)
_HELD_OR_REJECTED = sa.select(
    sa.or_(
        sa.exists().where(instances.c.SOPInstanceUID == sa.bindparam("sop")),
        sa.exists().where(rejected_instances.c.SOPInstanceUID == sa.bindparam("sop")),
    )
)
"""Whether a SOP Instance UID is indexed already or was rejected (it then stays out)."""

_PATIENT_COUNTS = (
    sa.update(patients)
    .where(patients.c.id == sa.bindparam("patient_pk"))
    .values(
        number_of_series=patients.c.number_of_series + sa.bindparam("new_series"),
        number_of_studies=patients.c.number_of_studies + sa.bindparam("new_study"),
    )
)
_PARENTS_OF_STUDY = (
    sa.select(studies.c.StudyInstanceUID, patients.c.PatientID, patients.c.IssuerOfPatientID)
    .join(patients, studies.c.patient_pk == patients.c.id)
    .where(studies.c.id == sa.bindparam("study_pk"))
)


def _upsert(
    connection: sa.Connection, table: sa.Table, keys: tuple[str, ...], values: dict[str, Any]
) -> AnyRow:
    statement = _upsert_statement(connection.dialect.name, table, keys, tuple(values))
    row: AnyRow = connection.execute(statement, values).one()
    return row


def _reparent(connection: sa.Connection, study_pk: int) -> ReparentError:
    row = connection.execute(_PARENTS_OF_STUDY, {"study_pk": study_pk}).one()
    return ReparentError(dict(row._mapping))


def add_instance_in(connection: sa.Connection, values: _Values) -> AddOutcome:
    """Add one instance (values per level, as stored) in the caller's transaction.

    The common case (a further instance of a known series) is four statements: the three
    upserts count the instance, the insert adds it. Rows are locked top-down.

    Raises
    ------
    DuplicateInstanceError
        The SOP Instance UID is already indexed (the caller rolls back).
    ReparentError
        The series or study is indexed under other parents (the caller rolls back,
        substitutes :attr:`ReparentError.parents` and tries again).
    """
    image = values[Level.IMAGE]
    if connection.execute(_HELD_OR_REJECTED, {"sop": image["SOPInstanceUID"]}).scalar():
        raise DuplicateInstanceError(image["SOPInstanceUID"])
    modality = values[Level.SERIES]["Modality"]
    sop_class = image["SOPClassUID"]
    patient = _upsert(
        connection,
        patients,
        ("PatientID", "IssuerOfPatientID"),
        {
            **values[Level.PATIENT],
            "number_of_instances": 1,
            "number_of_studies": 1,
            "number_of_series": 1,
        },
    )
    study = _upsert(
        connection,
        studies,
        ("StudyInstanceUID",),
        {
            **values[Level.STUDY],
            "patient_pk": patient.id,
            "last_received_at": image["received_at"],
            "number_of_instances": 1,
            "number_of_series": 1,
            "modalities_in_study": list_with(None, modality),
            "sop_classes_in_study": list_with(None, sop_class),
            "stable": False,
            "revision": 1,
        },
    )
    if study.patient_pk != patient.id:
        raise _reparent(connection, study.id)
    series_row = _upsert(
        connection,
        series,
        ("SeriesInstanceUID",),
        {**values[Level.SERIES], "study_pk": study.id, "number_of_instances": 1},
    )
    if series_row.study_pk != study.id:
        raise _reparent(connection, series_row.study_pk)
    inserted = connection.execute(
        _insert_instance_statement(connection.dialect.name), {**image, "series_pk": series_row.id}
    ).first()
    if inserted is None:
        raise DuplicateInstanceError(image["SOPInstanceUID"])
    new_study = int(study.number_of_instances == 1)
    new_series = int(series_row.number_of_instances == 1)
    if not new_study:
        modalities = list_with(study.modalities_in_study, series_row.Modality)
        sop_classes = list_with(study.sop_classes_in_study, sop_class)
        if new_series or (modalities, sop_classes) != (
            study.modalities_in_study,
            study.sop_classes_in_study,
        ):
            connection.execute(
                _STUDY_LISTS,
                {
                    "study_pk": study.id,
                    "new_series": new_series,
                    "modalities": modalities,
                    "sop_classes": sop_classes,
                },
            )
    if patient.number_of_instances != 1 and (new_study or new_series):
        connection.execute(
            _PATIENT_COUNTS,
            {"patient_pk": patient.id, "new_series": new_series, "new_study": new_study},
        )
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


@cache
def _tombstone_statement(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(rejected_instances).on_conflict_do_nothing(index_elements=["SOPInstanceUID"])


_STUDY_CHANGED = (
    sa.update(studies)
    .where(studies.c.id == sa.bindparam("study_pk"))
    .values(stable=False, revision=studies.c.revision + 1)
)
"""A study that lost instances is unstable again, so its manifest is rebuilt."""


def reject_instances_in(
    connection: sa.Connection,
    sop_instance_uids: list[str],
    columns: tuple[Any, ...],
    rejected_at: int,
) -> int:
    """Hide instances for good (IOCM) in the caller's transaction; return how many were held.

    Each UID gets a tombstone (even one not held yet: it will stay out when it arrives). A held
    instance leaves the level tables like :func:`remove_instance_in`; its blob key stays on the
    tombstone so that its bytes are kept until a retention policy removes them.
    """
    hidden = 0
    changed_studies: set[int] = set()
    for sop_instance_uid in dict.fromkeys(sop_instance_uids):
        row = remove_instance_in(connection, sop_instance_uid, columns)
        connection.execute(
            _tombstone_statement(connection.dialect.name),
            {
                "SOPInstanceUID": sop_instance_uid,
                "StudyInstanceUID": None if row is None else row.StudyInstanceUID,
                "blob_key": None if row is None else row.blob_key,
                "blob_size": None if row is None else row.blob_size,
                "rejected_at": rejected_at,
            },
        )
        if row is not None:
            hidden += 1
            changed_studies.add(row.study_pk)
    for study_pk in sorted(changed_studies):
        connection.execute(_STUDY_CHANGED, {"study_pk": study_pk})
    return hidden
