"""Reading half of :mod:`registry._fhir`: FHIR JSON into registry values, strictly.

Every missing or mistyped element raises :class:`registry._fhir.BundleError` naming the element,
so the service can answer a precise OperationOutcome and store nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import replace
from datetime import date, datetime
from typing import Any, TypeVar

from registry._fhir import (
    ACCESSION_TYPE,
    DICOM_MEDIA_TYPE,
    DMP_CONFIDENTIALITY_SYSTEM,
    DMP_MASKED_CODE,
    IDENTITY_QUALIFIED,
    IDENTITY_RELIABILITY_EXTENSION,
    IHE_SOURCE_ID_EXTENSION,
    SOURCE_BOX_EXTENSION,
    STUDY_UID_SYSTEM,
    V3_CONFIDENTIALITY_SYSTEM,
    BundleError,
    confidentiality_of,
    parse_date,
)
from registry._ins import URN_OID_PREFIX
from registry.models import (
    DCM_SYSTEM,
    Coding,
    Confidentiality,
    EntryStatus,
    ManifestSubmission,
    Party,
    RegistryEntry,
)

__all__ = ["entry_from_document_reference", "read_document_reference", "read_submission"]

_T = TypeVar("_T")
_DR = "DocumentReference"


def _get(obj: Mapping[str, Any], key: str, kind: type[_T], where: str) -> _T:
    value = obj.get(key)
    if value is None:
        raise BundleError(
            f"{where}.{key} is required", code="required", expression=f"{where}.{key}"
        )
    if not isinstance(value, kind) or (isinstance(value, str) and not value.strip()):
        raise BundleError(
            f"{where}.{key} must be a non-empty {kind.__name__}",
            code="structure",
            expression=f"{where}.{key}",
        )
    return value


def _opt(obj: Mapping[str, Any], key: str, kind: type[_T], where: str) -> _T | None:
    return None if obj.get(key) is None else _get(obj, key, kind, where)


def _objects(obj: Mapping[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    values = _opt(obj, key, list, where) or []
    if not all(isinstance(item, dict) for item in values):
        raise BundleError(f"{where}.{key} must hold objects", code="structure", expression=where)
    return values


def _oid_value(text: str, where: str) -> str:
    if not text.startswith(URN_OID_PREFIX):
        raise BundleError(f"{where} must be 'urn:oid:<UID>'", code="value", expression=where)
    return text[len(URN_OID_PREFIX) :]


def _codings(concept: Mapping[str, Any], where: str) -> list[Coding]:
    return [
        Coding(
            _get(coding, "system", str, where),
            _get(coding, "code", str, where),
            _opt(coding, "display", str, where),
        )
        for coding in _objects(concept, "coding", where)
    ]


def _party(obj: Mapping[str, Any], where: str) -> Party:
    identifier = _get(obj, "identifier", dict, where)
    return Party(
        _get(identifier, "system", str, f"{where}.identifier"),
        _get(identifier, "value", str, f"{where}.identifier"),
        _opt(obj, "display", str, where),
    )


def _qualified(subject: Mapping[str, Any]) -> bool:
    for extension in _objects(subject, "extension", f"{_DR}.subject"):
        if extension.get("url") != IDENTITY_RELIABILITY_EXTENSION:
            continue
        for part in _objects(extension, "extension", f"{_DR}.subject.extension"):
            coding = part.get("valueCoding")
            if part.get("url") == "identityStatus" and isinstance(coding, dict):
                return coding.get("code") == IDENTITY_QUALIFIED
    return False


def _source_box(resource: Mapping[str, Any], url: str, where: str) -> str | None:
    for extension in _objects(resource, "extension", where):
        if extension.get("url") == url:
            identifier = _get(extension, "valueIdentifier", dict, f"{where}.extension")
            return _get(identifier, "value", str, f"{where}.extension.valueIdentifier")
    return None


def _replaces(resource: Mapping[str, Any]) -> str | None:
    for relation in _objects(resource, "relatesTo", _DR):
        if relation.get("code") != "replaces":
            raise BundleError(
                f"relatesTo.code {relation.get('code')!r} is not supported: only 'replaces'",
                code="not-supported",
                expression=f"{_DR}.relatesTo.code",
            )
        target = _get(relation, "target", dict, f"{_DR}.relatesTo")
        reference = _opt(target, "reference", str, f"{_DR}.relatesTo.target")
        if reference is not None:
            return reference.rsplit("/", 1)[-1]
        identifier = _get(target, "identifier", dict, f"{_DR}.relatesTo.target")
        value = _get(identifier, "value", str, f"{_DR}.relatesTo.target.identifier")
        return _oid_value(value, f"{_DR}.relatesTo.target.identifier.value")
    return None


def _period_end(start: date, end_text: str | None) -> date | None:
    """The end of an exam period; ``None`` when the exam fits in its start day."""
    end = None if end_text is None else parse_date(end_text, "period.end")
    return None if end == start else end


def read_document_reference(
    resource: Mapping[str, Any], *, require_id: bool, source_box: str | None = None
) -> tuple[ManifestSubmission, str | None]:
    """Read a DocumentReference into its manifest and the id or UID it replaces.

    Parameters
    ----------
    resource
        The DocumentReference JSON.
    require_id
        True for stored resources (search results).
    source_box
        The SubmissionSet's sourceId, used when the DocumentReference carries none.
    """
    if resource.get("resourceType") != _DR:
        raise BundleError("expected a DocumentReference", code="structure", expression=_DR)
    if require_id:
        _get(resource, "id", str, _DR)
    master = _get(resource, "masterIdentifier", dict, _DR)
    kos_uid = _oid_value(
        _get(master, "value", str, f"{_DR}.masterIdentifier"), f"{_DR}.masterIdentifier.value"
    )
    subject = _get(resource, "subject", dict, _DR)
    patient = _get(subject, "identifier", dict, f"{_DR}.subject")
    system = _get(patient, "system", str, f"{_DR}.subject.identifier")
    if not system.startswith(URN_OID_PREFIX):
        raise BundleError(
            f"patient identifier system {system!r} must be 'urn:oid:<INS OID>'",
            code="value",
            expression=f"{_DR}.subject.identifier.system",
        )
    context = _get(resource, "context", dict, _DR)
    period = _get(context, "period", dict, f"{_DR}.context")
    start = parse_date(_get(period, "start", str, f"{_DR}.context.period"), "period.start")
    end_text = _opt(period, "end", str, f"{_DR}.context.period")
    study_uid, accession, accession_system = None, None, None
    for related in _objects(context, "related", f"{_DR}.context"):
        identifier = _get(related, "identifier", dict, f"{_DR}.context.related")
        value = _get(identifier, "value", str, f"{_DR}.context.related.identifier")
        kind = identifier.get("type")
        if identifier.get("system") == STUDY_UID_SYSTEM:
            study_uid = _oid_value(value, f"{_DR}.context.related.identifier.value")
        elif isinstance(kind, dict) and ACCESSION_TYPE in [
            Coding(c.system, c.code) for c in _codings(kind, f"{_DR}.context.related")
        ]:
            accession, accession_system = value, _opt(identifier, "system", str, _DR)
    if study_uid is None:
        raise BundleError(
            f"context.related must carry the StudyInstanceUID (system {STUDY_UID_SYSTEM})",
            code="required",
            expression=f"{_DR}.context.related",
        )
    modalities: list[str] = []
    regions: list[Coding] = []
    for event in _objects(context, "event", f"{_DR}.context"):
        for coding in _codings(event, f"{_DR}.context.event"):
            if coding.system == DCM_SYSTEM:
                modalities.append(coding.code)
            else:
                regions.append(coding)
    confidentiality, masked = Confidentiality.NORMAL, False
    for label in _objects(resource, "securityLabel", _DR):
        for coding in _codings(label, f"{_DR}.securityLabel"):
            if coding.system == V3_CONFIDENTIALITY_SYSTEM:
                confidentiality = confidentiality_of(coding.code)
            elif coding.system == DMP_CONFIDENTIALITY_SYSTEM and coding.code == DMP_MASKED_CODE:
                masked = True
    source = _source_box(resource, SOURCE_BOX_EXTENSION, _DR) or source_box
    if source is None:
        raise BundleError(
            "the source box identifier is required (SubmissionSet ihe-sourceId)",
            code="required",
            expression="List.extension:sourceId",
        )
    type_codings = _codings(_get(resource, "type", dict, _DR), f"{_DR}.type")
    if not type_codings:
        raise BundleError("type needs a coding", code="required", expression=f"{_DR}.type")
    authors = _objects(resource, "author", _DR)
    custodian = _opt(resource, "custodian", dict, _DR)
    manifest = ManifestSubmission(
        patient_value=_get(patient, "value", str, f"{_DR}.subject.identifier"),
        patient_oid=system[len(URN_OID_PREFIX) :],
        kos_sop_instance_uid=kos_uid,
        study_instance_uid=study_uid,
        source_box_id=source,
        period_start=start,
        period_end=_period_end(start, end_text),
        accession_number=accession,
        accession_system=accession_system,
        modalities=tuple(modalities),
        regions=tuple(regions),
        author=_party(authors[0], f"{_DR}.author") if authors else None,
        custodian=None if custodian is None else _party(custodian, f"{_DR}.custodian"),
        confidentiality=confidentiality,
        masked=masked,
        identity_qualified=_qualified(subject),
        document_type=type_codings[0],
        title=_opt(resource, "description", str, _DR),
    )
    return manifest, _replaces(resource)


def read_submission(bundle: object) -> tuple[ManifestSubmission, bytes]:
    """Read an ITI-65 transaction Bundle (see :func:`registry._fhir.submission_from_bundle`)."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BundleError("the body must be a FHIR Bundle", code="structure", expression="Bundle")
    if bundle.get("type") != "transaction":
        raise BundleError(
            "Bundle.type must be 'transaction' (IHE ITI-65)",
            code="structure",
            expression="Bundle.type",
        )
    by_type: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for entry in _objects(bundle, "entry", "Bundle"):
        resource = _get(entry, "resource", dict, "Bundle.entry")
        request = _get(entry, "request", dict, "Bundle.entry")
        if request.get("method") != "POST":
            raise BundleError(
                "every Bundle.entry.request.method must be POST",
                code="not-supported",
                expression="Bundle.entry.request.method",
            )
        kind = _get(resource, "resourceType", str, "Bundle.entry.resource")
        by_type.setdefault(kind, []).append((_get(entry, "fullUrl", str, "Bundle.entry"), resource))
    for kind in ("List", _DR, "Binary"):
        if len(by_type.get(kind, [])) != 1:
            raise BundleError(
                f"the Bundle must hold exactly one {kind} (one manifest per submission)",
                code="structure",
                expression=f"Bundle.entry.resource.ofType({kind})",
            )
    extra = sorted(set(by_type) - {"List", _DR, "Binary"})
    if extra:
        raise BundleError(
            f"unexpected resources in the Bundle: {', '.join(extra)}",
            code="not-supported",
            expression="Bundle.entry",
        )
    (_, submission_set), (_, document), (binary_url, binary) = (
        by_type["List"][0],
        by_type[_DR][0],
        by_type["Binary"][0],
    )
    source = _source_box(submission_set, IHE_SOURCE_ID_EXTENSION, "List")
    manifest, replaces = read_document_reference(document, require_id=False, source_box=source)
    kos = _binary_bytes(binary)
    _check_attachment(document, binary_url, kos)
    if replaces is not None:
        manifest = replace(manifest, replaces=replaces)
    return manifest, kos


def _binary_bytes(binary: Mapping[str, Any]) -> bytes:
    if binary.get("contentType") != DICOM_MEDIA_TYPE:
        raise BundleError(
            f"Binary.contentType must be {DICOM_MEDIA_TYPE}",
            code="value",
            expression="Binary.contentType",
        )
    try:
        kos = base64.b64decode(_get(binary, "data", str, "Binary"), validate=True)
    except binascii.Error:
        raise BundleError(
            "Binary.data is not base64", code="value", expression="Binary.data"
        ) from None
    return kos


def _check_attachment(document: Mapping[str, Any], binary_url: str, kos: bytes) -> None:
    contents = _objects(document, "content", _DR)
    if len(contents) != 1:
        raise BundleError("exactly one content is expected", code="structure", expression=_DR)
    attachment = _get(contents[0], "attachment", dict, f"{_DR}.content")
    if attachment.get("url") != binary_url:
        raise BundleError(
            "content.attachment.url must be the Binary's fullUrl",
            code="value",
            expression=f"{_DR}.content.attachment.url",
        )
    size = attachment.get("size")
    if size is not None and size != len(kos):
        raise BundleError(
            "content.attachment.size differs from the Binary",
            code="value",
            expression=f"{_DR}.content.attachment.size",
        )
    expected = attachment.get("hash")
    digest = base64.b64encode(hashlib.sha1(kos, usedforsecurity=False).digest()).decode()
    if expected is not None and expected != digest:
        raise BundleError(
            "content.attachment.hash (SHA-1) differs from the Binary",
            code="value",
            expression=f"{_DR}.content.attachment.hash",
        )


def entry_from_document_reference(resource: Mapping[str, Any]) -> RegistryEntry:
    """Read a stored DocumentReference (search result or read) into a :class:`RegistryEntry`."""
    manifest, replaces = read_document_reference(resource, require_id=True)
    contents = _objects(resource, "content", _DR)
    attachment = _get(contents[0] if contents else {}, "attachment", dict, f"{_DR}.content")
    if replaces is not None:
        manifest = replace(manifest, replaces=replaces)
    return RegistryEntry(
        entry_id=_get(resource, "id", str, _DR),
        status=EntryStatus(_get(resource, "status", str, _DR)),
        created=datetime.fromisoformat(_get(resource, "date", str, _DR)),
        manifest=manifest,
        content_url=_get(attachment, "url", str, f"{_DR}.content.attachment"),
        content_size=_opt(attachment, "size", int, f"{_DR}.content.attachment") or 0,
    )
