"""FHIR R4 JSON of the registry (IHE MHD): build and read the resources both sides exchange.

The client builds the ITI-65 transaction Bundle (:func:`provide_document_bundle`); the service
builds DocumentReferences (:func:`document_reference`). The reading half is
:mod:`registry._fhir_read`.
Everything is plain ``dict`` JSON so that both sides share one mapping.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import UTC, date, datetime
from typing import Any

from registry._ins import URN_OID_PREFIX
from registry.models import (
    DCM_SYSTEM,
    Coding,
    Confidentiality,
    EntryStatus,
    ManifestSubmission,
    Party,
)

__all__ = [
    "ACCESSION_TYPE",
    "DMP_CONFIDENTIALITY_SYSTEM",
    "DMP_MASKED_CODE",
    "FHIR_JSON",
    "IDENTITY_RELIABILITY_EXTENSION",
    "KOS_SOP_CLASS_UID",
    "SOURCE_BOX_EXTENSION",
    "STUDY_UID_SYSTEM",
    "URI_SYSTEM",
    "BundleError",
    "document_reference",
    "operation_outcome",
    "provide_document_bundle",
]

Json = dict[str, Any]

#: The FHIR JSON media type (FHIR R4 §3.1.0.1.10).
FHIR_JSON = "application/fhir+json"
#: FHIR R4 Identifier.system for a URI value (``urn:oid:``, ``urn:uuid:``).
URI_SYSTEM = "urn:ietf:rfc:3986"
#: Identifier.system of DICOM UIDs (IHE RAD; FHIR ImagingStudy.identifier).
STUDY_UID_SYSTEM = "urn:dicom:uid"
#: HL7 v2 table 0203, code ACSN: the identifier is an accession number.
ACCESSION_TYPE = Coding("http://terminology.hl7.org/CodeSystem/v2-0203", "ACSN")
#: HL7 v3 Confidentiality (OID 2.16.840.1.113883.5.25, as in the ANS XDM sample).
V3_CONFIDENTIALITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
#: DMP confidentiality codes (ANS, OID 1.2.250.1.213.1.1.4.13, as in the ANS XDM sample).
DMP_CONFIDENTIALITY_SYSTEM = URN_OID_PREFIX + "1.2.250.1.213.1.1.4.13"
#: DMP "Masqué aux professionnels de santé".
DMP_MASKED_CODE = "MASQUE_PS"
#: FR Core identity reliability extension and its code system (HL7 v2 table 0445, France).
IDENTITY_RELIABILITY_EXTENSION = (
    "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability"
)
IDENTITY_STATUS_SYSTEM = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0445"
IDENTITY_QUALIFIED = "QUAL"
#: IHE MHD sourceId (on the List) and its copy on the DocumentReference (a registry extension).
IHE_SOURCE_ID_EXTENSION = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId"
SOURCE_BOX_EXTENSION = "https://drimbox.org/fhir/StructureDefinition/registry-source-box"
#: IHE MHD list type of a SubmissionSet.
MHD_LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
#: PS3.4 §B.5: Key Object Selection Document Storage SOP Class (attachment format).
KOS_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.88.59"
DICOM_MEDIA_TYPE = "application/dicom"


class BundleError(ValueError):
    """A submission cannot be accepted; carries the FHIR issue code and the element at fault.

    Parameters
    ----------
    message
        What is wrong and what to do.
    code
        FHIR ``IssueType`` (``structure``, ``required``, ``value``, ``business-rule``...).
    expression
        FHIRPath of the element at fault.
    """

    def __init__(self, message: str, *, code: str = "invalid", expression: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.expression = expression


def operation_outcome(diagnostics: str, *, code: str, expression: str = "") -> Json:
    """Return an OperationOutcome with one error issue."""
    issue: Json = {"severity": "error", "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def _coding(coding: Coding) -> Json:
    body: Json = {"system": coding.system, "code": coding.code}
    if coding.display:
        body["display"] = coding.display
    return body


def _party(party: Party) -> Json:
    body: Json = {"identifier": {"system": party.system, "value": party.value}}
    if party.display:
        body["display"] = party.display
    return body


def _subject(manifest: ManifestSubmission) -> Json:
    subject: Json = {
        "identifier": {
            "system": URN_OID_PREFIX + manifest.patient_oid,
            "value": manifest.patient_value,
        }
    }
    if manifest.identity_qualified:
        status = {"system": IDENTITY_STATUS_SYSTEM, "code": IDENTITY_QUALIFIED}
        subject["extension"] = [
            {
                "url": IDENTITY_RELIABILITY_EXTENSION,
                "extension": [{"url": "identityStatus", "valueCoding": status}],
            }
        ]
    return subject


def document_reference(
    manifest: ManifestSubmission,
    *,
    entry_id: str | None,
    status: EntryStatus,
    created: datetime,
    content_url: str,
    content: bytes | None = None,
    content_size: int | None = None,
    replaces_reference: str | None = None,
) -> Json:
    """Return the DocumentReference of a manifest (MHD, XDS-I.b imaging manifest metadata).

    Parameters
    ----------
    manifest
        The metadata.
    entry_id
        The registry id; ``None`` in a submission (the registry assigns it).
    status
        ``DocumentReference.status``.
    created
        ``DocumentReference.date``.
    content_url
        ``content.attachment.url`` (the Binary's fullUrl in a submission, its URL once stored).
    content, content_size
        The KOS bytes (to compute size and SHA-1 hash) or just its size.
    replaces_reference
        ``relatesTo.target``: a ``DocumentReference/<id>`` reference, or ``None`` to derive an
        identifier reference from ``manifest.replaces``.
    """
    period_end = manifest.period_end or manifest.period_start
    events = [_coding(Coding(DCM_SYSTEM, modality)) for modality in manifest.modalities]
    events += [_coding(region) for region in manifest.regions]
    related: list[Json] = [
        {
            "identifier": {
                "system": STUDY_UID_SYSTEM,
                "value": URN_OID_PREFIX + manifest.study_instance_uid,
            }
        }
    ]
    if manifest.accession_number:
        accession: Json = {
            "type": {"coding": [_coding(ACCESSION_TYPE)]},
            "value": manifest.accession_number,
        }
        if manifest.accession_system:
            accession["system"] = manifest.accession_system
        related.append({"identifier": accession})
    labels = [{"coding": [{"system": V3_CONFIDENTIALITY_SYSTEM, "code": manifest.confidentiality}]}]
    if manifest.masked:
        labels.append({"coding": [{"system": DMP_CONFIDENTIALITY_SYSTEM, "code": DMP_MASKED_CODE}]})
    attachment: Json = {
        "contentType": DICOM_MEDIA_TYPE,
        "url": content_url,
        "creation": created.isoformat(),
    }
    if content is not None:
        attachment["size"] = len(content)
        digest = hashlib.sha1(content, usedforsecurity=False).digest()  # FHIR R4: SHA-1
        attachment["hash"] = base64.b64encode(digest).decode("ascii")
    elif content_size is not None:
        attachment["size"] = content_size
    resource: Json = {
        "resourceType": "DocumentReference",
        "extension": [
            {
                "url": SOURCE_BOX_EXTENSION,
                "valueIdentifier": {"system": URI_SYSTEM, "value": manifest.source_box_id},
            }
        ],
        "masterIdentifier": {
            "system": URI_SYSTEM,
            "value": URN_OID_PREFIX + manifest.kos_sop_instance_uid,
        },
        "status": status.value,
        "type": {"coding": [_coding(manifest.document_type)]},
        "subject": _subject(manifest),
        "date": created.isoformat(),
        "securityLabel": labels,
        "content": [
            {
                "attachment": attachment,
                "format": {"system": DCM_SYSTEM, "code": KOS_SOP_CLASS_UID},
            }
        ],
        "context": {
            "period": {"start": manifest.period_start.isoformat(), "end": period_end.isoformat()},
            "related": related,
        },
    }
    if events:
        resource["context"]["event"] = [{"coding": [event]} for event in events]
    if entry_id is not None:
        resource["id"] = entry_id
    if manifest.title:
        resource["description"] = manifest.title
    if manifest.author is not None:
        resource["author"] = [_party(manifest.author)]
    if manifest.custodian is not None:
        resource["custodian"] = _party(manifest.custodian)
    target = _replaces_target(manifest.replaces, replaces_reference)
    if target is not None:
        resource["relatesTo"] = [{"code": "replaces", "target": target}]
    return resource


def _replaces_target(replaces: str | None, reference: str | None) -> Json | None:
    if reference is not None:
        return {"reference": reference}
    if replaces is None:
        return None
    if "." in replaces:  # a KOS SOP Instance UID (PS3.5 §9.1: dotted numbers); ids have no dot
        return {"identifier": {"system": URI_SYSTEM, "value": URN_OID_PREFIX + replaces}}
    return {"reference": f"DocumentReference/{replaces}"}


def provide_document_bundle(manifest: ManifestSubmission, kos: bytes) -> Json:
    """Return the ITI-65 transaction Bundle: SubmissionSet List, DocumentReference, Binary."""
    now = datetime.now(UTC).replace(microsecond=0)
    binary_url, document_url, list_url = (uuid.uuid4().urn for _ in range(3))
    document = document_reference(
        manifest,
        entry_id=None,
        status=EntryStatus.CURRENT,
        created=now,
        content_url=binary_url,
        content=kos,
    )
    submission_set: Json = {
        "resourceType": "List",
        "extension": [
            {
                "url": IHE_SOURCE_ID_EXTENSION,
                "valueIdentifier": {"system": URI_SYSTEM, "value": manifest.source_box_id},
            }
        ],
        "identifier": [{"use": "official", "system": URI_SYSTEM, "value": list_url}],
        "status": "current",
        "mode": "working",
        "code": {"coding": [{"system": MHD_LIST_TYPES, "code": "submissionset"}]},
        "subject": _subject(manifest),
        "date": now.isoformat(),
        "entry": [{"item": {"reference": document_url}}],
    }
    binary: Json = {
        "resourceType": "Binary",
        "contentType": DICOM_MEDIA_TYPE,
        "data": base64.b64encode(kos).decode("ascii"),
    }
    entries = [
        (list_url, submission_set, "List"),
        (document_url, document, "DocumentReference"),
        (binary_url, binary, "Binary"),
    ]
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": url, "resource": resource, "request": {"method": "POST", "url": kind}}
            for url, resource, kind in entries
        ],
    }


def parse_date(text: str, expression: str) -> date:
    """Return the date part of a FHIR date or dateTime; raise :class:`BundleError` otherwise."""
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        raise BundleError(
            f"{text!r} is not a FHIR date", code="value", expression=expression
        ) from None


def confidentiality_of(code: str) -> Confidentiality:
    """Return the confidentiality for an HL7 v3 code; raise :class:`BundleError` otherwise."""
    try:
        return Confidentiality(code)
    except ValueError:
        raise BundleError(
            f"confidentiality {code!r} is not N, R or V",
            code="value",
            expression="DocumentReference.securityLabel",
        ) from None
