"""STOW-RS (PS3.18 §10.5): per-instance outcomes, status from the mix, limits and bad bodies."""

from __future__ import annotations

import gzip
import socket
from typing import Any

import httpx

from drimbox.dicom.synthetic import SyntheticStudy, make_instance
from tests.dicomweb.conftest import (
    MAX_REQUEST_BYTES,
    DicomwebBox,
    multipart_body,
    part10_bytes,
    stow_headers,
)

STUDY = SyntheticStudy(seed="stow", instances_per_series=3)
OTHER = SyntheticStudy(seed="stow-other", instances_per_series=1)
REFERENCED_SOP_SEQUENCE, FAILED_SOP_SEQUENCE, FAILURE_REASON = "00081199", "00081198", "00081197"
REFERENCED_SOP_INSTANCE_UID, RETRIEVE_URL = "00081155", "00081190"


def payloads(study: SyntheticStudy) -> list[bytes]:
    return [part10_bytes(make_instance(study, 0, n)) for n in range(study.instances_per_series)]


def post(box: DicomwebBox, path: str, body: bytes, **headers: str) -> httpx.Response:
    return box.http.post(path, content=body, headers={**stow_headers(), **headers})


def items(response: httpx.Response, tag: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = response.json().get(tag, {}).get("Value", [])
    return result


def test_store_instances_answers_200_with_referenced_sops_and_they_are_retrievable(
    dicomweb_box: DicomwebBox,
) -> None:
    response = post(dicomweb_box, "/studies", multipart_body(payloads(STUDY)))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/dicom+json")
    referenced = items(response, REFERENCED_SOP_SEQUENCE)
    assert {item[REFERENCED_SOP_INSTANCE_UID]["Value"][0] for item in referenced} == {
        STUDY.sop_instance_uid(0, n) for n in range(3)
    }
    url = response.json()[RETRIEVE_URL]["Value"][0]
    assert url == f"{dicomweb_box.url}/studies/{STUDY.study_instance_uid}"
    assert dicomweb_box.http.get(url.removeprefix(dicomweb_box.url)).status_code == 200
    assert FAILED_SOP_SEQUENCE not in response.json()


def test_some_failures_give_202_and_one_bad_instance_loses_nothing_else(
    dicomweb_box: DicomwebBox,
) -> None:
    body = multipart_body([*payloads(STUDY), b"this is not DICOM", payloads(OTHER)[0]])
    response = post(dicomweb_box, f"/studies/{STUDY.study_instance_uid}", body)
    assert response.status_code == 202, response.text
    assert len(items(response, REFERENCED_SOP_SEQUENCE)) == 3
    failed = items(response, FAILED_SOP_SEQUENCE)
    assert [item[FAILURE_REASON]["Value"][0] for item in failed] == [0xC000, 0xA900]
    assert failed[1][REFERENCED_SOP_INSTANCE_UID]["Value"] == [OTHER.sop_instance_uid(0, 0)]
    search = dicomweb_box.http.get("/instances")
    assert len(search.json()) == 3


def test_all_failures_give_409(dicomweb_box: DicomwebBox) -> None:
    response = post(dicomweb_box, "/studies", multipart_body([b"junk", b"\x00" * 200]))
    assert response.status_code == 409
    assert len(items(response, FAILED_SOP_SEQUENCE)) == 2


def test_storing_the_same_instances_twice_keeps_one_copy(dicomweb_box: DicomwebBox) -> None:
    body = multipart_body(payloads(STUDY))
    assert post(dicomweb_box, "/studies", body).status_code == 200
    assert post(dicomweb_box, "/studies", body).status_code == 200
    assert len(dicomweb_box.http.get("/instances").json()) == 3


def test_gzip_content_encoding_is_refused_with_415(dicomweb_box: DicomwebBox) -> None:
    body = gzip.compress(multipart_body(payloads(STUDY)))
    response = post(dicomweb_box, "/studies", body, **{"Content-Encoding": "gzip"})
    assert response.status_code == 415
    assert response.json()["parameter"] == "Content-Encoding"
    assert dicomweb_box.http.get("/instances").json() == []


def test_declared_oversize_body_is_refused_with_413_before_reading(
    dicomweb_box: DicomwebBox,
) -> None:
    url = httpx.URL(dicomweb_box.url)
    request = (
        f"POST {url.path}/studies HTTP/1.1\r\nHost: {url.host}\r\n"
        f"Content-Type: {stow_headers()['Content-Type']}\r\n"
        f"Content-Length: {MAX_REQUEST_BYTES + 1}\r\n\r\n"
    )
    with socket.create_connection((url.host, url.port or 80), timeout=10) as connection:
        connection.sendall(request.encode())  # headers only: no body byte is ever sent
        answer = ""
        while '"}' not in answer:
            received = connection.recv(65536).decode("latin-1")
            if not received:
                break
            answer += received
    assert answer.startswith("HTTP/1.1 413")
    assert '"parameter":"Content-Length"' in answer


def test_huge_streamed_part_is_refused_with_413(dicomweb_box: DicomwebBox) -> None:
    chunk = b"\x00" * (1 << 20)

    def body() -> Any:
        yield b"--stow-boundary\r\nContent-Type: application/dicom\r\n\r\n"
        for _ in range(MAX_REQUEST_BYTES // len(chunk) + 2):
            yield chunk
        yield b"\r\n--stow-boundary--\r\n"

    response = dicomweb_box.http.post("/studies", content=body(), headers=stow_headers())
    assert response.status_code == 413
    assert "limit" in response.json()["error"]


def test_truncated_multipart_is_400_naming_the_body(dicomweb_box: DicomwebBox) -> None:
    body = multipart_body(payloads(STUDY))
    response = post(dicomweb_box, "/studies", body[: len(body) // 2])
    assert response.status_code == 400
    assert response.json()["parameter"] == "body"
    assert "truncated" in response.json()["error"]


def test_wrong_content_type_is_415_and_missing_boundary_is_400(dicomweb_box: DicomwebBox) -> None:
    response = dicomweb_box.http.post(
        "/studies", content=b"{}", headers={"Content-Type": "application/dicom+json"}
    )
    assert response.status_code == 415
    response = dicomweb_box.http.post(
        "/studies",
        content=b"",
        headers={"Content-Type": 'multipart/related; type="application/dicom"'},
    )
    assert response.status_code == 400
    assert response.json()["parameter"] == "Content-Type"


def test_invalid_target_study_uid_is_400(dicomweb_box: DicomwebBox) -> None:
    response = post(dicomweb_box, "/studies/1.2.x", multipart_body(payloads(STUDY)))
    assert response.status_code == 400
    assert response.json()["parameter"] == "StudyInstanceUID"
