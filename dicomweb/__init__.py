"""DICOMweb (DICOM PS3.18) for the box, as a FastAPI router factory.

The router calls the box's services only (never an adapter); the composition root mounts it
(at ``/dicom-web`` by default). Transactions: QIDO-RS (:mod:`dicomweb.qido`), WADO-RS
(:mod:`dicomweb.wado`, :mod:`dicomweb.pixels`, :mod:`dicomweb.rendered`), STOW-RS
(:mod:`dicomweb.stow`) and WADO-URI (:mod:`dicomweb.wado_uri`).
"""

from __future__ import annotations

from fastapi import APIRouter

from dicomweb.errors import DicomwebRoute
from dicomweb.pixels import add_pixel_routes
from dicomweb.qido import add_qido_routes
from dicomweb.rendered import add_rendered_routes
from dicomweb.stow import add_stow_routes
from dicomweb.wado import add_wado_routes
from dicomweb.wado_uri import add_wado_uri_route
from drimbox.services.ingest import IngestService
from drimbox.services.query import QueryService
from drimbox.services.retrieve import RetrieveService

__all__ = ["create_dicomweb_router"]


def create_dicomweb_router(
    *,
    query: QueryService,
    retrieve: RetrieveService,
    ingest: IngestService,
    max_results: int = 1000,
    max_request_bytes: int = 2 * 1024**3,
) -> APIRouter:
    """Build the DICOMweb router.

    Parameters
    ----------
    query, retrieve, ingest
        The box's services.
    max_results
        QIDO-RS ceiling on matches per request (a ``Warning`` header says when it cut results);
        the query service's own ceiling applies too, whichever is lower.
    max_request_bytes
        Largest STOW-RS request body (413 beyond).

    Returns
    -------
    APIRouter
        To be included under the DICOMweb base path (e.g. ``prefix="/dicom-web"``).
    """
    if max_results < 1 or max_request_bytes < 1:
        raise ValueError("max_results and max_request_bytes must be positive")
    router = APIRouter(route_class=DicomwebRoute, tags=["DICOMweb"])
    limited = query.with_max_results(max_results)
    add_qido_routes(router, limited)
    add_stow_routes(router, ingest, max_request_bytes)
    add_wado_uri_route(router, retrieve)
    add_rendered_routes(router, retrieve)
    add_pixel_routes(router, retrieve)
    add_wado_routes(router, retrieve)
    return router
