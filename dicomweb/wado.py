"""WADO-RS (PS3.18 §10.4): retrieve instances and metadata of a study, series or instance.

Instances stream as ``multipart/related; type="application/dicom"`` from a synchronous generator
(run by Starlette in the thread pool), one stored chunk at a time, each part in the transfer
syntax chosen from the ``Accept`` header (:mod:`dicomweb.media`). Metadata is the DICOM JSON
computed at ingest, streamed as stored with its bulk data base URL filled in.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from dicomweb._common import accept_ranges, base_url, check_uid
from dicomweb.media import (
    APPLICATION_DICOM,
    APPLICATION_DICOM_JSON,
    APPLICATION_JSON,
    accepted_transfer_syntaxes,
    choose_media_type,
    choose_transfer_syntax,
)
from dicomweb.multipart import (
    multipart_content_type,
    multipart_length,
    new_boundary,
    write_multipart,
)
from drimbox.dicom.metadata import BULKDATA_BASE_PLACEHOLDER
from drimbox.dicom.transfer import can_transcode, transcode_part10
from drimbox.errors import DrimboxError
from drimbox.model import InstanceLocation
from drimbox.services.retrieve import RetrieveService

__all__ = ["add_wado_routes", "instance_parts"]

_log = logging.getLogger("drimbox.dicomweb")
_TRANSACTION = "WADO-RS"
_MULTIPART_DESCRIPTION = (
    'multipart/related; type="application/dicom", one Part 10 instance per part, in the '
    "transfer syntax negotiated from Accept (as stored when acceptable, transcoded otherwise)."
)


def _part_headers(location: InstanceLocation, syntax: str, base: str) -> dict[str, str]:
    return {
        "Content-Type": f"{APPLICATION_DICOM}; transfer-syntax={syntax}",
        "Content-Location": (
            f"{base}/studies/{location.study_instance_uid}/series/"
            f"{location.series_instance_uid}/instances/{location.sop_instance_uid}"
        ),
    }


def instance_parts(
    retrieve: RetrieveService,
    choices: list[tuple[InstanceLocation, str]],
    base: str,
) -> Iterator[tuple[Mapping[str, str], Iterable[bytes]]]:
    """Yield ``(part headers, chunks)`` for each instance in its chosen transfer syntax.

    Stored bytes stream chunk by chunk; a transcoded instance is produced whole (one instance
    in memory at a time).
    """
    for location, syntax in choices:
        headers = _part_headers(location, syntax, base)
        yield headers, _guarded(retrieve, location, syntax)


def _guarded(retrieve: RetrieveService, location: InstanceLocation, syntax: str) -> Iterator[bytes]:
    """The instance's chunks; a failure once streaming has begun is logged and audited."""
    try:
        if syntax == location.transfer_syntax_uid:
            yield from retrieve.stream(location)
        else:
            with retrieve.open(location) as source:
                yield transcode_part10(source, syntax)
    except DrimboxError as error:
        # the status line is gone: the client sees a truncated multipart body
        _log.error(
            "dicomweb.stream_failed instance=%s error=%s",
            location.sop_instance_uid,
            type(error).__name__,
        )
        retrieve.record(
            _TRANSACTION,
            "failure",
            location.study_instance_uid,
            location.series_instance_uid,
            location.sop_instance_uid,
            error=type(error).__name__,
        )
        raise


def _retrieve_instances(
    request: Request,
    retrieve: RetrieveService,
    study: str,
    series: str | None,
    instance: str | None,
) -> Response:
    """Negotiate, then stream the selected instances (sync: called in the thread pool)."""
    accepted = accepted_transfer_syntaxes(accept_ranges(request))
    locations = retrieve.locate(study, series, instance)
    decided: dict[str, str] = {}
    choices = []
    for location in locations:
        stored = location.transfer_syntax_uid
        if stored not in decided:
            decided[stored] = choose_transfer_syntax(stored, accepted, can_transcode)
        choices.append((location, decided[stored]))
    syntaxes = set(decided.values())
    boundary = new_boundary()
    retrieve.record(_TRANSACTION, "success", study, series, instance, instances=len(choices))
    media_type = multipart_content_type(
        boundary, APPLICATION_DICOM, syntaxes.pop() if len(syntaxes) == 1 else None
    )
    base = base_url(request)
    headers = {}
    if all(syntax == location.transfer_syntax_uid for location, syntax in choices):
        sizes = ((_part_headers(loc, syntax, base), loc.blob.size) for loc, syntax in choices)
        headers["Content-Length"] = str(multipart_length(boundary, sizes))
    body = write_multipart(instance_parts(retrieve, choices, base), boundary)
    return StreamingResponse(body, media_type=media_type, headers=headers)


def _metadata(
    request: Request,
    retrieve: RetrieveService,
    study: str,
    series: str | None,
    instance: str | None,
) -> Response:
    media_type = choose_media_type(
        accept_ranges(request), (APPLICATION_DICOM_JSON, APPLICATION_JSON)
    )
    documents = retrieve.metadata_documents(study, series, instance)
    retrieve.record(
        "WADO-RS metadata", "success", study, series, instance, instances=len(documents)
    )
    text = "[" + ",".join(documents) + "]"
    body = text.replace(BULKDATA_BASE_PLACEHOLDER, base_url(request)).encode("utf-8")
    return Response(body, media_type=media_type)


def add_wado_routes(router: APIRouter, retrieve: RetrieveService) -> None:
    """Add the WADO-RS instance and metadata resources to ``router``."""
    instances_responses: dict[int | str, dict[str, object]] = {
        200: {"description": _MULTIPART_DESCRIPTION, "content": {"multipart/related": {}}},
        400: {"description": "Invalid UID or malformed Accept header"},
        404: {"description": "Unknown study, series or instance"},
        406: {"description": "No acceptable transfer syntax can be produced"},
    }
    json_responses: dict[int | str, dict[str, object]] = {
        200: {"description": "DICOM JSON", "content": {APPLICATION_DICOM_JSON: {}}},
        404: {"description": "Unknown study, series or instance"},
    }

    @router.get("/studies/{study}", summary="Retrieve Study", responses=instances_responses)
    async def retrieve_study(request: Request, study: str) -> Response:
        check_uid(study, "StudyInstanceUID")
        return await run_in_threadpool(_retrieve_instances, request, retrieve, study, None, None)

    @router.get(
        "/studies/{study}/series/{series}", summary="Retrieve Series", responses=instances_responses
    )
    async def retrieve_series(request: Request, study: str, series: str) -> Response:
        check_uid(study, "StudyInstanceUID")
        check_uid(series, "SeriesInstanceUID")
        return await run_in_threadpool(_retrieve_instances, request, retrieve, study, series, None)

    @router.get(
        "/studies/{study}/series/{series}/instances/{instance}",
        summary="Retrieve Instance",
        responses=instances_responses,
    )
    async def retrieve_instance(
        request: Request, study: str, series: str, instance: str
    ) -> Response:
        check_uid(study, "StudyInstanceUID")
        check_uid(series, "SeriesInstanceUID")
        check_uid(instance, "SOPInstanceUID")
        return await run_in_threadpool(
            _retrieve_instances, request, retrieve, study, series, instance
        )

    @router.get(
        "/studies/{study}/metadata", summary="Retrieve Study Metadata", responses=json_responses
    )
    async def retrieve_study_metadata(request: Request, study: str) -> Response:
        check_uid(study, "StudyInstanceUID")
        return await run_in_threadpool(_metadata, request, retrieve, study, None, None)

    @router.get(
        "/studies/{study}/series/{series}/metadata",
        summary="Retrieve Series Metadata",
        responses=json_responses,
    )
    async def retrieve_series_metadata(request: Request, study: str, series: str) -> Response:
        check_uid(study, "StudyInstanceUID")
        check_uid(series, "SeriesInstanceUID")
        return await run_in_threadpool(_metadata, request, retrieve, study, series, None)

    @router.get(
        "/studies/{study}/series/{series}/instances/{instance}/metadata",
        summary="Retrieve Instance Metadata",
        responses=json_responses,
    )
    async def retrieve_instance_metadata(
        request: Request, study: str, series: str, instance: str
    ) -> Response:
        check_uid(study, "StudyInstanceUID")
        check_uid(series, "SeriesInstanceUID")
        check_uid(instance, "SOPInstanceUID")
        return await run_in_threadpool(_metadata, request, retrieve, study, series, instance)
