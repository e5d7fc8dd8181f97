"""DIMSE command sets (PS3.7 §9.3, §E): decode requests, encode the responses the box sends.

A command set is always encoded in Implicit VR Little Endian and holds only group 0000
elements (PS3.7 §6.3.1). The box decodes the few fields it acts on and builds its C-ECHO-RSP
and C-STORE-RSP directly as bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

__all__ = [
    "NO_DATA_SET",
    "Command",
    "CommandField",
    "decode_command",
    "encode_response",
]

NO_DATA_SET = 0x0101
"""Command Data Set Type (0000,0800) value meaning no data set follows (PS3.7 §E.1)."""

_ELEMENT = struct.Struct("<HHI")  # group, element, value length (PS3.5 §7.1.3)
_US = struct.Struct("<H")
_UL = struct.Struct("<I")

_AFFECTED_SOP_CLASS_UID = 0x0002
_COMMAND_FIELD = 0x0100
_MESSAGE_ID = 0x0110
_MESSAGE_ID_BEING_RESPONDED_TO = 0x0120
_COMMAND_DATA_SET_TYPE = 0x0800
_STATUS = 0x0900
_ERROR_COMMENT = 0x0902
_AFFECTED_SOP_INSTANCE_UID = 0x1000


class CommandField(IntEnum):
    """Command Field (0000,0100) values the box handles (PS3.7 §E.1, Table E.1-1)."""

    C_STORE_RQ = 0x0001
    C_STORE_RSP = 0x8001
    C_ECHO_RQ = 0x0030
    C_ECHO_RSP = 0x8030
    C_CANCEL_RQ = 0x0FFF


class CommandError(ValueError):
    """A command set that cannot be decoded."""


@dataclass(frozen=True)
class Command:
    """The fields of a request's command set the box acts on."""

    command_field: int
    message_id: int
    data_set_type: int
    affected_sop_class_uid: str
    affected_sop_instance_uid: str

    @property
    def has_data_set(self) -> bool:
        """Whether a data set follows the command (PS3.7 §E.1, (0000,0800))."""
        return self.data_set_type != NO_DATA_SET


def decode_command(data: bytes) -> Command:
    """Decode an Implicit VR Little Endian command set (PS3.7 §6.3.1).

    Raises
    ------
    ValueError
        The command set is truncated, or lacks Command Field or Message ID.
    """
    values: dict[int, bytes] = {}
    offset, end = 0, len(data)
    while offset < end:
        if end - offset < _ELEMENT.size:
            raise CommandError("truncated command element")
        group, element, length = _ELEMENT.unpack_from(data, offset)
        offset += _ELEMENT.size
        if group != 0 or offset + length > end:
            raise CommandError(f"invalid command element ({group:04X},{element:04X})")
        values[element] = data[offset : offset + length]
        offset += length
    try:
        (command_field,) = _US.unpack(values[_COMMAND_FIELD])
        message_id_value = values.get(_MESSAGE_ID)
        (message_id,) = _US.unpack(message_id_value) if message_id_value else (0,)
        data_set_value = values.get(_COMMAND_DATA_SET_TYPE)
        (data_set_type,) = _US.unpack(data_set_value) if data_set_value else (NO_DATA_SET,)
    except (KeyError, struct.error) as error:
        raise CommandError(f"command set without a valid Command Field: {error}") from error
    return Command(
        command_field=command_field,
        message_id=message_id,
        data_set_type=data_set_type,
        affected_sop_class_uid=_text(values.get(_AFFECTED_SOP_CLASS_UID, b"")),
        affected_sop_instance_uid=_text(values.get(_AFFECTED_SOP_INSTANCE_UID, b"")),
    )


def _text(value: bytes) -> str:
    return value.decode("ascii", "replace").rstrip("\0 ")


def _element(element: int, value: bytes) -> bytes:
    return _ELEMENT.pack(0, element, len(value)) + value


def _padded(value: bytes, pad: bytes) -> bytes:
    return value + pad if len(value) % 2 else value


def encode_response(
    request: Command,
    response_field: CommandField,
    status: int,
    error_comment: str | None = None,
) -> bytes:
    """Encode the response to ``request`` (PS3.7 §9.3.1.2 C-STORE-RSP, §9.3.5.2 C-ECHO-RSP).

    ``error_comment`` must already be a valid LO value (see
    :func:`drimbox.dimse.status.error_comment`).
    """
    body = [
        _element(
            _AFFECTED_SOP_CLASS_UID,
            _padded(request.affected_sop_class_uid.encode("ascii", "replace"), b"\0"),
        ),
        _element(_COMMAND_FIELD, _US.pack(response_field)),
        _element(_MESSAGE_ID_BEING_RESPONDED_TO, _US.pack(request.message_id)),
        _element(_COMMAND_DATA_SET_TYPE, _US.pack(NO_DATA_SET)),
        _element(_STATUS, _US.pack(status)),
    ]
    if error_comment:
        body.append(_element(_ERROR_COMMENT, _padded(error_comment.encode("ascii"), b" ")))
    if request.affected_sop_instance_uid:
        body.append(
            _element(
                _AFFECTED_SOP_INSTANCE_UID,
                _padded(request.affected_sop_instance_uid.encode("ascii", "replace"), b"\0"),
            )
        )
    encoded = b"".join(body)
    return _element(0x0000, _UL.pack(len(encoded))) + encoded
