"""ORU^R01 / MDM^T02 parsing against every ANS sample message, ACKs and ER7 escaping."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import pytest

from drimbox.hl7.er7 import Delimiters, escape, parse_er7, read_header, unescape
from drimbox.hl7.errors import (
    ErrorCode,
    InvalidDocumentError,
    InvalidReportError,
    MalformedMessageError,
    UnsupportedMessageError,
)
from drimbox.hl7.messages import DmpFlag, ReportAction, acknowledge, parse_report_message
from drimbox.identity import INS_NIR_TEST_OID
from tests.hl7.ans import OMI_SAMPLE, hl7_path

ROOT = "1.2.250.1.213.4.5"


@dataclass(frozen=True)
class Expected:
    """What a sample says, read from the file (PID, ORC, OBX flags, embedded CDA)."""

    name: str
    event: str
    action: ReportAction
    studies: tuple[str, ...]
    accessions: tuple[str, ...]
    document: str
    pid_birth_place: str
    hidden_from_legal_representatives: bool
    hidden_from_patient: bool = True
    confidentiality_changed: bool = False


def study(n: int) -> str:
    return f"{ROOT}.2.1.{n}"


def doc(n: int) -> str:
    return f"{ROOT}.4.{n}"


PUBLISH, REPLACE, CANCEL = ReportAction.PUBLISH, ReportAction.REPLACE, ReportAction.CANCEL
SAMPLES = [
    Expected("CR_A-ORU", "R01", PUBLISH, (study(101),), ("ACN101",), doc(401), "51215", False),
    Expected("CR_B-ORU", "R01", PUBLISH, (study(102),), ("ACN102",), doc(402), "63220", True),
    Expected("CR_C-ORU", "R01", PUBLISH, (study(103),), ("ACN103",), doc(403), "51215", False),
    Expected("CR_C-MDM", "T02", PUBLISH, (study(103),), ("ACN103",), doc(403), "51215", False),
    Expected("CR_D-ORU", "R01", PUBLISH, (study(104),), ("ACN104",), doc(404), "51215", False),
    Expected("CR_E-ORU", "R01", PUBLISH, (study(105),), ("ACN105",), doc(405), "51215", False),
    Expected(
        "CR_F-ORU", "R01", PUBLISH, (study(106), study(107)), ("ACN106", "ACN107"), doc(406),
        "63220", True,
    ),
    Expected("CR_G1-ORU", "R01", PUBLISH, (study(108),), ("ACN108",), doc(407), "51215", False),
    Expected("CR_G1-MDM", "T02", PUBLISH, (study(108),), ("ACN108",), doc(407), "51215", True),
    Expected(
        "CR_G1_MAJ-ORU", "R01", REPLACE, (study(108),), ("ACN108",), doc(4072), "63220", False,
        hidden_from_patient=False, confidentiality_changed=True,
    ),
    Expected(
        "CR_G2-ORU", "R01", PUBLISH, ("1.2.3.4.5.6.7.8.9",), ("ACN108",), doc(408), "51215", False
    ),
    Expected("CR_H-ORU", "R01", PUBLISH, (study(109),), ("ACN109",), doc(409), "51215", False),
    Expected("CR_I-ORU", "R01", PUBLISH, (study(110),), ("ACN110",), doc(410), "63220", True),
    Expected("CR_I-MDM", "T02", PUBLISH, (study(110),), ("ACN110",), doc(410), "51215", False),
    Expected(
        "CR_I_Depublication-ORU", "R01", CANCEL, (study(110),), ("ACN110",), doc(410), "63220", True
    ),
    Expected(
        "CR_I_Depublication-MDM", "T04", CANCEL, (study(110),), ("ACN110",), doc(410), "63220",
        False,
    ),
    Expected("CR_J-ORU", "R01", PUBLISH, (study(111),), ("ACN111",), doc(411), "63220", True),
    Expected("CR_K-ORU", "R01", PUBLISH, (study(112),), ("ACN112",), doc(412), "63220", True),
    Expected("CR_L-ORU", "R01", PUBLISH, (study(113),), ("ACN113",), doc(413), "63220", True),
    Expected("CR_M-ORU", "R01", PUBLISH, (study(114),), ("ACN114",), doc(414), "51215", False),
]  # fmt: skip


@pytest.mark.parametrize("expected", SAMPLES, ids=lambda e: e.name)
def test_ans_sample_parses_to_the_fields_it_carries(expected: Expected) -> None:
    message = parse_report_message(hl7_path(expected.name).read_bytes())

    assert message.message_type == expected.name[-3:]
    assert message.trigger_event == expected.event
    assert message.control_id == "{{idMessage}}"  # ANS template placeholder, kept as sent
    assert message.action is expected.action
    assert message.patient.ins == "279035121518989"
    assert message.patient.ins_oid == INS_NIR_TEST_OID
    assert message.patient.ipp == "IPP101"
    assert message.patient.ipp_authority == "1.2.250.1.213.4.5.2.4"
    assert message.identity_reliability == ("VALI",)
    assert message.patient.qualified
    assert message.patient.birth_place_code == expected.pid_birth_place
    assert message.study_instance_uids == expected.studies
    assert message.accession_numbers == expected.accessions
    assert message.document.document_id.root == expected.document
    assert message.flags.to_dmp
    assert not message.flags.masked_to_professionals
    assert message.flags.hidden_from_patient is expected.hidden_from_patient
    assert message.flags.hidden_from_legal_representatives is (
        expected.hidden_from_legal_representatives
    )
    assert message.flags.get(DmpFlag.CONFIDENTIALITY_CHANGED) is expected.confidentiality_changed
    assert not message.flags.get(DmpFlag.TO_MSSANTE_PATIENT)
    assert len(message.flags.values) == 10
    assert message.cda.startswith(b'<?xml version="1.0" encoding="utf-8"?>')


def test_oru_sample_carries_order_numbers_in_obr() -> None:
    message = parse_report_message(hl7_path("CR_C-ORU").read_bytes())

    assert message.order.order_control == "NW"
    assert message.order.placer_order_number == "984375862"
    assert message.order.filler_order_number == "09011600123"
    assert message.order.placer_field_1 == "09011600123"
    assert message.order.result_status == "F"
    assert message.result_status == "F"
    assert message.version == "2.5"


def test_mdm_sample_carries_the_document_in_txa() -> None:
    message = parse_report_message(hl7_path("CR_C-MDM").read_bytes())

    assert message.document_unique_id == doc(403)
    assert message.document_completion_status == "AU"
    assert message.version == "2.6"
    assert message.order.placer_order_number == ""


def test_depublication_samples_cancel_through_orc_and_obx_status() -> None:
    for name in ("CR_I_Depublication-ORU", "CR_I_Depublication-MDM"):
        message = parse_report_message(hl7_path(name).read_bytes())
        assert message.order.order_control == "CA"
        assert message.result_status == "D"
        assert message.action is ReportAction.CANCEL


def test_identity_traits_of_exam_m_are_read_from_pid() -> None:
    patient = parse_report_message(hl7_path("CR_M-ORU").read_bytes()).patient

    assert (patient.birth_name, patient.first_given_name) == ("ANS-DRIM", "PatientBis")
    assert (patient.birth_date, patient.sex) == ("20120125", "M")


def test_named_senders_of_exams_j_and_k_are_read_from_msh() -> None:
    j = parse_report_message(hl7_path("CR_J-ORU").read_bytes())
    k = parse_report_message(hl7_path("CR_K-ORU").read_bytes())

    assert (j.sending_application, j.sending_facility) == (
        "ANS_HL7v2_Application_B",
        "ANS_HL7v2_Facility_B",
    )
    assert (k.sending_application, k.sending_facility) == (
        "ANS_HL7v2_Application_A",
        "ANS_HL7v2_Facility_A",
    )


def test_crlf_and_lf_segment_separators_are_tolerated() -> None:
    raw = hl7_path("CR_C-ORU").read_bytes()
    for separator in (b"\r\n", b"\n"):
        message = parse_report_message(raw.replace(b"\r", separator))
        assert message.study_instance_uids == (study(103),)


def test_omi_order_sample_is_refused_as_unsupported_type() -> None:
    with pytest.raises(UnsupportedMessageError) as caught:
        parse_report_message(OMI_SAMPLE.read_bytes())
    assert caught.value.code is ErrorCode.UNSUPPORTED_MESSAGE_TYPE


def _with_segment(name: str, transform: str, replacement: str) -> bytes:
    raw = hl7_path("CR_C-ORU").read_bytes().decode()
    assert transform in raw
    return raw.replace(transform, replacement).encode()


def test_bad_base64_in_obx5_is_an_application_error() -> None:
    raw = _with_segment("OBX", "^TEXT^XML^Base64^PD94", "^TEXT^XML^Base64^*D94")
    with pytest.raises(InvalidReportError) as caught:
        parse_report_message(raw)
    assert caught.value.code is ErrorCode.DATA_TYPE_ERROR
    ack = acknowledge(raw, caught.value).decode()
    assert "\rMSA|AE|{{idMessage}}\r" in ack
    assert "ERR||OBX^1^5|102^Data type error^HL70357|E||||OBX-5 is not valid Base64\r" in ack


def test_cda_with_doctype_in_obx5_is_refused() -> None:
    evil = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>'
    encoded = base64.b64encode(evil).decode()
    raw = hl7_path("CR_C-ORU").read_bytes().decode()
    start = raw.index("^TEXT^XML^Base64^") + len("^TEXT^XML^Base64^")
    end = raw.index("|", start)
    with pytest.raises(InvalidDocumentError, match="DOCTYPE"):
        parse_report_message((raw[:start] + encoded + raw[end:]).encode())


def test_message_without_pid_is_an_application_error() -> None:
    raw = hl7_path("CR_C-ORU").read_bytes().decode()
    without_pid = "\r".join(s for s in raw.split("\r") if not s.startswith("PID")).encode()
    with pytest.raises(InvalidReportError, match="no PID"):
        parse_report_message(without_pid)


def test_old_version_and_unknown_event_are_rejected() -> None:
    with pytest.raises(UnsupportedMessageError) as version:
        parse_report_message(_with_segment("MSH", "|P|2.5|", "|P|2.3|"))
    assert version.value.code is ErrorCode.UNSUPPORTED_VERSION_ID
    with pytest.raises(UnsupportedMessageError) as event:
        parse_report_message(_with_segment("MSH", "ORU^R01^ORU_R01", "ORU^R30^ORU_R30"))
    assert event.value.code is ErrorCode.UNSUPPORTED_EVENT_CODE


def test_ack_accepts_and_swaps_sender_and_receiver() -> None:
    raw = hl7_path("CR_J-ORU").read_bytes()
    ack = acknowledge(raw).decode()
    msh, msa = ack.split("\r")[:2]
    fields = msh.split("|")

    assert fields[2:6] == [
        "{{applicationReceiver}}",
        "{{facilityReceiver}}",
        "ANS_HL7v2_Application_B",
        "ANS_HL7v2_Facility_B",
    ]
    assert fields[8] == "ACK^R01^ACK"
    assert fields[10:12] == ["P", "2.5"]
    assert msa == "MSA|AA|{{idMessage}}"
    assert "ERR" not in ack


@pytest.mark.parametrize(
    "garbage",
    [b"", b"not hl7 at all", b"\x00\xff\xfe", b"MSH", b"PID|||x", b"MSH|^~\\&|A|B|C|D|x||ORU^R01|"],
)
def test_malformed_input_is_rejected_with_a_well_formed_ack(garbage: bytes) -> None:
    with pytest.raises(
        (MalformedMessageError, UnsupportedMessageError, InvalidReportError)
    ) as caught:
        parse_report_message(garbage)
    ack = acknowledge(garbage, caught.value)
    parsed = parse_er7(ack.decode())
    assert parsed.header.name == "MSH"
    assert parsed.first("MSA") is not None
    assert parsed.first("MSA").value(1) in {"AR", "AE"}  # type: ignore[union-attr]
    assert parsed.first("ERR") is not None


def test_ack_echoes_control_id_of_unparseable_message() -> None:
    raw = b"MSH|^~\\&|RIS|SITE|BOX|SITE|20240101||ORU^R01^ORU_R01|CTRL-42|P|2.5\r\x00garbage"
    with pytest.raises(MalformedMessageError) as caught:
        parse_report_message(raw)
    msa = parse_er7(acknowledge(raw, caught.value).decode()).first("MSA")

    assert msa is not None and (msa.value(1), msa.value(2)) == ("AR", "CTRL-42")


def test_latin1_message_is_decoded_as_msh18_says() -> None:
    raw = _with_segment("MSH", "UNICODE UTF-8", "8859/1").decode().encode("latin-1")
    assert parse_report_message(raw).order.order_control == "NW"


def test_escape_sequences_are_decoded() -> None:
    d = Delimiters()
    assert unescape(r"a\F\b\S\c\T\d\R\e\E\f", d) == "a|b^c&d~e\\f"
    assert unescape(r"caf\XC3A9\ \.br\x", d) == "café \nx"
    assert unescape(r"\H\bold\N\ text", d) == "bold text"
    assert unescape("no escape", d) == "no escape"
    assert unescape("trailing \\", d) == "trailing \\"


def test_escape_round_trips_every_delimiter() -> None:
    text = "a|b^c&d~e\\f"
    assert escape(text) == r"a\F\b\S\c\T\d\R\e\E\f"
    assert unescape(escape(text)) == text


def test_repetitions_components_and_subcomponents_are_addressable() -> None:
    message = parse_er7(hl7_path("CR_C-ORU").read_bytes().decode())
    pid = message.first("PID")
    assert pid is not None
    assert pid.value(3, 4, 2, repetition=0) == INS_NIR_TEST_OID
    assert pid.value(3, 4, 1, repetition=1) == "AUT-AFFECTATION"
    assert pid.value(3, 5, repetition=1) == "PI"
    assert pid.value(5, 7, repetition=1) == "D"
    assert pid.value(99) == ""


def test_header_reader_never_raises() -> None:
    assert read_header(b"\xff" * 10).control_id == ""
    assert read_header(b"MSH|^~\\&|A|B|C|D||||ID1").control_id == "ID1"


def test_zds_study_instance_uid_comes_first_without_duplicates() -> None:
    raw = hl7_path("CR_C-ORU").read_bytes().decode()
    with_zds = raw.replace(
        "\rOBX|1|", "\rZDS|1.2.826.0.1.3680043.10.1337.7^^Application^DICOM\rOBX|1|", 1
    )
    same = raw.replace("\rOBX|1|", "\rZDS|1.2.250.1.213.4.5.2.1.103^^Application^DICOM\rOBX|1|", 1)
    assert parse_report_message(with_zds.encode()).study_instance_uids == (
        "1.2.826.0.1.3680043.10.1337.7",
        study(103),
    )
    assert parse_report_message(same.encode()).study_instance_uids == (study(103),)


def test_escaped_delimiters_in_pid_names_are_decoded() -> None:
    raw = _with_segment("PID", "|PAT-TROIS^DOMINIQUE^", r"|PAT\T\TROIS\S\X^DOMINIQUE^")
    assert parse_report_message(raw).patient.birth_name == "PAT&TROIS^X"
