"""Another drimbox as a peer: what one box serves over DICOMweb, a second box takes and serves
identically (WADO-RS multipart of box A posted as-is to STOW-RS of box B)."""

from __future__ import annotations

import io
from collections.abc import Callable

import httpx
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread

from drimbox.bootstrap import Box
from drimbox.dicom.synthetic import SyntheticStudy, make_study
from tests.dicomweb.conftest import multipart_parts

STUDY = SyntheticStudy(seed="box-to-box", series_count=2, instances_per_series=3, rows=48)


def _base(box: Box) -> str:
    return f"http://127.0.0.1:{box.http_port}/dicom-web"


def _qido(base: str, path: str) -> list[dict[str, object]]:
    response = httpx.get(f"{base}{path}", headers={"Accept": "application/dicom+json"}, timeout=30)
    assert response.status_code == 200, response.text
    return sorted(response.json(), key=lambda match: str(match))


def test_a_study_moves_from_one_box_to_another_over_dicomweb_unchanged(
    box_factory: Callable[..., Box],
) -> None:
    source, target = box_factory(aet="BOXA"), box_factory(aet="BOXB")
    DICOMwebClient(url=_base(source)).store_instances(list(make_study(STUDY)))
    study = STUDY.study_instance_uid

    retrieved = httpx.get(
        f"{_base(source)}/studies/{study}",
        headers={"Accept": 'multipart/related; type="application/dicom"'},
        timeout=60,
    )
    assert retrieved.status_code == 200
    stored = httpx.post(
        f"{_base(target)}/studies",
        content=retrieved.content,
        headers={
            "Content-Type": retrieved.headers["content-type"],
            "Accept": "application/dicom+json",
        },
        timeout=60,
    )
    assert stored.status_code == 200, stored.text
    assert len(stored.json()["00081199"]["Value"]) == 6

    for path in (
        "/studies?PatientID=" + STUDY.patient_id,
        f"/studies/{study}/series",
        f"/studies/{study}/instances",
    ):
        source_matches = _qido(_base(source), path)
        target_matches = _qido(_base(target), path)
        assert [_without_retrieve_url(m) for m in source_matches] == [
            _without_retrieve_url(m) for m in target_matches
        ]

    again = httpx.get(
        f"{_base(target)}/studies/{study}",
        headers={"Accept": 'multipart/related; type="application/dicom"'},
        timeout=60,
    )
    original = {_sop(body): body for _, body in multipart_parts(retrieved)}
    copied = {_sop(body): body for _, body in multipart_parts(again)}
    assert copied == original


def _without_retrieve_url(match: dict[str, object]) -> dict[str, object]:
    return {tag: value for tag, value in match.items() if tag != "00081190"}


def _sop(part10: bytes) -> str:
    return str(dcmread(io.BytesIO(part10), stop_before_pixels=True).SOPInstanceUID)
