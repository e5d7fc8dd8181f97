"""The add transaction of the SQL index, on the driver's own cursor (SQLite and PostgreSQL).

Adding an instance is the hot path of ingest: a few statements and a durable commit per
received instance. SQLAlchemy Core's per-statement work (compiling, parameter processing,
result set-up) cost more than the statements themselves, so the add transaction runs SQL text
built once per dialect from the table metadata, with one flat dictionary of named parameters
(every level's columns; each statement takes the names it needs).

Statements, in lock order (patient, study, series, instance):

1. is the SOP Instance UID held already, or rejected (IOCM tombstone)? (SQLite stops there:
   a duplicate writes nothing);
2. upsert the patient, 3. the study, 4. the series: count the instance and return the row's
   attributes as they were; each parent key is found by its unique key, so the statements
   do not depend on one another's results and are sent together (PostgreSQL pipeline: one
   round trip). The upserts set counters only, never an indexed attribute, so an existing row's
   indexes are left alone (SQLite rewrites the entries of every index whose columns a ``SET``
   names; PostgreSQL can then update the row in place);
5. insert the instance, ``ON CONFLICT DO NOTHING`` on its unique SOP Instance UID: concurrent
   adds of one instance (threads or processes) give one row, the others see a duplicate.

:mod:`drimbox.index._sqlfinish` runs them and decides on their results.
"""

# The SQL text is built from the schema's table and column names only; every value is a bound
# parameter of the driver.
# ruff: noqa: S608

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache, partial
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from drimbox.index._schema import instances, patients, rejected_instances, series, studies

__all__ = [
    "PATIENT_RETURNING",
    "POSTGRESQL",
    "SERIES_RETURNING",
    "STUDY_RETURNING",
    "AddStatements",
    "Execute",
    "Statement",
    "add_statements",
    "fillable",
    "picker",
    "returned_lengths",
]

POSTGRESQL = "postgresql"

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

_POSTGRESQL_DIALECT: sa.Dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
_NAMED_PARAMETER = re.compile(r":(\w+)")


@dataclass(frozen=True, slots=True)
class Statement:
    """SQL text and how to pass it the flat parameters.

    Attributes
    ----------
    text
        The SQL, with ``%(name)s`` parameters (PostgreSQL) or ``?`` (SQLite).
    names
        SQLite: the name of each ``?`` in order (positional binding is the fastest);
        ``None``: the text takes the parameters by name.
    """

    text: str
    names: tuple[str, ...] | None = None
    _pick: Callable[[dict[str, Any]], Any] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.names is not None:
            object.__setattr__(self, "_pick", picker(self.names))

    def parameters(self, values: dict[str, Any]) -> dict[str, Any] | tuple[Any, ...]:
        """Return the driver parameters of this statement from the flat ``values``."""
        if self._pick is None:
            return values
        picked: tuple[Any, ...] = self._pick(values)
        return picked


def picker(names: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """Return a function taking ``names``' values, in order, from a dictionary (C, if several)."""
    if len(names) == 1:
        (name,) = names
        return lambda values: (values[name],)
    return itemgetter(*names)


def _statement(dialect: str, text: str) -> Statement:
    if dialect == POSTGRESQL:
        return Statement(text)
    names = tuple(_NAMED_PARAMETER.findall(text))
    return Statement(_NAMED_PARAMETER.sub("?", text), names)


Execute = Callable[[Statement, dict[str, Any]], Sequence[Any] | None]
"""Run one statement with the flat parameters; return its first row (or ``None``)."""


@dataclass(frozen=True, slots=True)
class AddStatements:
    """The add transaction's statements for one dialect."""

    held_or_rejected: Statement
    patient: Statement
    study: Statement
    series: Statement
    instance: Statement
    combined: Statement | None
    study_lists: Statement
    fill_patient: Statement
    fill_study: Statement
    fill_series: Statement
    patient_counts: Statement
    parents_of_study: Statement


def _quoted(name: str) -> str:
    return '"' + name + '"'


def _attribute_names(table: sa.Table) -> list[str]:
    return [column.name for column in table.columns if column.name not in _MANAGED_COLUMNS]


@cache
def fillable(table: sa.Table) -> tuple[str, ...]:
    """A parent table's attributes that a later instance may fill (not its identity)."""
    return tuple(name for name in _attribute_names(table) if name not in _IDENTITY_COLUMNS)


class _Sql:
    """Writes SQL text with the driver's named-parameter style."""

    def __init__(self, dialect: str) -> None:
        self.pyformat = dialect == POSTGRESQL
        self.latest = "greatest" if dialect == POSTGRESQL else "max"

    def parameter(self, name: str) -> str:
        return f"%({name})s" if self.pyformat else f":{name}"  # SQLite: then made positional

    def upsert(
        self,
        table: sa.Table,
        keys: tuple[str, ...],
        managed: dict[str, str],
        updates: dict[str, str],
        returning: tuple[str, ...],
        source: str | None,
    ) -> str:
        """``INSERT ... ON CONFLICT (keys) DO UPDATE``: apply ``updates`` only.

        Returns the ``returning`` columns, then the fillable attributes (:func:`fillable`):
        the caller compares them to the instance's. (Not ``"name" IS NULL`` flags: SQLite
        3.40.1 evaluates them wrongly in this ``RETURNING`` clause, 0 for a NULL column.)
        ``source``: ``None`` for ``VALUES (...)``, else the end of ``SELECT <values> ...``
        (a ``FROM`` or ``WHERE`` clause: no row, no insert).
        """
        attributes = _attribute_names(table)
        names = [*attributes, *managed]
        values = [self.value(table, name, source) for name in attributes]
        values.extend(managed.values())
        changes = [f"{_quoted(name)} = {change}" for name, change in updates.items()]
        current = [f"{_quoted(name)} AS {_quoted(_CURRENT + name)}" for name in fillable(table)]
        return (
            f"INSERT INTO {table.name} ({', '.join(map(_quoted, names))}) "
            f"{_rows(values, source)} "
            f"ON CONFLICT ({', '.join(map(_quoted, keys))}) DO UPDATE SET {', '.join(changes)} "
            f"RETURNING {', '.join([*map(_quoted, returning), *current])}"
        )

    def fill(self, table: sa.Table) -> str:
        """``UPDATE``: give the row's empty attributes this instance's values."""
        changes = [
            f"{_quoted(name)} = coalesce({_quoted(name)}, {self.parameter(name)})"
            for name in fillable(table)
        ]
        return f"UPDATE {table.name} SET {', '.join(changes)} WHERE id = {self.parameter('pk')}"

    def value(self, table: sa.Table, name: str, source: str | None) -> str:
        """The parameter of column ``name``; typed in a ``SELECT`` (a NULL there is text)."""
        column_type = table.c[name].type
        if source is None or isinstance(column_type, sa.String):
            return self.parameter(name)
        return f"CAST({self.parameter(name)} AS {column_type.compile(_POSTGRESQL_DIALECT)})"

    def key_of(self, table: sa.Table, *keys: str) -> str:
        """Scalar subquery: the ``id`` of the row of ``table`` with these key parameters."""
        where = " AND ".join(f"{_quoted(key)} = {self.parameter(key)}" for key in keys)
        return f"(SELECT id FROM {table.name} WHERE {where})"


def _rows(values: list[str], source: str | None) -> str:
    joined = ", ".join(values)
    return f"VALUES ({joined})" if source is None else f"SELECT {joined} {source}"


def _hierarchy(
    sql: _Sql, parents: tuple[str, str, str], sources: tuple[str | None, ...]
) -> list[str]:
    """The patient, study and series upserts and the instance insert.

    ``parents``: the study's patient, the series' study and the instance's series, as SQL;
    ``sources``: each statement's ``source`` (see :meth:`_Sql.upsert`).
    """
    parameter = sql.parameter
    study_parent, series_parent, instance_parent = parents
    patient_source, study_source, series_source, instance_source = sources
    counted = {"number_of_instances": "1"}

    def count_one_more(table: str) -> dict[str, str]:
        return {"number_of_instances": f"{table}.number_of_instances + 1"}

    patient = sql.upsert(
        patients,
        ("PatientID", "IssuerOfPatientID"),
        {**counted, "number_of_studies": "1", "number_of_series": "1"},
        count_one_more("patients"),
        PATIENT_RETURNING,
        patient_source,
    )
    study = sql.upsert(
        studies,
        ("StudyInstanceUID",),
        {
            "patient_pk": study_parent,
            "last_received_at": parameter("received_at"),
            **counted,
            "number_of_series": "1",
            "modalities_in_study": parameter("Modality"),
            "sop_classes_in_study": parameter("SOPClassUID"),
            "stable": "FALSE",
            "revision": "1",
        },
        {
            **count_one_more("studies"),
            "last_received_at": f"{sql.latest}(studies.last_received_at, "
            "excluded.last_received_at)",
            "stable": "FALSE",
            "revision": "studies.revision + 1",
        },
        STUDY_RETURNING,
        study_source,
    )
    series_upsert = sql.upsert(
        series,
        ("SeriesInstanceUID",),
        {"study_pk": series_parent, **counted},
        count_one_more("series"),
        SERIES_RETURNING,
        series_source,
    )
    instance_names = _attribute_names(instances)
    instance_values = [sql.value(instances, name, instance_source) for name in instance_names]
    instance = (
        f"INSERT INTO instances ({', '.join(map(_quoted, [*instance_names, 'series_pk']))}) "
        f"{_rows([*instance_values, instance_parent], instance_source)} "
        'ON CONFLICT ("SOPInstanceUID") DO NOTHING RETURNING id'
    )
    return [patient, study, series_upsert, instance]


PATIENT_RETURNING = ("id", "number_of_instances")
STUDY_RETURNING = (
    "id",
    "number_of_instances",
    "patient_pk",
    "modalities_in_study",
    "sop_classes_in_study",
)
SERIES_RETURNING = ("id", "number_of_instances", "study_pk", "Modality")
_CURRENT = "current_"
"""Prefix of the fillable attributes returned by the upserts (a CTE's column names)."""


def returned_lengths() -> tuple[int, int, int]:
    """Columns returned by the patient, study and series upserts."""
    return (
        len(PATIENT_RETURNING) + len(fillable(patients)),
        len(STUDY_RETURNING) + len(fillable(studies)),
        len(SERIES_RETURNING) + len(fillable(series)),
    )


def _combined(sql: _Sql, held_or_rejected: str) -> str:
    """PostgreSQL: the add as one statement, parents passed on by data-modifying CTEs.

    Each CTE selects from the row its predecessor returned, so rows are locked top-down; the
    patient's selects nothing if the instance is held or rejected, and then nothing is written
    and the statement returns no row.
    """
    patient, study, series_upsert, instance = _hierarchy(
        sql,
        ("p.id", "s.id", "se.id"),
        (f"WHERE NOT EXISTS ({held_or_rejected})", "FROM p", "FROM s", "FROM se"),
    )
    columns = [
        f"{alias}.{_quoted(name)}"
        for alias, table, returning in (
            ("p", patients, PATIENT_RETURNING),
            ("s", studies, STUDY_RETURNING),
            ("se", series, SERIES_RETURNING),
        )
        for name in (*returning, *(_CURRENT + name for name in fillable(table)))
    ]
    return (
        f"WITH p AS ({patient}), s AS ({study}), se AS ({series_upsert}), i AS ({instance}) "
        f"SELECT {', '.join(columns)}, (SELECT id FROM i) FROM p, s, se"
    )


@cache
def add_statements(dialect: str) -> AddStatements:
    """Return the add transaction's SQL for ``dialect`` (``sqlite`` or ``postgresql``)."""
    sql = _Sql(dialect)
    parameter = sql.parameter
    held_or_rejected = "SELECT 1 WHERE " + " OR ".join(
        f"EXISTS (SELECT 1 FROM {table.name} "
        f'WHERE "SOPInstanceUID" = {parameter("SOPInstanceUID")})'
        for table in (instances, rejected_instances)
    )
    patient, study, series_upsert, instance = _hierarchy(
        sql,
        (
            sql.key_of(patients, "PatientID", "IssuerOfPatientID"),
            sql.key_of(studies, "StudyInstanceUID"),
            sql.key_of(series, "SeriesInstanceUID"),
        ),
        (None, None, None, None),
    )
    statement = partial(_statement, dialect)
    return AddStatements(
        held_or_rejected=statement(held_or_rejected),
        patient=statement(patient),
        study=statement(study),
        series=statement(series_upsert),
        instance=statement(instance),
        combined=statement(_combined(sql, held_or_rejected)) if dialect == POSTGRESQL else None,
        fill_patient=statement(sql.fill(patients)),
        fill_study=statement(sql.fill(studies)),
        fill_series=statement(sql.fill(series)),
        study_lists=statement(
            "UPDATE studies SET number_of_series = number_of_series + "
            f"{parameter('new_series')}, modalities_in_study = {parameter('modalities')}, "
            f"sop_classes_in_study = {parameter('sop_classes')} "
            f"WHERE id = {parameter('study_pk')}"
        ),
        patient_counts=statement(
            f"UPDATE patients SET number_of_series = number_of_series + "
            f"{parameter('new_series')}, number_of_studies = number_of_studies + "
            f"{parameter('new_study')} WHERE id = {parameter('patient_pk')}"
        ),
        parents_of_study=statement(
            'SELECT studies."StudyInstanceUID", patients."PatientID", '
            'patients."IssuerOfPatientID" FROM studies JOIN patients '
            f"ON studies.patient_pk = patients.id WHERE studies.id = {parameter('study_pk')}"
        ),
    )
