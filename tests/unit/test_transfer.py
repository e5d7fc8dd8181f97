"""Transfer syntax facts and Part 10 transcoding, checked by decoding and by dcmtk."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from drimbox.dicom.rendered import window_to_8_bit
from drimbox.dicom.transfer import (
    can_transcode,
    is_lossy_instance,
    transcode_part10,
    transfer_syntax_info,
)
from drimbox.errors import NotAcceptableError, UnreadableInstanceError
from tests.unit._pixel_datasets import (
    dcmtk,
    make_grayscale,
    make_rgb,
    make_structured_report,
    part10,
    psnr,
)

LOSSLESS_TARGETS = [
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
    JPEGLSLossless,
    JPEG2000Lossless,
    JPEGLosslessSV1,
]
SOURCES = {
    "grayscale-multiframe": lambda: make_grayscale(frames=3),
    "signed": lambda: make_grayscale(signed=True),
    "rgb-multiframe": lambda: make_rgb(frames=2),
}


def _transcode(dataset: Dataset | bytes, target: str) -> Dataset:
    source = dataset if isinstance(dataset, bytes) else part10(dataset)
    return dcmread(io.BytesIO(transcode_part10(io.BytesIO(source), target)))


def test_transfer_syntax_info_tells_encapsulation_loss_and_codecs() -> None:
    native = transfer_syntax_info(ExplicitVRLittleEndian)
    assert (native.encapsulated, native.lossy, native.decodable, native.encodable) == (
        False,
        False,
        True,
        True,
    )
    baseline = transfer_syntax_info(JPEGBaseline8Bit)
    assert (baseline.encapsulated, baseline.lossy, baseline.encodable) == (True, True, True)
    assert transfer_syntax_info(JPEGLosslessSV1).encodable
    assert transfer_syntax_info(JPEGLSLossless).encodable
    process_14 = transfer_syntax_info(JPEGLossless)
    assert process_14.decodable and not process_14.encodable
    assert transfer_syntax_info(JPEG2000).lossy
    unknown = transfer_syntax_info("1.2.3.4")
    assert not unknown.decodable and not unknown.encodable


def test_can_transcode_refuses_lossless_compression_of_lossy_source_only() -> None:
    assert can_transcode(JPEGBaseline8Bit, ExplicitVRLittleEndian)
    assert can_transcode(JPEGBaseline8Bit, JPEGBaseline8Bit)
    assert not can_transcode(JPEGBaseline8Bit, JPEGLSLossless)
    assert not can_transcode(JPEG2000, RLELossless)
    assert can_transcode(JPEG2000, RLELossless, lossy_source=False)
    assert can_transcode(ExplicitVRLittleEndian, JPEGLosslessSV1)
    assert not can_transcode(ExplicitVRLittleEndian, JPEGLossless)
    assert not can_transcode("1.2.3.4", ExplicitVRLittleEndian)


@pytest.mark.parametrize("target", LOSSLESS_TARGETS, ids=lambda uid: UID(uid).keyword)
@pytest.mark.parametrize("source_name", SOURCES)
def test_lossless_transcoding_round_trips_pixels_exactly(source_name: str, target: str) -> None:
    original = SOURCES[source_name]()
    transcoded = _transcode(original, target)
    assert transcoded.file_meta.TransferSyntaxUID == target
    assert transcoded.SOPInstanceUID == original.SOPInstanceUID
    assert "LossyImageCompression" not in transcoded
    np.testing.assert_array_equal(transcoded.pixel_array, original.pixel_array)
    back = _transcode(part10(transcoded), ExplicitVRLittleEndian)
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    np.testing.assert_array_equal(back.pixel_array, original.pixel_array)


def test_jpeg_baseline_of_smooth_12_bit_image_is_windowed_and_above_40_db() -> None:
    original = make_grayscale(smooth=True, rows=128, columns=128)
    transcoded = _transcode(original, JPEGBaseline8Bit)
    expected = window_to_8_bit(original.pixel_array.astype(float) - 1024, (1024, 2048, "LINEAR"))
    decoded = transcoded.pixel_array
    assert decoded.dtype == np.uint8
    assert psnr(expected, decoded, 255) > 40
    assert transcoded.SOPInstanceUID == original.SOPInstanceUID
    assert (transcoded.BitsAllocated, transcoded.BitsStored, transcoded.HighBit) == (8, 8, 7)
    assert transcoded.LossyImageCompression == "01"
    assert transcoded.LossyImageCompressionMethod == "ISO_10918_1"
    assert float(transcoded.LossyImageCompressionRatio) > 1
    assert (transcoded.RescaleSlope, transcoded.RescaleIntercept) == (1, 0)
    assert is_lossy_instance(transcoded)


def test_jpeg_baseline_of_rgb_is_ybr_full_422_and_decodes_close_to_rgb() -> None:
    original = make_rgb(frames=2)
    transcoded = _transcode(original, JPEGBaseline8Bit)
    assert transcoded.PhotometricInterpretation == "YBR_FULL_422"
    assert transcoded.NumberOfFrames == 2
    assert psnr(original.pixel_array, transcoded.pixel_array, 255) > 25


def test_lossy_source_is_refused_as_lossless_but_served_uncompressed() -> None:
    lossy = transcode_part10(io.BytesIO(part10(make_grayscale())), JPEGBaseline8Bit)
    for target in (JPEGLSLossless, RLELossless, JPEGLosslessSV1, JPEG2000Lossless):
        with pytest.raises(NotAcceptableError, match="lossy"):
            transcode_part10(io.BytesIO(lossy), target)
    native = _transcode(lossy, ExplicitVRLittleEndian)
    assert native.LossyImageCompression == "01"
    np.testing.assert_array_equal(native.pixel_array, dcmread(io.BytesIO(lossy)).pixel_array)


@pytest.mark.parametrize(
    "target",
    [ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian],
    ids=lambda uid: UID(uid).keyword,
)
def test_non_image_object_converts_between_uncompressed_syntaxes(target: str) -> None:
    report = make_structured_report()
    transcoded = _transcode(report, target)
    assert transcoded.file_meta.TransferSyntaxUID == target
    assert transcoded.ContentSequence[0].TextValue == "No abnormality — énoncé accentué."
    assert _transcode(part10(transcoded), ExplicitVRLittleEndian).SOPInstanceUID == (
        report.SOPInstanceUID
    )


def test_non_image_object_cannot_be_compressed() -> None:
    with pytest.raises(NotAcceptableError, match="no"):
        transcode_part10(io.BytesIO(part10(make_structured_report())), JPEGLSLossless)


def test_unencodable_target_is_not_acceptable() -> None:
    with pytest.raises(NotAcceptableError, match=JPEGLossless):
        transcode_part10(io.BytesIO(part10(make_grayscale())), JPEGLossless)


def test_garbage_is_unreadable() -> None:
    with pytest.raises(UnreadableInstanceError):
        transcode_part10(io.BytesIO(b"not dicom at all" * 20), ExplicitVRLittleEndian)


def test_same_syntax_returns_the_instance_unchanged_in_content() -> None:
    original = make_grayscale(frames=2)
    same = _transcode(original, ExplicitVRLittleEndian)
    np.testing.assert_array_equal(same.pixel_array, original.pixel_array)


@pytest.mark.parametrize(
    ("target", "decoder"),
    [(JPEGLosslessSV1, "dcmdjpeg"), (JPEGLSLossless, "dcmdjpls"), (RLELossless, "dcmdrle")],
)
@pytest.mark.parametrize("source_name", ["grayscale-multiframe", "rgb-multiframe"])
def test_dcmtk_decodes_our_lossless_output_to_the_original_pixels(
    source_name: str, target: str, decoder: str, tmp_path: Path
) -> None:
    original = SOURCES[source_name]()
    encoded = transcode_part10(io.BytesIO(part10(original)), target)
    decoded = dcmtk(decoder, encoded, tmp_path)
    assert decoded.file_meta.TransferSyntaxUID in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
    np.testing.assert_array_equal(decoded.pixel_array, original.pixel_array)


def test_dcmtk_decodes_our_jpeg_baseline_like_pydicom(tmp_path: Path) -> None:
    encoded = transcode_part10(io.BytesIO(part10(make_grayscale(smooth=True))), JPEGBaseline8Bit)
    decoded = dcmtk("dcmdjpeg", encoded, tmp_path)
    ours = dcmread(io.BytesIO(encoded)).pixel_array
    assert np.abs(decoded.pixel_array.astype(int) - ours.astype(int)).max() <= 1


@pytest.mark.parametrize(
    ("encoder", "options"),
    [("dcmcjpls", ()), ("dcmcjpeg", ()), ("dcmcrle", ()), ("dcmcjpeg", ("+fs", "1", "-ot"))],
    ids=["jpeg-ls", "jpeg-lossless-sv1", "rle", "jpeg-fragmented-no-offset-table"],
)
def test_dcmtk_compressed_instances_decompress_to_the_original_pixels(
    encoder: str, options: tuple[str, ...], tmp_path: Path
) -> None:
    original = make_grayscale(frames=3)
    compressed = dcmtk(encoder, part10(original), tmp_path, *options)
    assert compressed.file_meta.TransferSyntaxUID != ExplicitVRLittleEndian
    native = _transcode(part10(compressed), ExplicitVRLittleEndian)
    np.testing.assert_array_equal(native.pixel_array, original.pixel_array)


@pytest.mark.parametrize(("bits", "signed"), [(16, False), (16, True), (8, False), (2, False)])
def test_jpeg_lossless_sv1_holds_extreme_differences_at_every_precision(
    bits: int, signed: bool, tmp_path: Path
) -> None:
    original = make_grayscale(rows=32, columns=40)
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    pixels = np.where((np.indices((32, 40)).sum(axis=0) % 3) == 0, low, high)
    dtype = np.dtype(f"{'i' if signed else 'u'}{2 if bits > 8 else 1}")
    allocated = dtype.itemsize * 8
    original.BitsAllocated, original.BitsStored, original.HighBit = allocated, bits, bits - 1
    original.PixelRepresentation = int(signed)
    original.PixelData = pixels.astype(dtype).tobytes()
    encoded = transcode_part10(io.BytesIO(part10(original)), JPEGLosslessSV1)
    np.testing.assert_array_equal(dcmread(io.BytesIO(encoded)).pixel_array, pixels)
    np.testing.assert_array_equal(dcmtk("dcmdjpeg", encoded, tmp_path).pixel_array, pixels)
