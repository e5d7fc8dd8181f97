"""A JPEG lossless encoder (ITU-T T.81 process 14, first-order prediction), numpy-vectorised.

Nothing installed encodes JPEG Lossless SV1 (1.2.840.10008.1.2.4.70) in-process: pydicom 3.0 has
no encoder for it and libjpeg (pylibjpeg-libjpeg) only decodes. The format is simple enough to
write here: predictor 1 (the sample to the left, ITU-T T.81 §H.1.2.1 Table H.1), point transform
0, one interleaved scan, no restart intervals, one Huffman table optimised for the frame
(T.81 Annex K.2). The result is decoded by libjpeg, dcmtk's ``dcmdjpeg`` and every DICOM viewer.
"""

from __future__ import annotations

import heapq
import struct
from itertools import count

import numpy as np
import numpy.typing as npt

__all__ = ["encode_jpeg_lossless_sv1"]

# Marker codes, ITU-T T.81 Table B.1.
_SOI = b"\xff\xd8"
_EOI = b"\xff\xd9"
_SOF3 = b"\xff\xc3"  # lossless, Huffman, sequential
_DHT = b"\xff\xc4"
_SOS = b"\xff\xda"

_FIRST_ORDER_PREDICTOR = 1
"""Selection Value 1: Px = Ra (T.81 Table H.1), the 'SV1' of the DICOM transfer syntax name."""
_MAX_CODE_LENGTH = 16
_CATEGORY_COUNT = 17
"""Difference categories SSSS 0..16 (T.81 Table H.2)."""
_CATEGORY_OF_MAGNITUDE = np.concatenate(
    ([0], np.floor(np.log2(np.arange(1, (1 << 15) + 1))).astype(np.int64) + 1)
)
"""SSSS of each |difference| 0..32768: its bit length."""


def encode_jpeg_lossless_sv1(pixels: npt.NDArray[np.integer], precision: int) -> bytes:
    """Encode one frame as a JPEG lossless (process 14, selection value 1) code stream.

    Parameters
    ----------
    pixels
        ``(rows, columns)`` or ``(rows, columns, samples)`` integers; signed values are encoded
        as their two's complement low ``precision`` bits, as DICOM requires (PS3.5 §8.2.1).
    precision
        Sample precision P in bits, 2 to 16 (the data set's Bits Stored).

    Returns
    -------
    bytes
        SOI ... EOI, ready to be encapsulated as one fragment.
    """
    if not 2 <= precision <= _MAX_CODE_LENGTH:
        raise ValueError(f"JPEG lossless precision must be 2..16 bits, not {precision}")
    planes = pixels if pixels.ndim == 3 else pixels[..., np.newaxis]
    rows, columns, samples = planes.shape
    mask = (1 << precision) - 1
    values = planes.astype(np.int64) & mask
    predicted = np.empty_like(values)
    predicted[0, 0, :] = 1 << (precision - 1)
    predicted[0, 1:, :] = values[0, :-1, :]
    predicted[1:, 0, :] = values[:-1, 0, :]
    predicted[1:, 1:, :] = values[1:, :-1, :]
    # Differences are taken modulo 2**16 (T.81 §H.1.2.1), then read as signed 16-bit numbers.
    difference = ((values - predicted) & 0xFFFF).ravel()
    difference = np.where(difference >= 0x8000, difference - 0x10000, difference)
    magnitude = np.abs(difference)
    category = _CATEGORY_OF_MAGNITUDE[magnitude]
    # Extra bits: the low SSSS bits of diff, or of diff - 1 when negative (T.81 §F.1.2.1.1);
    # SSSS = 16 (diff = 32768) has none.
    extra = np.where(difference < 0, difference - 1, difference) & ((1 << category) - 1)
    extra = np.where(category == _MAX_CODE_LENGTH, 0, extra)
    extra_length = np.where(category == _MAX_CODE_LENGTH, 0, category)

    histogram = np.bincount(category, minlength=_CATEGORY_COUNT)
    bits, huffval = _optimal_table(histogram)
    code, code_length = _canonical_codes(bits, huffval)
    scan = _pack(code[category], code_length[category], extra, extra_length)

    frame_header = struct.pack(">HBHHB", 8 + 3 * samples, precision, rows, columns, samples)
    frame_header += b"".join(struct.pack(">BBB", c + 1, 0x11, 0) for c in range(samples))
    table = struct.pack(">HB", 2 + 1 + 16 + len(huffval), 0x00) + bytes(bits) + bytes(huffval)
    scan_header = struct.pack(">HB", 6 + 2 * samples, samples)
    scan_header += b"".join(struct.pack(">BB", c + 1, 0x00) for c in range(samples))
    scan_header += struct.pack(">BBB", _FIRST_ORDER_PREDICTOR, 0, 0)
    return b"".join((_SOI, _SOF3, frame_header, _DHT, table, _SOS, scan_header, scan, _EOI))


def _optimal_table(histogram: npt.NDArray[np.int64]) -> tuple[list[int], list[int]]:
    """Return BITS (16 counts) and HUFFVAL of an optimal length-limited table (T.81 Annex K.2)."""
    order = count()
    # A reserved symbol of the lowest frequency keeps any code from being all one-bits.
    heap: list[tuple[float, int, list[int]]] = [(0.5, next(order), [-1])]
    heap += [(float(n), next(order), [s]) for s, n in enumerate(histogram.tolist()) if n > 0]
    heapq.heapify(heap)
    depth: dict[int, int] = {symbol: 0 for _, _, group in heap for symbol in group}
    while len(heap) > 1:
        weight_a, _, group_a = heapq.heappop(heap)
        weight_b, _, group_b = heapq.heappop(heap)
        for symbol in group_a + group_b:
            depth[symbol] += 1
        heapq.heappush(heap, (weight_a + weight_b, next(order), group_a + group_b))
    counts = [0] * 40
    for length in depth.values():
        counts[length] += 1
    # Figure K.3 (Adjust_BITS): move codes longer than 16 bits up the tree.
    for length in range(len(counts) - 1, _MAX_CODE_LENGTH, -1):
        while counts[length] > 0:
            shorter = length - 2
            while counts[shorter] == 0:
                shorter -= 1
            counts[length] -= 2
            counts[length - 1] += 1
            counts[shorter + 1] += 2
            counts[shorter] -= 1
    longest = _MAX_CODE_LENGTH
    while counts[longest] == 0:
        longest -= 1
    counts[longest] -= 1  # drop the reserved symbol, which holds the longest code
    by_frequency = sorted(
        (s for s in range(_CATEGORY_COUNT) if histogram[s] > 0), key=lambda s: (-histogram[s], s)
    )
    return counts[1 : _MAX_CODE_LENGTH + 1], by_frequency


def _canonical_codes(
    bits: list[int], huffval: list[int]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Assign code words in HUFFVAL order (T.81 Annex C); indexed by category."""
    code = np.zeros(_CATEGORY_COUNT, dtype=np.int64)
    code_length = np.zeros(_CATEGORY_COUNT, dtype=np.int64)
    next_code, position = 0, 0
    for length, number in enumerate(bits, start=1):
        for symbol in huffval[position : position + number]:
            code[symbol], code_length[symbol] = next_code, length
            next_code += 1
        position += number
        next_code <<= 1
    return code, code_length


def _pack(
    code: npt.NDArray[np.int64],
    code_length: npt.NDArray[np.int64],
    extra: npt.NDArray[np.int64],
    extra_length: npt.NDArray[np.int64],
) -> bytes:
    """Bit-pack code words and extra bits, pad with one-bits, stuff 0x00 after 0xFF (§F.1.2.3).

    Each sample's bits (at most 32) land in at most two consecutive 32-bit words; since no two
    samples share a bit, summing their shifted parts per word (``bincount``, exact in float64
    below 2**53) is the same as OR-ing them.
    """
    words = (code << extra_length) | extra
    lengths = code_length + extra_length
    total = int(lengths.sum())
    padding = (-total) % 8
    words = np.append(words, (1 << padding) - 1)  # one-bits up to the byte boundary
    lengths = np.append(lengths, padding)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    index = starts >> 5
    placed = words.astype(np.uint64) << (64 - (starts & 31) - lengths).astype(np.uint64)
    size = int(index[-1]) + 2
    high = np.bincount(index, weights=(placed >> np.uint64(32)).astype(np.float64), minlength=size)
    low = np.bincount(
        index + 1, weights=(placed & np.uint64(0xFFFFFFFF)).astype(np.float64), minlength=size
    )
    packed = np.frombuffer((high + low).astype(">u4").tobytes(), dtype=np.uint8)
    packed = packed[: (total + padding) // 8]
    stuffed = np.insert(packed, np.flatnonzero(packed == 0xFF) + 1, 0)
    return stuffed.tobytes()
