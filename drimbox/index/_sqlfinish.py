"""Running the SQL index's add transaction and deciding on its results.

The statements (:mod:`drimbox.index._sqladd`) give the first row of each: held or rejected,
patient, study, series, instance. Then: duplicate or rejected (roll back,
:class:`DuplicateInstanceError`), series or study under other parents (roll back,
:class:`ReparentError`), or a few more statements before the commit: a parent's empty
attributes this instance has a value for are filled (the first non-empty value wins), and a
new series or study updates the study lists and the patient counters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import sqlalchemy as sa

from drimbox.index._records import list_with
from drimbox.index._schema import patients, series, studies
from drimbox.index._sqladd import (
    PATIENT_RETURNING,
    SERIES_RETURNING,
    STUDY_RETURNING,
    AddStatements,
    Execute,
    fillable,
    picker,
)
from drimbox.index._sqlwrite import DuplicateInstanceError, ReparentError

__all__ = ["finish_add", "run_add"]

_PARENT_NAMES = ("StudyInstanceUID", "PatientID", "IssuerOfPatientID")


def finish_add(
    statements: AddStatements,
    execute: Execute,
    values: dict[str, Any],
    rows: Sequence[Sequence[Any] | None],
) -> None:
    """Check the results of the first five statements; run the follow-up statements.

    Parameters
    ----------
    statements
        The dialect's statements.
    execute
        Runs one more statement in the transaction.
    values
        The flat parameters of the add.
    rows
        First row of each of the five statements (held or rejected, patient, study, series,
        instance).

    Raises
    ------
    DuplicateInstanceError
        The instance is indexed already or was rejected (the caller rolls back).
    ReparentError
        The series or study is indexed under other parents (the caller rolls back).
    """
    held_or_rejected, patient, study, series_row, inserted = rows
    if held_or_rejected is not None or inserted is None:
        raise DuplicateInstanceError(values["SOPInstanceUID"])
    assert patient is not None and study is not None and series_row is not None
    patient_pk, patient_count = patient[: len(PATIENT_RETURNING)]
    study_pk, study_count, study_patient_pk, study_modalities, study_sop_classes = study[
        : len(STUDY_RETURNING)
    ]
    series_pk, series_count, series_study_pk, series_modality = series_row[: len(SERIES_RETURNING)]
    if study_patient_pk != patient_pk:
        raise _reparent(statements, execute, study_pk)
    if series_study_pk != study_pk:
        raise _reparent(statements, execute, series_study_pk)
    for row, returned, table, fill, pk in (
        (patient, PATIENT_RETURNING, patients, statements.fill_patient, patient_pk),
        (study, STUDY_RETURNING, studies, statements.fill_study, study_pk),
        (series_row, SERIES_RETURNING, series, statements.fill_series, series_pk),
    ):
        if _fills(row[len(returned) :], table, values):
            execute(fill, {**values, "pk": pk})
    if series_modality is None:
        series_modality = values["Modality"]  # filled just now, if the instance has one
    new_study = int(study_count == 1)
    new_series = int(series_count == 1)
    if not new_study:
        modalities = list_with(study_modalities, series_modality)
        sop_classes = list_with(study_sop_classes, values["SOPClassUID"])
        if new_series or modalities != study_modalities or sop_classes != study_sop_classes:
            execute(
                statements.study_lists,
                {
                    "study_pk": study_pk,
                    "new_series": new_series,
                    "modalities": modalities,
                    "sop_classes": sop_classes,
                },
            )
    if patient_count != 1 and (new_study or new_series):
        execute(
            statements.patient_counts,
            {"patient_pk": patient_pk, "new_series": new_series, "new_study": new_study},
        )


def _fills(current: Sequence[Any], table: sa.Table, values: dict[str, Any]) -> bool:
    """Whether an instance with ``values`` has a value for some empty attribute of its parent."""
    if None not in current:  # the usual case once a parent is complete: one scan in C
        return False
    received = _fillable_values(table)(values)
    return any(
        held is None and value is not None for held, value in zip(current, received, strict=True)
    )


@cache
def _fillable_values(table: sa.Table) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    return picker(fillable(table))


def _reparent(statements: AddStatements, execute: Execute, study_pk: int) -> ReparentError:
    row = execute(statements.parents_of_study, {"study_pk": study_pk})
    assert row is not None
    return ReparentError(dict(zip(_PARENT_NAMES, row, strict=True)))


def run_add(statements: AddStatements, execute: Execute, values: dict[str, Any]) -> None:
    """Run the add transaction statement by statement (a driver without pipelining)."""
    if execute(statements.held_or_rejected, values) is not None:
        raise DuplicateInstanceError(values["SOPInstanceUID"])
    rows = [
        None,
        *(
            execute(statement, values)
            for statement in (
                statements.patient,
                statements.study,
                statements.series,
                statements.instance,
            )
        ),
    ]
    finish_add(statements, execute, values, rows)
