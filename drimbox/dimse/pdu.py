"""DICOM Upper Layer PDUs (PS3.8 §9.3): read, decode the association request, encode replies.

Only what an association *acceptor* needs: it decodes A-ASSOCIATE-RQ and the framing of every
other PDU, and encodes A-ASSOCIATE-AC/RJ, P-DATA-TF, A-RELEASE-RP and A-ABORT. Every length
read from the network is checked before it is used; a malformed PDU raises
:class:`ProtocolError` with the A-ABORT reason to send (PS3.8 §9.3.8).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import BinaryIO

__all__ = [
    "APPLICATION_CONTEXT_NAME",
    "PDV_COMMAND",
    "PDV_LAST",
    "AbortReason",
    "AssociateRequest",
    "ContextResult",
    "PduType",
    "PresentationContextRequest",
    "ProtocolError",
    "decode_associate_request",
    "encode_abort",
    "encode_associate_accept",
    "encode_associate_reject",
    "encode_p_data",
    "encode_release_response",
    "iter_pdvs",
    "read_pdu",
]

APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"
"""The DICOM Application Context Name (PS3.7 Annex A.2.1)."""

PDV_COMMAND = 0x01
"""Message Control Header bit 0: the fragment is command information (PS3.8 Annex E.2)."""

PDV_LAST = 0x02
"""Message Control Header bit 1: the fragment is the last of its message part (PS3.8 E.2)."""

_PDU_HEADER = struct.Struct(">BxI")  # type, reserved, length (PS3.8 §9.3.1)
_ITEM_HEADER = struct.Struct(">BxH")  # item type, reserved, item length (PS3.8 §9.3.2.x)
_PDV_HEADER = struct.Struct(">IBB")  # item length, presentation context ID, control header
_FIXED_RQ_FIELDS = 68  # protocol version .. reserved, before the variable items (PS3.8 §9.3.2)
_AE_TITLE_LENGTH = 16
_PROTOCOL_VERSION = 0x0001


class PduType(IntEnum):
    """PDU types (PS3.8 §9.3.1, Table 9-10)."""

    A_ASSOCIATE_RQ = 0x01
    A_ASSOCIATE_AC = 0x02
    A_ASSOCIATE_RJ = 0x03
    P_DATA_TF = 0x04
    A_RELEASE_RQ = 0x05
    A_RELEASE_RP = 0x06
    A_ABORT = 0x07


class AbortReason(IntEnum):
    """A-ABORT reasons when the service provider aborts (PS3.8 §9.3.8, Table 9-26)."""

    NOT_SPECIFIED = 0x00
    UNRECOGNIZED_PDU = 0x01
    UNEXPECTED_PDU = 0x02
    UNRECOGNIZED_PDU_PARAMETER = 0x04
    UNEXPECTED_PDU_PARAMETER = 0x05
    INVALID_PDU_PARAMETER_VALUE = 0x06


class ContextResult(IntEnum):
    """Presentation context Result/Reason in A-ASSOCIATE-AC (PS3.8 §9.3.3.2, Table 9-18)."""

    ACCEPTANCE = 0
    USER_REJECTION = 1
    NO_REASON = 2
    ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
    TRANSFER_SYNTAXES_NOT_SUPPORTED = 4


class _Item(IntEnum):
    """Variable item types (PS3.8 §9.3.2.1-9.3.2.3, PS3.7 Annex D.3.3)."""

    APPLICATION_CONTEXT = 0x10
    PRESENTATION_CONTEXT_RQ = 0x20
    PRESENTATION_CONTEXT_AC = 0x21
    ABSTRACT_SYNTAX = 0x30
    TRANSFER_SYNTAX = 0x40
    USER_INFORMATION = 0x50
    MAXIMUM_LENGTH = 0x51
    IMPLEMENTATION_CLASS_UID = 0x52
    IMPLEMENTATION_VERSION_NAME = 0x55


class ProtocolError(Exception):
    """The peer broke the Upper Layer protocol; the association is aborted with ``reason``."""

    def __init__(self, message: str, reason: AbortReason) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class PresentationContextRequest:
    """One proposed presentation context (PS3.8 §9.3.2.2)."""

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True)
class AssociateRequest:
    """The parts of an A-ASSOCIATE-RQ an acceptor decides on (PS3.8 §9.3.2)."""

    protocol_version: int
    called_ae_title: str
    calling_ae_title: str
    raw_called_ae_title: bytes
    raw_calling_ae_title: bytes
    application_context: str
    contexts: tuple[PresentationContextRequest, ...]
    maximum_length: int = 0
    """Largest P-DATA-TF variable field the requestor receives; 0: no limit (PS3.8 D.1)."""
    implementation_class_uid: str = ""
    extra_user_items: tuple[int, ...] = field(default=())

    @property
    def supports_protocol_version(self) -> bool:
        """Whether version 1 of the protocol is proposed (bit 0, PS3.8 §9.3.2)."""
        return bool(self.protocol_version & _PROTOCOL_VERSION)


def read_pdu(stream: BinaryIO, maximum_length: int) -> tuple[int, bytes] | None:
    """Read one PDU; return its type and body, or ``None`` at a clean end of stream.

    Raises
    ------
    ProtocolError
        Announced length over ``maximum_length``, or the stream ends inside the PDU.
    """
    header = stream.read(_PDU_HEADER.size)
    if not header:
        return None
    if len(header) < _PDU_HEADER.size:
        raise ProtocolError("connection closed inside a PDU header", AbortReason.NOT_SPECIFIED)
    pdu_type, length = _PDU_HEADER.unpack(header)
    if length > maximum_length:
        raise ProtocolError(
            f"PDU of {length} bytes exceeds the {maximum_length}-byte limit",
            AbortReason.INVALID_PDU_PARAMETER_VALUE,
        )
    body = stream.read(length)
    if len(body) < length:
        raise ProtocolError("connection closed inside a PDU", AbortReason.NOT_SPECIFIED)
    return pdu_type, body


def iter_pdvs(body: memoryview) -> Iterator[tuple[int, int, memoryview]]:
    """Yield (presentation context ID, message control header, fragment) of a P-DATA-TF.

    Raises
    ------
    ProtocolError
        A PDV item length that does not fit the PDU (PS3.8 §9.3.5.1).
    """
    offset, end = 0, len(body)
    while offset < end:
        if end - offset < _PDV_HEADER.size:
            raise ProtocolError("truncated PDV item", AbortReason.INVALID_PDU_PARAMETER_VALUE)
        length, context_id, control = _PDV_HEADER.unpack_from(body, offset)
        if length < 2 or offset + 4 + length > end:
            raise ProtocolError(
                f"PDV item length {length} does not fit its P-DATA-TF",
                AbortReason.INVALID_PDU_PARAMETER_VALUE,
            )
        yield context_id, control, body[offset + _PDV_HEADER.size : offset + 4 + length]
        offset += 4 + length


def _items(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """Yield (item type, value start, value end) of the items between ``start`` and ``end``."""
    offset = start
    while offset < end:
        if end - offset < _ITEM_HEADER.size:
            raise ProtocolError("truncated item", AbortReason.INVALID_PDU_PARAMETER_VALUE)
        item_type, length = _ITEM_HEADER.unpack_from(data, offset)
        value = offset + _ITEM_HEADER.size
        if value + length > end:
            raise ProtocolError(
                f"item 0x{item_type:02X} of {length} bytes overruns its PDU",
                AbortReason.INVALID_PDU_PARAMETER_VALUE,
            )
        yield item_type, value, value + length
        offset = value + length


def _uid(data: bytes, start: int, end: int) -> str:
    return data[start:end].decode("ascii", "replace").rstrip("\0 ")


def _ae_title(raw: bytes) -> str:
    return raw.decode("ascii", "replace").strip(" \0")


def decode_associate_request(body: bytes) -> AssociateRequest:
    """Decode the body of an A-ASSOCIATE-RQ (PS3.8 §9.3.2).

    Raises
    ------
    ProtocolError
        Malformed items.
    """
    if len(body) < _FIXED_RQ_FIELDS:
        raise ProtocolError("A-ASSOCIATE-RQ too short", AbortReason.INVALID_PDU_PARAMETER_VALUE)
    (protocol_version,) = struct.unpack_from(">H", body, 0)
    raw_called = body[4 : 4 + _AE_TITLE_LENGTH]
    raw_calling = body[4 + _AE_TITLE_LENGTH : 4 + 2 * _AE_TITLE_LENGTH]
    application_context = ""
    contexts: list[PresentationContextRequest] = []
    maximum_length = 0
    implementation_class_uid = ""
    extra: list[int] = []
    for item_type, start, end in _items(body, _FIXED_RQ_FIELDS, len(body)):
        if item_type == _Item.APPLICATION_CONTEXT:
            application_context = _uid(body, start, end)
        elif item_type == _Item.PRESENTATION_CONTEXT_RQ:
            contexts.append(_presentation_context(body, start, end))
        elif item_type == _Item.USER_INFORMATION:
            for sub_type, sub_start, sub_end in _items(body, start, end):
                if sub_type == _Item.MAXIMUM_LENGTH and sub_end - sub_start == 4:
                    (maximum_length,) = struct.unpack_from(">I", body, sub_start)
                elif sub_type == _Item.IMPLEMENTATION_CLASS_UID:
                    implementation_class_uid = _uid(body, sub_start, sub_end)
                else:  # role selection, async window, extended negotiation, user identity
                    extra.append(sub_type)
    return AssociateRequest(
        protocol_version=protocol_version,
        called_ae_title=_ae_title(raw_called),
        calling_ae_title=_ae_title(raw_calling),
        raw_called_ae_title=raw_called,
        raw_calling_ae_title=raw_calling,
        application_context=application_context,
        contexts=tuple(contexts),
        maximum_length=maximum_length,
        implementation_class_uid=implementation_class_uid,
        extra_user_items=tuple(extra),
    )


def _presentation_context(body: bytes, start: int, end: int) -> PresentationContextRequest:
    if end - start < 4:
        raise ProtocolError(
            "presentation context item too short", AbortReason.INVALID_PDU_PARAMETER_VALUE
        )
    abstract_syntax = ""
    transfer_syntaxes: list[str] = []
    for sub_type, sub_start, sub_end in _items(body, start + 4, end):
        if sub_type == _Item.ABSTRACT_SYNTAX:
            abstract_syntax = _uid(body, sub_start, sub_end)
        elif sub_type == _Item.TRANSFER_SYNTAX:
            transfer_syntaxes.append(_uid(body, sub_start, sub_end))
    return PresentationContextRequest(body[start], abstract_syntax, tuple(transfer_syntaxes))


def _item(item_type: int, value: bytes) -> bytes:
    return _ITEM_HEADER.pack(item_type, len(value)) + value


def _pdu(pdu_type: PduType, body: bytes) -> bytes:
    return _PDU_HEADER.pack(pdu_type, len(body)) + body


def encode_associate_accept(
    request: AssociateRequest,
    results: list[tuple[int, ContextResult, str]],
    *,
    maximum_length: int,
    implementation_class_uid: str,
    implementation_version_name: str,
) -> bytes:
    """Encode an A-ASSOCIATE-AC (PS3.8 §9.3.3).

    Parameters
    ----------
    request
        The request answered (its AE title fields are echoed, as §9.3.3 requires).
    results
        Per proposed context: (context ID, result, transfer syntax chosen or echoed).
    maximum_length
        The largest P-DATA-TF variable field the box accepts (PS3.8 Annex D.1).
    implementation_class_uid, implementation_version_name
        The box's implementation identification (PS3.7 Annex D.3.3.2).
    """
    fixed = (
        struct.pack(">HH", _PROTOCOL_VERSION, 0)
        + request.raw_called_ae_title
        + request.raw_calling_ae_title
        + bytes(32)
    )
    items = [_item(_Item.APPLICATION_CONTEXT, APPLICATION_CONTEXT_NAME.encode("ascii"))]
    for context_id, result, syntax in results:
        value = bytes((context_id, 0, int(result), 0)) + _item(
            _Item.TRANSFER_SYNTAX, syntax.encode("ascii")
        )
        items.append(_item(_Item.PRESENTATION_CONTEXT_AC, value))
    user = (
        _item(_Item.MAXIMUM_LENGTH, struct.pack(">I", maximum_length))
        + _item(_Item.IMPLEMENTATION_CLASS_UID, implementation_class_uid.encode("ascii"))
        + _item(_Item.IMPLEMENTATION_VERSION_NAME, implementation_version_name.encode("ascii"))
    )
    items.append(_item(_Item.USER_INFORMATION, user))
    return _pdu(PduType.A_ASSOCIATE_AC, fixed + b"".join(items))


def encode_associate_reject(result: int, source: int, reason: int) -> bytes:
    """Encode an A-ASSOCIATE-RJ (PS3.8 §9.3.4)."""
    return _pdu(PduType.A_ASSOCIATE_RJ, bytes((0, result, source, reason)))


def encode_release_response() -> bytes:
    """Encode an A-RELEASE-RP (PS3.8 §9.3.7)."""
    return _pdu(PduType.A_RELEASE_RP, bytes(4))


_ABORT_SOURCE_PROVIDER = 0x02  # PS3.8 §9.3.8: DICOM UL service-provider initiated abort


def encode_abort(reason: AbortReason) -> bytes:
    """Encode an A-ABORT sent by the box as service provider (PS3.8 §9.3.8)."""
    return _pdu(PduType.A_ABORT, bytes((0, 0, _ABORT_SOURCE_PROVIDER, int(reason))))


def encode_p_data(context_id: int, control: int, message: bytes, maximum_length: int) -> bytes:
    """Encode ``message`` as P-DATA-TF PDUs no larger than the peer's ``maximum_length``.

    ``control`` is :data:`PDV_COMMAND` or 0; the last fragment gets :data:`PDV_LAST`.
    A ``maximum_length`` of 0 means no limit (PS3.8 Annex D.1).
    """
    room = len(message) if maximum_length == 0 else max(1, maximum_length - _PDV_HEADER.size)
    pdus = []
    for start in range(0, max(len(message), 1), room):
        fragment = message[start : start + room]
        last = PDV_LAST if start + room >= len(message) else 0
        pdv = _PDV_HEADER.pack(len(fragment) + 2, context_id, control | last) + fragment
        pdus.append(_pdu(PduType.P_DATA_TF, pdv))
    return b"".join(pdus)
