"""CDA R2 imaging report parsing (CI-SIS IMG-CR-IMG, level 1 with the PDF in ``nonXMLBody``).

Only the header matters to the box: report identity and version, the patient (recordTarget), the
orders and accession numbers (inFulfillmentOf, DICOM PS3.20 ``accessionNumber`` extension), the
studies (documentationOf/serviceEvent/id = StudyInstanceUID, PS3.20 §9.1), the service event codes
(LOINC act code with CCAM, modality (DCM 121139) and anatomic region (LOINC 39111-0) translations),
the author, legal authenticator and custodian organisations, confidentiality and the replaced
document (relatedDocument RPLC).

XML is parsed by lxml with entity resolution, network access and DTD loading disabled, huge trees
refused and a size limit; any DOCTYPE is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from drimbox.hl7.errors import InvalidDocumentError
from drimbox.identity import INS_OIDS, PatientIdentity

__all__ = [
    "CDA_NAMESPACE",
    "DEFAULT_MAX_DOCUMENT_SIZE",
    "ClinicalDocument",
    "Code",
    "InstanceIdentifier",
    "OrderReference",
    "Participant",
    "parse_clinical_document",
]

CDA_NAMESPACE = "urn:hl7-org:v3"
"""Namespace of CDA R2 (HL7 CDA R2 normative edition)."""
PS3_20_NAMESPACE = "urn:dicom-org:ps3-20"
"""Namespace of the DICOM PS3.20 CDA extensions (``accessionNumber``)."""
DEFAULT_MAX_DOCUMENT_SIZE = 32 * 1024 * 1024
"""Default limit on a CDA document (the ANS reports embed a ~170 KB PDF, ~240 KB as XML)."""
MODALITY_QUALIFIER = "121139"  # DCM "Modality" (PS3.16 CID 29 qualifier used by CI-SIS)
ANATOMIC_REGION_QUALIFIER = "39111-0"  # LOINC "Body site" (CI-SIS JDV_RegionAnatomique_CISIS)
CCAM_CODE_SYSTEM = "1.2.250.1.213.2.5"  # CCAM (French procedure classification)
REPLACE_RELATIONSHIP = "RPLC"  # HL7 v3 ActRelationshipType: replaces
_NS = {"cda": CDA_NAMESPACE, "ps3-20": PS3_20_NAMESPACE}
_DOCTYPE_PROBE = 4096


@dataclass(frozen=True, slots=True)
class InstanceIdentifier:
    """An HL7 v3 II: ``root`` (OID/UUID) and optional ``extension``."""

    root: str
    extension: str | None = None


@dataclass(frozen=True, slots=True)
class Code:
    """An HL7 v3 CD/CE: code, code system OID, display name."""

    code: str
    code_system: str | None = None
    display_name: str | None = None


@dataclass(frozen=True, slots=True)
class Participant:
    """An author, legal authenticator or custodian.

    Attributes
    ----------
    identifier
        The person's id (RPPS under 1.2.250.1.71.4.2.1), ``None`` for a custodian.
    name
        ``FAMILY^Given`` of the person, or ``None``.
    organization_id, organization_name
        The represented organisation (FINESS / SIRET under 1.2.250.1.71.4.2.2).
    time
        ``time/@value`` (author: validation; legal authenticator: signature).
    """

    identifier: InstanceIdentifier | None
    name: str | None
    organization_id: InstanceIdentifier | None
    organization_name: str | None
    time: str | None = None


@dataclass(frozen=True, slots=True)
class OrderReference:
    """One ``inFulfillmentOf/order``: placer order number and accession number."""

    placer_order: InstanceIdentifier | None
    accession: InstanceIdentifier | None


@dataclass(frozen=True, slots=True)
class ClinicalDocument:
    """The header fields of a CDA R2 imaging report the box uses.

    Attributes
    ----------
    document_id
        ``ClinicalDocument/id``: the report's unique id (changes with every version).
    set_id, version_number
        The version set (stable across versions) and this document's version.
    code
        Document type (LOINC 18748-4 for an imaging report) and ``translations`` of it.
    title, effective_time, confidentiality_code, language_code
        As in the header.
    patient
        Traits from ``recordTarget/patientRole`` (``qualified`` is never set from a CDA).
    patient_ids
        Every ``patientRole/id``.
    orders
        Every ``inFulfillmentOf/order``.
    study_instance_uids
        ``documentationOf/serviceEvent/id/@root`` (several for a multi-study report).
    service_event_code
        The act code (LOINC), with ``procedure_codes`` (CCAM translations), ``modalities`` and
        ``anatomic_regions`` (qualified translations).
    service_start, service_end
        ``serviceEvent/effectiveTime`` low and high.
    author, legal_authenticator, custodian
        Participants.
    replaced_document_id
        ``relatedDocument[@typeCode='RPLC']/parentDocument/id`` when this version replaces one.
    """

    document_id: InstanceIdentifier
    set_id: InstanceIdentifier | None
    version_number: int | None
    code: Code | None
    translations: tuple[Code, ...]
    title: str | None
    effective_time: str | None
    confidentiality_code: str | None
    language_code: str | None
    patient: PatientIdentity
    patient_ids: tuple[InstanceIdentifier, ...]
    orders: tuple[OrderReference, ...]
    study_instance_uids: tuple[str, ...]
    service_event_code: Code | None
    procedure_codes: tuple[Code, ...]
    modalities: tuple[Code, ...]
    anatomic_regions: tuple[Code, ...]
    service_start: str | None
    service_end: str | None
    author: Participant | None
    legal_authenticator: Participant | None
    custodian: Participant | None
    replaced_document_id: InstanceIdentifier | None

    @property
    def accession_numbers(self) -> tuple[str, ...]:
        """The accession numbers (``extension`` of each order's ``accessionNumber``)."""
        return tuple(
            o.accession.extension for o in self.orders if o.accession and o.accession.extension
        )


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        huge_tree=False,
        load_dtd=False,
        dtd_validation=False,
        remove_comments=True,
        remove_pis=True,
    )


def parse_clinical_document(
    data: bytes, *, max_size: int = DEFAULT_MAX_DOCUMENT_SIZE
) -> ClinicalDocument:
    """Parse a CDA R2 document's header.

    Parameters
    ----------
    data
        The XML bytes (as decoded from OBX-5).
    max_size
        Documents larger than this are refused.

    Returns
    -------
    ClinicalDocument

    Raises
    ------
    InvalidDocumentError
        Too large, DOCTYPE or entity declarations, not well-formed, not a CDA ClinicalDocument,
        or no ``ClinicalDocument/id``.
    """
    if len(data) > max_size:
        raise InvalidDocumentError(f"CDA document of {len(data)} bytes exceeds {max_size} bytes")
    if b"<!DOCTYPE" in data[:_DOCTYPE_PROBE].upper() or b"<!ENTITY" in data.upper():
        raise InvalidDocumentError("CDA document has a DOCTYPE or entity declaration: refused")
    try:
        root = etree.fromstring(data, parser=_parser())
    except etree.XMLSyntaxError as exc:
        raise InvalidDocumentError(f"CDA document is not well-formed XML: {exc.msg}") from None
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise InvalidDocumentError("CDA document has a DOCTYPE: refused")
    if root.tag != f"{{{CDA_NAMESPACE}}}ClinicalDocument":
        raise InvalidDocumentError("root element is not urn:hl7-org:v3 ClinicalDocument")
    return _document(root)


def _one(node: etree._Element, path: str) -> etree._Element | None:
    found = node.find(path, _NS)
    return found


def _attr(node: etree._Element | None, name: str) -> str | None:
    if node is None:
        return None
    value = node.get(name)
    return value.strip() if value and value.strip() else None


def _ii(node: etree._Element | None) -> InstanceIdentifier | None:
    root = _attr(node, "root")
    return InstanceIdentifier(root, _attr(node, "extension")) if root else None


def _code(node: etree._Element | None) -> Code | None:
    code = _attr(node, "code")
    if code is None:
        return None
    return Code(code, _attr(node, "codeSystem"), _attr(node, "displayName"))


def _text(node: etree._Element | None) -> str | None:
    if node is None:
        return None
    text = "".join(node.itertext()).strip()
    return text or None


def _person_name(node: etree._Element | None) -> str | None:
    if node is None:
        return None
    family = _text(_one(node, "cda:family"))
    given = _text(_one(node, "cda:given"))
    name = "^".join(part or "" for part in (family, given)).strip("^")
    return name or None


def _participant(
    entity: etree._Element | None, person: str, org: str, time: str | None
) -> Participant | None:
    if entity is None:
        return None
    organization = _one(entity, org)
    return Participant(
        identifier=_ii(_one(entity, "cda:id")),
        name=_person_name(_one(entity, f"{person}/cda:name")),
        organization_id=_ii(_one(organization, "cda:id")) if organization is not None else None,
        organization_name=_text(_one(organization, "cda:name"))
        if organization is not None
        else None,
        time=time,
    )


def _patient(role: etree._Element | None) -> tuple[PatientIdentity, tuple[InstanceIdentifier, ...]]:
    if role is None:
        return PatientIdentity(), ()
    ids = tuple(ii for ii in (_ii(n) for n in role.findall("cda:id", _NS)) if ii)
    ins = next((i for i in ids if i.root in INS_OIDS and i.extension), None)
    ipp = next((i for i in ids if i.root not in INS_OIDS and i.extension), None)
    patient = _one(role, "cda:patient")
    name = _one(patient, "cda:name") if patient is not None else None
    birth_name = first_given = None
    given_names: tuple[str, ...] = ()
    if name is not None:
        families = name.findall("cda:family", _NS)
        birth = next(
            (f for f in families if f.get("qualifier") == "BR"), families[0] if families else None
        )
        birth_name = _text(birth)
        givens = name.findall("cda:given", _NS)
        first = next(
            (g for g in givens if g.get("qualifier") == "BR"), givens[0] if givens else None
        )
        first_given = _text(first)
        unqualified = [t for g in givens if not g.get("qualifier") and (t := _text(g))]
        given_names = tuple(" ".join(unqualified).split()) or (
            (first_given,) if first_given else ()
        )
    traits = PatientIdentity(
        ins=ins.extension if ins else None,
        ins_oid=ins.root if ins else None,
        ipp=ipp.extension if ipp else None,
        ipp_authority=ipp.root if ipp else None,
        birth_name=birth_name,
        first_given_name=first_given,
        given_names=given_names,
        birth_date=(_attr(_one(patient, "cda:birthTime"), "value") or "")[:8] or None
        if patient is not None
        else None,
        sex=_attr(_one(patient, "cda:administrativeGenderCode"), "code")
        if patient is not None
        else None,
        birth_place_code=_text(_one(patient, "cda:birthplace/cda:place/cda:addr/cda:county"))
        if patient is not None
        else None,
    )
    return traits, ids


def _qualified_translations(code: etree._Element | None, qualifier: str) -> tuple[Code, ...]:
    if code is None:
        return ()
    found = []
    for translation in code.findall("cda:translation", _NS):
        names = {_attr(q, "code") for q in translation.findall("cda:qualifier/cda:name", _NS)}
        if qualifier in names and (parsed := _code(translation)):
            found.append(parsed)
    return tuple(found)


def _document(root: etree._Element) -> ClinicalDocument:
    document_id = _ii(_one(root, "cda:id"))
    if document_id is None:
        raise InvalidDocumentError("CDA document has no ClinicalDocument/id")
    version = _attr(_one(root, "cda:versionNumber"), "value")
    code = _one(root, "cda:code")
    patient, patient_ids = _patient(_one(root, "cda:recordTarget/cda:patientRole"))
    orders = tuple(
        OrderReference(_ii(_one(order, "cda:id")), _ii(_one(order, "ps3-20:accessionNumber")))
        for order in root.findall("cda:inFulfillmentOf/cda:order", _NS)
    )
    events = root.findall("cda:documentationOf/cda:serviceEvent", _NS)
    study_uids = tuple(
        uid for event in events for n in event.findall("cda:id", _NS) if (uid := _attr(n, "root"))
    )
    event = events[0] if events else None
    event_code = _one(event, "cda:code") if event is not None else None
    procedures = tuple(
        c
        for t in (event_code.findall("cda:translation", _NS) if event_code is not None else [])
        if (c := _code(t)) and c.code_system == CCAM_CODE_SYSTEM
    )
    author = _one(root, "cda:author")
    legal = _one(root, "cda:legalAuthenticator")
    replaced = next(
        (
            _ii(_one(rel, "cda:parentDocument/cda:id"))
            for rel in root.findall("cda:relatedDocument", _NS)
            if rel.get("typeCode") == REPLACE_RELATIONSHIP
        ),
        None,
    )
    return ClinicalDocument(
        document_id=document_id,
        set_id=_ii(_one(root, "cda:setId")),
        version_number=int(version) if version and version.isdigit() else None,
        code=_code(code),
        translations=tuple(
            c
            for t in (code.findall("cda:translation", _NS) if code is not None else [])
            if (c := _code(t))
        ),
        title=_text(_one(root, "cda:title")),
        effective_time=_attr(_one(root, "cda:effectiveTime"), "value"),
        confidentiality_code=_attr(_one(root, "cda:confidentialityCode"), "code"),
        language_code=_attr(_one(root, "cda:languageCode"), "code"),
        patient=patient,
        patient_ids=patient_ids,
        orders=orders,
        study_instance_uids=study_uids,
        service_event_code=_code(event_code),
        procedure_codes=procedures,
        modalities=_qualified_translations(event_code, MODALITY_QUALIFIER),
        anatomic_regions=_qualified_translations(event_code, ANATOMIC_REGION_QUALIFIER),
        service_start=_attr(_one(event, "cda:effectiveTime/cda:low"), "value")
        if event is not None
        else None,
        service_end=_attr(_one(event, "cda:effectiveTime/cda:high"), "value")
        if event is not None
        else None,
        author=_participant(
            _one(author, "cda:assignedAuthor") if author is not None else None,
            "cda:assignedPerson",
            "cda:representedOrganization",
            _attr(_one(author, "cda:time"), "value") if author is not None else None,
        ),
        legal_authenticator=_participant(
            _one(legal, "cda:assignedEntity") if legal is not None else None,
            "cda:assignedPerson",
            "cda:representedOrganization",
            _attr(_one(legal, "cda:time"), "value") if legal is not None else None,
        ),
        custodian=_custodian(root),
        replaced_document_id=replaced,
    )


def _custodian(root: etree._Element) -> Participant | None:
    org = _one(root, "cda:custodian/cda:assignedCustodian/cda:representedCustodianOrganization")
    if org is None:
        return None
    return Participant(None, None, _ii(_one(org, "cda:id")), _text(_one(org, "cda:name")))
