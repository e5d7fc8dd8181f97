"""WADO-URI (PS3.18 §9): ``GET /wado?requestType=WADO&studyUID=...&seriesUID=...&objectUID=...``.

``contentType`` (default ``image/jpeg`` for images, PS3.18 §9.6.1.2.3) selects the Part 10 object
(``application/dicom``, in ``transferSyntax`` or else Explicit VR Little Endian, transcoded when
needed) or a rendered image (JPEG, PNG, GIF) with ``frameNumber``, ``windowCenter``/
``windowWidth``, ``rows``/``columns`` and ``imageQuality``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydicom.uid import ExplicitVRLittleEndian

from dicomweb._common import check_uid, reject_unknown_parameters
from dicomweb.media import (
    ANY_TRANSFER_SYNTAX,
    APPLICATION_DICOM,
    AcceptedTransferSyntaxes,
    choose_transfer_syntax,
)
from dicomweb.rendered import RenderOptions
from drimbox.dicom.rendered import RENDERED_MEDIA_TYPES, Viewport, render
from drimbox.dicom.transfer import can_transcode, transcode_part10
from drimbox.errors import InvalidQueryError, NotAcceptableError
from drimbox.services.retrieve import RetrieveService

__all__ = ["add_wado_uri_route"]

_PARAMETERS = frozenset(
    {
        "requesttype", "studyuid", "seriesuid", "objectuid", "contenttype", "transfersyntax",
        "charset", "frameNumber".lower(), "windowcenter", "windowwidth", "rows", "columns",
        "imagequality", "anonymize", "annotation", "region", "presentationuid",
        "presentationseriesuid",
    }
)  # fmt: skip
"""Parameters of PS3.18 §9.6.1.2 (names are case-sensitive in the standard, matched here as is)."""
_UNSUPPORTED = ("anonymize", "region", "presentationUID", "presentationSeriesUID")
_REQUEST_TYPE = "WADO"


def _positive(parameters: dict[str, str], name: str) -> int | None:
    text = parameters.get(name)
    if text is None:
        return None
    if not text.isdigit() or len(text) > 9 or int(text) < 1:
        raise InvalidQueryError(f"{name}={text!r} is not a positive integer", name)
    return int(text)


def _render_options(parameters: dict[str, str]) -> RenderOptions:
    center, width = parameters.get("windowCenter"), parameters.get("windowWidth")
    window = None
    if (center is None) != (width is None):
        raise InvalidQueryError("windowCenter and windowWidth go together", "windowWidth")
    if center is not None and width is not None:
        try:
            window = (float(center), float(width), "LINEAR")
        except ValueError:
            raise InvalidQueryError(
                "windowCenter/windowWidth must be numbers", "windowCenter"
            ) from None
        if window[1] <= 0:
            raise InvalidQueryError("windowWidth must be positive", "windowWidth")
    rows, columns = _positive(parameters, "rows"), _positive(parameters, "columns")
    viewport = None
    if rows is not None or columns is not None:
        viewport = Viewport(columns or rows or 1, rows or columns or 1)
    quality = _positive(parameters, "imageQuality")
    if quality is not None and quality > 100:
        raise InvalidQueryError("imageQuality must be within 1-100", "imageQuality")
    return RenderOptions(window, viewport, quality)


def _wado(request: Request, retrieve: RetrieveService) -> Response:
    reject_unknown_parameters(request, _PARAMETERS)
    parameters = dict(request.query_params)
    if parameters.get("requestType") != _REQUEST_TYPE:
        raise InvalidQueryError("requestType must be WADO", "requestType")
    for name in _UNSUPPORTED:
        if name in parameters:
            raise InvalidQueryError(f"{name} is not supported by this server", name)
    uids = []
    for name in ("studyUID", "seriesUID", "objectUID"):
        if not parameters.get(name):
            raise InvalidQueryError(f"{name} is required", name)
        uids.append(check_uid(parameters[name], name))
    study, series, instance = uids
    location = retrieve.locate(study, series, instance)[0]
    wanted = [
        item.split(";")[0].strip().lower() for item in parameters.get("contentType", "").split(",")
    ]
    wanted = [item for item in wanted if item] or ["image/jpeg"]
    for content_type in wanted:
        if content_type == APPLICATION_DICOM:
            syntax = parameters.get("transferSyntax", ExplicitVRLittleEndian)
            if syntax != ANY_TRANSFER_SYNTAX:
                check_uid(syntax, "transferSyntax")
            accepted = AcceptedTransferSyntaxes(((syntax, 1.0),))
            chosen = choose_transfer_syntax(location.transfer_syntax_uid, accepted, can_transcode)
            retrieve.record("WADO-URI", "success", study, series, instance)
            if chosen == location.transfer_syntax_uid:
                return StreamingResponse(retrieve.stream(location), media_type=APPLICATION_DICOM)
            with retrieve.open(location) as source:
                return Response(transcode_part10(source, chosen), media_type=APPLICATION_DICOM)
        if content_type in RENDERED_MEDIA_TYPES:
            options = _render_options(parameters)
            frame = _positive(parameters, "frameNumber") or 1
            retrieve.record("WADO-URI", "success", study, series, instance)
            with retrieve.open(location) as source:
                image = render(
                    source,
                    frame=frame,
                    media_type=content_type,
                    window=options.window,
                    viewport=options.viewport,
                    quality=options.quality,
                )
            return Response(image, media_type=content_type)
    raise NotAcceptableError(
        f"contentType {parameters.get('contentType')!r} cannot be produced: use application/dicom "
        f"or one of {', '.join(RENDERED_MEDIA_TYPES)}"
    )


_Text = Annotated[str | None, Query()]


def add_wado_uri_route(router: APIRouter, retrieve: RetrieveService) -> None:
    """Add ``GET /wado`` to ``router``."""

    @router.get(
        "/wado",
        summary="WADO-URI Retrieve",
        responses={
            200: {
                "description": "The object (application/dicom) or a rendered image",
                "content": {APPLICATION_DICOM: {}, **{m: {} for m in RENDERED_MEDIA_TYPES}},
            },
            400: {"description": "Missing or malformed parameter (named in the body)"},
            404: {"description": "Unknown object"},
            406: {"description": "contentType/transferSyntax cannot be produced"},
        },
    )
    async def wado_uri(
        request: Request,
        requestType: _Text = None,  # noqa: N803  (PS3.18 §9.6.1.2 parameter names)
        studyUID: _Text = None,  # noqa: N803
        seriesUID: _Text = None,  # noqa: N803
        objectUID: _Text = None,  # noqa: N803
        contentType: _Text = None,  # noqa: N803
        transferSyntax: _Text = None,  # noqa: N803
    ) -> Response:
        return await run_in_threadpool(_wado, request, retrieve)
