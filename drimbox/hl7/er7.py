"""HL7 v2 ER7 ("pipe and hat") encoding: parsing, escape sequences and acknowledgments.

References: HL7 v2.5 chapter 2 — §2.5 message construction rules, §2.7 use of escape sequences in
text fields, §2.9 acknowledgment (original mode), §2.15.9 MSH, §2.15.8 MSA, §2.15.5 ERR.
Segments are separated by CR; LF and CRLF are tolerated (several senders, and the original ANS
samples, use CRLF).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from drimbox.hl7.errors import AcknowledgmentCode, ErrorCode, MalformedMessageError

__all__ = [
    "ACK_VERSION",
    "Delimiters",
    "MessageHeader",
    "ParsedMessage",
    "Segment",
    "build_ack",
    "decode_text",
    "escape",
    "parse_er7",
    "read_header",
    "unescape",
]

SEGMENT_SEPARATOR = "\r"  # HL7 v2.5 §2.5.1
ACK_VERSION = "2.5"
"""Version of the acknowledgments the box sends (MSH-12)."""
_HEADER_ID = "MSH"
_HEADER_PROBE = 65536  # bytes searched for the MSH of a message too broken to parse
_ENCODING_CHARACTERS_LENGTH = 4  # component, repetition, escape, subcomponent (§2.5.4)
_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")
_CHARSETS = {  # MSH-18 (HL7 table 0211) -> Python codec
    "": "utf-8",
    "ASCII": "ascii",
    "UNICODE UTF-8": "utf-8",
    "UNICODE": "utf-8",
    "8859/1": "latin-1",
    "8859/15": "iso8859-15",
}


@dataclass(frozen=True, slots=True)
class Delimiters:
    """The message's delimiters, read from MSH-1 and MSH-2 (HL7 v2.5 §2.5.4)."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @property
    def encoding_characters(self) -> str:
        """MSH-2 as sent back in acknowledgments."""
        return self.component + self.repetition + self.escape + self.subcomponent


def unescape(text: str, delimiters: Delimiters = Delimiters()) -> str:
    r"""Replace HL7 escape sequences (HL7 v2.5 §2.7) by the characters they stand for.

    ``\F\ \S\ \T\ \R\ \E\`` become the delimiters, ``\Xhh..\`` the bytes (decoded as UTF-8,
    Latin-1 if that fails), ``\.br\`` a line break; highlighting (``\H\ \N\``), character-set
    (``\C..\ \M..\``) and other formatting sequences are dropped. A lone escape character is kept.
    """
    esc = delimiters.escape
    if esc not in text:
        return text
    simple = {
        "F": delimiters.field,
        "S": delimiters.component,
        "T": delimiters.subcomponent,
        "R": delimiters.repetition,
        "E": esc,
        ".br": "\n",
    }
    out: list[str] = []
    i = 0
    while i < len(text):
        end = text.find(esc, i + 1) if text[i] == esc else -1
        if end < 0:
            out.append(text[i])
            i += 1
            continue
        body = text[i + 1 : end]
        if body in simple:
            out.append(simple[body])
        elif body[:1] == "X" and re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", body[1:]):
            data = bytes.fromhex(body[1:])
            try:
                out.append(data.decode("utf-8"))
            except UnicodeDecodeError:
                out.append(data.decode("latin-1"))
        elif not re.fullmatch(r"[HNCMZ.][^\\]*", body):
            out.append(text[i : end + 1])  # not an escape sequence: keep as received
        i = end + 1
    return "".join(out)


def escape(text: str, delimiters: Delimiters = Delimiters()) -> str:
    """Escape delimiters in ``text`` (inverse of :func:`unescape`).

    Line breaks become the ``.br`` formatting escape.
    """
    d = delimiters
    table = {
        d.escape: f"{d.escape}E{d.escape}",
        d.field: f"{d.escape}F{d.escape}",
        d.component: f"{d.escape}S{d.escape}",
        d.subcomponent: f"{d.escape}T{d.escape}",
        d.repetition: f"{d.escape}R{d.escape}",
        "\r": f"{d.escape}.br{d.escape}",
        "\n": f"{d.escape}.br{d.escape}",
    }
    return "".join(table.get(c, c) for c in text.replace("\r\n", "\n"))


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment; ``fields[n]`` is field n (for MSH, ``fields[1]`` is the field separator)."""

    fields: tuple[str, ...]
    delimiters: Delimiters

    @property
    def name(self) -> str:
        """The segment id (``MSH``, ``PID``...)."""
        return self.fields[0]

    def raw(self, field: int) -> str:
        """Return field ``field`` as received (escaped, with its repetitions)."""
        return self.fields[field] if 0 < field < len(self.fields) else ""

    def repetitions(self, field: int) -> list[str]:
        """Return the raw repetitions of a field (MSH-2 is never split)."""
        raw = self.raw(field)
        if self.name == _HEADER_ID and field <= 2:
            return [raw]
        return raw.split(self.delimiters.repetition) if raw else []

    def value(
        self, field: int, component: int = 1, subcomponent: int = 1, repetition: int = 0
    ) -> str:
        """Return one unescaped value, ``""`` when absent (1-based component and subcomponent)."""
        reps = self.repetitions(field)
        if repetition >= len(reps):
            return ""
        return component_of(reps[repetition], self.delimiters, component, subcomponent)


def component_of(
    raw: str, delimiters: Delimiters, component: int = 1, subcomponent: int = 1
) -> str:
    """Return an unescaped component/subcomponent of one raw repetition."""
    components = raw.split(delimiters.component)
    if component > len(components):
        return ""
    subs = components[component - 1].split(delimiters.subcomponent)
    if subcomponent > len(subs):
        return ""
    return unescape(subs[subcomponent - 1], delimiters)


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """A parsed ER7 message."""

    segments: tuple[Segment, ...]
    delimiters: Delimiters

    @property
    def header(self) -> Segment:
        """The MSH segment."""
        return self.segments[0]

    def all(self, name: str) -> list[Segment]:
        """Return every segment named ``name``, in order."""
        return [s for s in self.segments if s.name == name]

    def first(self, name: str) -> Segment | None:
        """Return the first segment named ``name``, or ``None``."""
        return next((s for s in self.segments if s.name == name), None)


@dataclass(frozen=True, slots=True)
class MessageHeader:
    """The MSH fields an acknowledgment needs, read best effort."""

    delimiters: Delimiters = Delimiters()
    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    message_type: str = ""
    trigger_event: str = ""
    control_id: str = ""
    processing_id: str = "P"
    version: str = ""
    charset: str = ""


def decode_text(raw: bytes) -> str:
    """Decode a message's bytes in the character set named by MSH-18 (UTF-8 by default).

    Raises
    ------
    MalformedMessageError
        When the bytes are not valid in that character set.
    """
    header = read_header(raw)
    codec = _CHARSETS.get(header.charset.upper(), "utf-8")
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as exc:
        raise MalformedMessageError(
            f"message is not valid {codec} (MSH-18 {header.charset or 'absent'}) at byte "
            f"{exc.start}",
            ErrorCode.DATA_TYPE_ERROR,
            "MSH-18",
        ) from None


def _split_segments(text: str) -> list[str]:
    text = text.replace("\r\n", SEGMENT_SEPARATOR).replace("\n", SEGMENT_SEPARATOR)
    return [s for s in text.split(SEGMENT_SEPARATOR) if s.strip()]


def _delimiters(first_segment: str) -> Delimiters:
    if not first_segment.startswith(_HEADER_ID) or len(first_segment) < 8:
        raise MalformedMessageError("message does not start with an MSH segment", location="MSH")
    field = first_segment[3]
    encoding = first_segment[4 : 4 + _ENCODING_CHARACTERS_LENGTH]
    chars = [field, *encoding]
    if field.isalnum() or len(set(chars)) != len(chars) or field in encoding:
        raise MalformedMessageError("MSH-1/MSH-2 delimiters are invalid", location="MSH-2")
    return Delimiters(field, encoding[0], encoding[1], encoding[2], encoding[3])


def parse_er7(text: str) -> ParsedMessage:
    """Split an ER7 message into segments and fields.

    Raises
    ------
    MalformedMessageError
        No MSH first, invalid delimiters, or a segment id that is not 3 upper-case characters.
    """
    lines = _split_segments(text.lstrip("\ufeff"))
    if not lines:
        raise MalformedMessageError("empty message", location="MSH")
    delimiters = _delimiters(lines[0])
    segments = []
    for index, line in enumerate(lines):
        fields = line.split(delimiters.field)
        if not _SEGMENT_ID.fullmatch(fields[0]):
            raise MalformedMessageError(
                f"segment {index + 1} has an invalid segment id", location=f"segment {index + 1}"
            )
        if fields[0] == _HEADER_ID:
            fields.insert(1, delimiters.field)
        segments.append(Segment(tuple(fields), delimiters))
    return ParsedMessage(tuple(segments), delimiters)


def read_header(raw: bytes) -> MessageHeader:
    """Read the MSH fields of ``raw`` best effort, for an acknowledgment of any message.

    Never raises: fields that cannot be read are empty.
    """
    text = raw[:_HEADER_PROBE].decode("latin-1")  # any byte decodes; MSH is ASCII in practice
    start = text.find(_HEADER_ID)
    if start < 0:
        return MessageHeader()
    line = _split_segments(text[start : start + 4096] + SEGMENT_SEPARATOR)[0]
    try:
        delimiters = _delimiters(line)
    except MalformedMessageError:
        return MessageHeader()
    msh = Segment(
        tuple([_HEADER_ID, delimiters.field, *line.split(delimiters.field)[1:]]), delimiters
    )

    def value(field: int, component: int = 1) -> str:
        return msh.value(field, component)[:199]

    return MessageHeader(
        delimiters=delimiters,
        sending_application=msh.raw(3)[:227],
        sending_facility=msh.raw(4)[:227],
        receiving_application=msh.raw(5)[:227],
        receiving_facility=msh.raw(6)[:227],
        message_type=value(9, 1),
        trigger_event=value(9, 2),
        control_id=value(10),
        processing_id=value(11) or "P",
        version=value(12),
        charset=value(18),
    )


def build_ack(
    header: MessageHeader,
    code: AcknowledgmentCode,
    *,
    error_code: ErrorCode | None = None,
    reason: str = "",
    location: str | None = None,
    now: datetime | None = None,
) -> bytes:
    """Build an original-mode ACK (HL7 v2.5 §2.9.2) for the message whose header is ``header``.

    Sender and receiver are swapped, MSA-2 echoes MSH-10, and an ERR segment (ERR-2 location,
    ERR-3 table 0357 code, ERR-4 severity, ERR-8 user message) says why when ``code`` is not AA.

    Returns
    -------
    bytes
        The ACK, UTF-8, segments separated by CR (no MLLP framing).
    """
    d = header.delimiters
    timestamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    control_id = uuid.uuid4().hex[:20]
    event = escape(header.trigger_event, d)
    msh = d.field.join(
        [
            _HEADER_ID,
            d.encoding_characters,
            header.receiving_application,
            header.receiving_facility,
            header.sending_application,
            header.sending_facility,
            timestamp,
            "",
            f"ACK{d.component}{event}{d.component}ACK" if event else "ACK",
            control_id,
            escape(header.processing_id, d),
            ACK_VERSION,
            "",
            "",
            "",
            "",
            "",
            "UNICODE UTF-8",
        ]
    )
    msa = d.field.join(["MSA", code.value, escape(header.control_id, d)])
    segments = [msh, msa]
    if code is not AcknowledgmentCode.ACCEPT:
        err_code = error_code if error_code is not None else ErrorCode.APPLICATION_INTERNAL_ERROR
        where = ""
        if location:
            segment, _, field = location.partition("-")
            where = d.component.join([escape(segment, d), "1", field]) if field.isdigit() else ""
        text = escape(_error_text(err_code), d)
        hl7_error_code = d.component.join([str(int(err_code)), text, "HL70357"])
        err = d.field.join(["ERR", "", where, hl7_error_code, "E", "", "", "", escape(reason, d)])
        segments.append(err)
    return (SEGMENT_SEPARATOR.join(segments) + SEGMENT_SEPARATOR).encode("utf-8")


def _error_text(code: ErrorCode) -> str:
    return code.name.replace("_", " ").capitalize()
