"""The acceptor's Upper Layer and DIMSE handling, driven byte by byte over a raw socket.

PDUs are encoded and decoded with pynetdicom's PDU classes and command sets with pydicom, so
the box's own codec (drimbox.dimse.pdu, drimbox.dimse.commands) is checked against an
independent implementation. Every protocol violation must end in an A-ABORT with the
reason PS3.8 §9.3.8 gives, nothing stored, and the server still serving.
"""

from __future__ import annotations

import io
import socket
import struct
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import AddressInformation

from drimbox.dicom.synthetic import SyntheticStudy, write_study
from drimbox.dimse import scp
from tests.dimse._support import BOX_AET, BoxNode, data_set_bytes, stored_data_set_bytes
from tests.dimse.conftest import BoxNodeFactory

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
_TIMEOUT = 10.0


def associate_rq(
    contexts: Sequence[tuple[str, Sequence[str]]],
    *,
    called: str = BOX_AET,
    maximum_length: int = 16384,
    application_context: str = "1.2.840.10008.3.1.1.1",
    protocol_version: int = 1,
) -> bytes:
    """An A-ASSOCIATE-RQ encoded by pynetdicom."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = application_context
    primitive.calling_ae_title = "RAWSCU"
    primitive.called_ae_title = called
    primitive.calling_presentation_address = AddressInformation("127.0.0.1", 1)
    primitive.called_presentation_address = AddressInformation("127.0.0.1", 2)
    proposed = []
    for number, (abstract, syntaxes) in enumerate(contexts):
        context = PresentationContext()
        context.context_id = 2 * number + 1
        context.abstract_syntax = abstract
        context.transfer_syntax = [UID(syntax) for syntax in syntaxes]
        proposed.append(context)
    primitive.presentation_context_definition_list = proposed
    length = MaximumLengthNotification()
    length.maximum_length_received = maximum_length
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = "1.2.826.0.1.3680043.9.9999"
    primitive.user_information = [length, implementation]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    data = bytearray(pdu.encode())
    struct.pack_into(">H", data, 6, protocol_version)
    return bytes(data)


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    """Read one PDU: (type, whole PDU bytes)."""
    header = _read_exactly(sock, 6)
    pdu_type, length = struct.unpack(">BxI", header)
    return pdu_type, header + _read_exactly(sock, length)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def p_data(context_id: int, control: int, fragment: bytes) -> bytes:
    """One P-DATA-TF holding one PDV (PS3.8 §9.3.5)."""
    item = struct.pack(">IBB", len(fragment) + 2, context_id, control) + fragment
    return struct.pack(">BxI", 0x04, len(item)) + item


def c_store_rq(sop_class_uid: str, sop_instance_uid: str, message_id: int = 1) -> bytes:
    """A C-STORE-RQ command set encoded by pydicom (Implicit VR Little Endian)."""
    command = Dataset()
    command.CommandGroupLength = 0
    command.AffectedSOPClassUID = sop_class_uid
    command.CommandField = 0x0001
    command.MessageID = message_id
    command.Priority = 0
    command.CommandDataSetType = 0x0000
    command.AffectedSOPInstanceUID = sop_instance_uid
    encoded = encode(command, True, True)
    assert encoded is not None
    command.CommandGroupLength = len(encoded) - 12
    encoded = encode(command, True, True)
    assert encoded is not None
    return encoded


def decode_response(pdus: list[bytes]) -> Dataset:
    """Reassemble the command fragments of P-DATA-TF PDUs and decode them with pydicom."""
    command = b""
    for data in pdus:
        pdu = P_DATA_TF()
        pdu.decode(data)
        for item in pdu.presentation_data_value_items:
            assert item.presentation_data_value is not None
            command += item.presentation_data_value[1:]  # after the control header
    return decode(io.BytesIO(command), True, True)


@contextmanager
def connected(node: BoxNode) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", node.port), timeout=_TIMEOUT)
    try:
        yield sock
    finally:
        sock.close()


def establish(sock: socket.socket, **kwargs: object) -> A_ASSOCIATE_AC:
    contexts = [(CT_IMAGE_STORAGE, [EXPLICIT_LE]), (VERIFICATION, [IMPLICIT_LE])]
    sock.sendall(associate_rq(contexts, **kwargs))  # type: ignore[arg-type]
    pdu_type, data = read_pdu(sock)
    assert pdu_type == 0x02
    accept = A_ASSOCIATE_AC()
    accept.decode(data)
    return accept


def reject_of(data: bytes) -> tuple[object, object, object]:
    """Result, source and reason of an A-ASSOCIATE-RJ, decoded by pynetdicom."""
    reject = A_ASSOCIATE_RJ()
    reject.decode(data)
    return reject.result, reject.source, reject.reason_diagnostic


def expect_abort(sock: socket.socket, reason: int) -> None:
    pdu_type, data = read_pdu(sock)
    assert pdu_type == 0x07
    abort = A_ABORT_RQ()
    abort.decode(data)
    assert (abort.source, abort.reason_diagnostic) == (0x02, reason)
    assert sock.recv(1) == b""  # and the box closes the connection


def still_serving(node: BoxNode) -> bool:
    with connected(node) as sock:
        establish(sock)
        sock.sendall(struct.pack(">BxI", 0x05, 4) + bytes(4))
        return read_pdu(sock)[0] == 0x06


@pytest.fixture
def ct_file(tmp_path: Path) -> Path:
    [path] = write_study(SyntheticStudy(seed="raw-protocol", instances_per_series=1), tmp_path)
    return path


@pytest.mark.integration
def test_accept_answers_each_context_as_ps3_8_requires(box_node: BoxNode) -> None:
    contexts = [
        (CT_IMAGE_STORAGE, ["1.2.3.4.5", EXPLICIT_LE, IMPLICIT_LE]),  # first supported wins
        ("1.2.3.4.999", [IMPLICIT_LE]),  # unknown abstract syntax
        (CT_IMAGE_STORAGE, ["1.2.3.4.5"]),  # no supported transfer syntax
    ]
    with connected(box_node) as sock:
        sock.sendall(associate_rq(contexts))
        pdu_type, data = read_pdu(sock)
    assert pdu_type == 0x02
    accept = A_ASSOCIATE_AC()
    accept.decode(data)
    answers = {c.context_id: (c.result, c.transfer_syntax) for c in accept.presentation_context}
    assert answers[1] == (0, EXPLICIT_LE)
    assert answers[3][0] == 3  # abstract-syntax-not-supported
    assert answers[5][0] == 4  # transfer-syntaxes-not-supported
    assert accept.called_ae_title == BOX_AET


@pytest.mark.integration
@pytest.mark.parametrize(
    ("request_options", "source", "reason"),
    [
        ({"protocol_version": 2}, 0x02, 0x02),  # ACSE: protocol version not supported
        ({"application_context": "1.2.3"}, 0x01, 0x02),  # application context not supported
        ({"called": "SOMEONE"}, 0x01, 0x07),  # called AE title not recognised
    ],
)
def test_unacceptable_requests_get_a_reject_with_the_reason(
    box_node: BoxNode, request_options: dict[str, object], source: int, reason: int
) -> None:
    with connected(box_node) as sock:
        sock.sendall(associate_rq([(VERIFICATION, [IMPLICIT_LE])], **request_options))  # type: ignore[arg-type]
        pdu_type, data = read_pdu(sock)
    assert pdu_type == 0x03
    assert reject_of(data) == (0x01, source, reason)
    assert box_node.audit.events[-1]["event"] == "dicom.association.rejected"


@pytest.mark.integration
def test_associations_over_the_limit_are_rejected_transiently(
    box_node: BoxNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scp, "MAXIMUM_ASSOCIATIONS", 1)
    with connected(box_node) as first:
        establish(first)
        with connected(box_node) as second:
            second.sendall(associate_rq([(VERIFICATION, [IMPLICIT_LE])]))
            pdu_type, data = read_pdu(second)
    assert pdu_type == 0x03
    assert reject_of(data) == (0x02, 0x03, 0x02)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("violation", "reason"),
    [
        (struct.pack(">BxI", 0x09, 4) + bytes(4), 0x01),  # unrecognised PDU type
        (struct.pack(">BxI", 0x01, 4) + bytes(4), 0x02),  # A-ASSOCIATE-RQ again: unexpected
        (p_data(7, 0x03, b"\0" * 8), 0x05),  # a context that was never proposed
        (struct.pack(">BxI", 0x04, 6) + struct.pack(">IBB", 999, 1, 3), 0x06),  # PDV overrun
        (struct.pack(">BxI", 0x04, 64 << 20), 0x06),  # a 64 MiB PDU announced
        (p_data(1, 0x00, b"\0" * 8), 0x05),  # a data set fragment without its command
        (p_data(1, 0x03, b"\x00\x00\x00\x01\x02\x00"), 0x06),  # undecodable command
    ],
)
def test_protocol_violations_abort_with_the_reason_and_store_nothing(
    box_node: BoxNode, violation: bytes, reason: int
) -> None:
    with connected(box_node) as sock:
        establish(sock)
        sock.sendall(violation)
        expect_abort(sock, reason)
    assert box_node.index.statistics().instances == 0
    assert still_serving(box_node)


@pytest.mark.integration
def test_fragmented_messages_are_reassembled_and_the_response_fits_the_peer_maximum(
    box_node: BoxNode, ct_file: Path
) -> None:
    data_set = data_set_bytes(ct_file)
    instance = dcmread(ct_file, stop_before_pixels=True)
    command = c_store_rq(str(instance.SOPClassUID), str(instance.SOPInstanceUID), 42)
    with connected(box_node) as sock:
        establish(sock, maximum_length=64)  # our responses must come in PDVs of <= 58 bytes
        for start in range(0, len(command), 50):  # command in several PDVs
            last = 0x02 if start + 50 >= len(command) else 0
            sock.sendall(p_data(1, 0x01 | last, command[start : start + 50]))
        for start in range(0, len(data_set), 1000):  # data set in many PDUs
            last = 0x02 if start + 1000 >= len(data_set) else 0
            sock.sendall(p_data(1, last, data_set[start : start + 1000]))
        pdus = []
        while True:
            pdu_type, data = read_pdu(sock)
            assert pdu_type == 0x04
            assert len(data) - 6 <= 64
            pdus.append(data)
            if data[11] & 0x02:  # message control header of the (single) PDV: last fragment
                break
    response = decode_response(pdus)
    assert (response.CommandField, response.MessageIDBeingRespondedTo) == (0x8001, 42)
    assert response.Status == 0x0000
    assert response.AffectedSOPInstanceUID == instance.SOPInstanceUID
    location = box_node.index.get_instance(str(instance.SOPInstanceUID))
    assert location is not None
    assert stored_data_set_bytes(box_node.blobs, location.blob.key) == data_set


@pytest.mark.integration
def test_a_c_store_whose_sop_class_is_not_its_contexts_is_refused(
    box_node: BoxNode, ct_file: Path
) -> None:
    data_set = data_set_bytes(ct_file)
    instance = dcmread(ct_file, stop_before_pixels=True)
    command = c_store_rq("1.2.840.10008.5.1.4.1.1.4", str(instance.SOPInstanceUID))  # MR
    with connected(box_node) as sock:
        establish(sock)
        sock.sendall(p_data(1, 0x03, command) + p_data(1, 0x02, data_set))
        _, data = read_pdu(sock)
    assert decode_response([data]).Status == 0x0122
    assert box_node.index.statistics().instances == 0


@pytest.mark.integration
def test_a_silent_association_is_aborted_after_the_network_timeout(
    box_node_factory: BoxNodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scp, "_NETWORK_TIMEOUT_SECONDS", 0.3)
    node = box_node_factory()
    with connected(node) as sock:
        establish(sock)
        started = time.monotonic()
        expect_abort(sock, 0x00)
        assert time.monotonic() - started < _TIMEOUT


@pytest.mark.integration
def test_stopping_the_server_aborts_active_associations(
    box_node_factory: BoxNodeFactory,
) -> None:
    node = box_node_factory()
    with connected(node) as sock:
        establish(sock)
        node.server.stop()
        expect_abort(sock, 0x00)
    assert node.server.active_sockets() == ()
