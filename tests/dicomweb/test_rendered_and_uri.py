"""Rendered/thumbnail resources (PS3.18 §10.4.1.1.4) and WADO-URI (PS3.18 §9); OpenAPI."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, JPEGLosslessSV1

from drimbox.dicom.synthetic import SyntheticStudy
from tests.dicomweb.conftest import DicomwebBox, multipart_parts

CT = SyntheticStudy(seed="render-ct", series_count=1, instances_per_series=3, rows=64, columns=48)
SERIES = f"/studies/{CT.study_instance_uid}/series/{CT.series_instance_uid(0)}"
INSTANCE = f"{SERIES}/instances/{CT.sop_instance_uid(0, 1)}"


@pytest.fixture(scope="module")
def loaded(module_box: DicomwebBox) -> DicomwebBox:
    module_box.load(CT)
    return module_box


def image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_rendered_instance_is_a_jpeg_of_the_image_size(loaded: DicomwebBox) -> None:
    response = loaded.http.get(f"{INSTANCE}/rendered")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert image(response.content).size == (48, 64)


def test_rendered_honours_accept_viewport_window_and_quality(loaded: DicomwebBox) -> None:
    png = loaded.http.get(
        f"{INSTANCE}/rendered",
        params={"viewport": "24,32", "window": "1000,400"},
        headers={"Accept": "image/png"},
    )
    assert png.headers["content-type"] == "image/png"
    assert image(png.content).size == (24, 32)
    low = loaded.http.get(f"{INSTANCE}/rendered", params={"quality": "5"})
    high = loaded.http.get(f"{INSTANCE}/rendered", params={"quality": "95"})
    assert len(low.content) < len(high.content)
    narrow = np.asarray(image(loaded.http.get(f"{INSTANCE}/rendered",
                                              params={"window": "1000,10"}).content))  # fmt: skip
    assert set(np.unique(narrow)) - set(range(0, 30)) - set(range(225, 256)) == set()


def test_rendered_series_is_multipart_with_one_image_per_instance(loaded: DicomwebBox) -> None:
    response = loaded.http.get(f"{SERIES}/rendered")
    assert response.status_code == 200
    parts = multipart_parts(response)
    assert len(parts) == 3
    assert all(headers["content-type"] == "image/jpeg" for headers, _ in parts)


def test_rendered_frame_and_thumbnails(loaded: DicomwebBox) -> None:
    assert loaded.http.get(f"{INSTANCE}/frames/1/rendered").status_code == 200
    assert loaded.http.get(f"{INSTANCE}/frames/2/rendered").status_code == 404
    for path in (f"/studies/{CT.study_instance_uid}", SERIES, INSTANCE, f"{INSTANCE}/frames/1"):
        response = loaded.http.get(f"{path}/thumbnail")
        assert response.status_code == 200, (path, response.text)
        assert max(image(response.content).size) <= 128


@pytest.mark.parametrize(
    ("params", "headers", "status"),
    [
        ({"window": "abc"}, {}, 400),
        ({"viewport": "0,0"}, {}, 400),
        ({"quality": "101"}, {}, 400),
        ({"colour": "red"}, {}, 400),
        ({}, {"Accept": "image/webp"}, 406),
    ],
)
def test_bad_rendering_requests(
    loaded: DicomwebBox, params: dict[str, str], headers: dict[str, str], status: int
) -> None:
    response = loaded.http.get(f"{INSTANCE}/rendered", params=params, headers=headers)
    assert response.status_code == status
    assert response.json()["error"]


def wado_uri(box: DicomwebBox, **params: str) -> dict[str, str]:
    return {
        "requestType": "WADO",
        "studyUID": CT.study_instance_uid,
        "seriesUID": CT.series_instance_uid(0),
        "objectUID": CT.sop_instance_uid(0, 1),
        **params,
    }


def test_wado_uri_returns_the_object_or_a_jpeg(loaded: DicomwebBox) -> None:
    dicom = loaded.http.get("/wado", params=wado_uri(loaded, contentType="application/dicom"))
    assert dicom.status_code == 200
    assert dicom.headers["content-type"] == "application/dicom"
    dataset = dcmread(io.BytesIO(dicom.content))
    assert dataset.SOPInstanceUID == CT.sop_instance_uid(0, 1)
    assert dataset.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    jpeg = loaded.http.get("/wado", params=wado_uri(loaded, rows="32", columns="24"))
    assert jpeg.headers["content-type"] == "image/jpeg"
    assert image(jpeg.content).size == (24, 32)


def test_wado_uri_transcodes_on_request(loaded: DicomwebBox) -> None:
    params = wado_uri(loaded, contentType="application/dicom", transferSyntax=JPEGLosslessSV1)
    response = loaded.http.get("/wado", params=params)
    assert response.status_code == 200, response.text
    assert dcmread(io.BytesIO(response.content)).file_meta.TransferSyntaxUID == JPEGLosslessSV1


@pytest.mark.parametrize(
    ("params", "status", "parameter"),
    [
        ({"requestType": "RADIO"}, 400, "requestType"),
        ({"objectUID": ""}, 400, "objectUID"),
        ({"objectUID": "1.2.3.999"}, 404, None),
        ({"contentType": "text/html"}, 406, None),
        ({"anonymize": "yes"}, 400, "anonymize"),
        ({"windowCenter": "10"}, 400, "windowWidth"),
        ({"unknown": "1"}, 400, "unknown"),
    ],
)
def test_wado_uri_bad_requests(
    loaded: DicomwebBox, params: dict[str, str], status: int, parameter: str | None
) -> None:
    response = loaded.http.get("/wado", params=wado_uri(loaded, **params))
    assert response.status_code == status
    assert response.json().get("parameter") == parameter


def test_openapi_describes_every_transaction(loaded: DicomwebBox) -> None:
    root = loaded.url.removesuffix("/dicom-web")
    schema = loaded.http.get(f"{root}/openapi.json").json()
    summaries = {
        operation["summary"]
        for path in schema["paths"].values()
        for operation in path.values()
        if isinstance(operation, dict) and "summary" in operation
    }
    for expected in (
        "Search for Studies", "Search for Series", "Search for Instances", "Retrieve Study",
        "Retrieve Series", "Retrieve Instance", "Retrieve Study Metadata", "Retrieve Frames",
        "Retrieve Bulk Data", "Retrieve Rendered Instance", "Retrieve Instance Thumbnail",
        "Store Instances", "Store Instances in Study", "WADO-URI Retrieve",
    ):  # fmt: skip
        assert expected in summaries
    assert all(path.startswith("/dicom-web/") for path in schema["paths"])
