"""The Index port in memory: pure Python, thread-safe, not persistent (tests, demos).

It follows the SQL adapter's rules exactly (same query planning in :mod:`drimbox.index._query`,
same first-value-wins policy, same ordering), which the contract suite checks.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from drimbox.index._dicomjson import VALUE_SEPARATOR, DicomJsonWriter
from drimbox.index._query import LEVELS, Plan, levels_from, plan_query, term_matches
from drimbox.index._records import (
    integer_order,
    level_values,
    list_with,
    metadata_text,
    microseconds,
)
from drimbox.model import (
    AddOutcome,
    DicomJson,
    IndexStatistics,
    InstanceLocation,
    InstanceRecord,
    Level,
    Query,
    SearchResult,
)

__all__ = ["MemoryIndex"]

_IDENTITY = frozenset({"PatientID", "IssuerOfPatientID", "StudyInstanceUID", "SeriesInstanceUID"})


@dataclass(eq=False)
class _Node:
    level: Level
    values: dict[str, Any]
    parent: _Node | None = None
    children: dict[str, _Node] = field(default_factory=dict)
    location: InstanceLocation | None = None
    metadata: str = ""
    last_received_at: int = 0
    stable: bool = False
    revision: int = 0

    def fill(self, values: dict[str, Any]) -> None:
        """Keep existing values; fill the empty ones (first value wins)."""
        for name, value in values.items():
            if name not in _IDENTITY and self.values.get(name) is None:
                self.values[name] = value

    def descendants(self, level: Level) -> Iterator[_Node]:
        if self.level is level:
            yield self
            return
        for child in self.children.values():
            yield from child.descendants(level)


def _sort_key_nulls_last(value: int | None) -> tuple[bool, int]:
    return (value is None, value or 0)


class MemoryIndex:
    """Index held in dictionaries, guarded by one lock."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._patients: dict[tuple[str, str], _Node] = {}
        self._studies: dict[str, _Node] = {}
        self._series: dict[str, _Node] = {}
        self._instances: dict[str, _Node] = {}
        self._seen_revisions: dict[str, int] = {}
        self._rejected: dict[str, str | None] = {}
        """Tombstones of instances rejected by IOCM: SOP Instance UID to blob key."""

    def add_instance(self, record: InstanceRecord) -> AddOutcome:
        """Index a new instance; ``DUPLICATE`` if its SOP Instance UID is held."""
        with self._lock:
            if record.sop_instance_uid in self._instances or (
                record.sop_instance_uid in self._rejected
            ):
                return AddOutcome.DUPLICATE
            received_at = microseconds(record.received_at)
            patient_values = level_values(record, Level.PATIENT)
            key = (patient_values["PatientID"] or "", patient_values["IssuerOfPatientID"] or "")
            series = self._series.get(record.series_instance_uid)
            study = series.parent if series else self._studies.get(record.study_instance_uid)
            if study is None:
                patient = self._patients.get(key)
                if patient is None:
                    patient = self._patients[key] = _Node(Level.PATIENT, patient_values)
                else:
                    patient.fill(patient_values)
                study = _Node(Level.STUDY, level_values(record, Level.STUDY), patient)
                self._studies[record.study_instance_uid] = study
                patient.children[record.study_instance_uid] = study
            else:
                # The instance goes under the parents already indexed, and fills their
                # empty attributes (as in the SQL adapter).
                assert study.parent is not None
                study.parent.fill(patient_values)
                study.fill(level_values(record, Level.STUDY))
            series_values = level_values(record, Level.SERIES)
            series_values["series_number_order"] = integer_order(series_values["SeriesNumber"])
            if series is None:
                series = _Node(Level.SERIES, series_values, study)
                self._series[record.series_instance_uid] = series
                study.children[record.series_instance_uid] = series
            else:
                series.fill(series_values)
            image_values = level_values(record, Level.IMAGE)
            image_values["instance_number_order"] = integer_order(image_values["InstanceNumber"])
            location = InstanceLocation(
                sop_instance_uid=record.sop_instance_uid,
                sop_class_uid=record.sop_class_uid,
                series_instance_uid=series.values["SeriesInstanceUID"],
                study_instance_uid=study.values["StudyInstanceUID"],
                transfer_syntax_uid=record.transfer_syntax_uid,
                blob=record.blob,
                number_of_frames=record.number_of_frames,
                pixel_data_offset=record.pixel_data_offset,
            )
            instance = _Node(
                Level.IMAGE, image_values, series, location=location, metadata=metadata_text(record)
            )
            self._instances[record.sop_instance_uid] = instance
            series.children[record.sop_instance_uid] = instance
            study.last_received_at = max(study.last_received_at, received_at)
            study.stable = False
            study.revision += 1
            return AddOutcome.STORED

    def get_instance(self, sop_instance_uid: str) -> InstanceLocation | None:
        """Return where an instance is stored, or ``None``."""
        with self._lock:
            instance = self._instances.get(sop_instance_uid)
            return None if instance is None else instance.location

    def newest_instances(self, limit: int) -> list[InstanceLocation]:
        """Return the last ``limit`` instances indexed, newest first."""
        with self._lock:
            newest: list[InstanceLocation] = []
            for instance in reversed(self._instances.values()):
                if len(newest) >= limit:
                    break
                if instance.location is not None:
                    newest.append(instance.location)
            return newest

    def _selected(self, study: str, series: str | None, sop: str | None) -> list[_Node]:
        node = self._studies.get(study)
        if node is None:
            return []
        chosen = [
            s
            for s in node.children.values()
            if series is None or s.values["SeriesInstanceUID"] == series
        ]
        chosen.sort(
            key=lambda s: (
                _sort_key_nulls_last(s.values["series_number_order"]),
                s.values["SeriesInstanceUID"],
            )
        )
        selected: list[_Node] = []
        for series_node in chosen:
            members = [
                i
                for i in series_node.children.values()
                if sop is None or i.values["SOPInstanceUID"] == sop
            ]
            members.sort(
                key=lambda i: (
                    _sort_key_nulls_last(i.values["instance_number_order"]),
                    i.values["SOPInstanceUID"],
                )
            )
            selected.extend(members)
        return selected

    def locate(
        self,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> list[InstanceLocation]:
        """Return the selected instances, by series number then instance number."""
        with self._lock:
            nodes = self._selected(study_instance_uid, series_instance_uid, sop_instance_uid)
            return [n.location for n in nodes if n.location is not None]

    def metadata_documents(
        self,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> Iterator[str]:
        """Yield the stored JSON text of the selected instances."""
        with self._lock:
            nodes = self._selected(study_instance_uid, series_instance_uid, sop_instance_uid)
            texts = [n.metadata for n in nodes]
        yield from texts

    def metadata(
        self,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> Iterator[DicomJson]:
        """Yield the DICOM JSON metadata of the selected instances."""
        for text in self.metadata_documents(
            study_instance_uid, series_instance_uid, sop_instance_uid
        ):
            document: DicomJson = json.loads(text)
            yield document

    def _row(self, node: _Node) -> dict[str, Any]:
        row: dict[str, Any] = {}
        current: _Node | None = node
        while current is not None:
            row.update(current.values)
            current = current.parent
        if node.level is Level.PATIENT:
            row["NumberOfPatientRelatedStudies"] = len(node.children)
            row["NumberOfPatientRelatedSeries"] = sum(1 for _ in node.descendants(Level.SERIES))
            row["NumberOfPatientRelatedInstances"] = sum(1 for _ in node.descendants(Level.IMAGE))
        elif node.level is Level.STUDY:
            modalities: str | None = None
            for series_node in node.children.values():
                modalities = list_with(modalities, series_node.values["Modality"])
            row["ModalitiesInStudy"] = modalities
            classes = {i.values["SOPClassUID"] for i in node.descendants(Level.IMAGE)}
            row["SOPClassesInStudy"] = VALUE_SEPARATOR.join(sorted(classes)) or None
            row["NumberOfStudyRelatedSeries"] = len(node.children)
            row["NumberOfStudyRelatedInstances"] = sum(1 for _ in node.descendants(Level.IMAGE))
        elif node.level is Level.SERIES:
            row["NumberOfSeriesRelatedInstances"] = len(node.children)
        return row

    @staticmethod
    def _holds(plan: Plan, row: dict[str, Any], levels: tuple[Level, ...]) -> bool:
        return all(
            any(term_matches(term, row.get(c.column)) for term in c.terms)
            for c in plan.conditions
            if c.level in levels
        )

    def _matches(self, plan: Plan, node: _Node) -> bool:
        own = levels_from(plan.level)
        if not self._holds(plan, self._row(node), own):
            return False
        below = [c.level for c in plan.conditions if c.level not in own]
        if not below:
            return True
        deepest = max(below, key=LEVELS.index)
        lower = tuple(level for level in LEVELS if level not in own)
        for descendant in node.descendants(deepest):
            row: dict[str, Any] = {}
            current: _Node | None = descendant
            while current is not None and current is not node:
                row.update(current.values)
                current = current.parent
            if self._holds(plan, row, lower):
                return True
        return False

    def _entities(self, level: Level) -> list[_Node]:
        if level is Level.PATIENT:
            nodes = list(self._patients.values())
            nodes.sort(key=lambda n: (n.values["PatientID"], n.values["IssuerOfPatientID"]))
        elif level is Level.STUDY:
            nodes = sorted(self._studies.values(), key=lambda n: n.values["StudyInstanceUID"])
            nodes.sort(key=lambda n: n.values["StudyTime"] or "", reverse=True)
            nodes.sort(key=lambda n: n.values["StudyDate"] or "", reverse=True)
        elif level is Level.SERIES:
            nodes = sorted(
                self._series.values(),
                key=lambda n: (
                    _sort_key_nulls_last(n.values["series_number_order"]),
                    n.values["SeriesInstanceUID"],
                ),
            )
        else:
            nodes = sorted(
                self._instances.values(),
                key=lambda n: (
                    _sort_key_nulls_last(n.values["instance_number_order"]),
                    n.values["SOPInstanceUID"],
                ),
            )
        return nodes

    def search(self, query: Query) -> SearchResult:
        """Match a hierarchical query (PS3.4 §C.2.2.2); see :mod:`drimbox.index._query`."""
        plan = plan_query(query)
        with self._lock:
            found = [n for n in self._entities(plan.level) if self._matches(plan, n)]
            page = found[plan.offset : plan.offset + plan.limit]
            writer = DicomJsonWriter(plan.returned)
            matches = [writer([row.get(k) for k in plan.returned]) for row in map(self._row, page)]
            return SearchResult(matches=matches, truncated=len(found) > plan.offset + plan.limit)

    def remove_instance(self, sop_instance_uid: str) -> InstanceLocation | None:
        """Remove an instance; empty series, studies and patients go too."""
        with self._lock:
            instance = self._instances.pop(sop_instance_uid, None)
            if instance is None:
                return None
            uid, parent = sop_instance_uid, instance.parent
            while parent is not None:
                del parent.children[uid]
                if parent.children:
                    break
                if parent.level is Level.SERIES:
                    uid = parent.values["SeriesInstanceUID"]
                    del self._series[uid]
                elif parent.level is Level.STUDY:
                    uid = parent.values["StudyInstanceUID"]
                    del self._studies[uid]
                else:
                    values = parent.values
                    del self._patients[(values["PatientID"], values["IssuerOfPatientID"])]
                parent = parent.parent
            return instance.location

    def reject_instances(self, sop_instance_uids: Iterable[str]) -> int:
        """Hide instances rejected by IOCM for good; return how many were indexed."""
        hidden = 0
        with self._lock:
            for sop_instance_uid in dict.fromkeys(sop_instance_uids):
                location = self.remove_instance(sop_instance_uid)
                if sop_instance_uid not in self._rejected or location is not None:
                    self._rejected[sop_instance_uid] = location.blob.key if location else None
                if location is None:
                    continue
                hidden += 1
                study = self._studies.get(location.study_instance_uid)
                if study is not None:
                    study.stable = False
                    study.revision += 1
        return hidden

    def statistics(self) -> IndexStatistics:
        """Return entity counts and the total stored bytes."""
        with self._lock:
            return IndexStatistics(
                patients=len(self._patients),
                studies=len(self._studies),
                series=len(self._series),
                instances=len(self._instances),
                stored_bytes=sum(
                    n.location.blob.size for n in self._instances.values() if n.location
                ),
            )

    def blob_keys(self) -> Iterator[str]:
        """Yield the blob key of every indexed instance."""
        with self._lock:
            keys = [n.location.blob.key for n in self._instances.values() if n.location]
            keys.extend(key for key in self._rejected.values() if key is not None)
        yield from keys

    def unstable_studies(self, quiet_since: datetime) -> list[str]:
        """Return unstable studies whose last instance arrived before ``quiet_since``."""
        limit = microseconds(quiet_since)
        with self._lock:
            found = sorted(
                (
                    (study.last_received_at, uid)
                    for uid, study in self._studies.items()
                    if not study.stable and study.last_received_at < limit
                ),
            )
            for _, uid in found:
                self._seen_revisions[uid] = self._studies[uid].revision
            return [uid for _, uid in found]

    def mark_stable(self, study_instance_uid: str) -> bool:
        """Mark a study stable unless it received an instance since ``unstable_studies``."""
        with self._lock:
            revision = self._seen_revisions.pop(study_instance_uid, None)
            study = self._studies.get(study_instance_uid)
            if study is None or (revision is not None and study.revision != revision):
                return False
            study.stable = True
            return True

    def close(self) -> None:
        """Nothing to release."""
