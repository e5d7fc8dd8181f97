"""Latency of the pixel building blocks on a 512 x 512 CT frame: rendered, thumbnail, transcoding.

Run: ``.venv/bin/python -m benchmarks.rendered [--iterations 20]``. Each case runs a bounded number
of times on one synthetic 12-bit CT instance held in memory (no I/O, no HTTP), and the median and
95th percentile latencies are printed. The HTTP-level comparison with Orthanc lives with the
DICOMweb benchmarks; these numbers are the floor under them.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable
from functools import partial

from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from drimbox.dicom.frames import frame_bytes, locate_frames, transcode_frame
from drimbox.dicom.rendered import Viewport, render, thumbnail
from drimbox.dicom.synthetic import SyntheticStudy, make_instance
from drimbox.dicom.transfer import transcode_part10

__all__ = ["main", "measure"]

CT_SIZE = 512
DEFAULT_ITERATIONS = 20
MAX_ITERATIONS = 200
"""Bound on the loop so a typo cannot occupy the shared cores for minutes."""
_PERCENTILE_95 = 19  # index of the 95th percentile among statistics.quantiles(n=20) cut points


def measure(action: Callable[[], object], iterations: int) -> tuple[float, float]:
    """Return (median, p95) latency in milliseconds of ``iterations`` calls after one warm-up."""
    action()
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000)
    p95 = statistics.quantiles(samples, n=20)[_PERCENTILE_95 - 1] if iterations > 1 else samples[0]
    return statistics.median(samples), p95


def _ct_part10() -> bytes:
    dataset = make_instance(SyntheticStudy(seed="bench", rows=CT_SIZE, columns=CT_SIZE), 0, 0)
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _transcode(data: bytes, target: str) -> bytes:
    return transcode_part10(io.BytesIO(data), target)


def main(argv: list[str] | None = None) -> None:
    """Print the latency table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS)
    iterations = max(1, min(parser.parse_args(argv).iterations, MAX_ITERATIONS))
    data = _ct_part10()
    location = locate_frames(io.BytesIO(data))

    def read_range(start: int, length: int) -> bytes:
        return data[start : start + length]

    native_frame = next(frame_bytes(read_range, location, [1]))
    cases: list[tuple[str, Callable[[], object]]] = [
        ("render JPEG (data set window)", lambda: render(data)),
        ("render PNG", lambda: render(data, media_type="image/png")),
        ("render JPEG window 40,400", lambda: render(data, window=(40, 400, "LINEAR"))),
        ("render JPEG viewport 256x256", lambda: render(data, viewport=Viewport(256, 256))),
        ("thumbnail JPEG 128x128", lambda: thumbnail(data)),
        ("frame bytes (no decoding)", lambda: next(frame_bytes(read_range, location, [1]))),
        (
            "frame -> JPEG baseline",
            lambda: transcode_frame(native_frame, location, JPEGBaseline8Bit),
        ),
    ]
    for target in (
        JPEGBaseline8Bit,
        JPEGLosslessSV1,
        JPEGLSLossless,
        RLELossless,
        JPEG2000Lossless,
    ):
        cases.append(
            (
                f"instance -> {target.keyword}",
                partial(_transcode, data, target),
            )
        )
    compressed = transcode_part10(io.BytesIO(data), JPEGLSLossless)
    cases.append(
        (
            "JPEGLSLossless -> ExplicitVRLittleEndian",
            lambda: transcode_part10(io.BytesIO(compressed), ExplicitVRLittleEndian),
        )
    )
    print(f"512 x 512 x 16-bit CT frame, {iterations} iterations each (ms)")
    print(f"{'case':45} {'median':>8} {'p95':>8}")
    for name, action in cases:
        median, p95 = measure(action, iterations)
        print(f"{name:45} {median:8.2f} {p95:8.2f}")


if __name__ == "__main__":
    main()
