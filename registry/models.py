"""Wire contract of the national registry: the values the box and the registry exchange.

The registry speaks IHE MHD (FHIR R4 JSON); :mod:`registry._fhir` maps these values to and from
FHIR resources. The box builds a :class:`ManifestSubmission` for each KOS manifest it publishes
and reads :class:`RegistryEntry` values back from searches.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

__all__ = [
    "DCM_SYSTEM",
    "DIAGNOSTIC_IMAGING_STUDY",
    "ENTITLEMENT_HEADER",
    "LOINC_SYSTEM",
    "MASKED_ENTITLEMENT",
    "REQUESTER_HEADER",
    "Coding",
    "Confidentiality",
    "EntryStatus",
    "ManifestSubmission",
    "Party",
    "RegistryEntry",
    "SearchPage",
    "SearchQuery",
]

#: DICOM Controlled Terminology (PS3.16 §8), the FHIR system of modality codes (PS3.16 CID 29).
DCM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
#: LOINC, the FHIR system of document types (IHE XDS-I.b typeCode).
LOINC_SYSTEM = "http://loinc.org"

#: Header granting a search or read access to masked entries, and its value.
ENTITLEMENT_HEADER = "X-Registry-Entitlement"
MASKED_ENTITLEMENT = "masked"
#: Header naming the requesting box or organisation (custodian / source box id).
REQUESTER_HEADER = "X-Registry-Requester"


class EntryStatus(StrEnum):
    """``DocumentReference.status`` (FHIR R4 ValueSet document-reference-status)."""

    CURRENT = "current"
    SUPERSEDED = "superseded"
    ENTERED_IN_ERROR = "entered-in-error"


class Confidentiality(StrEnum):
    """HL7 v3 Confidentiality codes (``DocumentReference.securityLabel``)."""

    NORMAL = "N"
    RESTRICTED = "R"
    VERY_RESTRICTED = "V"


@dataclass(frozen=True, slots=True)
class Coding:
    """A code in a code system (FHIR ``Coding``)."""

    system: str
    code: str
    display: str | None = None


#: LOINC 18748-4 "Diagnostic imaging study": the type of every imaging manifest (XDS-I.b).
DIAGNOSTIC_IMAGING_STUDY = Coding(LOINC_SYSTEM, "18748-4", "Diagnostic imaging study")


@dataclass(frozen=True, slots=True)
class Party:
    """An author (health professional, e.g. RPPS) or custodian (organisation, e.g. FINESS).

    Parameters
    ----------
    system
        The identifier's system (``urn:oid:...``).
    value
        The identifier.
    display
        A human-readable name; optional.
    """

    system: str
    value: str
    display: str | None = None


@dataclass(frozen=True, slots=True)
class ManifestSubmission:
    """The metadata of one KOS manifest published to the registry (MHD ITI-65).

    Parameters
    ----------
    patient_value
        The 15-character INS matricule.
    patient_oid
        The INS assigning authority (``registry._ins.INS_*_OID``).
    kos_sop_instance_uid
        SOP Instance UID of the KOS: the ``masterIdentifier``; publishing it twice is idempotent.
    study_instance_uid
        The referenced study (``context.related``).
    source_box_id
        Identifier of the publishing box.
    period_start, period_end
        Exam dates (``context.period``); ``period_end`` defaults to ``period_start``.
    accession_number, accession_system
        The accession number and its issuer (``context.related``, type ACSN).
    modalities
        DICOM modality codes (PS3.16 CID 29) of the study (``context.event``).
    regions
        Anatomic region codes (``context.event``).
    author, custodian
        Who wrote the report, which organisation keeps the images.
    confidentiality
        The HL7 v3 confidentiality code.
    masked
        Masked to health professionals (DMP "masqué aux professionnels"): invisible to searches
        that are not entitled to it.
    identity_qualified
        The INS was qualified (FR Core identity reliability ``QUAL``); the registry refuses
        manifests for non-qualified identities.
    document_type
        ``DocumentReference.type``.
    title
        A short human description (``DocumentReference.description``).
    replaces
        The entry this manifest replaces: an entry id, or the replaced KOS SOP Instance UID.
    """

    patient_value: str
    patient_oid: str
    kos_sop_instance_uid: str
    study_instance_uid: str
    source_box_id: str
    period_start: date
    period_end: date | None = None
    accession_number: str | None = None
    accession_system: str | None = None
    modalities: tuple[str, ...] = ()
    regions: tuple[Coding, ...] = ()
    author: Party | None = None
    custodian: Party | None = None
    confidentiality: Confidentiality = Confidentiality.NORMAL
    masked: bool = False
    identity_qualified: bool = True
    document_type: Coding = DIAGNOSTIC_IMAGING_STUDY
    title: str | None = None
    replaces: str | None = None


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    """One stored manifest, as a search or read returns it.

    Parameters
    ----------
    entry_id
        The registry's id (``DocumentReference.id``; also the ``Binary`` id of the KOS).
    status
        Current, superseded or entered-in-error.
    created
        When the registry stored it (``DocumentReference.date``).
    manifest
        Its metadata; ``manifest.replaces`` is the id of the entry it replaced, if any.
    content_url
        Where to retrieve the KOS bytes (ITI-68).
    content_size
        Size of the KOS in bytes.
    """

    entry_id: str
    status: EntryStatus
    created: datetime
    manifest: ManifestSubmission
    content_url: str
    content_size: int


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A search for manifests of one patient (ITI-67).

    Multiple modalities (or regions) match entries having any of them; the criteria are ANDed.
    """

    patient_value: str
    patient_oid: str
    statuses: tuple[EntryStatus, ...] = (EntryStatus.CURRENT,)
    modalities: tuple[str, ...] = ()
    regions: tuple[Coding, ...] = ()
    date_from: date | None = None
    date_to: date | None = None
    study_instance_uid: str | None = None
    accession_number: str | None = None
    document_type: Coding | None = None
    count: int = 100


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One page of search results and the URL of the next page, if any."""

    entries: tuple[RegistryEntry, ...]
    next_url: str | None = None
