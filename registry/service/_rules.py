"""Business rules a manifest must pass before anything is stored (ANS INS, PS3.3 KOS)."""

from __future__ import annotations

import re
from io import BytesIO

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from registry._fhir import KOS_SOP_CLASS_UID, BundleError
from registry._ins import InsError, validate_ins
from registry.models import ManifestSubmission
from registry.service._kos import KosFacts, read_kos_facts

__all__ = ["MAX_CODE_LENGTH", "check_submission"]

#: PS3.5 §9.1: UID components are digits without leading zeros, joined by dots, ≤ 64 chars.
_UID = re.compile(r"^(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))+$")
_UID_MAX_LENGTH = 64
#: Longest code, system or identifier the registry indexes.
MAX_CODE_LENGTH = 256
_DR = "DocumentReference"


def _check_uid(uid: str, what: str, expression: str) -> None:
    if len(uid) > _UID_MAX_LENGTH or _UID.match(uid) is None:
        raise BundleError(
            f"{what} {uid!r} is not a DICOM UID (PS3.5 §9.1)", code="value", expression=expression
        )


def _check_token(text: str, expression: str) -> None:
    if not text or len(text) > MAX_CODE_LENGTH or any(ch.isspace() or ch == "|" for ch in text):
        raise BundleError(
            f"{text[:40]!r} must be 1-{MAX_CODE_LENGTH} characters without spaces or '|'",
            code="value",
            expression=expression,
        )


def check_submission(manifest: ManifestSubmission, kos: bytes, *, production: bool) -> None:
    """Check a manifest and its KOS; raise :class:`BundleError` on the first broken rule.

    Rules: the patient INS (key, known authority; test OIDs refused in production) of a
    *qualified* identity; valid UIDs; event codes that can be indexed; a coherent period; the
    Binary is a PS3.10 Key Object Selection Document whose SOP Instance UID is the
    masterIdentifier and which references the declared study.
    """
    try:
        validate_ins(manifest.patient_value, manifest.patient_oid, production=production)
    except InsError as error:
        raise BundleError(
            f"patient INS refused: {error}", code="value", expression=f"{_DR}.subject.identifier"
        ) from None
    if not manifest.identity_qualified:
        raise BundleError(
            "the patient identity is not qualified (INS status QUAL required to publish)",
            code="business-rule",
            expression=f"{_DR}.subject.extension",
        )
    _check_uid(manifest.kos_sop_instance_uid, "KOS SOP Instance UID", f"{_DR}.masterIdentifier")
    _check_uid(manifest.study_instance_uid, "StudyInstanceUID", f"{_DR}.context.related")
    for modality in manifest.modalities:
        _check_token(modality, f"{_DR}.context.event")
    for region in manifest.regions:
        _check_token(region.code, f"{_DR}.context.event")
        _check_token(region.system, f"{_DR}.context.event")
    for value in (manifest.source_box_id, manifest.accession_number):
        if value is not None and len(value) > MAX_CODE_LENGTH:
            raise BundleError("identifier too long", code="value", expression=_DR)
    if manifest.period_end is not None and manifest.period_end < manifest.period_start:
        raise BundleError(
            "context.period.end is before its start", code="value", expression=f"{_DR}.context"
        )
    _check_kos(manifest, kos)


def _kos_facts(kos: bytes) -> KosFacts:
    """Read the checked attributes: the fast walk, else a full pydicom parse."""
    facts = read_kos_facts(kos)
    if facts is not None:
        return facts
    try:
        dataset = dcmread(BytesIO(kos), force=False)
    except (InvalidDicomError, ValueError, EOFError, OSError) as error:
        raise BundleError(
            f"Binary.data is not a DICOM PS3.10 file: {error}", code="value", expression="Binary"
        ) from None
    return KosFacts(
        dataset.get("SOPClassUID"),
        dataset.get("SOPInstanceUID"),
        frozenset(
            item.get("StudyInstanceUID")
            for item in dataset.get("CurrentRequestedProcedureEvidenceSequence", [])
        ),
    )


def _check_kos(manifest: ManifestSubmission, kos: bytes) -> None:
    facts = _kos_facts(kos)
    if facts.sop_class_uid != KOS_SOP_CLASS_UID:
        raise BundleError(
            "Binary.data is not a Key Object Selection Document (PS3.4 §B.5 SOP Class "
            f"{KOS_SOP_CLASS_UID})",
            code="value",
            expression="Binary",
        )
    if facts.sop_instance_uid != manifest.kos_sop_instance_uid:
        raise BundleError(
            "masterIdentifier differs from the KOS SOPInstanceUID",
            code="value",
            expression=f"{_DR}.masterIdentifier",
        )
    if manifest.study_instance_uid not in facts.evidence_study_uids:
        raise BundleError(
            "the KOS does not reference the StudyInstanceUID of context.related "
            "(CurrentRequestedProcedureEvidenceSequence)",
            code="value",
            expression=f"{_DR}.context.related",
        )
