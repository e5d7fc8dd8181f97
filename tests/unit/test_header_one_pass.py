"""The one-pass header reader gives exactly what the generic (walker + pydicom) reader gives."""

from __future__ import annotations

import io

import pytest
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from drimbox.dicom import part10
from drimbox.dicom._header import NotHandledError, read_little_endian_header
from drimbox.dicom.part10 import DataSetHeader, read_data_set_header
from drimbox.dicom.synthetic import SyntheticStudy, make_instance
from drimbox.errors import UnreadableInstanceError

EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
LIMIT = 1 << 30


def _encode(ds: Dataset, implicit: bool) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, implicit
    write_dataset(buffer, ds)
    return buffer.getvalue()


def _item(**values: object) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def _rich_instance() -> Dataset:
    ds = make_instance(SyntheticStudy(modality="CT"), 0, 0)
    del ds.file_meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Müller^Jürgen"
    ds.OtherPatientIDs = ""  # empty text value
    ds.add_new(0x00181000, "LO", "")  # empty Device Serial Number
    code = _item(CodeValue="T-D3000", CodingSchemeDesignator="SRT", CodeMeaning="Chest")
    ds.AnatomicRegionSequence = Sequence([code])  # defined length (as pydicom writes it)
    undefined = Sequence([_item(ReferencedSOPInstanceUID="1.2.3", ReferencedFrameNumber=[1, 2])])
    undefined.is_undefined_length = True
    ds.ReferencedImageSequence = undefined
    ds.ReferencedImageSequence[0].is_undefined_length_sequence_item = True
    nested = Sequence(
        [_item(ProcedureCodeSequence=Sequence([code]), CodeValue="X", CodeMeaning="Région")]
    )
    nested.is_undefined_length = True
    ds.RequestAttributesSequence = nested
    ds.add_new(0x00090010, "LO", "DRIMBOX TEST")  # private creator
    private = Sequence([_item(PatientID="P")])
    private.is_undefined_length = True
    ds.add_new(0x00091001, "SQ", private)
    ds.add_new(0x7FE10010, "LO", "AFTER PIXEL DATA")  # an element after the pixel data
    return ds


def _generic(data: bytes, syntax: str) -> DataSetHeader:
    return part10._read_header(io.BytesIO(data), UID(syntax), 0)


def _assert_same(fast: DataSetHeader, generic: DataSetHeader) -> None:
    assert fast.pixel_data == generic.pixel_data
    tags = list(generic.dataset.keys())  # iterating a Dataset would convert its elements
    assert list(fast.dataset.keys()) == tags
    for tag in tags:
        expected = generic.dataset.get_item(tag)
        found = fast.dataset.get_item(tag)
        assert type(found) is type(expected)
        if isinstance(expected, RawDataElement):
            assert found == expected
        else:
            assert isinstance(found, DataElement)
            assert found.VR == expected.VR
            assert found.value == expected.value
    assert fast.dataset.original_encoding == generic.dataset.original_encoding
    assert fast.dataset.original_character_set == generic.dataset.original_character_set
    assert fast.dataset == generic.dataset


@pytest.mark.parametrize("syntax", [EXPLICIT, IMPLICIT])
def test_one_pass_reader_builds_the_same_data_set_as_the_generic_reader(syntax: str) -> None:
    data = _encode(_rich_instance(), implicit=syntax == IMPLICIT)

    fast = read_data_set_header(io.BytesIO(data), syntax, max_inflated_bytes=LIMIT)

    _assert_same(fast, _generic(data, syntax))
    requested = fast.dataset.RequestAttributesSequence[0]
    assert requested.ProcedureCodeSequence[0].CodeValue == "T-D3000"
    assert requested.CodeMeaning == "Région"  # decoded with the data set's character set


def test_private_undefined_length_sequence_in_implicit_vr_is_read_as_a_sequence() -> None:
    data = _encode(_rich_instance(), implicit=True)
    start = data.index(b"\x09\x00\x01\x10")  # (0009,1001), written with a defined length
    length = int.from_bytes(data[start + 4 : start + 8], "little")
    items = data[start + 8 : start + 8 + length]
    delimiter = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    data = data[: start + 4] + b"\xff\xff\xff\xff" + items + delimiter + data[start + 8 + length :]

    fast = read_data_set_header(io.BytesIO(data), IMPLICIT, max_inflated_bytes=LIMIT)

    _assert_same(fast, _generic(data, IMPLICIT))
    element = fast.dataset.get_item(0x00091001)
    assert isinstance(element, DataElement) and element.is_undefined_length
    assert element.value[0].PatientID == "P"


@pytest.mark.parametrize("syntax", [EXPLICIT, IMPLICIT])
def test_one_pass_reader_reports_stream_positions_of_a_data_set_inside_a_larger_buffer(
    syntax: str,
) -> None:
    data = _encode(_rich_instance(), implicit=syntax == IMPLICIT)
    prefix = b"\x00" * 132
    stream = io.BytesIO(prefix + data)
    stream.seek(len(prefix))

    fast = read_data_set_header(stream, syntax, max_inflated_bytes=LIMIT)

    generic_stream = io.BytesIO(prefix + data)
    generic = part10._read_header(generic_stream, UID(syntax), len(prefix))
    _assert_same(fast, generic)


def test_one_pass_reader_handles_a_data_set_read_from_a_file_object(tmp_path: object) -> None:
    data = _encode(_rich_instance(), implicit=False)

    class NotBytesIO(io.BufferedReader):
        pass

    raw = io.BytesIO(b"xx" + data)
    stream = NotBytesIO(raw)
    stream.seek(2)
    fast = read_data_set_header(stream, EXPLICIT, max_inflated_bytes=LIMIT)

    _assert_same(fast, part10._read_header(io.BytesIO(b"xx" + data), UID(EXPLICIT), 2))


def test_encapsulated_pixel_data_fragments_are_walked_not_read() -> None:
    ds = make_instance(SyntheticStudy(), 0, 0)
    del ds.file_meta
    del ds.PixelData
    head = _encode(ds, implicit=False)
    # Pixel Data (explicit OB, undefined length): an empty offset table item, one fragment.
    fragments = (
        b"\xfe\xff\x00\xe0\x00\x00\x00\x00"
        + b"\xfe\xff\x00\xe0\x04\x00\x00\x00abcd"
        + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    )
    data = head + b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff" + fragments

    fast = read_data_set_header(io.BytesIO(data), EXPLICIT, max_inflated_bytes=LIMIT)

    generic = _generic(data, EXPLICIT)
    _assert_same(fast, generic)
    assert fast.pixel_data is not None and fast.pixel_data.encapsulated


@pytest.mark.parametrize("syntax", [EXPLICIT, IMPLICIT])
def test_every_truncation_is_refused_or_read_exactly_as_by_the_generic_reader(
    syntax: str,
) -> None:
    data = _encode(_rich_instance(), implicit=syntax == IMPLICIT)
    pixel_end = data.index(b"AFTER PIXEL DATA")
    cuts = [*range(0, 700), *range(pixel_end - 40, len(data))]
    for cut in cuts:
        truncated = data[:cut]
        try:
            expected: DataSetHeader | str = _generic(truncated, syntax)
        except UnreadableInstanceError as error:
            expected = str(error)
        try:
            found: DataSetHeader | str = read_data_set_header(
                io.BytesIO(truncated), syntax, max_inflated_bytes=LIMIT
            )
        except UnreadableInstanceError as error:
            found = str(error)
        if isinstance(expected, str):
            assert found == expected, cut
        else:
            assert isinstance(found, DataSetHeader), cut
            _assert_same(found, expected)


def test_unusual_encodings_are_left_to_the_generic_reader() -> None:
    data = _encode(_rich_instance(), implicit=False)

    with pytest.raises(NotHandledError):  # explicit VR bytes read as implicit VR
        read_little_endian_header(data, 0, implicit=True, stream=io.BytesIO(data), origin=0)
    unknown_vr = data[:4] + b"XX" + data[6:]
    with pytest.raises(NotHandledError):
        read_little_endian_header(
            unknown_vr, 0, implicit=False, stream=io.BytesIO(unknown_vr), origin=0
        )
