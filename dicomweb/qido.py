"""QIDO-RS (PS3.18 §10.6): search for studies, series and instances.

Query parameters are parsed strictly: every matching key is a known DICOM keyword or an 8-digit
tag, values keep DICOM matching syntax (PS3.4 §C.2.2.2), UID lists may use commas (PS3.18
§8.3.4.1), and anything unknown is a 400 naming the parameter. Results beyond the configured
maximum are cut and flagged with a ``Warning: 299`` header (PS3.18 §8.3.4.4).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from dicomweb._common import accept_ranges, base_url, check_uid
from dicomweb.dicomjson import dump, with_retrieve_url
from dicomweb.media import APPLICATION_DICOM_JSON, APPLICATION_JSON, choose_media_type
from drimbox.errors import InvalidQueryError
from drimbox.model import Level
from drimbox.model import Query as SearchQuery
from drimbox.services.query import QueryService

__all__ = ["add_qido_routes", "parse_search"]

_INCLUDE_ALL = "all"
_WARNING_CAPPED = (
    '299 {host}: "The number of results exceeded the maximum supported by the server. '
    'Additional results can be requested."'
)
"""Warning when results were cut at the server's maximum (PS3.18 §8.3.4.4)."""
_MAX_INTEGER_DIGITS = 18


def _keyword(name: str) -> str:
    """Return the pydicom keyword of a keyword or ``ggggeeee`` tag, or raise a 400."""
    if "." in name:
        raise InvalidQueryError(
            f"{name!r}: matching or returning attributes inside sequences is not supported", name
        )
    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        keyword = keyword_for_tag(int(name, 16))
        if keyword:
            return keyword
        raise InvalidQueryError(f"{name!r} is not a known (public) DICOM tag", name)
    if tag_for_keyword(name) is None:
        raise InvalidQueryError(f"unknown query parameter {name!r} (not a DICOM keyword)", name)
    return name


def _integer(value: str, name: str, minimum: int) -> int:
    text = value.strip()
    if not text.isdigit() or len(text) > _MAX_INTEGER_DIGITS:
        raise InvalidQueryError(f"{name}={value!r} is not a non-negative integer", name)
    number = int(text)
    if number < minimum:
        raise InvalidQueryError(f"{name}={value!r} must be at least {minimum}", name)
    return number


def parse_search(
    parameters: list[tuple[str, str]], level: Level, fixed: dict[str, str]
) -> SearchQuery:
    """Build a :class:`drimbox.model.Query` from QIDO-RS query parameters.

    Parameters
    ----------
    parameters
        The query string items, in order (repeated names allowed).
    level
        The level searched.
    fixed
        Keys fixed by the path (``StudyInstanceUID``, ``SeriesInstanceUID``).

    Raises
    ------
    InvalidQueryError
        A parameter is unknown or malformed (400 naming it).
    """
    filters: dict[str, str] = {}
    include: set[str] = set()
    limit: int | None = None
    offset = 0
    fuzzy = False
    for name, value in parameters:
        lowered = name.lower()
        if lowered == "limit":
            limit = _integer(value, "limit", 1)
        elif lowered == "offset":
            offset = _integer(value, "offset", 0)
        elif lowered == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise InvalidQueryError(f"fuzzymatching={value!r}: use true or false", name)
            fuzzy = value.lower() == "true"
        elif lowered == "includefield":
            for field in filter(None, (item.strip() for item in value.split(","))):
                include.add(_INCLUDE_ALL if field.lower() == _INCLUDE_ALL else _keyword(field))
        else:
            keyword = _keyword(name)
            if dictionary_VR(keyword) == "UI":
                value = value.replace(",", "\\")
                for uid in filter(None, value.split("\\")):
                    check_uid(uid, keyword)
            if keyword in filters and filters[keyword] != value:
                raise InvalidQueryError(f"{keyword} is given twice with different values", name)
            if keyword in fixed and fixed[keyword] != value:
                raise InvalidQueryError(f"{keyword} contradicts the resource path", name)
            filters[keyword] = value
    filters.update(fixed)
    return SearchQuery(
        level=level,
        filters=filters,
        fuzzy=fuzzy,
        include=frozenset(include),
        limit=limit,
        offset=offset,
    )


def _search(
    request: Request, query_service: QueryService, level: Level, fixed: dict[str, str]
) -> Response:
    media_type = choose_media_type(
        accept_ranges(request), (APPLICATION_DICOM_JSON, APPLICATION_JSON)
    )
    query = parse_search(request.query_params.multi_items(), level, fixed)
    result = query_service.search(query)
    base = base_url(request)
    body = dump(with_retrieve_url(match, base) for match in result.matches)
    headers = {}
    if query_service.is_capped(query, result):
        host = request.headers.get("host", request.url.netloc)
        headers["Warning"] = _WARNING_CAPPED.format(host=host)
    return Response(body, media_type=media_type, headers=headers)


_Limit = Annotated[
    str | None, Query(description="Maximum number of matches (capped by the server)")
]
_Offset = Annotated[str | None, Query(description="Number of matches to skip")]
_Fuzzy = Annotated[str | None, Query(description="true: fuzzy person-name matching")]
_Include = Annotated[
    list[str] | None, Query(description="Extra attributes (keyword or tag), or 'all'")
]


def add_qido_routes(router: APIRouter, query_service: QueryService) -> None:
    """Add the QIDO-RS resources to ``router``."""
    responses: dict[int | str, dict[str, object]] = {
        200: {"description": "DICOM JSON matches", "content": {APPLICATION_DICOM_JSON: {}}},
        400: {"description": "Unknown or malformed query parameter (named in the body)"},
        406: {"description": "Accept allows no JSON representation"},
    }
    doc = "Attribute matching: `{keyword or tag}={value}` (PS3.18 §8.3.4)."

    def search_route(path: str, summary: str, level: Level) -> None:
        async def search(
            request: Request,
            limit: _Limit = None,
            offset: _Offset = None,
            fuzzymatching: _Fuzzy = None,
            includefield: _Include = None,
        ) -> Response:
            fixed = {}
            for parameter, keyword in (
                ("study", "StudyInstanceUID"),
                ("series", "SeriesInstanceUID"),
            ):
                if parameter in request.path_params:
                    fixed[keyword] = check_uid(request.path_params[parameter], keyword)
            return await run_in_threadpool(_search, request, query_service, level, fixed)

        search.__name__ = "".join(c if c.isalnum() else "_" for c in summary.lower())
        router.add_api_route(
            path, search, methods=["GET"], summary=summary, description=doc, responses=responses
        )

    search_route("/studies", "Search for Studies", Level.STUDY)
    search_route("/series", "Search for Series", Level.SERIES)
    search_route("/instances", "Search for Instances", Level.IMAGE)
    search_route("/studies/{study}/series", "Search for Study's Series", Level.SERIES)
    search_route("/studies/{study}/instances", "Search for Study's Instances", Level.IMAGE)
    search_route(
        "/studies/{study}/series/{series}/instances",
        "Search for Series' Instances",
        Level.IMAGE,
    )
