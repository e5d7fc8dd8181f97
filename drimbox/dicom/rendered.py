"""Rendered and thumbnail representations of image instances (PS3.18 §8.3.5, §9.5.1.2.1).

The pipeline of :func:`render_pixels` follows the grayscale and colour pipelines of PS3.4 §N.2:

1. decode one frame (YBR colour is converted to RGB; PALETTE COLOR through its LUTs);
2. grayscale: Modality LUT (Rescale Slope/Intercept or Modality LUT Sequence, PS3.3 §C.11.1),
   then VOI (PS3.3 §C.11.2): the request's window, else the data set's first Window Center/Width
   (frame functional groups first), else its VOI LUT Sequence, else the frame's minimum/maximum;
   then polarity: MONOCHROME1, or Presentation LUT Shape INVERSE on MONOCHROME2, is inverted
   (PS3.3 §C.11.6);
3. the viewport (PS3.18 §8.3.5.1.3) crops a source region (negative width/height flips it) and
   scales it to fit the viewport, aspect ratio preserved; Pixel Aspect Ratio and non-square
   Pixel Spacing are not corrected;
4. encoding as JPEG (with the requested quality), PNG or GIF.

Annotations (PS3.18 §8.3.5.1.1) are not burnt in: the parameter is accepted and ignored, which
the standard allows when the origin server does not support it.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any, BinaryIO, Final

import numpy as np
import numpy.typing as npt
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels.processing import apply_color_lut, apply_voi
from pydicom.pixels.processing import apply_modality_lut as _pydicom_modality_lut
from pydicom.pixels.utils import pixel_array

from drimbox.errors import (
    InvalidQueryError,
    NotAcceptableError,
    NotFoundError,
    UnreadableInstanceError,
)

__all__ = [
    "DEFAULT_JPEG_QUALITY",
    "RENDERED_MEDIA_TYPES",
    "THUMBNAIL_SIZE",
    "Viewport",
    "Window",
    "apply_modality_lut",
    "dataset_window",
    "grayscale_to_8_bit",
    "parse_viewport",
    "parse_window",
    "render",
    "render_pixels",
    "thumbnail",
    "window_to_8_bit",
]

Window = tuple[float, float, str]
"""Window center, window width, VOI LUT Function (DICOM defined term, PS3.3 §C.11.2.1.3)."""

DEFAULT_JPEG_QUALITY: Final = 90
"""JPEG quality (1-100) when the request gives none (PS3.18 §8.3.5.1.5 leaves it to the server)."""
THUMBNAIL_SIZE: Final = (128, 128)
"""The box's thumbnail viewport (PS3.18 §8.3.5.2 leaves the size to the server)."""
RENDERED_MEDIA_TYPES: Final = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF"}
"""Rendered media types (PS3.18 Table 8.7.4-1 single-frame image types) and Pillow formats."""

_VOI_FUNCTIONS: Final = {
    "linear": "LINEAR",
    "linear-exact": "LINEAR_EXACT",
    "linear_exact": "LINEAR_EXACT",
    "sigmoid": "SIGMOID",
}
"""Query values of the ``window`` parameter (PS3.18 §8.3.5.1.4) to VOI LUT Function terms."""
_OUTPUT_MAX: Final = 255.0
_VIEWPORT_PARTS: Final = (2, 6)
_WINDOW_PARTS: Final = (2, 3)
_MIN_QUALITY, _MAX_QUALITY = 1, 100
_PNG_COMPRESS_LEVEL: Final = 1
"""zlib level of PNG output: level 1 is ~5x faster than the default 6 for medical images."""
_MAX_LUT_ENTRIES: Final = 1 << 17
"""Largest stored-value range rendered through a lookup table (covers 16-bit data)."""


@dataclass(frozen=True, slots=True)
class Viewport:
    """The ``viewport`` parameter: output size, and optionally a source region (PS3.18 §8.3.5.1.3).

    Attributes
    ----------
    width, height
        Maximum output size in pixels.
    source_x, source_y
        Top-left corner of the source region (0-based columns/rows).
    source_width, source_height
        Source region size; ``None`` = to the image edge; negative = flipped.
    """

    width: int
    height: int
    source_x: int = 0
    source_y: int = 0
    source_width: int | None = None
    source_height: int | None = None


def parse_window(text: str) -> Window:
    """Parse ``center,width[,function]`` (PS3.18 §8.3.5.1.4) or raise :class:`InvalidQueryError`."""
    parts = [part.strip() for part in text.split(",")]
    try:
        if len(parts) not in _WINDOW_PARTS:
            raise ValueError("expected center,width[,function]")
        center, width = float(parts[0]), float(parts[1])
        function = _VOI_FUNCTIONS[parts[2].lower()] if len(parts) == 3 else "LINEAR"
        if not (math.isfinite(center) and math.isfinite(width)) or width <= 0:
            raise ValueError("center and width must be finite and width positive")
    except (ValueError, KeyError) as exc:
        raise InvalidQueryError(
            f"window={text!r} is invalid: {exc}; use center,width[,linear|linear-exact|sigmoid]",
            "window",
        ) from exc
    return (center, width, function)


def parse_viewport(text: str) -> Viewport:
    """Parse ``vw,vh[,sx,sy,sw,sh]`` (PS3.18 §8.3.5.1.3) or raise :class:`InvalidQueryError`."""
    parts = [part.strip() for part in text.split(",")]
    try:
        if len(parts) not in _VIEWPORT_PARTS:
            raise ValueError("expected vw,vh or vw,vh,sx,sy,sw,sh")
        numbers = [int(part) if part else None for part in parts]
        width, height = numbers[0], numbers[1]
        if width is None or height is None or width <= 0 or height <= 0:
            raise ValueError("vw and vh must be positive integers")
        if len(numbers) == 2:
            return Viewport(width, height)
        sx, sy, sw, sh = numbers[2:]
        if (sx or 0) < 0 or (sy or 0) < 0 or sw == 0 or sh == 0:
            raise ValueError("sx, sy must be >= 0 and sw, sh non-zero")
        return Viewport(width, height, sx or 0, sy or 0, sw, sh)
    except ValueError as exc:
        raise InvalidQueryError(f"viewport={text!r} is invalid: {exc}", "viewport") from exc


def render(
    source: Dataset | bytes | BinaryIO,
    *,
    frame: int = 1,
    media_type: str = "image/jpeg",
    window: Window | None = None,
    viewport: Viewport | None = None,
    quality: int | None = None,
    annotation: str | None = None,
) -> bytes:
    """Render one frame as a consumer-format image (PS3.18 §8.3.5 rendered resources).

    Parameters
    ----------
    source
        A data set, or a Part 10 file as bytes or an open binary file.
    frame
        1-based frame number.
    media_type
        ``image/jpeg``, ``image/png`` or ``image/gif``.
    window
        VOI window from the request; ``None`` uses the data set's.
    viewport
        Output size and source region; ``None`` keeps the frame size.
    quality
        JPEG quality 1-100 (ignored by lossless formats).
    annotation
        Accepted and ignored (no burnt-in annotation).

    Returns
    -------
    bytes
        The encoded image.

    Raises
    ------
    NotAcceptableError
        Unsupported media type, an object without pixel data, or pixel data that cannot be
        decoded here.
    NotFoundError
        ``frame`` is not a frame of the instance.
    InvalidQueryError
        ``quality`` out of 1-100.
    UnreadableInstanceError
        ``source`` is not readable DICOM, or its pixel data is corrupt.
    """
    del annotation  # not supported; PS3.18 §8.3.5.1.1 lets the server ignore it
    pillow_format = RENDERED_MEDIA_TYPES.get(media_type)
    if pillow_format is None:
        raise NotAcceptableError(
            f"rendered media type {media_type!r} is not supported: use one of "
            + ", ".join(RENDERED_MEDIA_TYPES)
        )
    if quality is not None and not _MIN_QUALITY <= quality <= _MAX_QUALITY:
        raise InvalidQueryError(f"quality={quality} is not within 1-100", "quality")
    pixels = render_pixels(_as_dataset(source), frame=frame, window=window)
    image = _apply_viewport(Image.fromarray(pixels), viewport)
    buffer = io.BytesIO()
    if pillow_format == "JPEG":
        image.save(buffer, pillow_format, quality=quality or DEFAULT_JPEG_QUALITY)
    elif pillow_format == "PNG":
        image.save(buffer, pillow_format, compress_level=_PNG_COMPRESS_LEVEL)
    else:
        image.save(buffer, pillow_format)
    return buffer.getvalue()


def thumbnail(
    source: Dataset | bytes | BinaryIO,
    *,
    media_type: str = "image/jpeg",
    size: tuple[int, int] = THUMBNAIL_SIZE,
) -> bytes:
    """Render a small representative image (PS3.18 §8.3.5.2 thumbnail resources).

    The frame is Representative Frame Number (0028,6010) when present, else the first; the
    data set's window applies; the result fits in ``size``.
    """
    dataset = _as_dataset(source)
    frame = int(dataset.get("RepresentativeFrameNumber", 1) or 1)
    return render(dataset, frame=frame, media_type=media_type, viewport=Viewport(*size))


def render_pixels(
    dataset: Dataset, *, frame: int = 1, window: Window | None = None
) -> npt.NDArray[np.uint8]:
    """Return frame ``frame`` as display-ready 8-bit ``(rows, columns)`` or RGB pixels."""
    if "PixelData" not in dataset:
        raise NotAcceptableError("this object has no pixel data: it has no rendered representation")
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if not 1 <= frame <= frames:
        raise NotFoundError(f"frame {frame} does not exist: the instance has {frames} frame(s)")
    try:
        pixels = pixel_array(dataset, index=frame - 1)
    except (NotImplementedError, RuntimeError) as exc:
        raise NotAcceptableError(f"pixel data cannot be decoded here: {exc}") from exc
    except (ValueError, EOFError, OSError) as exc:
        raise UnreadableInstanceError(f"pixel data is corrupt: {exc}") from exc
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, dataset)
        return (rgb.astype(np.float64) / _palette_max(rgb) * _OUTPUT_MAX).round().astype(np.uint8)
    if pixels.ndim == 3:
        bits = int(dataset.get("BitsStored", 8))
        return (pixels >> max(bits - 8, 0)).astype(np.uint8)
    display = grayscale_to_8_bit(pixels, dataset, window=window, frame=frame)
    inverse = dataset.get("PresentationLUTShape") == "INVERSE"
    if photometric == "MONOCHROME1" or inverse:
        display = np.uint8(_OUTPUT_MAX) - display
    return display


def grayscale_to_8_bit(
    pixels: npt.NDArray[Any], dataset: Dataset, *, window: Window | None = None, frame: int = 1
) -> npt.NDArray[np.uint8]:
    """Apply the Modality LUT and VOI (steps 2 of the module pipeline) to reach 0..255.

    Polarity is not applied. Integer pixels go through a lookup table built over their value
    range, so each pixel costs one indexing instead of a floating-point pipeline. Without any
    window, the minimum and maximum modality values of that range span the output.
    """
    if pixels.dtype.kind in "iu" and pixels.size > 0:
        low, high = int(pixels.min()), int(pixels.max())
        if high - low < _MAX_LUT_ENTRIES:
            domain = np.arange(low, high + 1, dtype=pixels.dtype)
            table = _voi_8_bit(
                apply_modality_lut(domain, dataset, frame=frame), dataset, window, frame
            )
            return table[pixels.astype(np.intp) - low]
    return _voi_8_bit(apply_modality_lut(pixels, dataset, frame=frame), dataset, window, frame)


def _voi_8_bit(
    values: npt.NDArray[np.float64], dataset: Dataset, window: Window | None, frame: int
) -> npt.NDArray[np.uint8]:
    chosen = window or dataset_window(dataset, frame=frame)
    if chosen is not None:
        return window_to_8_bit(values, chosen)
    if "VOILUTSequence" in dataset:
        return _voi_lut_to_8_bit(values, dataset)
    low, high = float(values.min()), float(values.max())
    return window_to_8_bit(values, ((low + high) / 2, max(high - low, 1.0), "LINEAR_EXACT"))


def _palette_max(rgb: npt.NDArray[Any]) -> float:
    return 65535.0 if rgb.dtype.itemsize > 1 else _OUTPUT_MAX


def _as_dataset(source: Dataset | bytes | BinaryIO) -> Dataset:
    if isinstance(source, Dataset):
        return source
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        return dcmread(stream)
    except (InvalidDicomError, EOFError, OSError, ValueError) as exc:
        raise UnreadableInstanceError(f"not a readable DICOM instance: {exc}") from exc


def _frame_item(dataset: Dataset, sequence: str, frame: int) -> Dataset | None:
    """The first item of functional group ``sequence`` for ``frame`` (PS3.3 §C.7.6.16)."""
    for groups, index in (
        ("PerFrameFunctionalGroupsSequence", frame - 1),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        items = dataset.get(groups)
        if items is not None and index < len(items) and sequence in items[index]:
            found = items[index][sequence].value
            if len(found) > 0:
                item: Dataset = found[0]
                return item
    return None


def apply_modality_lut(
    pixels: npt.NDArray[Any], dataset: Dataset, *, frame: int = 1
) -> npt.NDArray[np.float64]:
    """Stored values to modality values (PS3.3 §C.11.1), using frame functional groups first."""
    item = _frame_item(dataset, "PixelValueTransformationSequence", frame)
    if item is not None and "RescaleSlope" in item:
        slope, intercept = float(item.RescaleSlope), float(item.get("RescaleIntercept", 0))
        return pixels.astype(np.float64) * slope + intercept
    return np.asarray(_pydicom_modality_lut(pixels, dataset), dtype=np.float64)


def dataset_window(dataset: Dataset, *, frame: int = 1) -> Window | None:
    """The first Window Center/Width of the frame or data set (PS3.3 §C.11.2), if any."""
    source = _frame_item(dataset, "FrameVOILUTSequence", frame) or dataset
    if "WindowCenter" not in source or "WindowWidth" not in source:
        return None
    center, width = _first(source.WindowCenter), _first(source.WindowWidth)
    if center is None or width is None or float(width) <= 0:
        return None
    function = str(source.get("VOILUTFunction", "") or "LINEAR").upper()
    return (float(center), float(width), function)


def _first(value: Any) -> Any:
    """The first value of a possibly multi-valued element (``None`` when empty)."""
    if isinstance(value, MultiValue | list | tuple):
        return value[0] if len(value) > 0 else None
    return value


def window_to_8_bit(values: npt.NDArray[Any], window: Window) -> npt.NDArray[np.uint8]:
    """Apply a VOI window to 0..255 (PS3.3 §C.11.2.1.2 LINEAR, §C.11.2.1.3 others).

    Integer values are mapped through a table built over their range.
    """
    if values.dtype.kind in "iu" and values.size > 0:
        low, high = int(values.min()), int(values.max())
        if high - low < _MAX_LUT_ENTRIES:
            table = _window_floats(np.arange(low, high + 1, dtype=np.float64), window)
            return table[values.astype(np.intp) - low]
    return _window_floats(values, window)


def _window_floats(values: npt.NDArray[Any], window: Window) -> npt.NDArray[np.uint8]:
    center, width, function = window
    x = values.astype(np.float64)
    if function == "SIGMOID":
        y = _OUTPUT_MAX / (1.0 + np.exp(-4.0 * (x - center) / width))
    elif function == "LINEAR_EXACT":
        y = ((x - center) / width + 0.5) * _OUTPUT_MAX
    else:
        # LINEAR (§C.11.2.1.2.1): width 1 is a threshold at center - 0.5.
        if width <= 1:
            y = np.where(x <= center - 0.5, 0.0, _OUTPUT_MAX)
        else:
            y = ((x - (center - 0.5)) / (width - 1) + 0.5) * _OUTPUT_MAX
    return np.clip(np.rint(y), 0, _OUTPUT_MAX).astype(np.uint8)


def _voi_lut_to_8_bit(values: npt.NDArray[np.float64], dataset: Dataset) -> npt.NDArray[np.uint8]:
    """Apply the first VOI LUT Sequence item and scale its output range to 0..255."""
    item = dataset.VOILUTSequence[0]
    output = np.asarray(apply_voi(values.astype(np.int64), dataset, index=0), dtype=np.float64)
    bits = int(item.LUTDescriptor[2])
    return np.clip(np.rint(output / ((1 << bits) - 1) * _OUTPUT_MAX), 0, _OUTPUT_MAX).astype(
        np.uint8
    )


def _apply_viewport(image: Image.Image, viewport: Viewport | None) -> Image.Image:
    """Crop the source region, flip for negative sizes, and fit in the viewport (§8.3.5.1.3)."""
    if viewport is None:
        return image
    columns, rows = image.size
    x0, y0 = min(viewport.source_x, columns - 1), min(viewport.source_y, rows - 1)
    region_width = viewport.source_width if viewport.source_width is not None else columns - x0
    region_height = viewport.source_height if viewport.source_height is not None else rows - y0
    x1 = max(0, min(columns, x0 + region_width))
    y1 = max(0, min(rows, y0 + region_height))
    left, right = sorted((x0, x1))
    top, bottom = sorted((y0, y1))
    region = image.crop((left, top, max(right, left + 1), max(bottom, top + 1)))
    if region_width < 0:
        region = region.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if region_height < 0:
        region = region.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    scale = min(viewport.width / region.width, viewport.height / region.height)
    size = (max(1, round(region.width * scale)), max(1, round(region.height * scale)))
    if size == region.size:
        return region
    return region.resize(size, Image.Resampling.LANCZOS)
