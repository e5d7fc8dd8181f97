"""The box-side client against the embedded registry (both DBs) and a standalone process."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import date
from io import BytesIO

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydicom import dcmread

from registry._ins import INS_NIR_TEST_OID
from registry.client import RegistryClient
from registry.errors import (
    RegistryNotFoundError,
    RegistryRejectedError,
    RegistryUnavailableError,
)
from registry.models import EntryStatus, SearchQuery
from tests.registry.conftest import LOOPBACK, ThreadedServer, free_port
from tests.registry.kos import SAMPLE_INS, make_ins, make_manifest

_ALL = (EntryStatus.CURRENT, EntryStatus.SUPERSEDED, EntryStatus.ENTERED_IN_ERROR)


def _query(**overrides: object) -> SearchQuery:
    values: dict[str, object] = {"patient_value": SAMPLE_INS, "patient_oid": INS_NIR_TEST_OID}
    values.update(overrides)
    return SearchQuery(**values)  # type: ignore[arg-type]


def test_real_kos_round_trip_is_byte_identical(client: RegistryClient) -> None:
    manifest, kos = make_manifest()
    entry_id = client.publish(manifest, kos)
    retrieved = client.retrieve(entry_id)
    assert retrieved == kos
    dataset = dcmread(BytesIO(retrieved))
    assert dataset.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.59"
    assert dataset.SOPInstanceUID == manifest.kos_sop_instance_uid


def test_publish_is_idempotent_and_reads_back_the_manifest(client: RegistryClient) -> None:
    manifest, kos = make_manifest(modalities=("CT", "MR"))
    entry_id = client.publish(manifest, kos)
    assert client.publish(manifest, kos) == entry_id
    entry = client.read(entry_id)
    assert entry.status is EntryStatus.CURRENT
    assert entry.manifest == manifest
    assert entry.content_size == len(kos)
    assert client.find_by_kos(manifest.kos_sop_instance_uid) == entry
    assert client.find_by_kos("1.2.3.999") is None


def test_replace_and_delete_through_the_client(client: RegistryClient) -> None:
    first, kos1 = make_manifest()
    old = client.publish(first, kos1)
    second, kos2 = make_manifest(study_instance_uid=first.study_instance_uid)
    new = client.replace(old, second, kos2)
    assert client.read(old).status is EntryStatus.SUPERSEDED
    assert client.read(new).manifest.replaces == old
    assert client.delete(new).status is EntryStatus.ENTERED_IN_ERROR
    assert client.search(_query()) == []
    assert {e.entry_id for e in client.search(_query(statuses=_ALL))} == {old, new}


def test_search_criteria_and_paging(client: RegistryClient) -> None:
    ids = []
    for month in range(1, 8):
        manifest, kos = make_manifest(
            period_start=date(2024, month, 1), modalities=("MR",) if month % 2 else ("CT",)
        )
        ids.append(client.publish(manifest, kos))
    every = client.search(_query(count=2))
    assert [e.entry_id for e in every] == ids[::-1]
    page = client.search_page(_query(count=3))
    assert len(page.entries) == 3 and page.next_url is not None
    mr = client.search(_query(modalities=("MR",), date_from=date(2024, 3, 1)))
    assert [e.entry_id for e in mr] == [ids[6], ids[4], ids[2]]
    by_accession = client.search(_query(accession_number=every[0].manifest.accession_number))
    assert [e.entry_id for e in by_accession] == [ids[6]]
    study = every[1].manifest.study_instance_uid
    assert [e.entry_id for e in client.search(_query(study_instance_uid=study))] == [ids[5]]


def test_masked_entries_need_the_entitlement(registry_url: str) -> None:
    manifest, kos = make_manifest(masked=True, source_box_id="box-b", custodian=None)
    with RegistryClient(registry_url, requester="box-b") as owner:
        entry_id = owner.publish(manifest, kos)
        assert [e.entry_id for e in owner.search(_query())] == [entry_id]
    with RegistryClient(registry_url, requester="box-c") as stranger:
        assert stranger.search(_query()) == []
        with pytest.raises(RegistryNotFoundError):
            stranger.retrieve(entry_id)
        assert [e.entry_id for e in stranger.search(_query(), masked=True)] == [entry_id]
        assert stranger.retrieve(entry_id, masked=True) == kos


def test_rejections_are_typed_with_the_operation_outcome(client: RegistryClient) -> None:
    bad, kos = make_manifest(patient_value=SAMPLE_INS[:13] + "00")
    with pytest.raises(RegistryRejectedError) as rejected:
        client.publish(bad, kos)
    assert rejected.value.status == 422
    assert rejected.value.issue_code == "value"
    assert "check key" in rejected.value.diagnostics
    assert not isinstance(rejected.value, RegistryUnavailableError)
    manifest, kos = make_manifest()
    client.publish(manifest, kos)
    _, other = make_manifest(
        kos_sop_instance_uid=manifest.kos_sop_instance_uid,
        study_instance_uid=manifest.study_instance_uid,
    )
    with pytest.raises(RegistryRejectedError) as conflict:
        client.publish(manifest, other)
    assert conflict.value.status == 409
    with pytest.raises(RegistryNotFoundError):
        client.retrieve("does-not-exist")
    with pytest.raises(RegistryNotFoundError):
        client.delete("does-not-exist")


def test_connection_refused_is_unavailable() -> None:
    url = f"http://{LOOPBACK}:{free_port()}/registry"
    with (
        RegistryClient(url, timeout=2) as client,
        pytest.raises(RegistryUnavailableError, match="unreachable"),
    ):
        client.publish(*make_manifest())


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback socket that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen()
        accepted: list[socket.socket] = []
        stop = threading.Event()

        def accept() -> None:
            listener.settimeout(0.1)
            while not stop.is_set():
                try:
                    accepted.append(listener.accept()[0])
                except TimeoutError:
                    continue

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        yield listener.getsockname()[1]
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()


def test_timeout_is_unavailable(silent_server: int) -> None:
    url = f"http://{LOOPBACK}:{silent_server}/registry"
    with RegistryClient(url, timeout=0.3) as client, pytest.raises(RegistryUnavailableError):
        client.search(_query())


@pytest.mark.parametrize(("status", "retry_after"), [(503, 7.0), (429, 2.0), (500, None)])
def test_server_errors_and_throttling_are_unavailable(
    status: int, retry_after: float | None
) -> None:
    overloaded = FastAPI()

    @overloaded.api_route("/registry/{path:path}", methods=["GET", "POST"])
    async def refuse(path: str) -> JSONResponse:
        headers = {} if retry_after is None else {"Retry-After": str(int(retry_after))}
        outcome = {"resourceType": "OperationOutcome", "issue": [{"code": "transient"}]}
        return JSONResponse(outcome, status_code=status, headers=headers)

    with (
        ThreadedServer(overloaded) as server,
        RegistryClient(f"{server.url}/registry", timeout=5) as client,
    ):
        with pytest.raises(RegistryUnavailableError) as caught:
            client.publish(*make_manifest())
        assert caught.value.retry_after == retry_after


def test_client_against_a_standalone_registry_process(standalone_registry: str) -> None:
    with RegistryClient(standalone_registry, timeout=10, requester="box-a") as client:
        manifest, kos = make_manifest(patient_value=make_ins(31))
        entry_id = client.publish(manifest, kos)
        found = client.search(_query(patient_value=make_ins(31)))
        assert [e.entry_id for e in found] == [entry_id]
        assert found[0].content_url == f"{standalone_registry}/Binary/{entry_id}"
        assert client.retrieve(entry_id) == kos
