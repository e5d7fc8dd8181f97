"""Registry metadata of a manifest (:class:`registry.models.ManifestSubmission`), built from a
report notice and the images, and kept as JSON in the outbox."""

from __future__ import annotations

from datetime import date
from typing import Any

from drimbox.services.reports import ReportNotice
from registry.models import Coding, Confidentiality, ManifestSubmission, Party

__all__ = ["build_submission", "exam_date", "submission_from_dict", "submission_to_dict"]

_RPPS_OID = "1.2.250.1.71.4.2.1"
"""ASIP Santé / ANS identifier system of health professionals (RPPS/ADELI, annuaire santé)."""
_FINESS_OID = "1.2.250.1.71.4.2.2"
"""ANS identifier system of health organisations (FINESS, SIRET...: structure identifiers)."""


def build_submission(
    notice: ReportNotice,
    *,
    kos_sop_instance_uid: str,
    modalities: tuple[str, ...],
    study_date: str | None,
    source_box_id: str,
    accession_issuer: str | None = None,
) -> ManifestSubmission:
    """Return the registry metadata of a manifest.

    Parameters
    ----------
    notice
        The validated report.
    kos_sop_instance_uid
        The manifest's UID.
    modalities
        Modalities of the referenced series (the images are authoritative).
    study_date
        ``YYYYMMDD`` of the study (images first, then the report).
    source_box_id
        This box's identifier (its AE title or configured id).
    accession_issuer
        The accession number's issuer, when known.

    Returns
    -------
    ManifestSubmission

    Raises
    ------
    ValueError
        Neither ``study_date`` nor the report gives a valid exam date (:func:`exam_date`); a
        registry entry is never dated by guess.
    """
    when = exam_date(study_date, notice)
    if when is None:
        raise ValueError("no exam date: neither the images nor the report give a valid one")
    return ManifestSubmission(
        patient_value=notice.patient.ins or "",
        patient_oid=notice.patient.ins_oid or "",
        kos_sop_instance_uid=kos_sop_instance_uid,
        study_instance_uid=notice.study_instance_uid,
        source_box_id=source_box_id,
        period_start=when,
        period_end=when,
        accession_number=notice.accession_number,
        accession_system=accession_issuer,
        modalities=modalities,
        regions=tuple(
            Coding(system, code, display) for system, code, display in notice.region_codes
        ),
        author=(
            Party(f"urn:oid:{_RPPS_OID}", notice.author_id, notice.author_name)
            if notice.author_id
            else None
        ),
        custodian=(
            Party(f"urn:oid:{_FINESS_OID}", notice.organisation_id, notice.organisation_name)
            if notice.organisation_id
            else None
        ),
        confidentiality=_confidentiality(notice.confidentiality),
        masked=notice.masked,
        identity_qualified=notice.patient.qualified,
        title=f"Imaging exam {notice.accession_number or notice.study_instance_uid}",
    )


def _confidentiality(code: str) -> Confidentiality:
    try:
        return Confidentiality(code)
    except ValueError:
        return Confidentiality.NORMAL


def exam_date(study_date: str | None, notice: ReportNotice) -> date | None:
    """The exam's date: the images' Study Date, else the report's; ``None`` when neither is a
    valid ``YYYYMMDD`` date."""
    for value in (study_date, notice.exam_date):
        if value and len(value) >= 8 and value[:8].isdigit():
            try:
                return date(int(value[:4]), int(value[4:6]), int(value[6:8]))
            except ValueError:
                continue
    return None


def submission_to_dict(submission: ManifestSubmission) -> dict[str, Any]:
    """JSON-able form of a submission (for the outbox)."""
    return {
        "patient_value": submission.patient_value,
        "patient_oid": submission.patient_oid,
        "kos_sop_instance_uid": submission.kos_sop_instance_uid,
        "study_instance_uid": submission.study_instance_uid,
        "source_box_id": submission.source_box_id,
        "period_start": submission.period_start.isoformat(),
        "period_end": None if submission.period_end is None else submission.period_end.isoformat(),
        "accession_number": submission.accession_number,
        "accession_system": submission.accession_system,
        "modalities": list(submission.modalities),
        "regions": [[c.system, c.code, c.display] for c in submission.regions],
        "author": _party_to_list(submission.author),
        "custodian": _party_to_list(submission.custodian),
        "confidentiality": submission.confidentiality.value,
        "masked": submission.masked,
        "identity_qualified": submission.identity_qualified,
        "document_type": [
            submission.document_type.system,
            submission.document_type.code,
            submission.document_type.display,
        ],
        "title": submission.title,
        "replaces": submission.replaces,
    }


def submission_from_dict(data: dict[str, Any]) -> ManifestSubmission:
    """Inverse of :func:`submission_to_dict`."""
    return ManifestSubmission(
        patient_value=data["patient_value"],
        patient_oid=data["patient_oid"],
        kos_sop_instance_uid=data["kos_sop_instance_uid"],
        study_instance_uid=data["study_instance_uid"],
        source_box_id=data["source_box_id"],
        period_start=date.fromisoformat(data["period_start"]),
        period_end=None if data["period_end"] is None else date.fromisoformat(data["period_end"]),
        accession_number=data["accession_number"],
        accession_system=data["accession_system"],
        modalities=tuple(data["modalities"]),
        regions=tuple(Coding(*item) for item in data["regions"]),
        author=_party_from_list(data["author"]),
        custodian=_party_from_list(data["custodian"]),
        confidentiality=Confidentiality(data["confidentiality"]),
        masked=data["masked"],
        identity_qualified=data["identity_qualified"],
        document_type=Coding(*data["document_type"]),
        title=data["title"],
        replaces=data["replaces"],
    )


def _party_to_list(party: Party | None) -> list[str | None] | None:
    return None if party is None else [party.system, party.value, party.display]


def _party_from_list(data: list[str | None] | None) -> Party | None:
    if data is None:
        return None
    system, value, display = data
    return Party(system or "", value or "", display)
