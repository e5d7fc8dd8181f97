"""WADO-RS rendered and thumbnail resources (PS3.18 §10.4.1.1.4, §10.4.1.1.6).

Rendering itself is :mod:`drimbox.dicom.rendered` (pure functions); here are the resources, the
query parameters (``window``, ``viewport``, ``quality``, ``annotation``) and media type choice
(JPEG preferred, PNG and GIF on request). Study and series resources render each instance as one
part of a ``multipart/related`` response, streamed one instance at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from dicomweb._common import accept_ranges, check_uid, reject_unknown_parameters
from dicomweb.media import choose_media_type
from dicomweb.multipart import multipart_content_type, new_boundary, write_multipart
from dicomweb.pixels import parse_frame_list
from drimbox.dicom.rendered import (
    RENDERED_MEDIA_TYPES,
    Viewport,
    Window,
    parse_viewport,
    parse_window,
    render,
    thumbnail,
)
from drimbox.errors import InvalidQueryError
from drimbox.model import InstanceLocation
from drimbox.services.retrieve import RetrieveService

__all__ = ["RenderOptions", "add_rendered_routes", "parse_render_options"]

_RENDER_PARAMETERS = frozenset({"window", "viewport", "quality", "annotation", "charset"})
_THUMBNAIL_PARAMETERS = frozenset({"viewport", "charset"})
_MAX_QUALITY_DIGITS = 3


class RenderOptions:
    """Parsed rendering parameters of one request."""

    def __init__(self, window: Window | None, viewport: Viewport | None, quality: int | None):
        self.window = window
        self.viewport = viewport
        self.quality = quality


def parse_render_options(parameters: Mapping[str, str]) -> RenderOptions:
    """Parse ``window``, ``viewport`` and ``quality`` (400 naming a malformed one)."""
    quality = None
    text = parameters.get("quality")
    if text is not None:
        if not text.isdigit() or len(text) > _MAX_QUALITY_DIGITS or not 1 <= int(text) <= 100:
            raise InvalidQueryError(f"quality={text!r} is not an integer within 1-100", "quality")
        quality = int(text)
    window = parse_window(parameters["window"]) if "window" in parameters else None
    viewport = parse_viewport(parameters["viewport"]) if "viewport" in parameters else None
    return RenderOptions(window, viewport, quality)


def _render_one(
    retrieve: RetrieveService,
    location: InstanceLocation,
    media_type: str,
    options: RenderOptions,
    frame: int,
) -> bytes:
    with retrieve.open(location) as source:
        return render(
            source,
            frame=frame,
            media_type=media_type,
            window=options.window,
            viewport=options.viewport,
            quality=options.quality,
        )


def _rendered(
    request: Request,
    retrieve: RetrieveService,
    uids: tuple[str, str | None, str | None],
    frames: str | None,
) -> Response:
    reject_unknown_parameters(request, _RENDER_PARAMETERS)
    media_type = choose_media_type(accept_ranges(request), tuple(RENDERED_MEDIA_TYPES))
    options = parse_render_options(request.query_params)
    locations = retrieve.locate(*uids)
    retrieve.record("WADO-RS rendered", "success", *uids, instances=len(locations))
    if frames is not None or uids[2] is not None:
        numbers = parse_frame_list(frames) if frames is not None else [1]
        frames_rendered = [
            _render_one(retrieve, locations[0], media_type, options, n) for n in numbers
        ]
        if len(frames_rendered) == 1:
            return Response(frames_rendered[0], media_type=media_type)
        return _multipart(media_type, iter(frames_rendered))

    def instances_rendered() -> Iterator[bytes]:
        for location in locations:
            yield _render_one(retrieve, location, media_type, options, 1)

    return _multipart(media_type, instances_rendered())


def _multipart(media_type: str, images: Iterator[bytes]) -> Response:
    boundary = new_boundary()
    parts = (({"Content-Type": media_type}, [image]) for image in images)
    return StreamingResponse(
        write_multipart(parts, boundary, flush_size=1),
        media_type=multipart_content_type(boundary, media_type),
    )


def _thumbnail(
    request: Request, retrieve: RetrieveService, uids: tuple[str, str | None, str | None]
) -> Response:
    reject_unknown_parameters(request, _THUMBNAIL_PARAMETERS)
    media_type = choose_media_type(accept_ranges(request), tuple(RENDERED_MEDIA_TYPES))
    viewport = request.query_params.get("viewport")
    locations = retrieve.locate(*uids)
    representative = locations[len(locations) // 2]  # middle slice: a fair picture of a series
    retrieve.record("WADO-RS thumbnail", "success", *uids)
    with retrieve.open(representative) as source:
        if viewport is None:
            image = thumbnail(source, media_type=media_type)
        else:
            size = parse_viewport(viewport)
            image = thumbnail(source, media_type=media_type, size=(size.width, size.height))
    return Response(image, media_type=media_type)


_Window = Annotated[str | None, Query(description="center,width[,linear|linear-exact|sigmoid]")]
_Viewport = Annotated[str | None, Query(description="vw,vh[,sx,sy,sw,sh]")]
_Quality = Annotated[str | None, Query(description="JPEG quality 1-100")]


def add_rendered_routes(router: APIRouter, retrieve: RetrieveService) -> None:
    """Add the rendered and thumbnail resources of studies, series, instances and frames."""
    responses: dict[int | str, dict[str, object]] = {
        200: {
            "description": "Rendered image (multipart/related for several)",
            "content": {media: {} for media in RENDERED_MEDIA_TYPES},
        },
        400: {"description": "Invalid UID or rendering parameter"},
        404: {"description": "Unknown resource or frame"},
        406: {"description": "No acceptable image type, or pixel data cannot be rendered"},
    }
    resources = (
        ("/studies/{study}", "Study"),
        ("/studies/{study}/series/{series}", "Series"),
        ("/studies/{study}/series/{series}/instances/{instance}", "Instance"),
        ("/studies/{study}/series/{series}/instances/{instance}/frames/{frames}", "Frames"),
    )
    for path, name in resources:
        _add_pair(router, retrieve, path, name, responses)


def _uids(request: Request) -> tuple[str, str | None, str | None]:
    params = request.path_params
    study = check_uid(params["study"], "StudyInstanceUID")
    series = params.get("series")
    instance = params.get("instance")
    return (
        study,
        check_uid(series, "SeriesInstanceUID") if series is not None else None,
        check_uid(instance, "SOPInstanceUID") if instance is not None else None,
    )


def _add_pair(
    router: APIRouter,
    retrieve: RetrieveService,
    path: str,
    name: str,
    responses: dict[int | str, dict[str, object]],
) -> None:
    async def rendered(
        request: Request,
        window: _Window = None,
        viewport: _Viewport = None,
        quality: _Quality = None,
    ) -> Response:
        uids = _uids(request)
        frames = request.path_params.get("frames")
        return await run_in_threadpool(_rendered, request, retrieve, uids, frames)

    async def thumbnail_route(request: Request, viewport: _Viewport = None) -> Response:
        uids = _uids(request)
        return await run_in_threadpool(_thumbnail, request, retrieve, uids)

    rendered.__name__ = f"retrieve_rendered_{name.lower()}"
    thumbnail_route.__name__ = f"retrieve_{name.lower()}_thumbnail"
    router.add_api_route(
        f"{path}/rendered",
        rendered,
        methods=["GET"],
        summary=f"Retrieve Rendered {name}",
        responses=responses,
    )
    router.add_api_route(
        f"{path}/thumbnail",
        thumbnail_route,
        methods=["GET"],
        summary=f"Retrieve {name} Thumbnail",
        responses=responses,
    )
