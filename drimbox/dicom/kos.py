"""Key Object Selection (KOS) documents: the DRIMbox manifest and IOCM rejection notes.

The manifest follows IHE RAD TF-3 §4.68.4.1.2.2 (XDS-I.b imaging manifest) and the DRIM-M
specifications: a Key Object Selection Document (PS3.3 §A.35.4) titled (113030, DCM,
"Manifest"), content per TID 2010, one CurrentRequestedProcedureEvidenceSequence item for the
study where each series carries the box's WADO-RS RetrieveURL and RetrieveLocationUID, the
patient identified by the INS (PatientID + IssuerOfPatientID + qualifiers, IPP in
OtherPatientIDsSequence), and a ReferencedRequestSequence item per order (accession number,
placer order number). Its UIDs derive from the organisation root, the study and the publication
version, so rebuilding a version gives the same UIDs.

Rejection notes follow IHE RAD TF-2 IOCM: a KOS titled with a PS3.16 CID 7011 code whose
evidence lists the rejected instances.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

from drimbox.errors import FailureReason, InvalidInstanceError, UnreadableInstanceError
from drimbox.identity import PatientIdentity

__all__ = [
    "KEY_OBJECT_SELECTION_DOCUMENT_STORAGE",
    "MANIFEST_TITLE",
    "CodedConcept",
    "KeyObjectDocument",
    "ManifestRequest",
    "ManifestSeries",
    "ManifestUIDs",
    "ReferencedInstance",
    "ReferencedSeries",
    "RejectionNote",
    "RejectionReason",
    "RequestReference",
    "build_manifest",
    "build_rejection_note",
    "manifest_uids",
    "parse_kos",
    "parse_rejection_note",
]

KEY_OBJECT_SELECTION_DOCUMENT_STORAGE = UID("1.2.840.10008.5.1.4.1.1.88.59")
"""Key Object Selection Document Storage SOP Class (PS3.4 §B.5)."""
KOS_MODALITY = "KO"  # PS3.3 §C.17.6.1.1
KOS_TEMPLATE = ("DCMR", "2010")  # PS3.16 TID 2010 Key Object Selection
ISO_ENTITY_TYPE = "ISO"  # UniversalEntityIDType (PS3.3 §10.14): an ISO OID
TEXT_PATIENT_ID = "TEXT"  # TypeOfPatientID (PS3.3 §C.7.1.1)
_MAX_UID_LENGTH = 64  # PS3.5 §9.1
_UID_ROOT = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")
_MAX_ROOT_LENGTH = 40
_DICOM_SEXES = frozenset({"M", "F", "O"})  # PatientSex (PS3.3 §C.7.1.1)
_OTHER_SEX = "O"
UTF8_CHARACTER_SET = "ISO_IR 192"  # SpecificCharacterSet (PS3.3 §C.12.1.1.2)
CONTAINS = "CONTAINS"  # RelationshipType (PS3.3 §C.17.3.2.4)
CONTAINER = "CONTAINER"  # ValueType (PS3.3 §C.17.3.2.1), as the next three
TEXT = "TEXT"
IMAGE = "IMAGE"
COMPOSITE = "COMPOSITE"
SEPARATE = "SEPARATE"  # ContinuityOfContent (PS3.3 §C.17.3.2.3)
_IMAGE_SOP_CLASS_NAME = "Image Storage"  # in pydicom's name of every image storage SOP class


@dataclass(frozen=True, slots=True)
class CodedConcept:
    """A code sequence item: CodeValue, CodingSchemeDesignator, CodeMeaning."""

    value: str
    scheme: str
    meaning: str

    def to_dataset(self) -> Dataset:
        """Return it as a code sequence item."""
        item = Dataset()
        item.CodeValue = self.value
        item.CodingSchemeDesignator = self.scheme
        item.CodeMeaning = self.meaning
        return item


MANIFEST_TITLE = CodedConcept("113030", "DCM", "Manifest")
"""Document title of an XDS-I.b manifest (PS3.16 CID 7010)."""
KEY_OBJECT_DESCRIPTION = CodedConcept("113012", "DCM", "Key Object Description")
"""Concept name of the TEXT item of TID 2010."""


class RejectionReason(StrEnum):
    """IOCM rejection note titles (PS3.16 CID 7011 Rejected for Quality Reasons...)."""

    QUALITY = "113001"
    PATIENT_SAFETY = "113037"
    INCORRECT_MODALITY_WORKLIST_ENTRY = "113038"
    DATA_RETENTION_POLICY_EXPIRED = "113039"

    @property
    def concept(self) -> CodedConcept:
        """The document title coding this reason."""
        return CodedConcept(self.value, "DCM", _REJECTION_MEANINGS[self])


_REJECTION_MEANINGS = {
    RejectionReason.QUALITY: "Rejected for Quality Reasons",
    RejectionReason.PATIENT_SAFETY: "Rejected for Patient Safety Reasons",
    RejectionReason.INCORRECT_MODALITY_WORKLIST_ENTRY: "Incorrect Modality Worklist Entry",
    RejectionReason.DATA_RETENTION_POLICY_EXPIRED: "Data Retention Policy Expired",
}

_REJECTION_CODES = frozenset(reason.value for reason in RejectionReason)


@dataclass(frozen=True, slots=True)
class ReferencedInstance:
    """A referenced SOP instance."""

    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True, slots=True)
class ManifestSeries:
    """A series to reference: its UID, modality and instances."""

    series_instance_uid: str
    modality: str
    instances: tuple[ReferencedInstance, ...]


@dataclass(frozen=True, slots=True)
class RequestReference:
    """One order the study fulfils (ReferencedRequestSequence item, PS3.3 §C.17.6.2.1).

    Attributes
    ----------
    accession_number, accession_issuer
        Accession number and the OID of its issuer (CDA ``accessionNumber`` root).
    placer_order_number, placer_order_issuer
        Placer order number and the OID of its issuer (CDA ``order/id`` root).
    filler_order_number, requested_procedure_id, requested_procedure_description
        As known (may be empty: Type 2).
    """

    accession_number: str = ""
    accession_issuer: str | None = None
    placer_order_number: str = ""
    placer_order_issuer: str | None = None
    filler_order_number: str = ""
    requested_procedure_id: str = ""
    requested_procedure_description: str = ""


@dataclass(frozen=True, slots=True)
class ManifestRequest:
    """Everything a manifest is built from.

    Attributes
    ----------
    patient
        The report's identity (INS, OID, IPP and traits).
    study_instance_uid, study_date, study_time, study_description, study_id,
    referring_physician_name
        Study attributes, copied from the images.
    series
        The referenced series and instances.
    requests
        The orders (accession, placer order) from the report.
    public_base_url
        The box's public WADO-RS base (``.../dicom-web``); RetrieveURL = base +
        ``/studies/{study}/series/{series}``.
    organization_uid_root
        The organisation's UID root under which the manifest UIDs are derived.
    version
        Publication version (1 for the first manifest of the study, then +1 per replacement).
    institution_name
        Institution publishing the manifest.
    content_datetime
        Time of the publication (timezone-aware; ContentDate/Time, InstanceCreationDate/Time).
    retrieve_location_uid
        RetrieveLocationUID of the series; derived from the organisation root when ``None``.
    description
        Key Object Description text; a summary is generated when empty.
    manufacturer, software_versions
        General Equipment module.
    """

    patient: PatientIdentity
    study_instance_uid: str
    series: tuple[ManifestSeries, ...]
    public_base_url: str
    organization_uid_root: str
    version: int
    institution_name: str
    content_datetime: datetime
    requests: tuple[RequestReference, ...] = ()
    study_date: str = ""
    study_time: str = ""
    study_description: str = ""
    study_id: str = ""
    referring_physician_name: str = ""
    retrieve_location_uid: str | None = None
    description: str = ""
    manufacturer: str = "drimbox"
    software_versions: str = "drimbox"


@dataclass(frozen=True, slots=True)
class ManifestUIDs:
    """The UIDs of one manifest version."""

    series_instance_uid: str
    sop_instance_uid: str


@dataclass(frozen=True, slots=True)
class ReferencedSeries:
    """A series of a KOS's evidence."""

    series_instance_uid: str
    retrieve_url: str | None
    retrieve_location_uid: str | None
    instances: tuple[ReferencedInstance, ...]


@dataclass(frozen=True, slots=True)
class KeyObjectDocument:
    """What a received or built KOS references.

    Attributes
    ----------
    sop_instance_uid, series_instance_uid, study_instance_uid
        The KOS's own identity.
    title
        ConceptNameCodeSequence of the root container.
    patient_id, issuer_of_patient_id
        PatientID and IssuerOfPatientID.
    accession_numbers
        From ReferencedRequestSequence (or AccessionNumber).
    evidence
        ``(study UID, series)`` of CurrentRequestedProcedureEvidenceSequence.
    """

    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    title: CodedConcept | None
    patient_id: str
    issuer_of_patient_id: str
    accession_numbers: tuple[str, ...]
    evidence: tuple[tuple[str, tuple[ReferencedSeries, ...]], ...]

    @property
    def instances(self) -> tuple[tuple[str, str, ReferencedInstance], ...]:
        """Every referenced instance as ``(study UID, series UID, instance)``."""
        return tuple(
            (study, series.series_instance_uid, instance)
            for study, series_list in self.evidence
            for series in series_list
            for instance in series.instances
        )


@dataclass(frozen=True, slots=True)
class RejectionNote:
    """An IOCM rejection note: why, and which instances are rejected."""

    reason: RejectionReason
    document: KeyObjectDocument

    @property
    def rejected(self) -> tuple[tuple[str, str, ReferencedInstance], ...]:
        """The rejected instances as ``(study UID, series UID, instance)``."""
        return self.document.instances


def _derived_uid(root: str, *parts: object) -> str:
    if not _UID_ROOT.fullmatch(root) or len(root) > _MAX_ROOT_LENGTH:
        raise ValueError(f"organisation UID root must be a UID of at most {_MAX_ROOT_LENGTH} chars")
    digest = hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()
    number = str(int.from_bytes(digest[:16], "big"))
    return f"{root}.{number[: _MAX_UID_LENGTH - len(root) - 1]}"


def manifest_uids(
    organization_uid_root: str, study_instance_uid: str, version: int
) -> ManifestUIDs:
    """Return the series and SOP instance UIDs of manifest ``version`` of a study.

    Deterministic: the same root, study and version always give the same UIDs, and different
    versions give different ones (SHA-256 derived, under the organisation's root).
    """
    return ManifestUIDs(
        _derived_uid(organization_uid_root, "manifest-series", study_instance_uid, version),
        _derived_uid(organization_uid_root, "manifest", study_instance_uid, version),
    )


def _issuer_qualifiers(oid: str) -> Sequence:
    item = Dataset()
    item.UniversalEntityID = oid
    item.UniversalEntityIDType = ISO_ENTITY_TYPE
    return Sequence([item])


def _patient_module(ds: Dataset, patient: PatientIdentity) -> None:
    ds.PatientName = "^".join(
        p for p in (patient.birth_name or "", patient.first_given_name or "")
    ).rstrip("^")
    ds.PatientID = patient.ins or patient.ipp or ""
    issuer = patient.ins_oid if patient.ins else patient.ipp_authority
    ds.IssuerOfPatientID = issuer or ""
    if issuer:
        ds.IssuerOfPatientIDQualifiersSequence = _issuer_qualifiers(issuer)
    ds.PatientBirthDate = patient.birth_date or ""
    sex = (patient.sex or "").upper()
    ds.PatientSex = sex if sex in _DICOM_SEXES else (_OTHER_SEX if sex else "")
    if patient.ins and patient.ipp:
        other = Dataset()
        other.PatientID = patient.ipp
        other.IssuerOfPatientID = patient.ipp_authority or ""
        other.TypeOfPatientID = TEXT_PATIENT_ID
        if patient.ipp_authority:
            other.IssuerOfPatientIDQualifiersSequence = _issuer_qualifiers(patient.ipp_authority)
        ds.OtherPatientIDsSequence = Sequence([other])


def _request_item(request: RequestReference, study_instance_uid: str) -> Dataset:
    item = Dataset()
    item.StudyInstanceUID = study_instance_uid
    item.ReferencedStudySequence = Sequence()
    item.AccessionNumber = request.accession_number
    if request.accession_issuer:
        item.IssuerOfAccessionNumberSequence = _issuer_qualifiers(request.accession_issuer)
    item.PlacerOrderNumberImagingServiceRequest = request.placer_order_number
    if request.placer_order_issuer:
        item.OrderPlacerIdentifierSequence = _issuer_qualifiers(request.placer_order_issuer)
    item.FillerOrderNumberImagingServiceRequest = request.filler_order_number
    item.RequestedProcedureID = request.requested_procedure_id
    item.RequestedProcedureDescription = request.requested_procedure_description
    item.RequestedProcedureCodeSequence = Sequence()
    return item


def _sop_reference(instance: ReferencedInstance) -> Dataset:
    reference = Dataset()
    reference.ReferencedSOPClassUID = instance.sop_class_uid
    reference.ReferencedSOPInstanceUID = instance.sop_instance_uid
    return reference


def _content_item(instance: ReferencedInstance) -> Dataset:
    item = Dataset()
    item.RelationshipType = CONTAINS
    is_image = _IMAGE_SOP_CLASS_NAME in UID(instance.sop_class_uid).name
    item.ValueType = IMAGE if is_image else COMPOSITE
    item.ReferencedSOPSequence = Sequence([_sop_reference(instance)])
    return item


def _text_item(text: str) -> Dataset:
    item = Dataset()
    item.RelationshipType = CONTAINS
    item.ValueType = TEXT
    item.ConceptNameCodeSequence = Sequence([KEY_OBJECT_DESCRIPTION.to_dataset()])
    item.TextValue = text
    return item


def _evidence(
    study_instance_uid: str,
    series: tuple[ManifestSeries, ...],
    retrieve_base: str | None,
    retrieve_location_uid: str | None,
) -> Sequence:
    series_items = []
    for one in series:
        item = Dataset()
        item.SeriesInstanceUID = one.series_instance_uid
        if retrieve_base is not None:
            item.RetrieveURL = (
                f"{retrieve_base}/studies/{study_instance_uid}/series/{one.series_instance_uid}"
            )
        if retrieve_location_uid:
            item.RetrieveLocationUID = retrieve_location_uid
        item.ReferencedSOPSequence = Sequence([_sop_reference(i) for i in one.instances])
        series_items.append(item)
    study = Dataset()
    study.StudyInstanceUID = study_instance_uid
    study.ReferencedSeriesSequence = Sequence(series_items)
    return Sequence([study])


def _key_object_document(
    *,
    title: CodedConcept,
    uids: ManifestUIDs,
    patient: PatientIdentity,
    study_instance_uid: str,
    series: tuple[ManifestSeries, ...],
    when: datetime,
    institution_name: str,
    manufacturer: str,
    software_versions: str,
) -> Dataset:
    if not series or not all(s.instances for s in series):
        raise ValueError("a key object document references at least one instance per series")
    if when.tzinfo is None:
        raise ValueError("content_datetime must be timezone-aware")
    ds = Dataset()
    ds.SpecificCharacterSet = UTF8_CHARACTER_SET
    ds.SOPClassUID = KEY_OBJECT_SELECTION_DOCUMENT_STORAGE
    ds.SOPInstanceUID = uids.sop_instance_uid
    ds.InstanceCreationDate = ds.ContentDate = when.strftime("%Y%m%d")
    ds.InstanceCreationTime = ds.ContentTime = when.strftime("%H%M%S")
    ds.TimezoneOffsetFromUTC = when.strftime("%z")
    _patient_module(ds, patient)
    ds.StudyInstanceUID = study_instance_uid
    ds.Modality = KOS_MODALITY
    ds.SeriesInstanceUID = uids.series_instance_uid
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ReferencedPerformedProcedureStepSequence = Sequence()
    ds.Manufacturer = manufacturer
    ds.InstitutionName = institution_name
    ds.SoftwareVersions = software_versions
    ds.ValueType = CONTAINER
    ds.ConceptNameCodeSequence = Sequence([title.to_dataset()])
    ds.ContinuityOfContent = SEPARATE
    template = Dataset()
    template.MappingResource, template.TemplateIdentifier = KOS_TEMPLATE
    ds.ContentTemplateSequence = Sequence([template])
    return ds


def _encode(ds: Dataset) -> bytes:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _summary(request: ManifestRequest) -> str:
    lines = [f"Study {request.study_description or request.study_instance_uid}"]
    lines += [
        f"Series {s.series_instance_uid}: {s.modality}, {len(s.instances)} instance(s)"
        for s in request.series
    ]
    return "\n".join(lines)


def build_manifest(request: ManifestRequest) -> bytes:
    """Build the manifest KOS of ``request`` as a DICOM Part 10 file (Explicit VR Little Endian).

    Raises
    ------
    ValueError
        No series, a series without instances, an invalid organisation root, a naive datetime,
        or a version below 1.
    """
    if request.version < 1:
        raise ValueError("manifest versions start at 1")
    uids = manifest_uids(request.organization_uid_root, request.study_instance_uid, request.version)
    ds = _key_object_document(
        title=MANIFEST_TITLE,
        uids=uids,
        patient=request.patient,
        study_instance_uid=request.study_instance_uid,
        series=request.series,
        when=request.content_datetime,
        institution_name=request.institution_name,
        manufacturer=request.manufacturer,
        software_versions=request.software_versions,
    )
    ds.StudyDate = request.study_date
    ds.StudyTime = request.study_time
    ds.StudyDescription = request.study_description
    ds.StudyID = request.study_id
    ds.ReferringPhysicianName = request.referring_physician_name
    ds.AccessionNumber = next(
        (r.accession_number for r in request.requests if r.accession_number), ""
    )
    if request.requests:
        ds.ReferencedRequestSequence = Sequence(
            [_request_item(r, request.study_instance_uid) for r in request.requests]
        )
    location = request.retrieve_location_uid or _derived_uid(
        request.organization_uid_root, "retrieve-location"
    )
    ds.CurrentRequestedProcedureEvidenceSequence = _evidence(
        request.study_instance_uid, request.series, request.public_base_url.rstrip("/"), location
    )
    content = [_text_item(request.description or _summary(request))]
    content += [_content_item(i) for s in request.series for i in s.instances]
    ds.ContentSequence = Sequence(content)
    return _encode(ds)


def build_rejection_note(
    reason: RejectionReason,
    *,
    patient: PatientIdentity,
    study_instance_uid: str,
    series: tuple[ManifestSeries, ...],
    organization_uid_root: str,
    content_datetime: datetime,
    institution_name: str = "",
    study_date: str = "",
    study_time: str = "",
    accession_number: str = "",
) -> bytes:
    """Build an IOCM rejection note rejecting the instances of ``series``.

    Its UIDs derive from the organisation root, the study and the rejected instances.
    """
    key = sorted(i.sop_instance_uid for s in series for i in s.instances)
    uids = ManifestUIDs(
        _derived_uid(organization_uid_root, "rejection-series", study_instance_uid, reason, *key),
        _derived_uid(organization_uid_root, "rejection", study_instance_uid, reason, *key),
    )
    ds = _key_object_document(
        title=reason.concept,
        uids=uids,
        patient=patient,
        study_instance_uid=study_instance_uid,
        series=series,
        when=content_datetime,
        institution_name=institution_name,
        manufacturer="drimbox",
        software_versions="drimbox",
    )
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = study_date, study_time, accession_number
    ds.StudyID = ds.ReferringPhysicianName = ""
    ds.CurrentRequestedProcedureEvidenceSequence = _evidence(study_instance_uid, series, None, None)
    ds.ContentSequence = Sequence([_content_item(i) for s in series for i in s.instances])
    return _encode(ds)


def _read(data: bytes) -> Dataset:
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        sop_class = str(ds.SOPClassUID)
    except (InvalidDicomError, AttributeError, EOFError, ValueError, KeyError) as exc:
        raise UnreadableInstanceError(f"not a readable DICOM KOS: {type(exc).__name__}") from None
    if sop_class != KEY_OBJECT_SELECTION_DOCUMENT_STORAGE:
        raise InvalidInstanceError(
            "not a Key Object Selection Document", FailureReason.SOP_CLASS_NOT_SUPPORTED
        )
    return ds


def _coded(sequence: Sequence | None) -> CodedConcept | None:
    if not sequence:
        return None
    item = sequence[0]
    return CodedConcept(
        str(item.get("CodeValue", "")),
        str(item.get("CodingSchemeDesignator", "")),
        str(item.get("CodeMeaning", "")),
    )


def parse_kos(data: bytes) -> KeyObjectDocument:
    """Read what a KOS references (studies, series, instances, RetrieveURLs).

    Raises
    ------
    UnreadableInstanceError
        Not DICOM, or truncated.
    InvalidInstanceError
        Another SOP class (reason ``SOP_CLASS_NOT_SUPPORTED``).
    """
    ds = _read(data)
    try:
        evidence = tuple(
            (
                str(study.StudyInstanceUID),
                tuple(
                    ReferencedSeries(
                        series_instance_uid=str(series.SeriesInstanceUID),
                        retrieve_url=str(series.RetrieveURL) if series.get("RetrieveURL") else None,
                        retrieve_location_uid=str(series.get("RetrieveLocationUID", "")) or None,
                        instances=tuple(
                            ReferencedInstance(
                                str(ref.ReferencedSOPClassUID), str(ref.ReferencedSOPInstanceUID)
                            )
                            for ref in series.get("ReferencedSOPSequence", [])
                        ),
                    )
                    for series in study.get("ReferencedSeriesSequence", [])
                ),
            )
            for study in ds.get("CurrentRequestedProcedureEvidenceSequence", [])
        )
    except AttributeError as exc:
        raise UnreadableInstanceError(f"KOS evidence is incomplete: {exc}") from None
    accessions = tuple(
        str(r.AccessionNumber)
        for r in ds.get("ReferencedRequestSequence", [])
        if r.get("AccessionNumber")
    ) or ((str(ds.AccessionNumber),) if ds.get("AccessionNumber") else ())
    return KeyObjectDocument(
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        title=_coded(ds.get("ConceptNameCodeSequence")),
        patient_id=str(ds.get("PatientID", "")),
        issuer_of_patient_id=str(ds.get("IssuerOfPatientID", "")),
        accession_numbers=accessions,
        evidence=evidence,
    )


def parse_rejection_note(data: bytes) -> RejectionNote | None:
    """Return the rejection note in ``data``, or ``None`` for a KOS with another title.

    Raises
    ------
    UnreadableInstanceError, InvalidInstanceError
        As :func:`parse_kos`.
    """
    document = parse_kos(data)
    title = document.title
    if title is None or title.scheme != "DCM" or title.value not in _REJECTION_CODES:
        return None
    return RejectionNote(RejectionReason(title.value), document)
