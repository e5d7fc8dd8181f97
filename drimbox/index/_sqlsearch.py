"""Translate a :class:`drimbox.index._query.Plan` into one SQLAlchemy ``SELECT``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from drimbox.dicom.attributes import level_of
from drimbox.index._query import LEVELS, LIKE_ESCAPE, Condition, Plan, Term, TermKind
from drimbox.index._schema import LEVEL_TABLES, instances, patients, series, studies
from drimbox.model import Level

__all__ = ["COMPUTED_COLUMNS", "build_search", "order_by", "parent_joins"]

COMPUTED_COLUMNS: dict[str, sa.ColumnElement[object]] = {
    "NumberOfPatientRelatedStudies": patients.c.number_of_studies,
    "NumberOfPatientRelatedSeries": patients.c.number_of_series,
    "NumberOfPatientRelatedInstances": patients.c.number_of_instances,
    "ModalitiesInStudy": studies.c.modalities_in_study,
    "SOPClassesInStudy": studies.c.sop_classes_in_study,
    "NumberOfStudyRelatedSeries": studies.c.number_of_series,
    "NumberOfStudyRelatedInstances": studies.c.number_of_instances,
    "NumberOfSeriesRelatedInstances": series.c.number_of_instances,
}
"""Columns holding the computed attributes (PS3.4 §C.3.4), maintained at add/remove."""

_PARENT_KEY = {
    Level.STUDY: studies.c.patient_pk,
    Level.SERIES: series.c.study_pk,
    Level.IMAGE: instances.c.series_pk,
}


def parent_joins(bottom: Level, top: Level = Level.PATIENT) -> sa.FromClause:
    """Join the table of ``bottom`` with every parent table up to ``top``."""
    joined: sa.FromClause = LEVEL_TABLES[bottom]
    index = LEVELS.index(bottom)
    while index > LEVELS.index(top):
        parent = LEVELS[index - 1]
        joined = joined.join(
            LEVEL_TABLES[parent], _PARENT_KEY[LEVELS[index]] == LEVEL_TABLES[parent].c.id
        )
        index -= 1
    return joined


def order_by(level: Level) -> list[sa.ColumnElement[object]]:
    """Deterministic order of matches at ``level`` (the memory adapter sorts alike)."""
    if level is Level.PATIENT:
        return [patients.c.PatientID, patients.c.IssuerOfPatientID]
    if level is Level.STUDY:
        return [
            studies.c.StudyDate.desc().nulls_last(),
            studies.c.StudyTime.desc().nulls_last(),
            studies.c.StudyInstanceUID,
        ]
    if level is Level.SERIES:
        return [series.c.series_number_order.nulls_last(), series.c.SeriesInstanceUID]
    return [instances.c.instance_number_order.nulls_last(), instances.c.SOPInstanceUID]


def _column(keyword: str, name: str | None = None) -> sa.ColumnElement[object]:
    computed = COMPUTED_COLUMNS.get(keyword)
    if computed is not None:
        return computed
    level = level_of(keyword)
    assert level is not None  # validated by plan_query
    column: sa.ColumnElement[object] = LEVEL_TABLES[level].c[name or keyword]
    return column


def _term(column: sa.ColumnElement[object], term: Term) -> sa.ColumnElement[bool]:
    if term.kind is TermKind.EQUAL:
        return column == term.value
    if term.kind in (TermKind.LIKE, TermKind.ALL_LIKE):
        return sa.and_(*(column.like(p, escape=LIKE_ESCAPE) for p in term.patterns))
    bounds = []
    if term.lower is not None:
        bounds.append(column >= term.lower)
    if term.upper is not None:
        bounds.append(column <= term.upper)
    return sa.and_(*bounds)


def _condition(condition: Condition) -> sa.ColumnElement[bool]:
    column = _column(condition.keyword, condition.column)
    return sa.or_(*(_term(column, term) for term in condition.terms))


def _exists_below(level: Level, conditions: Iterable[Condition]) -> sa.ColumnElement[bool]:
    conditions = list(conditions)
    deepest = max((c.level for c in conditions), key=LEVELS.index)
    child = LEVELS[LEVELS.index(level) + 1]
    subquery = (
        sa.select(sa.literal(1))
        .select_from(parent_joins(deepest, child))
        .where(_PARENT_KEY[child] == LEVEL_TABLES[level].c.id)
        .where(*(_condition(c) for c in conditions))
    )
    return subquery.exists()


def build_search(plan: Plan) -> sa.Select[*tuple[Any, ...]]:
    """Return the ``SELECT`` of a plan: one row per match, columns labelled by keyword.

    One more row than the limit is fetched so the caller can tell whether matches were left out.
    """
    rank = LEVELS.index(plan.level)
    own = [c for c in plan.conditions if LEVELS.index(c.level) <= rank]
    below = [c for c in plan.conditions if LEVELS.index(c.level) > rank]
    statement = sa.select(*(_column(k).label(k) for k in plan.returned)).select_from(
        parent_joins(plan.level)
    )
    statement = statement.where(*(_condition(c) for c in own))
    if below:
        statement = statement.where(_exists_below(plan.level, below))
    return statement.order_by(*order_by(plan.level)).limit(plan.limit + 1).offset(plan.offset)
