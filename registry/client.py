"""Client of the national registry (IHE MHD ITI-65/67/68 over httpx), used by the box.

Every failure is a :class:`registry.errors.RegistryError`: ``RegistryUnavailableError`` (retry
later) or ``RegistryRejectedError`` (fix the request), so an outbox retries only what may succeed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import httpx
import orjson

from registry._fhir import FHIR_JSON, URI_SYSTEM, BundleError, provide_document_bundle
from registry._fhir_read import entry_from_document_reference
from registry._ins import URN_OID_PREFIX
from registry.errors import (
    RegistryNotFoundError,
    RegistryRejectedError,
    RegistryUnavailableError,
)
from registry.models import (
    DCM_SYSTEM,
    ENTITLEMENT_HEADER,
    MASKED_ENTITLEMENT,
    REQUESTER_HEADER,
    ManifestSubmission,
    RegistryEntry,
    SearchPage,
    SearchQuery,
)

__all__ = ["RegistryClient"]

#: HTTP 429 Too Many Requests (RFC 6585): retryable like a 5xx.
_TOO_MANY_REQUESTS = 429
_NOT_FOUND = 404
_SERVER_ERROR = 500
_DICOM = "application/dicom"


class RegistryClient:
    """Publish, replace, delete, search and retrieve KOS manifests in the registry.

    Parameters
    ----------
    base_url
        The FHIR base, e.g. ``http://127.0.0.1:8080/registry``.
    timeout
        Seconds for connect, read and write.
    token
        Bearer token sent as ``Authorization`` (never logged).
    requester
        This box's identifier, sent as ``X-Registry-Requester`` (custodian/source box checks).
    http_client
        An existing ``httpx.Client`` (e.g. a Starlette ``TestClient`` for an in-process app);
        the client then does not own it.

    Notes
    -----
    Thread-safe: it holds only an ``httpx.Client``, which is safe to share between threads.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        token: str | None = None,
        requester: str | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        headers = {"Accept": FHIR_JSON}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if requester is not None:
            headers[REQUESTER_HEADER] = requester
        self._headers = headers
        self._owned = http_client is None
        self._http = http_client or httpx.Client(timeout=timeout)
        self._timeout = timeout

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (when the client created it)."""
        if self._owned:
            self._http.close()

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = {**self._headers, **kwargs.pop("headers", {})}
        try:
            response = self._http.request(
                method, url, headers=headers, timeout=self._timeout, **kwargs
            )
        except httpx.TransportError as error:  # connect, read, write, pool timeouts included
            raise RegistryUnavailableError(
                f"registry unreachable: {type(error).__name__}"
            ) from error
        if response.status_code >= _SERVER_ERROR or response.status_code == _TOO_MANY_REQUESTS:
            raise RegistryUnavailableError(
                f"registry answered {response.status_code}: {_diagnostics(response)[0]}",
                retry_after=_retry_after(response),
            )
        if response.is_client_error:
            diagnostics, code, expression = _diagnostics(response)
            kind = (
                RegistryNotFoundError
                if response.status_code == _NOT_FOUND
                else RegistryRejectedError
            )
            raise kind(response.status_code, diagnostics, issue_code=code, expression=expression)
        return response

    # -- ITI-65 ------------------------------------------------------------------------------

    def publish(self, manifest: ManifestSubmission, kos: bytes) -> str:
        """Publish a KOS manifest (ITI-65); return the id of the created or existing entry.

        Publishing the same KOS again returns the same id (idempotent); a manifest with
        ``replaces`` set supersedes that entry.
        """
        bundle = provide_document_bundle(manifest, kos)
        response = self._send(
            "POST",
            f"{self._base}/",
            content=orjson.dumps(bundle),  # ≈ 5× cheaper than httpx's json= (stdlib json)
            headers={"Content-Type": FHIR_JSON},
        )
        for entry in orjson.loads(response.content).get("entry", []):
            location = str(entry.get("response", {}).get("location", ""))
            if location.startswith("DocumentReference/"):
                return location.split("/")[1]
        raise RegistryRejectedError(response.status_code, "no DocumentReference location returned")

    def replace(self, previous: str, manifest: ManifestSubmission, kos: bytes) -> str:
        """Publish ``manifest`` as the replacement of ``previous`` (entry id or KOS UID)."""
        return self.publish(dataclasses.replace(manifest, replaces=previous), kos)

    def delete(self, entry_id: str) -> RegistryEntry:
        """De-publish an entry (status ``entered-in-error``); return it as stored."""
        response = self._send("DELETE", f"{self._base}/DocumentReference/{entry_id}")
        return _entry(response.json())

    # -- ITI-67 ------------------------------------------------------------------------------

    def search_page(
        self, query: SearchQuery | None = None, *, next_url: str | None = None, masked: bool = False
    ) -> SearchPage:
        """Return one page of results: of ``query``, or of a previous page's ``next_url``."""
        headers = {ENTITLEMENT_HEADER: MASKED_ENTITLEMENT} if masked else {}
        if next_url is not None:
            response = self._send("GET", next_url, headers=headers)
        elif query is not None:
            response = self._send(
                "GET",
                f"{self._base}/DocumentReference",
                params=_search_params(query),
                headers=headers,
            )
        else:
            raise ValueError("give a query or a next_url")
        bundle = response.json()
        entries = tuple(_entry(item["resource"]) for item in bundle.get("entry", []))
        links = {link["relation"]: link["url"] for link in bundle.get("link", [])}
        return SearchPage(entries, links.get("next"))

    def iter_search(self, query: SearchQuery, *, masked: bool = False) -> Iterator[RegistryEntry]:
        """Yield every match of ``query``, following the ``next`` links."""
        page = self.search_page(query, masked=masked)
        while True:
            yield from page.entries
            if page.next_url is None:
                return
            page = self.search_page(next_url=page.next_url, masked=masked)

    def search(self, query: SearchQuery, *, masked: bool = False) -> list[RegistryEntry]:
        """Return every match of ``query`` (newest exam first); ``masked`` claims entitlement."""
        return list(self.iter_search(query, masked=masked))

    def read(self, entry_id: str, *, masked: bool = False) -> RegistryEntry:
        """Return one entry by id."""
        headers = {ENTITLEMENT_HEADER: MASKED_ENTITLEMENT} if masked else {}
        response = self._send("GET", f"{self._base}/DocumentReference/{entry_id}", headers=headers)
        return _entry(response.json())

    def find_by_kos(self, kos_sop_instance_uid: str) -> RegistryEntry | None:
        """Return the entry of a KOS SOP Instance UID (any status), or ``None``."""
        response = self._send(
            "GET",
            f"{self._base}/DocumentReference",
            params={"identifier": f"{URI_SYSTEM}|{URN_OID_PREFIX}{kos_sop_instance_uid}"},
        )
        entries = response.json().get("entry", [])
        return _entry(entries[0]["resource"]) if entries else None

    # -- ITI-68 ------------------------------------------------------------------------------

    def retrieve(self, entry_id: str, *, masked: bool = False) -> bytes:
        """Return the KOS bytes of an entry (ITI-68)."""
        headers = {"Accept": _DICOM}
        if masked:
            headers[ENTITLEMENT_HEADER] = MASKED_ENTITLEMENT
        return self._send("GET", f"{self._base}/Binary/{entry_id}", headers=headers).content


def _entry(resource: dict[str, Any]) -> RegistryEntry:
    try:
        return entry_from_document_reference(resource)
    except (BundleError, KeyError, TypeError, ValueError) as error:
        raise RegistryRejectedError(200, f"unreadable DocumentReference: {error}") from error


def _search_params(query: SearchQuery) -> list[tuple[str, str]]:
    params = [("patient.identifier", f"{URN_OID_PREFIX}{query.patient_oid}|{query.patient_value}")]
    if query.statuses:
        params.append(("status", ",".join(status.value for status in query.statuses)))
    if query.modalities:
        params.append(("event", ",".join(f"{DCM_SYSTEM}|{m}" for m in query.modalities)))
    if query.regions:
        params.append(("event", ",".join(f"{r.system}|{r.code}" for r in query.regions)))
    if query.date_from is not None:
        params.append(("period", f"ge{query.date_from.isoformat()}"))
    if query.date_to is not None:
        params.append(("period", f"le{query.date_to.isoformat()}"))
    related = [
        value
        for value in (
            None if query.study_instance_uid is None else URN_OID_PREFIX + query.study_instance_uid,
            query.accession_number,
        )
        if value
    ]
    if related:
        params.append(("related", ",".join(related)))
    if query.document_type is not None:
        params.append(("type", f"{query.document_type.system}|{query.document_type.code}"))
    params.append(("_count", str(query.count)))
    return params


def _diagnostics(response: httpx.Response) -> tuple[str, str, str]:
    try:
        issue = response.json()["issue"][0]
        expression = issue.get("expression") or [""]
        return str(issue.get("diagnostics", "")), str(issue.get("code", "")), str(expression[0])
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return response.text[:200], "", ""


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None
