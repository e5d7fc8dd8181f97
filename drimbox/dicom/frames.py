"""Frames of stored instances, read by byte range without decoding (PS3.18 §9.5.1.2.2 frames).

A :class:`FrameSource` says where Pixel Data sits in a stored Part 10 file; :func:`frame_bytes`
then reads only the bytes of the requested frames through a ``read_range(start, length)``
callable (a blob store range read), so serving frame 200 of a 500-frame instance reads one frame.
When the user agent wants another transfer syntax, :func:`transcode_frame` decodes that frame
and encodes it again (e.g. uncompressed ``application/octet-stream`` from a JPEG 2000 source,
or JPEG from a native one).

Native frames are returned little endian (an Explicit VR Big Endian source is byte-swapped), as
``application/octet-stream`` bulk data is (PS3.18 §8.7.3.3.2). 1-bit frames (Bits Allocated 1,
packed across frame boundaries, PS3.5 §8.1.1) are re-packed to start on a byte.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Final

import numpy as np
import numpy.typing as npt
from pydicom import dcmread
from pydicom.encaps import encapsulate
from pydicom.errors import InvalidDicomError
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

from drimbox.dicom.rendered import Window, dataset_window, window_to_8_bit
from drimbox.dicom.transfer import (
    DEFAULT_JPEG_QUALITY,
    can_transcode,
    encode_frame,
    transfer_syntax_info,
)
from drimbox.errors import NotAcceptableError, NotFoundError, UnreadableInstanceError

__all__ = [
    "FrameSource",
    "ReadRange",
    "frame_bytes",
    "frame_pixels",
    "locate_frames",
    "transcode_frame",
]

ReadRange = Callable[[int, int], bytes]
"""``read_range(start, length)``: ``length`` bytes of the stored file from byte ``start``."""

_ITEM_TAG: Final = (0xFFFE, 0xE000)
"""Item (FFFE,E000), PS3.5 §7.5."""
_SEQUENCE_DELIMITER_TAG: Final = (0xFFFE, 0xE0DD)
"""Sequence Delimitation Item (FFFE,E0DD), PS3.5 §7.5."""
_ITEM_HEADER: Final = struct.Struct("<HHI")
_OFFSET: Final = struct.Struct("<I")
_FRAME_START_MARKERS: Final = (b"\xff\xd8", b"\xff\x4f\xff\x51")
"""JPEG / JPEG-LS SOI (ITU-T T.81 §B.1.1.3) and JPEG 2000 SOC+SIZ (ITU-T T.800 §A.4.1)."""
_MARKER_PEEK: Final = 4


@dataclass(frozen=True, slots=True)
class FrameSource:
    """Where and how the frames of one stored instance are encoded.

    Attributes
    ----------
    transfer_syntax_uid
        Transfer syntax of the stored file.
    pixel_data_offset
        Byte offset in the stored file of the Pixel Data (7FE0,0010) *value*: for a native syntax
        the first pixel byte; for an encapsulated syntax the first item, i.e. the Basic Offset
        Table item's tag (PS3.5 §A.4). pydicom gives it as ``DataElement.file_tell`` of Pixel
        Data after ``dcmread(..., defer_size=...)`` (see :func:`locate_frames`). Not defined for
        Deflated Explicit VR Little Endian, whose bytes are compressed as a whole.
    rows, columns, samples_per_pixel, bits_allocated, number_of_frames
        Image Pixel module values (PS3.3 §C.7.6.3); Number of Frames is 1 when absent.
    bits_stored, pixel_representation, photometric_interpretation, planar_configuration
        Needed only to decode (:func:`frame_pixels`); Bits Stored defaults to Bits Allocated.
    extended_offsets, extended_lengths
        Extended Offset Table (7FE0,0001) and its lengths (7FE0,0002), when the file has them.
    lossy
        Lossy Image Compression (0028,2110) is "01"; ``None`` judges from the syntax.
    window, rescale_slope, rescale_intercept
        VOI window (Window Center/Width, in modality units as stored in the data set) and
        Rescale Slope/Intercept (0028,1053)/(0028,1052), used to reduce more than 8 bits to
        JPEG baseline (PS3.3 §C.11.1, §C.11.2); without a window the frame's minimum/maximum
        span the output.
    """

    transfer_syntax_uid: str
    pixel_data_offset: int
    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    number_of_frames: int = 1
    bits_stored: int | None = None
    pixel_representation: int = 0
    photometric_interpretation: str = "MONOCHROME2"
    planar_configuration: int = 0
    extended_offsets: tuple[int, ...] | None = None
    extended_lengths: tuple[int, ...] | None = None
    lossy: bool | None = None
    window: Window | None = None
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0

    @property
    def samples_per_frame(self) -> int:
        """Samples in one frame."""
        return self.rows * self.columns * self.samples_per_pixel


def locate_frames(part10: BinaryIO) -> FrameSource:
    """Describe the frames of a Part 10 file (reads the header, skips large values).

    Raises
    ------
    UnreadableInstanceError
        Not DICOM, or no Pixel Data.
    NotAcceptableError
        Deflated syntax: frames cannot be addressed by byte range.
    """
    try:
        dataset = dcmread(part10, defer_size=1024)
        transfer_syntax = UID(dataset.file_meta.TransferSyntaxUID)
        element = dataset.get_item("PixelData")
    except (InvalidDicomError, EOFError, OSError, ValueError, AttributeError) as exc:
        raise UnreadableInstanceError(f"not a readable DICOM Part 10 instance: {exc}") from exc
    if element is None:
        raise UnreadableInstanceError("the instance has no Pixel Data")
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        raise NotAcceptableError("frames of a deflated instance cannot be read by byte range")
    offsets = lengths = None
    if "ExtendedOffsetTable" in dataset and "ExtendedOffsetTableLengths" in dataset:
        offsets = struct.unpack(
            f"<{len(dataset.ExtendedOffsetTable) // 8}Q", dataset.ExtendedOffsetTable
        )
        lengths = struct.unpack(
            f"<{len(dataset.ExtendedOffsetTableLengths) // 8}Q", dataset.ExtendedOffsetTableLengths
        )
    # A deferred DataElement gives its value position as file_tell, a raw one as value_tell.
    tell = getattr(element, "file_tell", None) or getattr(element, "value_tell", None)
    if tell is None:
        raise UnreadableInstanceError("the position of Pixel Data in the file is unknown")
    return FrameSource(
        transfer_syntax_uid=transfer_syntax,
        pixel_data_offset=int(tell),
        rows=int(dataset.Rows),
        columns=int(dataset.Columns),
        samples_per_pixel=int(dataset.get("SamplesPerPixel", 1)),
        bits_allocated=int(dataset.BitsAllocated),
        number_of_frames=int(dataset.get("NumberOfFrames", 1) or 1),
        bits_stored=int(dataset.get("BitsStored", dataset.BitsAllocated)),
        pixel_representation=int(dataset.get("PixelRepresentation", 0)),
        photometric_interpretation=str(dataset.get("PhotometricInterpretation", "MONOCHROME2")),
        planar_configuration=int(dataset.get("PlanarConfiguration", 0) or 0),
        extended_offsets=offsets,
        extended_lengths=lengths,
        lossy=dataset.get("LossyImageCompression") == "01" or None,
        window=dataset_window(dataset),
        rescale_slope=float(dataset.get("RescaleSlope", 1) or 1),
        rescale_intercept=float(dataset.get("RescaleIntercept", 0) or 0),
    )


def frame_bytes(
    read_range: ReadRange, location: FrameSource, frame_numbers: list[int]
) -> Iterator[bytes]:
    """Yield the stored bytes of each requested frame, in the order asked, without decoding.

    Parameters
    ----------
    read_range
        Reads ``length`` bytes from ``start`` of the stored file.
    location
        Where the frames are.
    frame_numbers
        1-based frame numbers (PS3.18 §10.4.1.1.3); repeats are served again.

    Returns
    -------
    Iterator of bytes
        One item per frame: the native samples, or the frame's whole code stream (its fragments
        joined) for an encapsulated syntax.

    Raises
    ------
    NotFoundError
        A frame number is out of range; raised here, before anything is read.
    UnreadableInstanceError
        (while iterating) The stored bytes are truncated or the fragments cannot be matched to
        frames.
    """
    for number in frame_numbers:
        if not 1 <= number <= location.number_of_frames:
            raise NotFoundError(
                f"frame {number} does not exist: the instance has "
                f"{location.number_of_frames} frame(s)"
            )
    if location.transfer_syntax_uid == DeflatedExplicitVRLittleEndian:
        raise NotAcceptableError("frames of a deflated instance cannot be read by byte range")
    if transfer_syntax_info(location.transfer_syntax_uid).encapsulated:
        return _encapsulated_frames(read_range, location, frame_numbers)
    return _native_frames(read_range, location, frame_numbers)


def _read(read_range: ReadRange, start: int, length: int) -> bytes:
    data = read_range(start, length)
    if len(data) != length:
        raise UnreadableInstanceError(
            f"stored instance is truncated: wanted {length} bytes at {start}, got {len(data)}"
        )
    return data


def _native_frames(
    read_range: ReadRange, location: FrameSource, frame_numbers: list[int]
) -> Iterator[bytes]:
    if location.bits_allocated == 1:
        yield from _bit_packed_frames(read_range, location, frame_numbers)
        return
    frame_length = location.samples_per_frame * location.bits_allocated // 8
    swap = location.transfer_syntax_uid == ExplicitVRBigEndian and location.bits_allocated > 8
    for number in frame_numbers:
        data = _read(
            read_range, location.pixel_data_offset + (number - 1) * frame_length, frame_length
        )
        if swap:
            unit = np.dtype(f"u{location.bits_allocated // 8}")
            data = np.frombuffer(data, dtype=unit).byteswap().tobytes()
        yield data


def _bit_packed_frames(
    read_range: ReadRange, location: FrameSource, frame_numbers: list[int]
) -> Iterator[bytes]:
    """1-bit frames: bits are packed little-endian-first across frames (PS3.5 §8.1.1)."""
    bits = location.samples_per_frame
    for number in frame_numbers:
        first_bit = (number - 1) * bits
        start, skip = divmod(first_bit, 8)
        length = (skip + bits + 7) // 8
        raw = np.frombuffer(_read(read_range, location.pixel_data_offset + start, length), np.uint8)
        frame_bits = np.unpackbits(raw, bitorder="little")[skip : skip + bits]
        yield np.packbits(frame_bits, bitorder="little").tobytes()


def _item(read_range: ReadRange, position: int) -> tuple[tuple[int, int], int]:
    group, element, length = _ITEM_HEADER.unpack(_read(read_range, position, _ITEM_HEADER.size))
    return (group, element), length


def _encapsulated_frames(
    read_range: ReadRange, location: FrameSource, frame_numbers: list[int]
) -> Iterator[bytes]:
    tag, table_length = _item(read_range, location.pixel_data_offset)
    if tag != _ITEM_TAG:
        raise UnreadableInstanceError("encapsulated Pixel Data does not start with an item")
    first_fragment = location.pixel_data_offset + _ITEM_HEADER.size + table_length
    frames: list[list[tuple[int, int]]] | None = None
    offsets: tuple[int, ...] | list[int] | None = location.extended_offsets
    if offsets is None and table_length:
        table = _read(read_range, location.pixel_data_offset + _ITEM_HEADER.size, table_length)
        offsets = [value for (value,) in _OFFSET.iter_unpack(table)]
    if offsets is not None and len(offsets) != location.number_of_frames:
        raise UnreadableInstanceError(
            f"the offset table has {len(offsets)} entries for {location.number_of_frames} frames"
        )
    for number in frame_numbers:
        if offsets is not None:
            start = first_fragment + offsets[number - 1]
            end = first_fragment + offsets[number] if number < len(offsets) else None
            fragments = _fragments(read_range, start, end)
        else:
            frames = frames or _group_fragments(read_range, location, first_fragment)
            fragments = frames[number - 1]
        yield b"".join(_read(read_range, position, length) for position, length in fragments)


def _fragments(read_range: ReadRange, start: int, end: int | None) -> list[tuple[int, int]]:
    """(value position, length) of each fragment from ``start`` to ``end`` or the delimiter."""
    fragments = []
    position = start
    while end is None or position < end:
        tag, length = _item(read_range, position)
        if tag == _SEQUENCE_DELIMITER_TAG:
            break
        if tag != _ITEM_TAG:
            raise UnreadableInstanceError(f"unexpected tag {tag[0]:04X},{tag[1]:04X} in fragments")
        fragments.append((position + _ITEM_HEADER.size, length))
        position += _ITEM_HEADER.size + length
    if not fragments:
        raise UnreadableInstanceError("a frame has no fragment")
    return fragments


def _group_fragments(
    read_range: ReadRange, location: FrameSource, first_fragment: int
) -> list[list[tuple[int, int]]]:
    """Match fragments to frames without an offset table (as pydicom's ``generate_frames``)."""
    fragments = _fragments(read_range, first_fragment, None)
    frame_count = location.number_of_frames
    if frame_count == 1:
        return [fragments]
    if len(fragments) == frame_count:
        return [[fragment] for fragment in fragments]
    frames: list[list[tuple[int, int]]] = []
    for position, length in fragments:
        head = _read(read_range, position, min(length, _MARKER_PEEK))
        if not frames or any(head.startswith(marker) for marker in _FRAME_START_MARKERS):
            frames.append([])
        frames[-1].append((position, length))
    if len(frames) != frame_count:
        raise UnreadableInstanceError(
            f"{len(fragments)} fragments could not be matched to {frame_count} frames"
        )
    return frames


def frame_pixels(frame: bytes, location: FrameSource) -> npt.NDArray[Any]:
    """Decode one frame (as yielded by :func:`frame_bytes`) to ``(rows, columns[, samples])``.

    YBR colour is converted to RGB. Raises :class:`NotAcceptableError` when the syntax cannot
    be decoded here and :class:`UnreadableInstanceError` when the frame is corrupt.
    """
    info = transfer_syntax_info(location.transfer_syntax_uid)
    if not info.decodable:
        raise NotAcceptableError(f"cannot decode {info.uid.name} here")
    options: dict[str, Any] = {
        "rows": location.rows,
        "columns": location.columns,
        "samples_per_pixel": location.samples_per_pixel,
        "bits_allocated": location.bits_allocated,
        "bits_stored": location.bits_stored or location.bits_allocated,
        "pixel_representation": location.pixel_representation,
        "photometric_interpretation": location.photometric_interpretation,
        "number_of_frames": 1,
        "planar_configuration": location.planar_configuration,
        "pixel_keyword": "PixelData",
    }
    # Native frames from frame_bytes are little endian whatever the stored syntax.
    syntax = info.uid if info.encapsulated else ExplicitVRLittleEndian
    source = encapsulate([frame]) if info.encapsulated else frame
    try:
        pixels, _ = get_decoder(syntax).as_array(source, **options)
    except (RuntimeError, ValueError) as exc:
        raise UnreadableInstanceError(f"frame does not decode: {exc}") from exc
    return pixels


def transcode_frame(
    frame: bytes, location: FrameSource, target_ts: str, *, quality: int = DEFAULT_JPEG_QUALITY
) -> bytes:
    """Return one frame re-encoded in ``target_ts`` (native targets give little-endian samples).

    Raises
    ------
    NotAcceptableError
        The conversion is impossible (see :func:`drimbox.dicom.transfer.can_transcode`).
    """
    source = transfer_syntax_info(location.transfer_syntax_uid)
    target = transfer_syntax_info(target_ts)
    same_native = not (source.encapsulated or target.encapsulated)
    if target.uid == source.uid or (same_native and target.uid != ExplicitVRBigEndian):
        return frame
    if not can_transcode(source.uid, target.uid, lossy_source=location.lossy):
        raise NotAcceptableError(f"cannot serve {source.uid.name} frames as {target.uid.name}")
    pixels = frame_pixels(frame, location)
    photometric = location.photometric_interpretation
    if pixels.ndim == 3 and photometric.startswith("YBR"):
        photometric = "RGB"  # the decoder converted it
    bits_stored = location.bits_stored or location.bits_allocated
    if target.uid == JPEGBaseline8Bit and pixels.dtype != np.uint8:
        pixels = _to_8_bit(pixels, location)
        bits_stored = 8
    return encode_frame(
        pixels,
        target.uid,
        bits_stored=bits_stored,
        photometric_interpretation=photometric,
        quality=quality,
    )


def _to_8_bit(pixels: npt.NDArray[Any], location: FrameSource) -> npt.NDArray[np.uint8]:
    bits_stored = location.bits_stored or location.bits_allocated
    if pixels.ndim == 3 or (bits_stored <= 8 and pixels.dtype.kind == "u"):
        return (pixels >> max(bits_stored - 8, 0)).astype(np.uint8)
    window = location.window
    if window is None:
        low, high = float(pixels.min()), float(pixels.max())
        return window_to_8_bit(pixels, ((low + high) / 2, max(high - low, 1.0), "LINEAR_EXACT"))
    slope, intercept = location.rescale_slope, location.rescale_intercept
    if pixels.dtype.kind in "iu":
        # Modality LUT then VOI over the stored value range, applied as one lookup table.
        low, high = int(pixels.min()), int(pixels.max())
        domain = np.arange(low, high + 1, dtype=np.float64) * slope + intercept
        return window_to_8_bit(domain, window)[pixels.astype(np.intp) - low]
    return window_to_8_bit(pixels.astype(np.float64) * slope + intercept, window)
