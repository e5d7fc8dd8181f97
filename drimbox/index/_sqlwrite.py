"""Write transactions of the SQL index besides the add: remove and reject instances.

They run inside a transaction opened by the caller and lock rows top-down (patient, study,
series, instance), like the add (:mod:`drimbox.index._sqladd`), so that concurrent writers on
PostgreSQL never deadlock one another.
"""

from __future__ import annotations

from functools import cache
from typing import Any, TypeAlias

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from drimbox.index._dicomjson import VALUE_SEPARATOR
from drimbox.index._schema import instances, patients, rejected_instances, series, studies
from drimbox.index._sqlsearch import parent_joins
from drimbox.model import Level

__all__ = [
    "AnyRow",
    "DuplicateInstanceError",
    "ReparentError",
    "reject_instances_in",
    "remove_instance_in",
]

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
