"""Rendered and thumbnail images: VOI, polarity, colour, frames, viewport, formats, errors."""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image
from pydicom.dataset import Dataset

from drimbox.dicom.rendered import (
    Viewport,
    parse_viewport,
    parse_window,
    render,
    thumbnail,
)
from drimbox.errors import InvalidQueryError, NotAcceptableError, NotFoundError
from tests.unit._pixel_datasets import make_grayscale, make_rgb, make_structured_report, part10

# Stored values of four 16 x 64 bands; CT Rescale Intercept -1024 makes them -500, -250, 0, 500 HU.
BANDS = (524, 774, 1024, 1524)


def _banded(frames: int = 1, photometric: str = "MONOCHROME2") -> Dataset:
    dataset = make_grayscale(frames=frames, photometric=photometric)
    stack = []
    for frame in range(frames):
        image = np.repeat(np.array(BANDS, dtype="<u2") + 100 * frame, 16)[:, np.newaxis]
        stack.append(np.broadcast_to(image, (64, 64)))
    dataset.PixelData = np.stack(stack).astype("<u2").tobytes()
    return dataset


def _decode(data: bytes) -> tuple[Image.Image, npt.NDArray[np.uint8]]:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image, np.asarray(image)


def _band_values(pixels: npt.NDArray[np.uint8]) -> list[int]:
    return [int(pixels[16 * band + 8, 32]) for band in range(4)]


def test_request_window_maps_hounsfield_units_linearly() -> None:
    image, pixels = _decode(render(_banded(), media_type="image/png", window=(0, 1000, "LINEAR")))
    assert (image.format, image.mode, image.size) == ("PNG", "L", (64, 64))
    # PS3.3 C.11.2.1.2.1: -500 <= c-0.5-(w-1)/2 -> 0; -250 -> 63.8; 0 -> 127.6; 500 > 499 -> 255.
    assert _band_values(pixels) == [0, 64, 128, 255]


def test_data_set_window_applies_when_the_request_has_none() -> None:
    dataset = _banded()
    dataset.WindowCenter, dataset.WindowWidth = [-250, 40], [500, 80]
    _, pixels = _decode(render(dataset, media_type="image/png"))
    # First window: -500 -> 0, -250 -> (0.5/499 + 0.5) * 255 = 127.8, 0 -> 255, 500 -> 255.
    assert _band_values(pixels) == [0, 128, 255, 255]


def test_without_any_window_the_frame_minimum_and_maximum_span_the_output() -> None:
    dataset = _banded()
    del dataset.WindowCenter, dataset.WindowWidth
    _, pixels = _decode(render(dataset, media_type="image/png"))
    assert _band_values(pixels)[0] == 0 and _band_values(pixels)[-1] == 255


def test_linear_exact_and_sigmoid_functions() -> None:
    _, exact = _decode(render(_banded(), media_type="image/png", window=(0, 1000, "LINEAR_EXACT")))
    assert _band_values(exact) == [0, 64, 128, 255]
    _, sigmoid = _decode(render(_banded(), media_type="image/png", window=(0, 500, "SIGMOID")))
    # 255 / (1 + exp(-4 x / w)): x = -250 -> 30.4, x = 0 -> 127.5 (rounds to even: 128)
    assert _band_values(sigmoid)[1:3] == [30, 128]


def test_monochrome1_is_inverted() -> None:
    dataset = _banded(photometric="MONOCHROME1")
    _, pixels = _decode(render(dataset, media_type="image/png", window=(0, 1000, "LINEAR")))
    assert _band_values(pixels) == [255, 191, 127, 0]


def test_presentation_lut_shape_inverse_inverts_monochrome2() -> None:
    dataset = _banded()
    dataset.PresentationLUTShape = "INVERSE"
    _, pixels = _decode(render(dataset, media_type="image/png", window=(0, 1000, "LINEAR")))
    assert _band_values(pixels) == [255, 191, 127, 0]


def test_multiframe_renders_the_requested_frame() -> None:
    dataset = _banded(frames=3)
    _, third = _decode(render(dataset, frame=3, media_type="image/png", window=(0, 1000, "LINEAR")))
    # Frame 3 is 200 stored values brighter: -300, -50, 200, 700 HU.
    assert _band_values(third) == [
        round(((-300 + 0.5) / 999 + 0.5) * 255),
        round(((-50 + 0.5) / 999 + 0.5) * 255),
        round(((200 + 0.5) / 999 + 0.5) * 255),
        255,
    ]


def test_per_frame_functional_group_window_wins_over_the_data_set_window() -> None:
    dataset = _banded(frames=2)
    frame_groups = []
    for center in (-250, 0):
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth = center, 500
        group = Dataset()
        group.FrameVOILUTSequence = [voi]
        frame_groups.append(group)
    dataset.PerFrameFunctionalGroupsSequence = frame_groups
    _, pixels = _decode(render(dataset, frame=1, media_type="image/png"))
    assert _band_values(pixels) == [0, 128, 255, 255]


def test_rgb_renders_unchanged_in_png() -> None:
    dataset = make_rgb(frames=2)
    image, pixels = _decode(render(part10(dataset), frame=2, media_type="image/png"))
    assert (image.mode, image.size) == ("RGB", (64, 48))
    np.testing.assert_array_equal(pixels, dataset.pixel_array[1])


def test_viewport_fits_the_frame_preserving_aspect_ratio() -> None:
    image, _ = _decode(render(_banded(), viewport=Viewport(32, 16)))
    assert (image.format, image.size) == ("JPEG", (16, 16))
    image, _ = _decode(render(make_rgb(), viewport=Viewport(200, 200), media_type="image/png"))
    assert image.size == (200, 150)


def test_viewport_source_region_crops_and_negative_width_flips() -> None:
    dataset = make_rgb()
    original = dataset.pixel_array
    _, crop = _decode(
        render(dataset, media_type="image/png", viewport=Viewport(20, 10, 10, 5, 20, 10))
    )
    np.testing.assert_array_equal(crop, original[5:15, 10:30])
    flipped_viewport = Viewport(20, 10, 30, 5, -20, 10)
    _, flipped = _decode(render(dataset, media_type="image/png", viewport=flipped_viewport))
    np.testing.assert_array_equal(flipped, original[5:15, 10:30][:, ::-1])


def test_jpeg_quality_changes_the_encoding() -> None:
    dataset = make_grayscale(rows=128, columns=128)
    low, high = render(dataset, quality=10), render(dataset, quality=95)
    assert len(low) < len(high)
    assert _decode(low)[0].mode == "L"


def test_gif_is_supported() -> None:
    image, _ = _decode(render(_banded(), media_type="image/gif"))
    assert (image.format, image.size) == ("GIF", (64, 64))


def test_thumbnail_fits_in_128_pixels() -> None:
    image, _ = _decode(thumbnail(make_grayscale(rows=256, columns=512)))
    assert (image.format, image.size) == ("JPEG", (128, 64))
    image, _ = _decode(thumbnail(part10(make_rgb(frames=2)), media_type="image/png"))
    assert image.size == (128, 96)


def test_non_image_object_has_no_rendered_representation() -> None:
    with pytest.raises(NotAcceptableError, match="no pixel data"):
        render(make_structured_report())


def test_unknown_media_type_and_frame_are_refused() -> None:
    with pytest.raises(NotAcceptableError, match="image/tiff"):
        render(_banded(), media_type="image/tiff")
    with pytest.raises(NotFoundError, match="frame 2"):
        render(_banded(), frame=2)
    with pytest.raises(InvalidQueryError) as error:
        render(_banded(), quality=101)
    assert error.value.parameter == "quality"


def test_window_and_viewport_parameters_are_parsed_or_named_in_errors() -> None:
    assert parse_window("40,400") == (40.0, 400.0, "LINEAR")
    assert parse_window("40, 400, sigmoid") == (40.0, 400.0, "SIGMOID")
    assert parse_viewport("256,256") == Viewport(256, 256)
    assert parse_viewport("256,256,10,20,-30,40") == Viewport(256, 256, 10, 20, -30, 40)
    for bad_window in ("40", "40,0", "a,b", "40,400,cubic"):
        with pytest.raises(InvalidQueryError) as error:
            parse_window(bad_window)
        assert error.value.parameter == "window"
    for bad_viewport in ("256", "0,10", "1,2,3", "10,10,-1,0,5,5", "10,10,0,0,0,5"):
        with pytest.raises(InvalidQueryError) as error:
            parse_viewport(bad_viewport)
        assert error.value.parameter == "viewport"
