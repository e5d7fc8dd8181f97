"""STOW-RS (PS3.18 §10.5): store instances sent as ``multipart/related; type="application/dicom"``.

The body is parsed while it arrives (:class:`dicomweb.multipart.MultipartParser`); each part is
spooled (memory up to a few MiB, then a temporary file) and handed to the same ingest path as
C-STORE as soon as it is complete. Each instance gets its own outcome (Referenced SOP Sequence or
Failed SOP Sequence with a Failure Reason); the HTTP status derives from the mix: 200 all stored,
202 some failed, 409 all failed (PS3.18 §10.5.3). Compressed request bodies are refused (no
decompression bombs) and the total size is bounded.
"""

from __future__ import annotations

import io
import tempfile
from enum import IntEnum
from http import HTTPStatus
from typing import IO, Any, BinaryIO, cast

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_file_meta_info

from dicomweb._common import base_url, check_uid
from dicomweb.dicomjson import (
    FAILED_SOP_SEQUENCE,
    FAILURE_REASON,
    REFERENCED_SOP_CLASS_UID,
    REFERENCED_SOP_INSTANCE_UID,
    REFERENCED_SOP_SEQUENCE,
    RETRIEVE_URL,
    WARNING_REASON,
    dump,
    element,
)
from dicomweb.errors import DicomwebError
from dicomweb.media import APPLICATION_DICOM, APPLICATION_DICOM_JSON, MULTIPART_RELATED
from dicomweb.multipart import MultipartParser, PartData, PartEnd, PartStart, parse_content_type
from drimbox.errors import (
    FailureReason,
    IndexUnavailableError,
    InvalidInstanceError,
    StorageError,
)
from drimbox.model import StoreResult
from drimbox.services.ingest import IngestService

__all__ = ["StowFailure", "StowWarning", "add_stow_routes"]

_SPOOL_MEMORY = 4 << 20
_PREAMBLE_LENGTH = 128
_DICM = b"DICM"
"""Part 10 preamble length and prefix (PS3.10 §7.1)."""
_FILE_META_GROUP = b"\x02\x00"
"""Group 0002 (File Meta Information) as the first bytes of a little-endian element tag."""


class StowFailure(IntEnum):
    """Failure Reason (0008,1197) values of a STOW-RS response (PS3.18 Table 10.5.3-2)."""

    PROCESSING_FAILURE = 0x0110
    REFERENCED_SOP_CLASS_NOT_SUPPORTED = 0x0122
    OUT_OF_RESOURCES = 0xA700
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    REFERENCED_TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122


class StowWarning(IntEnum):
    """Warning Reason (0008,1196) values (PS3.18 Table 10.5.3-3)."""

    COERCION_OF_DATA_ELEMENTS = 0xB000
    ELEMENTS_DISCARDED = 0xB006


_FAILURE_OF_REASON = {
    FailureReason.INVALID_UID: StowFailure.CANNOT_UNDERSTAND,
    FailureReason.MISSING_ATTRIBUTE: StowFailure.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    FailureReason.UID_MISMATCH: StowFailure.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    FailureReason.TOO_LARGE: StowFailure.OUT_OF_RESOURCES,
    FailureReason.UNREADABLE: StowFailure.CANNOT_UNDERSTAND,
    FailureReason.SOP_CLASS_NOT_SUPPORTED: StowFailure.REFERENCED_SOP_CLASS_NOT_SUPPORTED,
    FailureReason.STUDY_MISMATCH: StowFailure.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    FailureReason.OUT_OF_RESOURCES: StowFailure.OUT_OF_RESOURCES,
}


def _identify(spool: IO[bytes]) -> tuple[str | None, str | None]:
    """Best-effort SOP Class/Instance UIDs of a refused part (for its Failed SOP item)."""
    try:
        spool.seek(0)
        dataset = dcmread(spool, stop_before_pixels=True, specific_tags=[0x00080016, 0x00080018])
        return (
            str(dataset.get("SOPClassUID", "")) or None,
            str(dataset.get("SOPInstanceUID", "")) or None,
        )
    except (InvalidDicomError, ValueError, EOFError, OSError, KeyError, TypeError):
        return None, None


class _Prefixed(io.RawIOBase):
    """``prefix`` then the rest of ``stream``, read once (not seekable)."""

    def __init__(self, prefix: bytes, stream: IO[bytes]) -> None:
        self._prefix = prefix
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._prefix:
            size = min(len(buffer), len(self._prefix))
            buffer[:size] = self._prefix[:size]
            self._prefix = self._prefix[size:]
            return size
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _as_part10(spool: IO[bytes]) -> BinaryIO:
    """Frame a part as Part 10 when it starts right at a bare File Meta group.

    Some clients (dicomweb-client, through ``pydicom.dcmwrite`` of a data set built in memory)
    send the File Meta elements without the 128-byte preamble, ``DICM`` and the group length
    (PS3.10 §7.1); the data set itself is complete, so the File Meta Information is re-encoded
    (same values, plus the mandatory group length and version) rather than the part refused.
    The data set bytes are passed on unchanged.
    """
    spool.seek(0)
    head = spool.read(_PREAMBLE_LENGTH + len(_DICM))
    spool.seek(0)
    if head[_PREAMBLE_LENGTH:] == _DICM or not head.startswith(_FILE_META_GROUP):
        return spool  # type: ignore[return-value]  # a binary file
    elements = read_dataset(
        cast(BinaryIO, spool), False, True, stop_when=lambda tag, vr, length: tag.group != 2
    )
    meta = FileMetaDataset(elements)
    encoded = DicomBytesIO()
    encoded.is_little_endian, encoded.is_implicit_VR = True, False
    write_file_meta_info(encoded, meta, enforce_standard=True)
    prefix = bytes(_PREAMBLE_LENGTH) + _DICM + encoded.getvalue()
    return io.BufferedReader(_Prefixed(prefix, spool))


def _store_part(
    ingest: IngestService, spool: IO[bytes], source: str, study: str | None
) -> StoreResult | StowFailure:
    try:
        try:
            part10 = _as_part10(spool)
        except (InvalidDicomError, ValueError, EOFError, KeyError, AttributeError):
            return StowFailure.CANNOT_UNDERSTAND
        return ingest.store_part10(part10, source=source, study_instance_uid=study)
    except InvalidInstanceError as error:
        return _FAILURE_OF_REASON.get(error.reason, StowFailure.CANNOT_UNDERSTAND)
    except StorageError:
        return StowFailure.OUT_OF_RESOURCES
    except IndexUnavailableError:
        return StowFailure.PROCESSING_FAILURE


def _failed_item(failure: StowFailure, spool: IO[bytes] | None) -> dict[str, Any]:
    sop_class, sop_instance = _identify(spool) if spool is not None else (None, None)
    item: dict[str, Any] = {}
    if sop_class:
        item[REFERENCED_SOP_CLASS_UID] = element("UI", sop_class)
    if sop_instance:
        item[REFERENCED_SOP_INSTANCE_UID] = element("UI", sop_instance)
    item[FAILURE_REASON] = element("US", int(failure))
    return item


def _check_request(request: Request, max_request_bytes: int) -> str:
    """Check the request's headers; return the multipart boundary."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise DicomwebError(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            f"Content-Encoding {encoding!r} is refused: send the body uncompressed (identity)",
            "Content-Encoding",
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_request_bytes:
        raise DicomwebError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"the request body ({declared} bytes) exceeds the {max_request_bytes}-byte limit",
            "Content-Length",
        )
    media_type, parameters = parse_content_type(request.headers.get("content-type", ""))
    part_type = parameters.get("type", APPLICATION_DICOM).lower()
    if media_type != MULTIPART_RELATED or part_type != APPLICATION_DICOM:
        raise DicomwebError(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            f'Content-Type must be multipart/related; type="{APPLICATION_DICOM}" '
            f"(got {media_type!r} with type {part_type!r})",
            "Content-Type",
        )
    boundary = parameters.get("boundary")
    if not boundary:
        raise DicomwebError(
            HTTPStatus.BAD_REQUEST, "Content-Type has no multipart boundary", "Content-Type"
        )
    return boundary


async def _store_instances(
    request: Request, ingest: IngestService, max_request_bytes: int, study: str | None
) -> Response:
    boundary = _check_request(request, max_request_bytes)
    parser = MultipartParser(boundary)
    source = f"STOW-RS {request.client.host if request.client else 'unknown'}"
    stored: list[StoreResult] = []
    failed: list[dict[str, Any]] = []
    spool: IO[bytes] | None = None
    part_ok = True
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_request_bytes:
                raise DicomwebError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"the request body exceeds the {max_request_bytes}-byte limit",
                    "body",
                )
            for event in parser.feed(chunk):
                if isinstance(event, PartStart):
                    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY)  # noqa: SIM115
                    part_type, _ = parse_content_type(event.headers.get("content-type", ""))
                    part_ok = part_type in ("", APPLICATION_DICOM)
                elif isinstance(event, PartData) and spool is not None:
                    if spool.tell() + len(event.data) > _SPOOL_MEMORY:
                        await run_in_threadpool(spool.write, event.data)  # on disk: blocking
                    else:
                        spool.write(event.data)
                elif isinstance(event, PartEnd) and spool is not None:
                    outcome: StoreResult | StowFailure = StowFailure.CANNOT_UNDERSTAND
                    if part_ok:
                        outcome = await run_in_threadpool(_store_part, ingest, spool, source, study)
                    if isinstance(outcome, StoreResult):
                        stored.append(outcome)
                    else:
                        failed.append(await run_in_threadpool(_failed_item, outcome, spool))
                    spool.close()
                    spool = None
        parser.close()
    finally:
        if spool is not None:
            spool.close()
    if not stored and not failed:
        raise DicomwebError(HTTPStatus.BAD_REQUEST, "the request holds no instance", "body")
    return _response(base_url(request), study, stored, failed)


def _response(
    base: str, study: str | None, stored: list[StoreResult], failed: list[dict[str, Any]]
) -> Response:
    body: dict[str, Any] = {}
    studies = {result.location.study_instance_uid for result in stored}
    target = study or (studies.pop() if len(studies) == 1 else None)
    if target is not None:
        body[RETRIEVE_URL] = element("UR", f"{base}/studies/{target}")
    if failed:
        body[FAILED_SOP_SEQUENCE] = element("SQ", *failed)
    if stored:
        items = []
        for result in stored:
            location = result.location
            item: dict[str, Any] = {
                REFERENCED_SOP_CLASS_UID: element("UI", location.sop_class_uid),
                REFERENCED_SOP_INSTANCE_UID: element("UI", location.sop_instance_uid),
                RETRIEVE_URL: element(
                    "UR",
                    f"{base}/studies/{location.study_instance_uid}/series/"
                    f"{location.series_instance_uid}/instances/{location.sop_instance_uid}",
                ),
            }
            if result.duplicate and not result.identical:
                # the held copy was kept and the received one discarded
                item[WARNING_REASON] = element("US", int(StowWarning.ELEMENTS_DISCARDED))
            items.append(item)
        body[REFERENCED_SOP_SEQUENCE] = element("SQ", *items)
    if failed and stored:
        status = HTTPStatus.ACCEPTED
    elif failed:
        status = HTTPStatus.CONFLICT
    else:
        status = HTTPStatus.OK
    return Response(dump(body), status_code=int(status), media_type=APPLICATION_DICOM_JSON)


def add_stow_routes(router: APIRouter, ingest: IngestService, max_request_bytes: int) -> None:
    """Add the STOW-RS resources to ``router``."""
    responses: dict[int | str, dict[str, object]] = {
        200: {"description": "Every instance stored", "content": {APPLICATION_DICOM_JSON: {}}},
        202: {"description": "Some instances failed (FailedSOPSequence)"},
        400: {"description": "Malformed or truncated multipart body"},
        409: {"description": "Every instance failed (FailedSOPSequence)"},
        413: {"description": "Request body over the size limit"},
        415: {"description": "Not multipart/related application/dicom, or compressed body"},
    }
    body = {
        "requestBody": {
            "content": {'multipart/related; type="application/dicom"': {}},
            "required": True,
        }
    }

    @router.post("/studies", summary="Store Instances", responses=responses, openapi_extra=body)
    async def store_instances(request: Request) -> Response:
        return await _store_instances(request, ingest, max_request_bytes, None)

    @router.post(
        "/studies/{study}",
        summary="Store Instances in Study",
        responses=responses,
        openapi_extra=body,
    )
    async def store_instances_in_study(request: Request, study: str) -> Response:
        check_uid(study, "StudyInstanceUID")
        return await _store_instances(request, ingest, max_request_bytes, study)
