"""Accept negotiation (PS3.18 §8.7) and multipart/related framing, without a server."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
)

from dicomweb.media import (
    accepted_transfer_syntaxes,
    choose_frame_media_type,
    choose_media_type,
    choose_transfer_syntax,
    parse_accept,
)
from dicomweb.multipart import MultipartParser, PartData, PartEnd, PartStart, write_multipart
from drimbox.errors import InvalidQueryError, NotAcceptableError

ANS_SAMPLES = Path("/work/shared/ans-samples/Echantillons validateurs/Validateur WADO-RS")


def ans_accept(name: str) -> str:
    """The Accept header of an ANS WADO-RS request sample."""
    text = (ANS_SAMPLES / name / f"{name}.txt").read_text()
    line = next(line for line in text.splitlines() if line.lower().startswith("accept:"))
    return line.partition(":")[2]


def always(_source: str, _target: str) -> bool:
    return True


def never(source: str, target: str) -> bool:
    return source == target


def test_ans_instance_sample_parses_despite_trailing_comma_and_boundary_parameter() -> None:
    ranges = parse_accept(ans_accept("Requête WADO-RS - Instance"))
    assert len(ranges) == 10
    assert ranges[0].parameters["transfer-syntax"] == JPEGLosslessSV1
    assert ranges[0].quality == 0.9
    assert ranges[-1].parameters["transfer-syntax"] == ExplicitVRLittleEndian


@pytest.mark.parametrize("sample", ["Requête WADO-RS - Instance", "Requête WADO-RS - Série"])
def test_ans_samples_get_stored_explicit_little_endian_as_is(sample: str) -> None:
    accepted = accepted_transfer_syntaxes(parse_accept(ans_accept(sample)))
    assert choose_transfer_syntax(ExplicitVRLittleEndian, accepted, always) == (
        ExplicitVRLittleEndian
    )


def test_ans_sample_transcodes_implicit_vr_to_the_most_preferred_producible_syntax() -> None:
    accepted = accepted_transfer_syntaxes(parse_accept(ans_accept("Requête WADO-RS - Série")))
    assert choose_transfer_syntax(ImplicitVRLittleEndian, accepted, always) == JPEGLosslessSV1
    only_native = lambda s, t: t == ExplicitVRLittleEndian  # noqa: E731
    assert choose_transfer_syntax(ImplicitVRLittleEndian, accepted, only_native) == (
        ExplicitVRLittleEndian
    )


def test_ans_sample_serves_stored_jpeg_lossless_without_transcoding() -> None:
    accepted = accepted_transfer_syntaxes(parse_accept(ans_accept("Requête WADO-RS - Instance")))
    assert choose_transfer_syntax(JPEGLosslessSV1, accepted, never) == JPEGLosslessSV1


def test_multipart_without_transfer_syntax_means_explicit_little_endian() -> None:
    accepted = accepted_transfer_syntaxes(
        parse_accept('multipart/related; type="application/dicom"')
    )
    assert choose_transfer_syntax(JPEGBaseline8Bit, accepted, always) == ExplicitVRLittleEndian
    with pytest.raises(NotAcceptableError):
        choose_transfer_syntax(JPEGBaseline8Bit, accepted, never)


@pytest.mark.parametrize(
    "accept",
    [
        'multipart/related; type="application/dicom"; transfer-syntax=*',
        "*/*",
        "multipart/related; type=*/*",
        "",
    ],
)
def test_wildcards_serve_any_stored_syntax(accept: str) -> None:
    accepted = accepted_transfer_syntaxes(parse_accept(accept))
    assert choose_transfer_syntax(JPEG2000Lossless, accepted, never) == JPEG2000Lossless


def test_q_zero_refuses_a_syntax_even_with_a_wildcard() -> None:
    accepted = accepted_transfer_syntaxes(
        parse_accept(
            'multipart/related; type="application/dicom"; transfer-syntax=*, '
            f'multipart/related; type="application/dicom"; transfer-syntax={JPEGBaseline8Bit};q=0'
        )
    )
    assert not accepted.admits(JPEGBaseline8Bit)
    assert choose_transfer_syntax(JPEGBaseline8Bit, accepted, always) == ExplicitVRLittleEndian
    with pytest.raises(NotAcceptableError):
        choose_transfer_syntax(JPEGBaseline8Bit, accepted, never)


def test_higher_q_wins_among_transcoding_targets() -> None:
    accepted = accepted_transfer_syntaxes(
        parse_accept(
            f'multipart/related; type="application/dicom"; transfer-syntax={JPEGLSLossless};q=0.2,'
            f'multipart/related; type="application/dicom"; transfer-syntax={JPEGLosslessSV1};q=0.7'
        )
    )
    assert choose_transfer_syntax(ExplicitVRLittleEndian, accepted, always) == JPEGLosslessSV1


@pytest.mark.parametrize("accept", ["dicom", "application/dicom;q=2", "text/html;q=x", "/json"])
def test_malformed_accept_is_an_invalid_query_naming_accept(accept: str) -> None:
    with pytest.raises(InvalidQueryError) as caught:
        parse_accept(accept)
    assert caught.value.parameter == "Accept"


def test_json_media_type_choice_honours_q_and_refuses_xml_only() -> None:
    offered = ("application/dicom+json", "application/json")
    assert choose_media_type(parse_accept("application/json"), offered) == "application/json"
    assert choose_media_type(parse_accept("*/*"), offered) == "application/dicom+json"
    with pytest.raises(NotAcceptableError):
        choose_media_type(parse_accept('multipart/related; type="application/dicom+xml"'), offered)


def test_frames_default_wildcard_of_dicomweb_client_serves_stored_frames() -> None:
    ranges = parse_accept('multipart/related; type="*/*"')
    assert choose_frame_media_type(ranges, ExplicitVRLittleEndian, never) == (
        "application/octet-stream",
        ExplicitVRLittleEndian,
    )
    assert choose_frame_media_type(ranges, JPEGBaseline8Bit, never) == (
        "image/jpeg",
        JPEGBaseline8Bit,
    )


def test_frames_octet_stream_from_compressed_storage_needs_decoding() -> None:
    ranges = parse_accept('multipart/related; type="application/octet-stream"')
    assert choose_frame_media_type(ranges, JPEGLosslessSV1, always) == (
        "application/octet-stream",
        ExplicitVRLittleEndian,
    )
    with pytest.raises(NotAcceptableError):
        choose_frame_media_type(ranges, JPEGLosslessSV1, never)


def test_frames_image_jls_from_native_storage_is_encoded() -> None:
    ranges = parse_accept('multipart/related; type="image/jls"')
    assert choose_frame_media_type(ranges, ExplicitVRLittleEndian, always) == (
        "image/jls",
        "1.2.840.10008.1.2.4.80",
    )


def collect(
    parser: MultipartParser, body: bytes, rng: random.Random
) -> list[tuple[dict[str, str], bytes]]:
    parts: list[tuple[dict[str, str], bytes]] = []
    headers: dict[str, str] = {}
    data = bytearray()
    position = 0
    while position < len(body):
        size = rng.randint(1, 3000)
        for event in parser.feed(body[position : position + size]):
            if isinstance(event, PartStart):
                headers, data = dict(event.headers), bytearray()
            elif isinstance(event, PartData):
                data += event.data
            elif isinstance(event, PartEnd):
                parts.append((headers, bytes(data)))
        position += size
    parser.close()
    return parts


def test_multipart_writer_and_parser_round_trip_at_any_chunking() -> None:
    rng = random.Random(7)
    payloads = [b"", b"x", b"\r\n--not-the-boundary\r\n", bytes(range(256)) * 300]
    parts = [({"Content-Type": "application/dicom"}, [payload]) for payload in payloads]
    body = b"".join(write_multipart(parts, "b0undary", flush_size=100))
    for _ in range(30):
        received = collect(MultipartParser("b0undary"), body, rng)
        assert [data for _, data in received] == payloads
        assert all(h["content-type"] == "application/dicom" for h, _ in received)


def test_truncated_multipart_is_reported_on_close() -> None:
    body = b"".join(write_multipart([({}, [b"abc" * 100])], "xyz"))
    parser = MultipartParser("xyz")
    parser.feed(body[:-12])
    with pytest.raises(InvalidQueryError, match="truncated"):
        parser.close()


def test_endless_part_headers_are_refused() -> None:
    parser = MultipartParser("xyz")
    with pytest.raises(InvalidQueryError, match="too long"):
        parser.feed(b"--xyz\r\n" + b"X-Padding: " + b"a" * 70000)
