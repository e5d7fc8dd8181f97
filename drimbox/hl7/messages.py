"""ORU^R01 and MDM^T02 carrying a CDA report (CI-SIS "Transmission de documents CDA en HL7v2").

Field mapping (HL7 v2.5; IHE PAM France for PID; CI-SIS for OBX):

- MSH-9 type^event, MSH-10 control id, MSH-11 processing id, MSH-12 version (2.5 or later).
- PID-3 repetitions: the INS (identifier type ``INS``, assigning authority universal id = an INS
  OID) and the IPP (type ``PI``); PID-5 type ``L``: birth name, first given name, given names
  list; PID-7 birth date; PID-8 sex; PID-11 address type ``BDL``, component 9: INSEE birth
  commune code; PID-32: identity reliability (``VALI`` = validated).
- ORC-1 order control (``CA``/``OC``/``DC``: cancel); OBR-2/OBR-3 placer/filler order numbers,
  OBR-18 placer field 1 (accession number in IHE RAD), OBR-25 result status.
- TXA (MDM): TXA-12 unique document number, TXA-13 parent document, TXA-17 completion status,
  TXA-19 availability status (``CA`` cancelled, ``OB`` obsolete).
- OBX value type ``ED`` whose OBX-5 is ``^TEXT^XML^Base64^<data>``: the CDA; OBX-11 its status
  (``D`` deleted / ``W`` withdrawn: cancel; ``C`` corrected: replace).
- Other OBX coded ``<FLAG>^...^MetaDMPMSS`` with OBX-5 ``Y``/``N``: DMP / MSSanté flags.
- ZDS-1 (IHE RAD): Study Instance UID, when the sender adds it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from drimbox.hl7.cda import DEFAULT_MAX_DOCUMENT_SIZE, ClinicalDocument, parse_clinical_document
from drimbox.hl7.er7 import (
    ParsedMessage,
    Segment,
    build_ack,
    component_of,
    decode_text,
    parse_er7,
    read_header,
)
from drimbox.hl7.errors import (
    AcknowledgmentCode,
    ErrorCode,
    HL7Error,
    InvalidReportError,
    UnsupportedMessageError,
)
from drimbox.hl7.flags import FLAG_CODING_SYSTEM, DmpFlag, ReportFlags
from drimbox.identity import INS_OIDS, PatientIdentity, is_qualified

__all__ = [
    "DmpFlag",
    "OrderIdentifiers",
    "ReportAction",
    "ReportFlags",
    "ReportMessage",
    "acknowledge",
    "parse_report_message",
]

SUPPORTED_EVENTS: MappingProxyType[str, frozenset[str]] = MappingProxyType(
    {
        "ORU": frozenset({"R01"}),
        # T02 original + content, T04 status change + content, T10 replacement + content,
        # T11 cancel (HL7 v2.5 §9.5)
        "MDM": frozenset({"T02", "T04", "T10", "T11"}),
    }
)
PROCESSING_IDS = frozenset({"P", "T", "D"})  # HL7 table 0103
MINIMUM_VERSION = (2, 5)
INS_IDENTIFIER_TYPE = "INS"  # CI-SIS / IHE PAM France PID-3.5 for the INS
IPP_IDENTIFIER_TYPE = "PI"  # HL7 table 0203: patient internal identifier
BIRTH_NAME_TYPE = "L"  # PID-5.7 (HL7 table 0200; PAM France: nom de naissance)
BIRTH_PLACE_ADDRESS_TYPE = "BDL"  # PID-11.7 (HL7 table 0190: birth delivery location)
ENCAPSULATED_DATA = "ED"  # OBX-2 (HL7 table 0125)
YES = "Y"  # HL7 table 0136
CANCEL_ORDER_CONTROLS = frozenset({"CA", "OC", "DC"})  # HL7 table 0119
CANCEL_RESULT_STATUSES = frozenset({"D", "W"})  # HL7 table 0085 (OBX-11)
CORRECTED_RESULT_STATUS = "C"  # HL7 tables 0085 / 0123
CANCELLED_ORDER_RESULT_STATUS = "X"  # HL7 table 0123 (OBR-25)
CANCELLED_DOCUMENTS = frozenset({"CA", "OB"})  # HL7 table 0273 (TXA-19)
MDM_REPLACE_EVENT = "T10"
MDM_CANCEL_EVENT = "T11"


class ReportAction(StrEnum):
    """What the message asks the box to do with the study's manifest."""

    PUBLISH = "publish"
    REPLACE = "replace"
    CANCEL = "cancel"


@dataclass(frozen=True, slots=True)
class OrderIdentifiers:
    """Order identifiers of ORC/OBR (entity identifier of each: its first component)."""

    order_control: str = ""
    placer_order_number: str = ""
    filler_order_number: str = ""
    placer_field_1: str = ""
    result_status: str = ""


@dataclass(frozen=True, slots=True)
class ReportMessage:
    """A parsed ORU^R01 / MDM^T02 report message.

    Attributes
    ----------
    control_id, message_type, trigger_event, version, processing_id
        MSH-10, MSH-9.1, MSH-9.2, MSH-12, MSH-11.
    sending_application, sending_facility
        MSH-3.1 and MSH-4.1.
    patient
        From PID (``qualified`` computed from PID-32 and the INS).
    identity_reliability
        The PID-32 codes.
    order
        ORC/OBR identifiers.
    document_unique_id, document_completion_status, document_availability_status
        TXA-12.1, TXA-17, TXA-19 (MDM only).
    result_status
        OBX-11 of the CDA OBX.
    study_instance_uids
        ZDS-1 if sent, then the CDA's serviceEvent ids (no duplicates).
    cda
        The CDA document bytes decoded from OBX-5.
    document
        The parsed CDA header.
    flags
        DMP / MSSanté flags.
    action
        Publish, replace or cancel.
    """

    control_id: str
    message_type: str
    trigger_event: str
    version: str
    processing_id: str
    sending_application: str
    sending_facility: str
    patient: PatientIdentity
    identity_reliability: tuple[str, ...]
    order: OrderIdentifiers
    document_unique_id: str
    document_completion_status: str
    document_availability_status: str
    result_status: str
    study_instance_uids: tuple[str, ...]
    cda: bytes
    document: ClinicalDocument
    flags: ReportFlags
    action: ReportAction

    @property
    def accession_numbers(self) -> tuple[str, ...]:
        """Accession numbers of the report (from the CDA ``inFulfillmentOf``)."""
        return self.document.accession_numbers


def parse_report_message(
    raw: bytes, *, max_document_size: int = DEFAULT_MAX_DOCUMENT_SIZE
) -> ReportMessage:
    """Parse an ORU^R01 / MDM^T02 message carrying a CDA report.

    Parameters
    ----------
    raw
        The message bytes (no MLLP framing).
    max_document_size
        Limit on the decoded CDA.

    Returns
    -------
    ReportMessage

    Raises
    ------
    MalformedMessageError
        Not ER7 (answered AR).
    UnsupportedMessageError
        Another message type / event / version / processing id (answered AR).
    InvalidReportError
        No PID, no CDA OBX, bad base64, or an invalid CDA (answered AE).
    """
    message = parse_er7(decode_text(raw))
    msh = message.header
    message_type, event = msh.value(9, 1), msh.value(9, 2)
    _check_header(message_type, event, msh)
    pid = message.first("PID")
    if pid is None:
        raise InvalidReportError("the message has no PID segment", location="PID")
    reliability = tuple(c for r in pid.repetitions(32) if (c := component_of(r, pid.delimiters)))
    patient = _patient(pid, reliability)
    orc, obr, txa = message.first("ORC"), message.first("OBR"), message.first("TXA")
    order = OrderIdentifiers(
        order_control=orc.value(1) if orc else "",
        placer_order_number=(obr.value(2) if obr else "") or (orc.value(2) if orc else ""),
        filler_order_number=(obr.value(3) if obr else "") or (orc.value(3) if orc else ""),
        placer_field_1=obr.value(18) if obr else "",
        result_status=obr.value(25) if obr else "",
    )
    cda_obx, cda = _cda(message, max_document_size)
    document = parse_clinical_document(cda, max_size=max_document_size)
    zds = message.first("ZDS")
    study_uids = tuple(
        dict.fromkeys(
            ([zds.value(1)] if zds and zds.value(1) else []) + list(document.study_instance_uids)
        )
    )
    result_status = cda_obx.value(11)
    txa_fields = (txa.value(12), txa.value(17), txa.value(19)) if txa else ("", "", "")
    action = _action(message_type, event, order, result_status, txa_fields[2], document)
    return ReportMessage(
        control_id=msh.value(10),
        message_type=message_type,
        trigger_event=event,
        version=msh.value(12),
        processing_id=msh.value(11),
        sending_application=msh.value(3),
        sending_facility=msh.value(4),
        patient=patient,
        identity_reliability=reliability,
        order=order,
        document_unique_id=txa_fields[0],
        document_completion_status=txa_fields[1],
        document_availability_status=txa_fields[2],
        result_status=result_status,
        study_instance_uids=study_uids,
        cda=cda,
        document=document,
        flags=_flags(message),
        action=action,
    )


def _check_header(message_type: str, event: str, msh: Segment) -> None:
    if message_type not in SUPPORTED_EVENTS:
        raise UnsupportedMessageError(
            f"message type {message_type or '(empty)'} is not supported: send ORU^R01 or MDM^T02",
            ErrorCode.UNSUPPORTED_MESSAGE_TYPE,
            "MSH-9",
        )
    if event not in SUPPORTED_EVENTS[message_type]:
        raise UnsupportedMessageError(
            f"trigger event {message_type}^{event} is not supported",
            ErrorCode.UNSUPPORTED_EVENT_CODE,
            "MSH-9",
        )
    processing = msh.value(11)
    if processing and processing not in PROCESSING_IDS:
        raise UnsupportedMessageError(
            f"processing id {processing} is not supported",
            ErrorCode.UNSUPPORTED_PROCESSING_ID,
            "MSH-11",
        )
    version = msh.value(12)
    try:
        numbers = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        numbers = ()
    if len(numbers) != len(MINIMUM_VERSION) or numbers < MINIMUM_VERSION or numbers[0] != 2:
        raise UnsupportedMessageError(
            f"HL7 version {version or '(empty)'} is not supported: 2.5 or later is required",
            ErrorCode.UNSUPPORTED_VERSION_ID,
            "MSH-12",
        )


def _patient(pid: Segment, reliability: tuple[str, ...]) -> PatientIdentity:
    d = pid.delimiters
    ins = ins_oid = ipp = ipp_authority = None
    for rep in pid.repetitions(3):
        value, kind = component_of(rep, d, 1), component_of(rep, d, 5)
        authority = component_of(rep, d, 4, 2)
        if not value:
            continue
        if ins is None and (kind == INS_IDENTIFIER_TYPE or authority in INS_OIDS):
            ins, ins_oid = value, authority or None  # a foreign OID is reported by ins_problems
        elif ipp is None and kind == IPP_IDENTIFIER_TYPE:
            ipp, ipp_authority = value, authority or component_of(rep, d, 4, 1) or None
    if not (ins or ipp):
        raise InvalidReportError("PID-3 has neither an INS nor an IPP", location="PID-3")
    names = pid.repetitions(5)
    birth = next(
        (n for n in names if component_of(n, d, 7) == BIRTH_NAME_TYPE), names[0] if names else ""
    )
    first_given = component_of(birth, d, 2) or None
    given_list = tuple(component_of(birth, d, 3).split()) or ((first_given,) if first_given else ())
    birth_place = next(
        (
            component_of(a, d, 9)
            for a in pid.repetitions(11)
            if component_of(a, d, 7) == BIRTH_PLACE_ADDRESS_TYPE
        ),
        "",
    )
    return PatientIdentity(
        ins=ins,
        ins_oid=ins_oid,
        qualified=is_qualified(reliability, has_ins=ins is not None),
        ipp=ipp,
        ipp_authority=ipp_authority,
        birth_name=component_of(birth, d, 1) or None,
        first_given_name=first_given,
        given_names=given_list,
        birth_date=pid.value(7)[:8] or None,
        sex=pid.value(8) or None,
        birth_place_code=birth_place or None,
    )


def _cda(message: ParsedMessage, max_size: int) -> tuple[Segment, bytes]:
    for obx in message.all("OBX"):
        if obx.value(2) != ENCAPSULATED_DATA:
            continue
        rep = obx.repetitions(5)[0] if obx.repetitions(5) else ""
        d = obx.delimiters
        subtype, encoding = component_of(rep, d, 3).upper(), component_of(rep, d, 4).upper()
        if subtype != "XML":
            continue
        if encoding != "BASE64":
            raise InvalidReportError(
                f"OBX-5 encoding {encoding or '(empty)'} is not supported: Base64 is required",
                ErrorCode.DATA_TYPE_ERROR,
                "OBX-5",
            )
        data = component_of(rep, d, 5)
        if len(data) > max_size * 4 // 3 + 4:
            raise InvalidReportError(
                "the CDA in OBX-5 is too large", ErrorCode.DATA_TYPE_ERROR, "OBX-5"
            )
        try:
            cda = base64.b64decode("".join(data.split()), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidReportError(
                "OBX-5 is not valid Base64", ErrorCode.DATA_TYPE_ERROR, "OBX-5"
            ) from None
        if not cda:
            raise InvalidReportError("OBX-5 carries an empty document", location="OBX-5")
        return obx, cda
    raise InvalidReportError(
        "no OBX of type ED carrying a Base64 XML (CDA) document", location="OBX-5"
    )


def _flags(message: ParsedMessage) -> ReportFlags:
    values = {}
    for obx in message.all("OBX"):
        if obx.value(3, 3) == FLAG_CODING_SYSTEM and obx.value(3, 1):
            values[obx.value(3, 1)] = obx.value(5, 1).upper() == YES
    return ReportFlags(MappingProxyType(values))


def _action(
    message_type: str,
    event: str,
    order: OrderIdentifiers,
    result_status: str,
    availability: str,
    document: ClinicalDocument,
) -> ReportAction:
    if (
        order.order_control in CANCEL_ORDER_CONTROLS
        or result_status in CANCEL_RESULT_STATUSES
        or order.result_status == CANCELLED_ORDER_RESULT_STATUS
        or availability in CANCELLED_DOCUMENTS
        or (message_type == "MDM" and event == MDM_CANCEL_EVENT)
    ):
        return ReportAction.CANCEL
    if (
        document.replaced_document_id is not None
        or result_status == CORRECTED_RESULT_STATUS
        or order.result_status == CORRECTED_RESULT_STATUS
        or (message_type == "MDM" and event == MDM_REPLACE_EVENT)
    ):
        return ReportAction.REPLACE
    return ReportAction.PUBLISH


def acknowledge(raw: bytes, error: HL7Error | None = None) -> bytes:
    """Build the ACK of ``raw``: AA when ``error`` is ``None``, else AE/AR with an ERR segment.

    The header is read best effort, so even a message too malformed to parse gets an ACK that
    echoes whatever MSH-10 could be read.

    Parameters
    ----------
    raw
        The received message (no MLLP framing).
    error
        Why it is refused; its ``acknowledgment``, ``code``, ``location`` and message fill MSA-1
        and ERR.
    """
    header = read_header(raw)
    if error is None:
        return build_ack(header, AcknowledgmentCode.ACCEPT)
    return build_ack(
        header,
        error.acknowledgment,
        error_code=error.code,
        reason=str(error),
        location=error.location,
    )
