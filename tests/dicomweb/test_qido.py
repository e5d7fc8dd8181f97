"""QIDO-RS (PS3.18 §10.6) against a served app on real adapters."""

from __future__ import annotations

from typing import Any

import pytest

from drimbox.dicom.synthetic import SyntheticStudy
from tests.dicomweb.conftest import MAX_RESULTS, DicomwebBox

CT = SyntheticStudy(seed="qido-ct", patient_id="PAT-A", patient_name="Müller^Anna",
                    modality="CT", series_count=2, instances_per_series=3,
                    accession_number="ACC-A", study_date="20240110")  # fmt: skip
MR = SyntheticStudy(seed="qido-mr", patient_id="PAT-B", patient_name="DUPONT^JEAN",
                    modality="MR", series_count=1, instances_per_series=2,
                    accession_number="ACC-B", study_date="20240320")  # fmt: skip


def value(match: dict[str, Any], tag: str) -> Any:
    values = match.get(tag, {}).get("Value")
    return values[0] if values else None


def uids(matches: list[dict[str, Any]], tag: str = "0020000D") -> set[str]:
    return {value(match, tag) for match in matches}


@pytest.fixture(scope="module")
def loaded(module_box: DicomwebBox) -> DicomwebBox:
    module_box.load(CT)
    module_box.load(MR)
    return module_box


def search(box: DicomwebBox, path: str, **params: Any) -> list[dict[str, Any]]:
    response = box.http.get(path, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/dicom+json")
    result: list[dict[str, Any]] = response.json()
    return result


def test_search_for_studies_returns_required_attributes_counts_and_retrieve_url(
    loaded: DicomwebBox,
) -> None:
    matches = search(loaded, "/studies", PatientID="PAT-A")
    assert len(matches) == 1
    study = matches[0]
    assert value(study, "0020000D") == CT.study_instance_uid
    assert value(study, "00201208") == 6  # NumberOfStudyRelatedInstances
    assert value(study, "00201206") == 2  # NumberOfStudyRelatedSeries
    assert study["00080061"]["Value"] == ["CT"]  # ModalitiesInStudy
    assert value(study, "00081190") == f"{loaded.url}/studies/{CT.study_instance_uid}"


def test_search_by_tag_number_equals_search_by_keyword(loaded: DicomwebBox) -> None:
    assert search(loaded, "/studies", **{"00100020": "PAT-B"}) == search(
        loaded, "/studies", PatientID="PAT-B"
    )


def test_wildcards_date_ranges_and_uid_lists_match(loaded: DicomwebBox) -> None:
    assert uids(search(loaded, "/studies", PatientID="PAT-*")) == {
        CT.study_instance_uid,
        MR.study_instance_uid,
    }
    assert uids(search(loaded, "/studies", AccessionNumber="ACC-?")) == {
        CT.study_instance_uid,
        MR.study_instance_uid,
    }
    assert uids(search(loaded, "/studies", StudyDate="20240301-")) == {MR.study_instance_uid}
    assert uids(search(loaded, "/studies", StudyDate="20240101-20240131")) == {
        CT.study_instance_uid
    }
    both = f"{CT.study_instance_uid},{MR.study_instance_uid}"
    assert len(search(loaded, "/studies", StudyInstanceUID=both)) == 2


def test_fuzzy_matching_ignores_case_and_accents(loaded: DicomwebBox) -> None:
    assert search(loaded, "/studies", PatientName="muller") == []
    fuzzy = search(loaded, "/studies", PatientName="muller", fuzzymatching="true")
    assert uids(fuzzy) == {CT.study_instance_uid}


def test_series_and_instance_levels_including_nested_resources(loaded: DicomwebBox) -> None:
    assert len(search(loaded, "/series")) == 3
    series = search(loaded, f"/studies/{CT.study_instance_uid}/series")
    assert uids(series, "0020000E") == {CT.series_instance_uid(0), CT.series_instance_uid(1)}
    assert all(value(s, "00201209") == 3 for s in series)  # NumberOfSeriesRelatedInstances
    assert len(search(loaded, "/instances", Modality="MR")) == 2
    assert len(search(loaded, f"/studies/{CT.study_instance_uid}/instances")) == 6
    instances = search(
        loaded, f"/studies/{CT.study_instance_uid}/series/{CT.series_instance_uid(1)}/instances"
    )
    assert uids(instances, "00080018") == {CT.sop_instance_uid(1, i) for i in range(3)}
    first = next(i for i in instances if value(i, "00080018") == CT.sop_instance_uid(1, 0))
    assert value(first, "00081190") == (
        f"{loaded.url}/studies/{CT.study_instance_uid}/series/{CT.series_instance_uid(1)}"
        f"/instances/{CT.sop_instance_uid(1, 0)}"
    )


def test_includefield_adds_attributes_and_all_returns_every_indexed_one(
    loaded: DicomwebBox,
) -> None:
    plain = search(loaded, "/series", Modality="MR")[0]
    assert "00100010" not in plain  # PatientName is not a series-level attribute
    included = search(loaded, "/series", Modality="MR", includefield="00100010")[0]
    assert included["00100010"]["Value"] == [{"Alphabetic": "DUPONT^JEAN"}]
    everything = search(loaded, "/studies", PatientID="PAT-B", includefield="all")[0]
    assert value(everything, "00100030") == "19700101"  # PatientBirthDate


def test_limit_and_offset_page_through_matches(loaded: DicomwebBox) -> None:
    first = search(loaded, "/instances", limit=3)
    second = search(loaded, "/instances", limit=3, offset=3)
    rest = search(loaded, "/instances", offset=6)
    all_uids = uids(first, "00080018") | uids(second, "00080018") | uids(rest, "00080018")
    assert len(first) == len(second) == 3
    assert len(all_uids) == 8


def test_results_beyond_the_maximum_are_cut_with_a_warning(dicomweb_box: DicomwebBox) -> None:
    dicomweb_box.load(SyntheticStudy(seed="many", instances_per_series=MAX_RESULTS + 5, rows=8,
                                     columns=8))  # fmt: skip
    response = dicomweb_box.http.get("/instances", params={"limit": "1000000000"})
    assert response.status_code == 200
    assert len(response.json()) == MAX_RESULTS
    assert response.headers["warning"].startswith("299 ")
    unlimited = dicomweb_box.http.get("/instances")
    assert len(unlimited.json()) == MAX_RESULTS
    assert "warning" in unlimited.headers
    small = dicomweb_box.http.get("/instances", params={"limit": "5"})
    assert len(small.json()) == 5
    assert "warning" not in small.headers


def test_no_match_is_an_empty_array(loaded: DicomwebBox) -> None:
    assert search(loaded, "/studies", PatientID="NOBODY") == []


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"NotAnAttribute": "x"}, "NotAnAttribute"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "9" * 5000}, "limit"),
        ({"offset": "-5"}, "offset"),
        ({"fuzzymatching": "maybe"}, "fuzzymatching"),
        ({"includefield": "NoSuchKeyword"}, "NoSuchKeyword"),
        ({"StudyInstanceUID": "1.2.abc"}, "StudyInstanceUID"),
        ({"00091001": "x"}, "00091001"),
        ({"00081110.00081150": "1.2.3"}, "00081110.00081150"),
    ],
)
def test_malformed_queries_are_400_naming_the_parameter(
    loaded: DicomwebBox, params: dict[str, str], parameter: str
) -> None:
    response = loaded.http.get("/studies", params=params)
    assert response.status_code == 400
    body = response.json()
    assert body["parameter"] == parameter
    assert body["error"]


def test_invalid_uid_in_path_is_400_and_xml_only_accept_is_406(loaded: DicomwebBox) -> None:
    assert loaded.http.get("/studies/1..2/series").status_code == 400
    response = loaded.http.get(
        "/studies", headers={"Accept": 'multipart/related; type="application/dicom+xml"'}
    )
    assert response.status_code == 406
    assert response.json()["error"]
