"""The synthetic loader: deterministic, valid KOS, batched into a real store (both DBs)."""

from __future__ import annotations

import itertools

from registry.loader import load_synthetic_entries, synthetic_entries, synthetic_patient
from registry.models import EntryStatus
from registry.service._rules import check_submission
from registry.service.store import EntryQuery, RegistryStore


def test_same_count_and_seed_give_the_same_entries() -> None:
    first = list(synthetic_entries(50, seed=3))
    assert first == list(synthetic_entries(50, seed=3))
    assert first != list(synthetic_entries(50, seed=4))
    assert len({entry_id for _, _, entry_id in first}) == 50
    assert len({manifest.kos_sop_instance_uid for manifest, _, _ in first}) == 50


def test_synthetic_manifests_pass_the_production_rules() -> None:
    for manifest, kos, _ in itertools.islice(synthetic_entries(20, seed=1, instances=7), 20):
        check_submission(manifest, kos, production=True)


def test_loader_fills_the_store_in_batches(database_url: str) -> None:
    store = RegistryStore(database_url)
    try:
        seen: list[int] = []
        assert load_synthetic_entries(store, 250, batch_size=100, progress=seen.append) == 250
        assert seen == [100, 200, 250]
        expected = [
            entry_id
            for manifest, _, entry_id in synthetic_entries(250)
            if (manifest.patient_oid, manifest.patient_value) == synthetic_patient(0)
        ]
        found, _ = store.search(
            EntryQuery(patient=synthetic_patient(0), include_masked=True, count=500)
        )
        assert expected
        assert sorted(entry.entry_id for entry in found) == sorted(expected)
        assert all(entry.status is EntryStatus.CURRENT for entry in found)
        _, kos, entry_id = next(iter(synthetic_entries(1)))
        assert store.content(entry_id) == kos
    finally:
        store.close()
