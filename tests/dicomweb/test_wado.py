"""WADO-RS (PS3.18 §10.4): instances, metadata, frames, bulk data, negotiation, transcoding."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    RLELossless,
)

from drimbox.dicom.rendered import grayscale_to_8_bit
from drimbox.dicom.synthetic import SyntheticStudy, make_instance
from drimbox.dicom.transfer import transcode_part10
from tests.dicomweb.conftest import DicomwebBox, multipart_parts, part10_bytes

CT = SyntheticStudy(seed="wado-ct", series_count=2, instances_per_series=3)
MULTI = SyntheticStudy(seed="wado-multiframe", instances_per_series=1, rows=32, columns=16)
FRAMES = 4
ANS = Path("/work/shared/ans-samples/Echantillons validateurs/Validateur WADO-RS")


def multiframe() -> Dataset:
    dataset = make_instance(MULTI, 0, 0)
    frames = [np.full((MULTI.rows, MULTI.columns), 100 * (n + 1), "<u2") for n in range(FRAMES)]
    dataset.NumberOfFrames = FRAMES
    dataset.PixelData = b"".join(frame.tobytes() for frame in frames)
    return dataset


@pytest.fixture(scope="module")
def loaded(module_box: DicomwebBox) -> tuple[DicomwebBox, dict[str, bytes]]:
    stored = {}
    for dataset in module_box.load(CT):
        stored[dataset.SOPInstanceUID] = part10_bytes(dataset)
    frames = multiframe()
    data = part10_bytes(frames)
    module_box.ingest.store_part10(io.BytesIO(data), source="test")
    stored[frames.SOPInstanceUID] = data
    return module_box, stored


def instance_path(study: SyntheticStudy, series: int, instance: int) -> str:
    return (
        f"/studies/{study.study_instance_uid}/series/{study.series_instance_uid(series)}"
        f"/instances/{study.sop_instance_uid(series, instance)}"
    )


def test_retrieve_study_streams_every_stored_instance_byte_identical(
    loaded: tuple[DicomwebBox, dict[str, bytes]],
) -> None:
    box, stored = loaded
    response = box.http.get(f"/studies/{CT.study_instance_uid}")
    assert response.status_code == 200
    content_type = response.headers["content-type"]
    assert content_type.startswith('multipart/related; type="application/dicom"; boundary=')
    assert f"transfer-syntax={ExplicitVRLittleEndian}" in content_type
    parts = multipart_parts(response)
    assert len(parts) == 6
    for headers, body in parts:
        assert headers["content-type"] == (
            f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"
        )
        uid = dcmread(io.BytesIO(body), stop_before_pixels=True).SOPInstanceUID
        assert body == stored[uid]
        assert headers["content-location"].endswith(f"/instances/{uid}")


def test_retrieve_series_and_instance_select_only_their_instances(
    loaded: tuple[DicomwebBox, dict[str, bytes]],
) -> None:
    box, stored = loaded
    series = box.http.get(f"/studies/{CT.study_instance_uid}/series/{CT.series_instance_uid(1)}")
    assert [body for _, body in multipart_parts(series)] == [
        stored[CT.sop_instance_uid(1, n)] for n in range(3)
    ]
    instance = box.http.get(instance_path(CT, 0, 2))
    assert [body for _, body in multipart_parts(instance)] == [stored[CT.sop_instance_uid(0, 2)]]


@pytest.mark.parametrize("sample", ["Requête WADO-RS - Instance", "Requête WADO-RS - Série"])
def test_ans_wado_rs_samples_are_answered_in_explicit_little_endian(
    loaded: tuple[DicomwebBox, dict[str, bytes]], sample: str
) -> None:
    box, stored = loaded
    text = (ANS / sample / f"{sample}.txt").read_text()
    headers = dict(
        (name.strip(), value.strip())
        for name, _, value in (line.partition(":") for line in text.splitlines()[1:] if line)
        if name.strip() in ("Accept", "KOS-SOPInstanceUID")
    )
    path = instance_path(CT, 0, 0)
    if "Série" in sample:
        path = path.rsplit("/instances", 1)[0]
    response = box.http.get(path, headers=headers)
    assert response.status_code == 200, response.text
    assert f"transfer-syntax={ExplicitVRLittleEndian}" in response.headers["content-type"]
    assert all(body in stored.values() for _, body in multipart_parts(response))


def pixels_of(part10: bytes) -> np.ndarray[Any, Any]:
    return dcmread(io.BytesIO(part10)).pixel_array


@pytest.mark.parametrize("target", [JPEGLosslessSV1, RLELossless])
def test_lossless_transcoding_round_trip_keeps_every_pixel(
    loaded: tuple[DicomwebBox, dict[str, bytes]], target: str
) -> None:
    box, stored = loaded
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={target}'
    response = box.http.get(instance_path(CT, 1, 1), headers={"Accept": accept})
    assert response.status_code == 200, response.text
    [(headers, body)] = multipart_parts(response)
    assert headers["content-type"] == f"application/dicom; transfer-syntax={target}"
    assert dcmread(io.BytesIO(body)).file_meta.TransferSyntaxUID == target
    np.testing.assert_array_equal(pixels_of(body), pixels_of(stored[CT.sop_instance_uid(1, 1)]))


def test_lossy_jpeg_baseline_transcoding_keeps_the_image_recognisable(
    loaded: tuple[DicomwebBox, dict[str, bytes]],
) -> None:
    box, stored = loaded
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={JPEGBaseline8Bit}'
    response = box.http.get(instance_path(CT, 0, 1), headers={"Accept": accept})
    assert response.status_code == 200, response.text
    [(_, body)] = multipart_parts(response)
    original = dcmread(io.BytesIO(stored[CT.sop_instance_uid(0, 1)]))
    expected = grayscale_to_8_bit(original.pixel_array, original).astype(float)
    received = pixels_of(body).astype(float)
    psnr = 10 * np.log10(255**2 / np.mean((expected - received) ** 2))
    assert psnr > 30


def test_compressed_storage_is_served_as_stored_for_wildcard_and_decoded_by_default(
    dicomweb_box: DicomwebBox,
) -> None:
    original = part10_bytes(make_instance(SyntheticStudy(seed="jpeg-ll"), 0, 0))
    compressed = transcode_part10(io.BytesIO(original), JPEGLosslessSV1)
    dicomweb_box.ingest.store_part10(io.BytesIO(compressed), source="test")
    path = instance_path(SyntheticStudy(seed="jpeg-ll"), 0, 0)
    wildcard = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    [(_, as_stored)] = multipart_parts(dicomweb_box.http.get(path, headers={"Accept": wildcard}))
    assert as_stored == compressed
    default = dicomweb_box.http.get(
        path, headers={"Accept": 'multipart/related; type="application/dicom"'}
    )
    [(headers, decoded)] = multipart_parts(default)
    assert ExplicitVRLittleEndian in headers["content-type"]
    np.testing.assert_array_equal(pixels_of(decoded), pixels_of(original))


def test_unproducible_transfer_syntax_is_406_with_a_reason(
    loaded: tuple[DicomwebBox, dict[str, bytes]],
) -> None:
    box, _ = loaded
    mpeg2 = "1.2.840.10008.1.2.4.100"
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={mpeg2}'
    response = box.http.get(f"/studies/{CT.study_instance_uid}", headers={"Accept": accept})
    assert response.status_code == 406
    assert mpeg2 in response.json()["error"]


def test_metadata_is_dicom_json_with_bulk_data_uris_on_this_server(
    loaded: tuple[DicomwebBox, dict[str, bytes]],
) -> None:
    box, stored = loaded
    response = box.http.get(f"/studies/{CT.study_instance_uid}/metadata")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/dicom+json")
    documents = response.json()
    assert len(documents) == 6
    first = documents[0]
    uri = first["7FE00010"]["BulkDataURI"]
    assert uri.startswith(f"{box.url}/studies/{CT.study_instance_uid}/series/")
    bulk = box.http.get(uri.removeprefix(box.url), headers={"Accept": "*/*"})
    assert bulk.status_code == 200, bulk.text
    [(_headers, pixel_data)] = multipart_parts(bulk)
    uid = first["00080018"]["Value"][0]
    assert pixel_data == dcmread(io.BytesIO(stored[uid])).PixelData
    series = box.http.get(
        f"/studies/{CT.study_instance_uid}/series/{CT.series_instance_uid(0)}/metadata"
    )
    assert len(series.json()) == 3
    one = box.http.get(f"{instance_path(CT, 0, 0)}/metadata").json()
    assert one[0]["00080018"]["Value"] == [CT.sop_instance_uid(0, 0)]


def test_frames_are_read_by_range_in_the_order_asked(
    loaded: tuple[DicomwebBox, dict[str, bytes]],
) -> None:
    box, _stored = loaded
    dataset = multiframe()
    size = MULTI.rows * MULTI.columns * 2
    response = box.http.get(f"{instance_path(MULTI, 0, 0)}/frames/3,1")
    assert response.status_code == 200, response.text
    parts = multipart_parts(response)
    assert [body for _, body in parts] == [
        dataset.PixelData[2 * size : 3 * size],
        dataset.PixelData[:size],
    ]
    assert parts[0][0]["content-type"] == (
        f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"
    )


def test_frames_can_be_asked_as_jpeg_lossless(
    loaded: tuple[DicomwebBox, dict[str, bytes]],
) -> None:
    box, _ = loaded
    accept = f'multipart/related; type="image/jpeg"; transfer-syntax={JPEGLosslessSV1}'
    response = box.http.get(f"{instance_path(MULTI, 0, 0)}/frames/2", headers={"Accept": accept})
    assert response.status_code == 200, response.text
    [(headers, body)] = multipart_parts(response)
    assert headers["content-type"] == f"image/jpeg; transfer-syntax={JPEGLosslessSV1}"
    assert body.startswith(b"\xff\xd8")


@pytest.mark.parametrize(
    ("suffix", "status"),
    [("/frames/9", 404), ("/frames/0", 400), ("/frames/1,x", 400), ("/bulkdata/00100010", 404)],
)
def test_bad_frames_and_bulk_data_paths(
    loaded: tuple[DicomwebBox, dict[str, bytes]], suffix: str, status: int
) -> None:
    box, _ = loaded
    response = box.http.get(f"{instance_path(MULTI, 0, 0)}{suffix}")
    assert response.status_code == status
    assert response.json()["error"]


@pytest.mark.parametrize(
    ("path", "status", "parameter"),
    [
        ("/studies/1.2.3.4.999", 404, None),
        ("/studies/1.2.3.4.999/metadata", 404, None),
        ("/studies/not-a-uid", 400, "StudyInstanceUID"),
        ("/studies/1.2.3/series/01.2/metadata", 400, "SeriesInstanceUID"),
        (f"/studies/1.2.3/series/1.2/instances/{'1' * 65}", 400, "SOPInstanceUID"),
    ],
)
def test_unknown_and_invalid_uids(
    loaded: tuple[DicomwebBox, dict[str, bytes]], path: str, status: int, parameter: str | None
) -> None:
    box, _ = loaded
    response = box.http.get(path)
    assert response.status_code == status
    body = response.json()
    assert body["error"]
    assert body.get("parameter") == parameter


def test_malformed_accept_is_400(loaded: tuple[DicomwebBox, dict[str, bytes]]) -> None:
    box, _ = loaded
    response = box.http.get(f"/studies/{CT.study_instance_uid}", headers={"Accept": "dicom;q=7"})
    assert response.status_code == 400
    assert response.json()["parameter"] == "Accept"


def test_each_retrieval_is_audited(loaded: tuple[DicomwebBox, dict[str, bytes]]) -> None:
    box, _ = loaded
    before = len(box.audit.events)
    box.http.get(f"/studies/{CT.study_instance_uid}/series/{CT.series_instance_uid(0)}")
    event = box.audit.events[before]
    assert event["event"] == "retrieve"
    assert event["transaction"] == "WADO-RS"
    assert event["series"] == CT.series_instance_uid(0)
    assert json.dumps(event)  # plain values only


def test_stored_compressed_frames_are_sent_as_stored_or_decoded_on_request(
    dicomweb_box: DicomwebBox,
) -> None:
    study = SyntheticStudy(seed="jpeg-frames")
    original = part10_bytes(make_instance(study, 0, 0))
    compressed = transcode_part10(io.BytesIO(original), JPEGLosslessSV1)
    dicomweb_box.ingest.store_part10(io.BytesIO(compressed), source="test")
    frames = f"{instance_path(study, 0, 0)}/frames/1"
    [(headers, code_stream)] = multipart_parts(dicomweb_box.http.get(frames))
    assert headers["content-type"] == f"image/jpeg; transfer-syntax={JPEGLosslessSV1}"
    stored = dcmread(io.BytesIO(compressed))
    assert code_stream == get_frame(stored.PixelData, 0, number_of_frames=1)
    native = dicomweb_box.http.get(
        frames, headers={"Accept": 'multipart/related; type="application/octet-stream"'}
    )
    [(headers, pixels)] = multipart_parts(native)
    assert headers["content-type"].startswith("application/octet-stream")
    assert pixels == dcmread(io.BytesIO(original)).PixelData


def test_a_blob_lost_mid_stream_truncates_the_body_and_is_audited(
    dicomweb_box: DicomwebBox,
) -> None:
    study = SyntheticStudy(seed="lost-blob", instances_per_series=2)
    dicomweb_box.load(study)
    lost = dicomweb_box.retrieve.locate(study.study_instance_uid)[1]
    dicomweb_box.blobs.delete(lost.blob.key)
    url = f"/studies/{study.study_instance_uid}"
    with pytest.raises(httpx.HTTPError), dicomweb_box.http.stream("GET", url) as response:
        assert response.status_code == 200
        response.read()
    failures = [e for e in dicomweb_box.audit.events if e["outcome"] == "failure"]
    assert failures[-1]["instance"] == lost.sop_instance_uid
