"""Orthanc, as the site's PACS, pushes a study to the box (POST /modalities/<name>/store)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread

from drimbox.dicom.synthetic import SyntheticStudy, write_study
from tests.dimse._support import BOX_AET, BoxNode, data_set_bytes, stored_data_set_bytes
from tests.fixtures.orthanc import OrthancFactory


@pytest.mark.integration
def test_orthanc_pushes_a_study_that_the_box_stores_and_indexes(
    box_node: BoxNode, orthanc_factory: OrthancFactory, tmp_path: Path
) -> None:
    pacs = orthanc_factory(modalities={"drimbox": (BOX_AET, "127.0.0.1", box_node.port)})
    study = SyntheticStudy(seed="orthanc-push", series_count=2, instances_per_series=6)
    files = write_study(study, tmp_path / "study")
    orthanc_ids = [pacs.upload(path.read_bytes()) for path in files]

    answer = pacs.store_to_modality("drimbox", orthanc_ids)

    assert answer["FailedInstancesCount"] == 0
    assert answer["InstancesCount"] == len(files)
    assert box_node.index.statistics().instances == len(files)
    for path in files:
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        location = box_node.index.get_instance(uid)
        assert location is not None
        assert location.study_instance_uid == study.study_instance_uid
        assert stored_data_set_bytes(box_node.blobs, location.blob.key) == data_set_bytes(path)
    sources = {e["source"] for e in box_node.audit.events if e["event"] == "dicom.instance.stored"}
    assert sources == {f"{pacs.aet}@127.0.0.1"}
