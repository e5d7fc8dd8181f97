"""The third-party ``dicomweb-client`` (default parameters) against the router and drimbox serve."""

from __future__ import annotations

import io

import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread

from drimbox.dicom.synthetic import SyntheticStudy, make_study
from tests.dicomweb.conftest import DicomwebBox, part10_bytes
from tests.fixtures.box import ServedBox

STUDY = SyntheticStudy(seed="dwc", series_count=2, instances_per_series=2, rows=32, columns=32)


@pytest.fixture
def client(dicomweb_box: DicomwebBox) -> DICOMwebClient:
    return DICOMwebClient(url=dicomweb_box.url)


@pytest.fixture
def stored(client: DICOMwebClient) -> DICOMwebClient:
    datasets = list(make_study(STUDY))
    response = client.store_instances(datasets)
    assert len(response.ReferencedSOPSequence) == 4
    return client


def test_store_then_search_at_every_level(stored: DICOMwebClient) -> None:
    studies = stored.search_for_studies(search_filters={"PatientID": STUDY.patient_id})
    assert [s["0020000D"]["Value"][0] for s in studies] == [STUDY.study_instance_uid]
    series = stored.search_for_series(STUDY.study_instance_uid)
    assert len(series) == 2
    instances = stored.search_for_instances(STUDY.study_instance_uid, STUDY.series_instance_uid(1))
    assert len(instances) == 2
    assert len(stored.search_for_instances(fuzzymatching=True, limit=3, offset=1)) == 3


def test_retrieve_study_series_instance_with_defaults(stored: DICOMwebClient) -> None:
    expected = {ds.SOPInstanceUID: part10_bytes(ds) for ds in make_study(STUDY)}
    study = stored.retrieve_study(STUDY.study_instance_uid)
    assert {ds.SOPInstanceUID for ds in study} == set(expected)
    series = stored.retrieve_series(STUDY.study_instance_uid, STUDY.series_instance_uid(0))
    assert len(series) == 2
    instance = stored.retrieve_instance(
        STUDY.study_instance_uid, STUDY.series_instance_uid(0), STUDY.sop_instance_uid(0, 1)
    )
    reference = dcmread(io.BytesIO(expected[STUDY.sop_instance_uid(0, 1)]))
    assert instance.PixelData == reference.PixelData


def test_retrieve_metadata_and_bulk_data(stored: DICOMwebClient) -> None:
    study = stored.retrieve_study_metadata(STUDY.study_instance_uid)
    assert len(study) == 4
    series = stored.retrieve_series_metadata(STUDY.study_instance_uid, STUDY.series_instance_uid(1))
    assert len(series) == 2
    instance = stored.retrieve_instance_metadata(
        STUDY.study_instance_uid, STUDY.series_instance_uid(1), STUDY.sop_instance_uid(1, 0)
    )
    uri = instance["7FE00010"]["BulkDataURI"]
    [pixel_data] = stored.retrieve_bulkdata(uri)
    assert len(pixel_data) == 32 * 32 * 2


def test_retrieve_frames_with_defaults_and_any_transfer_syntax(stored: DICOMwebClient) -> None:
    uids = (STUDY.study_instance_uid, STUDY.series_instance_uid(0), STUDY.sop_instance_uid(0, 0))
    [frame] = stored.retrieve_instance_frames(*uids, frame_numbers=[1])
    assert len(frame) == 32 * 32 * 2
    [any_syntax] = stored.retrieve_instance_frames(
        *uids, frame_numbers=[1], media_types=(("application/octet-stream", "*"),)
    )
    assert any_syntax == frame


def test_rendered_resources(stored: DICOMwebClient) -> None:
    uids = (STUDY.study_instance_uid, STUDY.series_instance_uid(0), STUDY.sop_instance_uid(0, 0))
    assert stored.retrieve_instance_rendered(*uids).startswith(b"\xff\xd8")
    assert stored.retrieve_instance_frames_rendered(*uids, frame_numbers=[1]).startswith(
        b"\xff\xd8"
    )
    png = stored.retrieve_instance_rendered(*uids, media_types=("image/png",))
    assert png.startswith(b"\x89PNG")


def test_every_transaction_against_drimbox_serve(served_box: ServedBox) -> None:
    client = DICOMwebClient(url=served_box.dicomweb_url)
    client.store_instances(list(make_study(STUDY)))
    assert len(client.search_for_studies(search_filters={"PatientID": STUDY.patient_id})) == 1
    assert len(client.search_for_series(STUDY.study_instance_uid)) == 2
    assert len(client.retrieve_study(STUDY.study_instance_uid)) == 4
    metadata = client.retrieve_study_metadata(STUDY.study_instance_uid)
    [pixel_data] = client.retrieve_bulkdata(metadata[0]["7FE00010"]["BulkDataURI"])
    assert len(pixel_data) == 32 * 32 * 2
    uids = (STUDY.study_instance_uid, STUDY.series_instance_uid(0), STUDY.sop_instance_uid(0, 0))
    assert client.retrieve_instance_frames(*uids, frame_numbers=[1]) == [
        make_study(STUDY).__next__().PixelData
    ]
    assert client.retrieve_instance_rendered(*uids).startswith(b"\xff\xd8")
