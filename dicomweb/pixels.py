"""WADO-RS frames and bulk data (PS3.18 §10.4.1.1.3, §10.4.1.1.5).

Frames are read by byte range from the stored file (:func:`drimbox.dicom.frames.frame_bytes`:
native offsets, or the Basic Offset Table / fragments, never decoding), described from the
metadata kept at ingest. When the client wants another representation, each frame is re-encoded
on its own (one frame in memory at a time).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from functools import partial
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydicom import dcmread

from dicomweb._common import accept_ranges, check_uid
from dicomweb.media import (
    APPLICATION_OCTET_STREAM,
    MediaRange,
    choose_frame_media_type,
)
from dicomweb.multipart import multipart_content_type, new_boundary, write_multipart
from drimbox.dicom.frames import FrameSource, frame_bytes, transcode_frame
from drimbox.dicom.transfer import can_transcode
from drimbox.errors import InvalidQueryError, NotFoundError
from drimbox.model import InstanceLocation
from drimbox.services.retrieve import RetrieveService

__all__ = ["add_pixel_routes", "frame_payloads", "parse_frame_list"]

_PIXEL_DATA_PATH = "7FE00010"
"""Bulk data path of Pixel Data (7FE0,0010)."""
_ROWS, _COLUMNS, _SAMPLES, _PHOTOMETRIC = "00280010", "00280011", "00280002", "00280004"
_BITS_ALLOCATED, _BITS_STORED, _PIXEL_REPRESENTATION = "00280100", "00280101", "00280103"
"""Image Pixel module tags (PS3.3 §C.7.6.3)."""
_LOSSY_IMAGE_COMPRESSION, _LOSSY_YES = "00282110", "01"
"""Lossy Image Compression (0028,2110) and its value meaning lossy (PS3.3 §C.7.6.1.1.5)."""
_WINDOW_CENTER, _WINDOW_WIDTH = "00281050", "00281051"
"""VOI LUT module (PS3.3 §C.11.2), used to reduce frames to 8 bits for JPEG baseline."""
_MAX_FRAMES_PER_REQUEST = 100_000


def parse_frame_list(text: str) -> list[int]:
    """Parse ``1,3,5`` (1-based frame numbers, PS3.18 §8.2.3) or raise a 400 naming ``frames``."""
    numbers: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) < 1 or len(item) > 9:
            raise InvalidQueryError(f"frame number {item!r} is not a positive integer", "frames")
        numbers.append(int(item))
    if len(numbers) > _MAX_FRAMES_PER_REQUEST:
        raise InvalidQueryError("too many frame numbers in one request", "frames")
    return numbers


def _frame_source(retrieve: RetrieveService, location: InstanceLocation) -> FrameSource:
    """Describe the stored frames from the instance's metadata (the file header is not re-read)."""
    if location.pixel_data_offset is None or location.number_of_frames < 1:
        raise NotFoundError(f"instance {location.sop_instance_uid} has no pixel data")
    documents = retrieve.metadata_documents(
        location.study_instance_uid, location.series_instance_uid, location.sop_instance_uid
    )
    document: dict[str, Any] = json.loads(documents[0])

    def value(tag: str) -> Any:
        values = document.get(tag, {}).get("Value")
        return values[0] if values else None

    bits_allocated = int(value(_BITS_ALLOCATED) or 16)
    lossy = value(_LOSSY_IMAGE_COMPRESSION)
    center, width = value(_WINDOW_CENTER), value(_WINDOW_WIDTH)
    return FrameSource(
        transfer_syntax_uid=location.transfer_syntax_uid,
        pixel_data_offset=location.pixel_data_offset,
        rows=int(value(_ROWS) or 0),
        columns=int(value(_COLUMNS) or 0),
        samples_per_pixel=int(value(_SAMPLES) or 1),
        bits_allocated=bits_allocated,
        number_of_frames=location.number_of_frames,
        bits_stored=int(value(_BITS_STORED) or bits_allocated),
        pixel_representation=int(value(_PIXEL_REPRESENTATION) or 0),
        photometric_interpretation=str(value(_PHOTOMETRIC) or "MONOCHROME2"),
        lossy=None if lossy is None else lossy == _LOSSY_YES,
        window=(float(center), float(width), "LINEAR") if center and width else None,
    )


def frame_payloads(
    retrieve: RetrieveService, location: InstanceLocation, numbers: list[int], syntax: str
) -> Iterator[bytes]:
    """Return the requested frames in ``syntax``: stored frames read by byte range, re-encoded
    one at a time when ``syntax`` differs from the stored one.

    Raises
    ------
    NotFoundError
        No pixel data, or a frame number beyond Number of Frames (raised before any read).
    """
    source = _frame_source(retrieve, location)
    stored = frame_bytes(partial(retrieve.read_range, location), source, numbers)
    return (transcode_frame(frame, source, syntax) for frame in stored)


def _frames_can_transcode(source: str, target: str) -> bool:
    return can_transcode(source, target)


def _retrieve_frames(
    ranges: list[MediaRange],
    retrieve: RetrieveService,
    study: str,
    series: str,
    instance: str,
    numbers: list[int],
) -> Response:
    location = retrieve.locate(study, series, instance)[0]
    media_type, syntax = choose_frame_media_type(
        ranges, location.transfer_syntax_uid, _frames_can_transcode
    )
    payloads = frame_payloads(retrieve, location, numbers, syntax)
    retrieve.record("WADO-RS frames", "success", study, series, instance, frames=len(numbers))
    return _multipart(media_type, syntax, payloads)


def _multipart(media_type: str, syntax: str | None, payloads: Iterable[bytes]) -> Response:
    boundary = new_boundary()
    part_type = media_type if syntax is None else f"{media_type}; transfer-syntax={syntax}"
    parts = (({"Content-Type": part_type}, [payload]) for payload in payloads)
    return StreamingResponse(
        write_multipart(parts, boundary),
        media_type=multipart_content_type(boundary, media_type, syntax),
    )


def _bulk_data(
    ranges: list[MediaRange],
    retrieve: RetrieveService,
    study: str,
    series: str,
    instance: str,
    path: str,
) -> Response:
    location = retrieve.locate(study, series, instance)[0]
    if path.upper() == _PIXEL_DATA_PATH:
        all_frames = list(range(1, location.number_of_frames + 1))
        media_type, syntax = choose_frame_media_type(
            ranges, location.transfer_syntax_uid, _frames_can_transcode
        )
        payloads = frame_payloads(retrieve, location, all_frames, syntax)
        if media_type == APPLICATION_OCTET_STREAM:
            payloads = iter([b"".join(payloads)])
        retrieve.record("WADO-RS bulkdata", "success", study, series, instance, path=path)
        return _multipart(media_type, syntax, payloads)
    with retrieve.open(location) as reader:
        dataset = dcmread(reader, stop_before_pixels=True)
        value = _navigate(dataset, path)
    retrieve.record("WADO-RS bulkdata", "success", study, series, instance, path=path)
    return _multipart(APPLICATION_OCTET_STREAM, None, [value])


def _navigate(dataset: Any, path: str) -> bytes:
    """Follow ``<seq>/<item>/.../<tag>`` (as written by drimbox.dicom.metadata) to a value."""
    steps = path.strip("/").split("/")
    if len(steps) % 2 == 0:
        raise InvalidQueryError(f"bulk data path {path!r} is malformed", "path")
    current = dataset
    for position, step in enumerate(steps):
        if position % 2:
            if not step.isdigit() or int(step) >= len(current):
                raise NotFoundError(f"bulk data {path!r} does not exist")
            current = current[int(step)]
            continue
        try:
            tag = int(step, 16)
        except ValueError:
            raise InvalidQueryError(f"bulk data path {path!r} is malformed", "path") from None
        if len(step) != 8 or tag not in current:
            raise NotFoundError(f"bulk data {path!r} does not exist")
        current = current[tag].value
    if isinstance(current, bytes | bytearray):
        return bytes(current)
    raise NotFoundError(f"{path!r} is not bulk data")


def add_pixel_routes(router: APIRouter, retrieve: RetrieveService) -> None:
    """Add the frames and bulk data resources to ``router``."""
    responses: dict[int | str, dict[str, object]] = {
        200: {"description": "multipart/related frames", "content": {"multipart/related": {}}},
        400: {"description": "Invalid UID, frame list or Accept header"},
        404: {"description": "Unknown instance, frame or bulk data"},
        406: {"description": "No acceptable media type can be produced"},
    }

    @router.get(
        "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
        summary="Retrieve Frames",
        responses=responses,
    )
    async def retrieve_frames(
        request: Request, study: str, series: str, instance: str, frames: str
    ) -> Response:
        check_uid(study, "StudyInstanceUID")
        check_uid(series, "SeriesInstanceUID")
        check_uid(instance, "SOPInstanceUID")
        numbers = parse_frame_list(frames)
        ranges = accept_ranges(request)
        return await run_in_threadpool(
            _retrieve_frames, ranges, retrieve, study, series, instance, numbers
        )

    @router.get(
        "/studies/{study}/series/{series}/instances/{instance}/bulkdata/{path:path}",
        summary="Retrieve Bulk Data",
        responses=responses,
    )
    async def retrieve_bulkdata(
        request: Request, study: str, series: str, instance: str, path: str
    ) -> Response:
        check_uid(study, "StudyInstanceUID")
        check_uid(series, "SeriesInstanceUID")
        check_uid(instance, "SOPInstanceUID")
        ranges = accept_ranges(request)
        return await run_in_threadpool(_bulk_data, ranges, retrieve, study, series, instance, path)
