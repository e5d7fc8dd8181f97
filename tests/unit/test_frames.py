"""Frames read by byte range equal pydicom's frames; transcoded frames decode correctly."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate_extended, generate_frames
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from drimbox.dicom.frames import (
    FrameSource,
    frame_bytes,
    frame_pixels,
    locate_frames,
    transcode_frame,
)
from drimbox.dicom.transfer import transcode_part10
from drimbox.errors import NotAcceptableError, NotFoundError, UnreadableInstanceError
from tests.unit._pixel_datasets import dcmtk, make_bitmap, make_grayscale, make_rgb, part10

FRAMES = 4


class RangeReader:
    """A ``read_range`` over bytes that records every call, as a blob store would serve it."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.calls: list[tuple[int, int]] = []

    def __call__(self, start: int, length: int) -> bytes:
        self.calls.append((start, length))
        return self.data[start : start + length]

    @property
    def bytes_read(self) -> int:
        return sum(length for _, length in self.calls)


def _located(data: bytes) -> tuple[RangeReader, FrameSource]:
    return RangeReader(data), locate_frames(io.BytesIO(data))


def _pydicom_frames(data: bytes) -> list[bytes]:
    dataset = dcmread(io.BytesIO(data))
    return list(generate_frames(dataset.PixelData, number_of_frames=FRAMES))


def test_native_frames_are_read_alone_and_equal_the_decoded_frames() -> None:
    original = make_grayscale(frames=FRAMES)
    reader, location = _located(part10(original))
    frame_size = 64 * 64 * 2
    frames = list(frame_bytes(reader, location, [3, 1, 3]))
    pixels = original.pixel_array
    assert frames == [pixels[2].tobytes(), pixels[0].tobytes(), pixels[2].tobytes()]
    assert reader.bytes_read == 3 * frame_size
    np.testing.assert_array_equal(frame_pixels(frames[0], location), pixels[2])


def test_big_endian_native_frames_are_returned_little_endian() -> None:
    original = make_grayscale(frames=FRAMES)
    big_endian = transcode_part10(io.BytesIO(part10(original)), ExplicitVRBigEndian)
    reader, location = _located(big_endian)
    assert location.transfer_syntax_uid == ExplicitVRBigEndian
    frame = next(frame_bytes(reader, location, [2]))
    assert frame == original.pixel_array[1].astype("<u2").tobytes()


def test_rgb_native_frame_is_colour_by_pixel_samples() -> None:
    original = make_rgb(frames=2)
    reader, location = _located(part10(original))
    assert next(frame_bytes(reader, location, [2])) == original.pixel_array[1].tobytes()


def test_bit_packed_frames_not_on_byte_boundaries_are_repacked() -> None:
    dataset, pixels = make_bitmap()
    reader, location = _located(part10(dataset))
    for number in (1, 2, 3):
        frame = next(frame_bytes(reader, location, [number]))
        bits = np.unpackbits(np.frombuffer(frame, np.uint8), bitorder="little")[: 5 * 7]
        np.testing.assert_array_equal(bits.reshape(5, 7), pixels[number - 1])


@pytest.mark.parametrize("target", [JPEGLSLossless, RLELossless, JPEG2000Lossless, JPEGLosslessSV1])
def test_encapsulated_frames_with_offset_table_equal_pydicom_frames(target: str) -> None:
    original = make_grayscale(frames=FRAMES)
    data = transcode_part10(io.BytesIO(part10(original)), target)
    reader, location = _located(data)
    expected = _pydicom_frames(data)
    assert list(frame_bytes(reader, location, [1, 2, 3, 4])) == expected
    last = next(frame_bytes(reader, location, [FRAMES]))
    np.testing.assert_array_equal(frame_pixels(last, location), original.pixel_array[-1])


def test_reading_one_frame_reads_little_more_than_that_frame() -> None:
    data = transcode_part10(io.BytesIO(part10(make_grayscale(frames=FRAMES))), JPEGLSLossless)
    reader, location = _located(data)
    frame = next(frame_bytes(reader, location, [3]))
    table = 4 * FRAMES
    assert reader.bytes_read <= len(frame) + table + 3 * 8


@pytest.mark.parametrize(
    ("encoder", "options"),
    [
        ("dcmcjpeg", ("-ot",)),
        ("dcmcjpeg", ("+fs", "1", "-ot")),
        ("dcmcjpls", ("-ot",)),
        ("dcmcrle", ()),
        ("dcmcjpeg", ("+fs", "1")),
    ],
    ids=["one-fragment-per-frame", "fragmented", "jpeg-ls", "rle", "fragmented-with-table"],
)
def test_dcmtk_encapsulated_frames_are_found_with_or_without_offset_table(
    encoder: str, options: tuple[str, ...], tmp_path: Path
) -> None:
    original = make_grayscale(frames=FRAMES, rows=64, columns=96)
    compressed = part10(dcmtk(encoder, part10(original), tmp_path, *options))
    reader, location = _located(compressed)
    frames = list(frame_bytes(reader, location, [4, 2]))
    assert frames == [_pydicom_frames(compressed)[3], _pydicom_frames(compressed)[1]]
    np.testing.assert_array_equal(frame_pixels(frames[0], location), original.pixel_array[3])


def test_extended_offset_table_locates_frames() -> None:
    original = make_grayscale(frames=FRAMES)
    encoded = dcmread(io.BytesIO(transcode_part10(io.BytesIO(part10(original)), RLELossless)))
    fragments = _pydicom_frames(part10(encoded))
    pixel_data, offsets, lengths = encapsulate_extended(fragments)
    encoded.PixelData = pixel_data
    encoded.ExtendedOffsetTable, encoded.ExtendedOffsetTableLengths = offsets, lengths
    data = part10(encoded)
    reader, location = _located(data)
    assert location.extended_offsets is not None
    assert list(frame_bytes(reader, location, [2, 4])) == [fragments[1], fragments[3]]


@pytest.mark.parametrize("number", [0, FRAMES + 1, -1])
def test_out_of_range_frame_is_not_found_before_anything_is_read(number: int) -> None:
    reader, location = _located(part10(make_grayscale(frames=FRAMES)))
    with pytest.raises(NotFoundError, match=f"{FRAMES} frame"):
        frame_bytes(reader, location, [1, number])
    assert reader.calls == []


@pytest.mark.parametrize("target", [ExplicitVRLittleEndian, JPEGLSLossless])
def test_truncated_instance_is_unreadable(target: str) -> None:
    data = transcode_part10(io.BytesIO(part10(make_grayscale(frames=FRAMES))), target)
    reader, location = _located(data)
    truncated = RangeReader(data[: len(data) - 300])
    with pytest.raises(UnreadableInstanceError, match="truncated"):
        list(frame_bytes(truncated, location, [FRAMES]))
    assert reader.calls == []


def _frame_of(dataset: Dataset, target: str, number: int) -> tuple[bytes, FrameSource]:
    data = transcode_part10(io.BytesIO(part10(dataset)), target)
    reader, location = _located(data)
    return next(frame_bytes(reader, location, [number])), location


def test_compressed_frame_transcodes_to_native_little_endian_samples() -> None:
    original = make_grayscale(frames=FRAMES, signed=True)
    frame, location = _frame_of(original, JPEGLSLossless, 2)
    native = transcode_frame(frame, location, ExplicitVRLittleEndian)
    assert native == original.pixel_array[1].astype("<i2").tobytes()


def test_native_frame_transcodes_to_jpeg_lossless_that_decodes_exactly() -> None:
    original = make_grayscale(frames=FRAMES)
    frame, location = _frame_of(original, ExplicitVRLittleEndian, 3)
    encoded = transcode_frame(frame, location, JPEGLosslessSV1)
    as_sv1 = replace(location, transfer_syntax_uid=JPEGLosslessSV1)
    np.testing.assert_array_equal(frame_pixels(encoded, as_sv1), original.pixel_array[2])


def test_native_frame_transcodes_to_jpeg_baseline_with_window() -> None:
    original = make_grayscale(frames=FRAMES, smooth=True)
    frame, location = _frame_of(original, ExplicitVRLittleEndian, 1)
    jpeg = transcode_frame(frame, location, JPEGBaseline8Bit)
    image = Image.open(io.BytesIO(jpeg))
    assert (image.format, image.mode, image.size) == ("JPEG", "L", (64, 64))


def test_lossy_frame_is_not_served_as_lossless() -> None:
    frame, location = _frame_of(make_grayscale(frames=FRAMES), JPEGBaseline8Bit, 1)
    assert location.lossy
    with pytest.raises(NotAcceptableError):
        transcode_frame(frame, location, JPEGLSLossless)
    native = transcode_frame(frame, location, ExplicitVRLittleEndian)
    assert len(native) == 64 * 64


def test_ybr_jpeg_frame_decodes_to_rgb() -> None:
    original = make_rgb(frames=2)
    frame, location = _frame_of(original, JPEGBaseline8Bit, 2)
    assert location.photometric_interpretation == "YBR_FULL_422"
    pixels = frame_pixels(frame, location)
    assert pixels.shape == (48, 64, 3)
    assert np.abs(pixels.astype(int) - original.pixel_array[1].astype(int)).mean() < 6


def test_deflated_instance_frames_are_not_addressable() -> None:
    data = transcode_part10(io.BytesIO(part10(make_grayscale())), DeflatedExplicitVRLittleEndian)
    with pytest.raises(NotAcceptableError, match="deflated"):
        locate_frames(io.BytesIO(data))


def test_planar_rgb_native_frame_decodes_colour_by_plane() -> None:
    original = make_rgb(frames=2)
    pixels = original.pixel_array
    original.PlanarConfiguration = 1
    original.PixelData = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)).tobytes()
    reader, location = _located(part10(original))
    frame = next(frame_bytes(reader, location, [2]))
    np.testing.assert_array_equal(frame_pixels(frame, location), pixels[1])
    encoded = transcode_frame(frame, location, JPEGLSLossless)
    as_jpeg_ls = replace(location, transfer_syntax_uid=JPEGLSLossless, planar_configuration=0)
    np.testing.assert_array_equal(frame_pixels(encoded, as_jpeg_ls), pixels[1])


def test_jpeg_baseline_frame_applies_rescale_and_window_in_modality_units() -> None:
    original = make_grayscale(frames=FRAMES)
    frame, location = _frame_of(original, ExplicitVRLittleEndian, 2)
    assert location.window == (1024.0, 2048.0, "LINEAR")
    assert (location.rescale_slope, location.rescale_intercept) == (1.0, -1024.0)
    narrow = replace(location, window=(0.0, 1000.0, "LINEAR"))
    decoded = np.asarray(Image.open(io.BytesIO(transcode_frame(frame, narrow, JPEGBaseline8Bit))))
    hounsfield = original.pixel_array[1].astype(float) - 1024
    expected = np.clip(((hounsfield + 0.5) / 999 + 0.5) * 255, 0, 255)
    assert np.abs(decoded.astype(float) - expected).mean() < 3
