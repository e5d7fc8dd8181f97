"""Builds the KOS manifest of a :class:`~drimbox.services.publication.ManifestDraft`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from drimbox.dicom.kos import (
    ManifestRequest,
    ManifestSeries,
    ReferencedInstance,
    RequestReference,
    build_manifest,
    manifest_uids,
)
from drimbox.services.publication import ManifestDraft

__all__ = ["KosManifestBuilder"]


class KosManifestBuilder:
    """The production :class:`~drimbox.services.publication.ManifestBuilder`.

    Parameters
    ----------
    public_base_url
        This box's public WADO-RS base; RetrieveURLs are built from it.
    organization_uid_root
        UID root of the organisation (manifest UIDs are derived under it).
    institution_name
        Who publishes.
    clock
        Current UTC time (ContentDate/Time).
    """

    def __init__(
        self,
        *,
        public_base_url: str,
        organization_uid_root: str,
        institution_name: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._public_base_url = public_base_url.rstrip("/")
        self._root = organization_uid_root
        self._institution = institution_name
        self._clock = clock

    def __call__(self, draft: ManifestDraft) -> tuple[str, bytes]:
        """Build the manifest; return its SOP Instance UID and its Part 10 bytes."""
        notice = draft.notice
        by_series: dict[str, list[ReferencedInstance]] = {}
        for location in draft.instances:
            by_series.setdefault(location.series_instance_uid, []).append(
                ReferencedInstance(location.sop_class_uid, location.sop_instance_uid)
            )
        series = tuple(
            ManifestSeries(uid, draft.series_modalities.get(uid, "OT"), tuple(instances))
            for uid, instances in by_series.items()
        )
        study = draft.study_attributes
        request = ManifestRequest(
            patient=notice.patient,
            study_instance_uid=notice.study_instance_uid,
            series=series,
            public_base_url=self._public_base_url,
            organization_uid_root=self._root,
            version=draft.version,
            institution_name=notice.organisation_name or self._institution,
            content_datetime=self._clock(),
            requests=(
                RequestReference(
                    accession_number=notice.accession_number or "",
                    placer_order_number=notice.placer_order_number or "",
                ),
            ),
            study_date=_text(study, "00080020"),
            study_time=_text(study, "00080030"),
            study_description=_text(study, "00081030"),
            study_id=_text(study, "00200010"),
            referring_physician_name=_text(study, "00080090"),
        )
        uids = manifest_uids(self._root, notice.study_instance_uid, draft.version)
        return uids.sop_instance_uid, build_manifest(request)


def _text(dataset: dict[str, Any], tag: str) -> str:
    values = (dataset.get(tag) or {}).get("Value") or []
    if not values:
        return ""
    value = values[0]
    if isinstance(value, dict):
        return str(value.get("Alphabetic", ""))
    return str(value)
