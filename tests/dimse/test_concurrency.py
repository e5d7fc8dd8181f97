"""The same instances received concurrently on several associations give exactly one copy each."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from drimbox.dicom.synthetic import SyntheticStudy, write_study
from tests.dimse._support import BoxNode, data_set_bytes, stored_data_set_bytes, storescu

ASSOCIATIONS = 8
REPEATS = 5
INSTANCES = 50


@pytest.mark.integration
def test_eight_associations_sending_one_study_five_times_keep_one_copy_of_each_instance(
    box_node: BoxNode, tmp_path: Path
) -> None:
    study = SyntheticStudy(seed="concurrency", series_count=2, instances_per_series=INSTANCES // 2)
    files = write_study(study, tmp_path / "study")
    sent = {path: data_set_bytes(path) for path in files}

    def send(_: int) -> subprocess.CompletedProcess[str]:
        return storescu(box_node.port, files * REPEATS)

    with ThreadPoolExecutor(ASSOCIATIONS) as pool:
        results = list(pool.map(send, range(ASSOCIATIONS)))

    for result in results:
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stderr.count("Received Store Response (Success)") == INSTANCES * REPEATS
    statistics = box_node.index.statistics()
    assert (statistics.patients, statistics.studies, statistics.series) == (1, 1, 2)
    assert statistics.instances == INSTANCES
    assert statistics.stored_bytes == sum(
        loc.blob.size for loc in box_node.index.locate(study.study_instance_uid)
    )
    assert sorted(box_node.blobs.keys()) == sorted(box_node.index.blob_keys())
    for number, path in enumerate(files):
        series, instance = divmod(number, INSTANCES // 2)
        location = box_node.index.get_instance(study.sop_instance_uid(series, instance))
        assert location is not None
        assert stored_data_set_bytes(box_node.blobs, location.blob.key) == sent[path]
    duplicates = [e for e in box_node.audit.events if e["event"] == "dicom.instance.duplicate"]
    assert len(duplicates) == INSTANCES * (ASSOCIATIONS * REPEATS - 1)
    assert all(e["identical"] == 1 for e in duplicates)
