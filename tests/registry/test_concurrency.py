"""Concurrent writers: same manifest published at once, competing replacements (both DBs)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from registry.client import RegistryClient
from registry.errors import RegistryRejectedError
from registry.models import EntryStatus, ManifestSubmission, SearchQuery
from tests.registry.kos import make_ins, make_manifest

_THREADS = 8
_ALL = (EntryStatus.CURRENT, EntryStatus.SUPERSEDED, EntryStatus.ENTERED_IN_ERROR)


def test_concurrent_publishes_of_the_same_manifest_store_one_entry(
    client: RegistryClient,
) -> None:
    manifest, kos = make_manifest(patient_value=make_ins(501))
    with ThreadPoolExecutor(_THREADS) as pool:
        ids = list(pool.map(lambda _: client.publish(manifest, kos), range(_THREADS)))
    assert len(set(ids)) == 1
    stored = client.search(SearchQuery(manifest.patient_value, manifest.patient_oid, _ALL))
    assert [entry.entry_id for entry in stored] == ids[:1]


def test_competing_replacements_of_one_entry_let_exactly_one_win(
    client: RegistryClient,
) -> None:
    patient = make_ins(502)
    first, kos = make_manifest(patient_value=patient)
    target = client.publish(first, kos)
    candidates = [
        make_manifest(patient_value=patient, study_instance_uid=first.study_instance_uid)
        for _ in range(_THREADS)
    ]

    def replace(candidate: tuple[ManifestSubmission, bytes]) -> str | int:
        manifest, content = candidate
        try:
            return client.replace(target, manifest, content)
        except RegistryRejectedError as error:
            return error.status

    with ThreadPoolExecutor(_THREADS) as pool:
        outcomes = list(pool.map(replace, candidates))
    winners = [outcome for outcome in outcomes if isinstance(outcome, str)]
    assert len(winners) == 1
    assert sorted(o for o in outcomes if isinstance(o, int)) == [409] * (_THREADS - 1)
    stored = client.search(SearchQuery(patient, first.patient_oid, _ALL))
    assert {(e.entry_id, e.status) for e in stored} == {
        (winners[0], EntryStatus.CURRENT),
        (target, EntryStatus.SUPERSEDED),
    }


@pytest.mark.parametrize("count", [24])
def test_concurrent_distinct_publishes_are_all_stored(client: RegistryClient, count: int) -> None:
    patient = make_ins(503)
    submissions = [make_manifest(patient_value=patient) for _ in range(count)]
    with ThreadPoolExecutor(_THREADS) as pool:
        ids = list(pool.map(lambda item: client.publish(*item), submissions))
    stored = client.search(SearchQuery(patient, submissions[0][0].patient_oid))
    assert sorted(entry.entry_id for entry in stored) == sorted(ids)
    assert len(set(ids)) == count
