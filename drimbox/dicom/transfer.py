"""Transfer syntaxes: what the box can decode and encode, and Part 10 transcoding.

DICOMweb serves an instance in the transfer syntax the ``Accept`` header asks for (PS3.18
§8.7.3.5); when that is not the stored one, :func:`transcode_part10` re-encodes it, one instance
at a time, in memory.

What is encoded here (pydicom 3.0.2 and its plugins):

- native: Implicit VR Little Endian, Explicit VR Little Endian, Explicit VR Big Endian (retired but
  written by pydicom; the pixel bytes are swapped here), Deflated Explicit VR Little Endian;
- RLE Lossless (pylibjpeg-rle or pydicom), JPEG-LS Lossless (pyjpegls), JPEG 2000 Lossless
  (pylibjpeg-openjpeg; frames of at least 32 x 32 pixels);
- JPEG Lossless SV1 (our :mod:`drimbox.dicom._jpeg_lossless`; nothing installed encodes it);
- JPEG Baseline 8-bit (Pillow), lossy.

Everything pydicom can decode is decodable (JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000,
HTJ2K, RLE).

Lossy policy
------------
A lossy-compressed source is never served in a lossless *compressed* syntax: that would claim a
fidelity it does not have (PS3.18 §8.7.3.5.2; PS3.5 §8.2). It may be decompressed to a native
syntax; Lossy Image Compression (0028,2110) stays "01" and tells the truth.

Transcoding to JPEG baseline keeps the SOP Instance UID. A new UID is what PS3.3 §C.7.6.1.1.5
asks of a *new stored object* derived by lossy compression; a DICOMweb response in an accepted
lossy syntax is a representation of the same instance chosen by the user agent, as a lossy
transfer syntax negotiated on a DIMSE association is (PS3.5 §8.2). Lossy Image Compression is set
to "01" and a ratio and method (ISO_10918_1) are appended (PS3.3 §C.7.6.1.1.5), so the receiver
knows. More than 8 bits per sample are reduced to 8 with the Modality LUT and the data set's VOI
(else the instance's minimum/maximum), and the VOI/Modality attributes are reset to identity.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, BinaryIO, Final, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image
from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.errors import InvalidDicomError
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.encoders.base import get_encoder
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from drimbox.dicom._jpeg_lossless import encode_jpeg_lossless_sv1
from drimbox.dicom.rendered import (
    DEFAULT_JPEG_QUALITY,
    grayscale_to_8_bit,
)
from drimbox.errors import NotAcceptableError, UnreadableInstanceError

__all__ = [
    "DEFAULT_JPEG_QUALITY",
    "NATIVE_TRANSFER_SYNTAXES",
    "TransferSyntaxInfo",
    "can_transcode",
    "encode_frame",
    "is_lossy_instance",
    "transcode_part10",
    "transfer_syntax_info",
]

NATIVE_TRANSFER_SYNTAXES: Final = frozenset(
    {
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
    }
)
"""Syntaxes with Pixel Data not encapsulated (PS3.5 §A.1-A.5)."""

_ALWAYS_LOSSY: Final = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSNearLossless})
_MAYBE_LOSSY: Final = frozenset({JPEG2000, HTJ2K})
"""Syntaxes allowing both; Lossy Image Compression (0028,2110) says which (absent = lossy)."""

_PYDICOM_ENCODED: Final = frozenset({RLELossless, JPEGLSLossless, JPEG2000Lossless})
_ENCODED_HERE: Final = frozenset({JPEGBaseline8Bit, JPEGLosslessSV1})

LOSSY_IMAGE_COMPRESSION_YES: Final = "01"
"""Lossy Image Compression (0028,2110) enumerated value (PS3.3 §C.7.6.1.1.5)."""
LOSSY_METHOD_JPEG: Final = "ISO_10918_1"
"""Lossy Image Compression Method (0028,2114) defined term for JPEG (PS3.3 §C.7.6.1.1.5.1)."""
_PIXEL_DATA_ENCAPSULATED_VR: Final = "OB"
_PILLOW_SUBSAMPLING_422: Final = 1
"""Pillow's 4:2:2 chroma subsampling, matching YBR_FULL_422 (PS3.3 §C.7.6.3.1.2)."""
_UINT8_MAX: Final = 255


@dataclass(frozen=True, slots=True)
class TransferSyntaxInfo:
    """What the box knows and can do with one transfer syntax.

    Attributes
    ----------
    uid
        The transfer syntax UID.
    encapsulated
        Pixel Data is a sequence of fragments (PS3.5 §A.4).
    lossy
        Pixel data in this syntax may have been compressed with loss: an instance in it is
        treated as lossy unless the syntax allows both and Lossy Image Compression says "00".
    decodable
        Pixel data in this syntax can be decoded here.
    encodable
        Pixel data can be encoded into this syntax here.
    """

    uid: UID
    encapsulated: bool
    lossy: bool
    decodable: bool
    encodable: bool


def transfer_syntax_info(transfer_syntax: str) -> TransferSyntaxInfo:
    """Return the facts about ``transfer_syntax`` (unknown UIDs are neither en- nor decodable)."""
    uid = UID(transfer_syntax)
    if uid in NATIVE_TRANSFER_SYNTAXES:
        return TransferSyntaxInfo(uid, False, False, True, True)
    lossy = uid in _ALWAYS_LOSSY or uid in _MAYBE_LOSSY
    decodable = _available(get_decoder, uid)
    encodable = uid in _ENCODED_HERE or (uid in _PYDICOM_ENCODED and _available(get_encoder, uid))
    return TransferSyntaxInfo(uid, True, lossy, decodable, encodable)


def _available(factory: Any, uid: UID) -> bool:
    try:
        return bool(factory(uid).is_available)
    except NotImplementedError:
        return False


def can_transcode(source_ts: str, target_ts: str, *, lossy_source: bool | None = None) -> bool:
    """Tell whether pixel data in ``source_ts`` can be served in ``target_ts``.

    Parameters
    ----------
    source_ts, target_ts
        Transfer syntax UIDs.
    lossy_source
        Whether the instance is lossy (see :func:`is_lossy_instance`); ``None`` judges from the
        source syntax alone.

    Returns
    -------
    bool
        ``True`` when identical, or when the source decodes, the target encodes, and a lossy
        source is not being passed off as lossless-compressed.
    """
    source, target = transfer_syntax_info(source_ts), transfer_syntax_info(target_ts)
    if source.uid == target.uid:
        return True
    if not (source.decodable and target.encodable):
        return False
    lossy = source.lossy if lossy_source is None else lossy_source
    lossless_compressed_target = target.encapsulated and not target.lossy
    return not (lossy and lossless_compressed_target)


def is_lossy_instance(dataset: Dataset) -> bool:
    """Tell whether ``dataset``'s pixels have undergone lossy compression (PS3.3 §C.7.6.1.1.5)."""
    flag = str(dataset.get("LossyImageCompression", "") or "")
    transfer_syntax = UID(dataset.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian))
    if flag == LOSSY_IMAGE_COMPRESSION_YES or transfer_syntax in _ALWAYS_LOSSY:
        return True
    return transfer_syntax in _MAYBE_LOSSY and flag != "00"


def transcode_part10(
    source: BinaryIO, target_ts: str, *, quality: int = DEFAULT_JPEG_QUALITY
) -> bytes:
    """Re-encode a stored Part 10 instance in ``target_ts``.

    Parameters
    ----------
    source
        The Part 10 file, positioned at its start (read whole: one instance in memory).
    target_ts
        The transfer syntax UID to produce.
    quality
        JPEG baseline quality, 1 to 100.

    Returns
    -------
    bytes
        A Part 10 file whose File Meta Transfer Syntax UID is ``target_ts``.

    Raises
    ------
    UnreadableInstanceError
        ``source`` is not a readable Part 10 file, or its pixel data does not decode.
    NotAcceptableError
        The conversion is impossible: unknown or unencodable target, lossless requested from a
        lossy source, compression requested for an object without Pixel Data, or a photometric
        interpretation JPEG baseline cannot hold.
    """
    try:
        dataset = dcmread(source)
        source_ts = UID(dataset.file_meta.TransferSyntaxUID)
    except (InvalidDicomError, EOFError, OSError, ValueError, AttributeError, KeyError) as exc:
        raise UnreadableInstanceError(f"not a readable DICOM Part 10 instance: {exc}") from exc
    target = transfer_syntax_info(target_ts)
    if target.uid == source_ts:
        return _write(dataset)
    if not target.encodable:
        raise NotAcceptableError(f"cannot encode transfer syntax {target.uid} ({target.uid.name})")
    if "PixelData" not in dataset:
        if target.encapsulated:
            raise NotAcceptableError(
                f"{target.uid.name} needs Pixel Data; this object has none: ask for a native syntax"
            )
        dataset.file_meta.TransferSyntaxUID = target.uid
        return _write(dataset)
    lossy = is_lossy_instance(dataset)
    if not can_transcode(source_ts, target.uid, lossy_source=lossy):
        raise NotAcceptableError(
            f"cannot serve {source_ts.name} pixel data as {target.uid.name}"
            + (": the source is lossy-compressed (PS3.18 §8.7.3.5.2)" if lossy else "")
        )
    if transfer_syntax_info(source_ts).encapsulated:
        try:
            dataset.decompress(generate_instance_uid=False)
        except Exception as exc:  # pydicom raises plain RuntimeError/ValueError from plugins
            raise UnreadableInstanceError(f"pixel data does not decode: {exc}") from exc
    if not target.encapsulated:
        _set_native_byte_order(dataset, big_endian=target.uid == ExplicitVRBigEndian)
        dataset.file_meta.TransferSyntaxUID = target.uid
    elif target.uid in _PYDICOM_ENCODED:
        _set_native_byte_order(dataset, big_endian=False)
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        try:
            dataset.compress(target.uid, generate_instance_uid=False)
        except (RuntimeError, ValueError) as exc:
            raise NotAcceptableError(f"{target.uid.name} cannot encode this image: {exc}") from exc
    else:
        _encode_here(dataset, target.uid, quality)
    return _write(dataset)


def _write(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    # dcmwrite, unlike save_as, may change the byte order; the encoding follows the file meta.
    dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def _set_native_byte_order(dataset: Dataset, *, big_endian: bool) -> None:
    """Swap native Pixel Data bytes when the byte order changes (PS3.5 §7.3)."""
    source_big = dataset.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    bits = int(dataset.get("BitsAllocated", 8))
    if source_big != big_endian and bits > 8:
        unit = np.dtype(f"u{bits // 8}")
        words = np.frombuffer(dataset.PixelData, dtype=unit)
        dataset.PixelData = words.byteswap().tobytes()


def _frames_of(dataset: Dataset) -> npt.NDArray[Any]:
    """All frames as ``(frames, rows, columns[, samples])``."""
    pixels = dataset.pixel_array
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    return pixels if frames > 1 else pixels[np.newaxis, ...]


def _encode_here(dataset: Dataset, target: UID, quality: int) -> None:
    """Encode to JPEG baseline (Pillow) or JPEG lossless SV1 (ours), frame by frame."""
    if dataset.PhotometricInterpretation == "PALETTE COLOR":
        raise NotAcceptableError("PALETTE COLOR images are not transcoded to JPEG here")
    frames = _frames_of(dataset)
    original_size = len(dataset.PixelData)
    if target == JPEGBaseline8Bit:
        frames = _reduce_to_8_bit(dataset, frames)
    bits_stored = int(dataset.BitsStored)
    photometric = str(dataset.PhotometricInterpretation)
    fragments = [
        encode_frame(
            frame,
            target,
            bits_stored=bits_stored,
            photometric_interpretation=photometric,
            quality=quality,
        )
        for frame in frames
    ]
    dataset.PixelData = encapsulate(fragments, has_bot=True)
    dataset["PixelData"].VR = _PIXEL_DATA_ENCAPSULATED_VR
    dataset["PixelData"].is_undefined_length = True
    dataset.file_meta.TransferSyntaxUID = target
    if "PlanarConfiguration" in dataset:
        dataset.PlanarConfiguration = 0
    if target == JPEGBaseline8Bit:
        if int(dataset.SamplesPerPixel) == 3:
            dataset.PhotometricInterpretation = "YBR_FULL_422"
        compressed = sum(len(fragment) for fragment in fragments)
        _record_lossy(dataset, original_size / max(compressed, 1))


def _record_lossy(dataset: Dataset, ratio: float) -> None:
    """Set Lossy Image Compression and append ratio and method (PS3.3 §C.7.6.1.1.5)."""
    was_lossy = dataset.get("LossyImageCompression") == LOSSY_IMAGE_COMPRESSION_YES
    ratios = list(dataset.get("LossyImageCompressionRatio", [])) if was_lossy else []
    methods = list(dataset.get("LossyImageCompressionMethod", [])) if was_lossy else []
    dataset.LossyImageCompression = LOSSY_IMAGE_COMPRESSION_YES
    dataset.LossyImageCompressionRatio = [*ratios, f"{ratio:.2f}"[:16]]
    dataset.LossyImageCompressionMethod = [*methods, LOSSY_METHOD_JPEG]


def _reduce_to_8_bit(dataset: Dataset, frames: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """Bring every frame to 8 unsigned bits for JPEG baseline, updating the Image Pixel module."""
    bits_stored = int(dataset.BitsStored)
    signed = int(dataset.get("PixelRepresentation", 0)) == 1
    if int(dataset.SamplesPerPixel) > 1:
        shift = max(bits_stored - 8, 0)
        reduced = (frames >> shift).astype(np.uint8)
    elif bits_stored <= 8 and not signed:
        reduced = frames.astype(np.uint8)
    else:
        # One VOI for all frames: the data set's window, else the instance's min/max.
        reduced = grayscale_to_8_bit(frames, dataset)
        for keyword in ("WindowCenter", "WindowWidth", "VOILUTFunction", "VOILUTSequence"):
            dataset.pop(keyword, None)
        dataset.pop("ModalityLUTSequence", None)
        if "RescaleSlope" in dataset or "RescaleIntercept" in dataset:
            dataset.RescaleSlope, dataset.RescaleIntercept = 1, 0
        dataset.WindowCenter, dataset.WindowWidth = 128, 256
        bits_stored = 8
    dataset.BitsAllocated = 8
    dataset.BitsStored = min(bits_stored, 8)
    dataset.HighBit = dataset.BitsStored - 1
    dataset.PixelRepresentation = 0
    return reduced


def encode_frame(
    pixels: npt.NDArray[Any],
    target_ts: str,
    *,
    bits_stored: int,
    photometric_interpretation: str,
    quality: int = DEFAULT_JPEG_QUALITY,
) -> bytes:
    """Encode one decoded frame into ``target_ts`` (the bytes of one frame, not a Part 10 file).

    Parameters
    ----------
    pixels
        ``(rows, columns)`` or ``(rows, columns, samples)``, colour-by-pixel. For JPEG baseline it
        must already be 8-bit unsigned (see :func:`drimbox.dicom.rendered.grayscale_to_8_bit`).
    target_ts
        Transfer syntax UID of the result; native syntaxes give the raw little-endian (or, for
        Explicit VR Big Endian, big-endian) sample bytes.
    bits_stored, photometric_interpretation
        The Image Pixel module values describing ``pixels``.
    quality
        JPEG baseline quality, 1 to 100.

    Raises
    ------
    NotAcceptableError
        The syntax cannot be encoded here, or cannot hold this frame.
    """
    target = UID(target_ts)
    if target in NATIVE_TRANSFER_SYNTAXES:
        order: Literal[">", "<"] = ">" if target == ExplicitVRBigEndian else "<"
        return pixels.astype(pixels.dtype.newbyteorder(order)).tobytes()
    if target == JPEGBaseline8Bit:
        if pixels.dtype != np.uint8:
            raise NotAcceptableError("JPEG baseline holds 8-bit unsigned samples only")
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(
            buffer, "JPEG", quality=quality, subsampling=_PILLOW_SUBSAMPLING_422
        )
        return buffer.getvalue()
    if target == JPEGLosslessSV1:
        return encode_jpeg_lossless_sv1(pixels, max(bits_stored, 2))
    if target not in _PYDICOM_ENCODED or not _available(get_encoder, target):
        raise NotAcceptableError(f"cannot encode transfer syntax {target} here")
    samples = 1 if pixels.ndim == 2 else int(pixels.shape[2])
    try:
        return bytes(
            get_encoder(target).encode(
                pixels,
                rows=int(pixels.shape[0]),
                columns=int(pixels.shape[1]),
                samples_per_pixel=samples,
                bits_allocated=pixels.dtype.itemsize * 8,
                bits_stored=bits_stored,
                pixel_representation=int(pixels.dtype.kind == "i"),
                photometric_interpretation=photometric_interpretation,
                number_of_frames=1,
                planar_configuration=0,
            )
        )
    except (RuntimeError, ValueError) as exc:
        raise NotAcceptableError(f"{target.name} cannot encode this frame: {exc}") from exc
