"""The add transaction of the SQL index, on the driver's own cursor (SQLite and PostgreSQL).

Adding an instance is the hot path of ingest: a few statements and a durable commit per
received instance. SQLAlchemy Core's per-statement work (compiling, parameter processing,
result set-up) cost more than the statements themselves, so the add transaction runs SQL text
built once per dialect from the table metadata, with one flat dictionary of named parameters
(every level's columns; each statement takes the names it needs).

Statements, in lock order (patient, study, series, instance):

1. is the SOP Instance UID rejected (IOCM tombstone)?
2. upsert the patient, 3. the study, 4. the series: count the instance, fill attributes still
   empty (the first non-empty value wins); each parent key is found by its unique key, so the
   statements do not depend on one another's results and are sent together (PostgreSQL
   pipeline: one round trip);
5. insert the instance, ``ON CONFLICT DO NOTHING`` on its unique SOP Instance UID: concurrent
   adds of one instance (threads or processes) give one row, the others see a duplicate.

The results then decide: duplicate or rejected (roll back), series or study under other parents
(roll back, :class:`ReparentError`), or a few more statements when a series or study is new
(study lists, patient counters) before the commit.
"""

# The SQL text is built from the schema's table and column names only; every value is a bound
# parameter of the driver.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import sqlalchemy as sa

from drimbox.index._records import list_with
from drimbox.index._schema import instances, patients, rejected_instances, series, studies
from drimbox.index._sqlwrite import DuplicateInstanceError, ReparentError

__all__ = ["AddStatements", "DriverAdd", "add_statements", "finish_add", "run_add"]

POSTGRESQL = "postgresql"
SQLITE_BEGIN_WRITE = "BEGIN IMMEDIATE"
"""SQLite: take the write lock up front, so that two writers never deadlock upgrading."""

_IDENTITY_COLUMNS = frozenset(
    {"PatientID", "IssuerOfPatientID", "StudyInstanceUID", "SeriesInstanceUID"}
)
_MANAGED_COLUMNS = frozenset(
    {
        "id",
        "patient_pk",
        "study_pk",
        "series_pk",
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
"""Columns the add sets itself (keys, counters, study lists, stability), not from parameters."""

Execute = Callable[[str, dict[str, Any]], Sequence[Any] | None]
"""Run one statement with the flat parameters; return its first row (or ``None``)."""


@dataclass(frozen=True, slots=True)
class AddStatements:
    """SQL text of the add transaction for one dialect (named parameters of its driver)."""

    rejected: str
    patient: str
    study: str
    series: str
    instance: str
    study_lists: str
    patient_counts: str
    parents_of_study: str


def _quoted(name: str) -> str:
    return '"' + name + '"'


def _attribute_names(table: sa.Table) -> list[str]:
    return [column.name for column in table.columns if column.name not in _MANAGED_COLUMNS]


class _Sql:
    """Writes SQL text with the driver's named-parameter style."""

    def __init__(self, dialect: str) -> None:
        self.pyformat = dialect == POSTGRESQL
        self.latest = "greatest" if dialect == POSTGRESQL else "max"

    def parameter(self, name: str) -> str:
        return f"%({name})s" if self.pyformat else f":{name}"

    def upsert(
        self,
        table: sa.Table,
        keys: tuple[str, ...],
        managed: dict[str, str],
        updates: dict[str, str],
        returning: tuple[str, ...],
    ) -> str:
        """``INSERT ... ON CONFLICT (keys) DO UPDATE``: fill empty attributes, apply updates."""
        attributes = _attribute_names(table)
        names = [*attributes, *managed]
        values = [self.parameter(name) for name in attributes] + list(managed.values())
        changes = [
            f"{_quoted(name)} = coalesce({table.name}.{_quoted(name)}, excluded.{_quoted(name)})"
            for name in attributes
            if name not in _IDENTITY_COLUMNS
        ]
        changes.extend(f"{_quoted(name)} = {change}" for name, change in updates.items())
        return (
            f"INSERT INTO {table.name} ({', '.join(map(_quoted, names))}) "
            f"VALUES ({', '.join(values)}) "
            f"ON CONFLICT ({', '.join(map(_quoted, keys))}) DO UPDATE SET {', '.join(changes)} "
            f"RETURNING {', '.join(map(_quoted, returning))}"
        )

    def key_of(self, table: sa.Table, *keys: str) -> str:
        """Scalar subquery: the ``id`` of the row of ``table`` with these key parameters."""
        where = " AND ".join(f"{_quoted(key)} = {self.parameter(key)}" for key in keys)
        return f"(SELECT id FROM {table.name} WHERE {where})"


@cache
def add_statements(dialect: str) -> AddStatements:
    """Return the add transaction's SQL for ``dialect`` (``sqlite`` or ``postgresql``)."""
    sql = _Sql(dialect)
    parameter = sql.parameter
    counted = {"number_of_instances": "1"}
    count_one_more = {
        "number_of_instances": "{table}.number_of_instances + 1",
    }
    patient = sql.upsert(
        patients,
        ("PatientID", "IssuerOfPatientID"),
        {**counted, "number_of_studies": "1", "number_of_series": "1"},
        {name: change.format(table="patients") for name, change in count_one_more.items()},
        ("id", "number_of_instances"),
    )
    study = sql.upsert(
        studies,
        ("StudyInstanceUID",),
        {
            "patient_pk": sql.key_of(patients, "PatientID", "IssuerOfPatientID"),
            "last_received_at": parameter("received_at"),
            **counted,
            "number_of_series": "1",
            "modalities_in_study": parameter("Modality"),
            "sop_classes_in_study": parameter("SOPClassUID"),
            "stable": "FALSE",
            "revision": "1",
        },
        {
            **{name: change.format(table="studies") for name, change in count_one_more.items()},
            "last_received_at": f"{sql.latest}(studies.last_received_at, "
            "excluded.last_received_at)",
            "stable": "FALSE",
            "revision": "studies.revision + 1",
        },
        ("id", "number_of_instances", "patient_pk", "modalities_in_study", "sop_classes_in_study"),
    )
    series_upsert = sql.upsert(
        series,
        ("SeriesInstanceUID",),
        {"study_pk": sql.key_of(studies, "StudyInstanceUID"), **counted},
        {name: change.format(table="series") for name, change in count_one_more.items()},
        ("id", "number_of_instances", "study_pk", "Modality"),
    )
    instance_names = [name for name in _attribute_names(instances)]
    instance = (
        f"INSERT INTO instances ({', '.join(map(_quoted, [*instance_names, 'series_pk']))}) "
        f"VALUES ({', '.join(parameter(name) for name in instance_names)}, "
        f"{sql.key_of(series, 'SeriesInstanceUID')}) "
        'ON CONFLICT ("SOPInstanceUID") DO NOTHING RETURNING id'
    )
    return AddStatements(
        rejected=(
            f"SELECT 1 FROM {rejected_instances.name} "
            f'WHERE "SOPInstanceUID" = {parameter("SOPInstanceUID")}'
        ),
        patient=patient,
        study=study,
        series=series_upsert,
        instance=instance,
        study_lists=(
            "UPDATE studies SET number_of_series = number_of_series + "
            f"{parameter('new_series')}, modalities_in_study = {parameter('modalities')}, "
            f"sop_classes_in_study = {parameter('sop_classes')} "
            f"WHERE id = {parameter('study_pk')}"
        ),
        patient_counts=(
            f"UPDATE patients SET number_of_series = number_of_series + "
            f"{parameter('new_series')}, number_of_studies = number_of_studies + "
            f"{parameter('new_study')} WHERE id = {parameter('patient_pk')}"
        ),
        parents_of_study=(
            'SELECT studies."StudyInstanceUID", patients."PatientID", '
            'patients."IssuerOfPatientID" FROM studies JOIN patients '
            f"ON studies.patient_pk = patients.id WHERE studies.id = {parameter('study_pk')}"
        ),
    )


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
        First row of each of the five statements (rejected, patient, study, series, instance).

    Raises
    ------
    DuplicateInstanceError
        The instance is indexed already or was rejected (the caller rolls back).
    ReparentError
        The series or study is indexed under other parents (the caller rolls back).
    """
    rejected, patient, study, series_row, inserted = rows
    if rejected is not None or inserted is None:
        raise DuplicateInstanceError(values["SOPInstanceUID"])
    assert patient is not None and study is not None and series_row is not None
    patient_pk, patient_count = patient
    study_pk, study_count, study_patient_pk, study_modalities, study_sop_classes = study
    series_count, series_study_pk, series_modality = series_row[1:]
    if study_patient_pk != patient_pk:
        raise _reparent(statements, execute, study_pk)
    if series_study_pk != study_pk:
        raise _reparent(statements, execute, series_study_pk)
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


def _reparent(statements: AddStatements, execute: Execute, study_pk: int) -> ReparentError:
    row = execute(statements.parents_of_study, {"study_pk": study_pk})
    assert row is not None
    return ReparentError(dict(zip(_PARENT_NAMES, row, strict=True)))


def run_add(statements: AddStatements, execute: Execute, values: dict[str, Any]) -> None:
    """Run the add transaction statement by statement (a driver without pipelining)."""
    rows = [
        execute(statement, values)
        for statement in (
            statements.rejected,
            statements.patient,
            statements.study,
            statements.series,
            statements.instance,
        )
    ]
    finish_add(statements, execute, values, rows)


class DriverAdd:
    """Runs the add transaction on a pooled driver connection of ``engine``.

    SQLite: ``BEGIN IMMEDIATE``, the statements one by one, ``COMMIT``. PostgreSQL (psycopg 3):
    the first five statements in one pipeline (one round trip), the follow-ups, ``COMMIT``.
    Driver errors come out as :class:`sqlalchemy.exc.DBAPIError` (as if the statements had run
    through SQLAlchemy), so that callers retry and report them as for any other write; a
    connection the driver reports as broken is discarded from the pool.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._dialect = engine.dialect
        self._statements = add_statements(engine.dialect.name)
        self._pipelined = engine.dialect.name == POSTGRESQL
        self._begin = SQLITE_BEGIN_WRITE if engine.dialect.name == "sqlite" else None

    def __call__(self, values: dict[str, Any]) -> None:
        """Add the instance described by the flat ``values`` and commit (durably)."""
        pooled = self._engine.raw_connection()
        try:
            connection = pooled.driver_connection
            try:
                if self._pipelined:
                    self._add_pipelined(connection, values)
                else:
                    self._add_sequential(connection, values)
            except BaseException as error:
                self._roll_back(pooled, connection)
                dbapi_error = self._dialect.loaded_dbapi.Error
                if not isinstance(error, dbapi_error):
                    raise
                invalidated = self._dialect.is_disconnect(error, connection, None)
                if invalidated:
                    pooled.invalidate(error)
                raise sa.exc.DBAPIError.instance(
                    "add instance",
                    None,
                    error,
                    dbapi_error,
                    connection_invalidated=invalidated,
                    dialect=self._dialect,
                ) from error
        finally:
            pooled.close()

    def _roll_back(self, pooled: Any, connection: Any) -> None:
        try:
            connection.rollback()
        except self._dialect.loaded_dbapi.Error as error:
            pooled.invalidate(error)

    def _add_sequential(self, connection: Any, values: dict[str, Any]) -> None:
        cursor = connection.cursor()
        try:

            def execute(statement: str, parameters: dict[str, Any]) -> Sequence[Any] | None:
                cursor.execute(statement, parameters)
                row: Sequence[Any] | None = cursor.fetchone()
                return row

            if self._begin is not None:
                cursor.execute(self._begin)
            run_add(self._statements, execute, values)
            cursor.execute("COMMIT")
        finally:
            cursor.close()

    def _add_pipelined(self, connection: Any, values: dict[str, Any]) -> None:
        statements = self._statements
        with connection.pipeline():
            cursors = []
            for statement in (
                statements.rejected,
                statements.patient,
                statements.study,
                statements.series,
                statements.instance,
            ):
                cursor = connection.cursor()
                cursor.execute(statement, values, prepare=True)
                cursors.append(cursor)
        rows = [cursor.fetchone() for cursor in cursors]

        def execute(statement: str, parameters: dict[str, Any]) -> Sequence[Any] | None:
            cursor = connection.cursor()
            cursor.execute(statement, parameters)
            row: Sequence[Any] | None = cursor.fetchone() if cursor.description else None
            return row

        finish_add(statements, execute, values, rows)
        connection.commit()
