"""Contract of the Index port, run against every adapter: memory, SQLite file, PostgreSQL."""

from __future__ import annotations

import json
import multiprocessing
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from drimbox.errors import InvalidQueryError
from drimbox.index import MemoryIndex, PostgresIndex, SqliteIndex, open_index
from drimbox.model import AddOutcome, InstanceRecord, Level, Query, StoredBlob
from drimbox.ports import Index

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
THREADS = 8

STUDY_UID = "0020000D"
SERIES_UID = "0020000E"
SOP_UID = "00080018"
PATIENT_NAME = "00100010"
PATIENT_ID = "00100020"
MODALITIES_IN_STUDY = "00080061"
STUDY_RELATED_INSTANCES = "00201208"
STUDY_RELATED_SERIES = "00201206"
SERIES_RELATED_INSTANCES = "00201209"
PATIENT_RELATED_STUDIES = "00201200"
SERIES_NUMBER = "00200011"
STUDY_DESCRIPTION = "00081030"
ACCESSION_NUMBER = "00080050"


def record(
    sop: str,
    series: str = "1.2.3.1",
    study: str = "1.2.3",
    *,
    sop_class: str = CT_IMAGE_STORAGE,
    received_at: datetime = T0,
    size: int = 100,
    **attributes: str | None,
) -> InstanceRecord:
    """Build an InstanceRecord with sensible defaults; keyword arguments override attributes."""
    values: dict[str, str | None] = {
        "PatientID": "PAT1",
        "PatientName": "DOE^JOHN",
        "PatientBirthDate": "19700101",
        "PatientSex": "M",
        "StudyDate": "20240115",
        "StudyTime": "101500",
        "AccessionNumber": "ACC1",
        "StudyDescription": "CT CHEST",
        "Modality": "CT",
        "SeriesNumber": "1",
        "InstanceNumber": "1",
        "Rows": "64",
        "Columns": "64",
    }
    values.update(attributes)
    metadata = {
        SOP_UID: {"vr": "UI", "Value": [sop]},
        PATIENT_NAME: {"vr": "PN", "Value": [{"Alphabetic": values["PatientName"] or ""}]},
        "7FE00010": {"vr": "OW", "BulkDataURI": "bulkdata/7FE00010"},
        "00081030": {"vr": "LO", "Value": ["Hélène ✓"]},
    }
    return InstanceRecord(
        sop_instance_uid=sop,
        sop_class_uid=sop_class,
        series_instance_uid=series,
        study_instance_uid=study,
        transfer_syntax_uid=EXPLICIT_VR_LITTLE_ENDIAN,
        blob=StoredBlob(key=f"blob-{sop}", size=size, sha256="0" * 64),
        attributes=values,
        metadata=metadata,
        received_at=received_at,
        number_of_frames=1,
        pixel_data_offset=1234,
    )


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def open_adapter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Index]]:
    """Return a function opening (another handle on) one database of the parametrised adapter."""
    opened: list[Index] = []
    if request.param == "memory":
        shared = MemoryIndex()
        factory: Callable[[], Index] = lambda: shared  # noqa: E731
    elif request.param == "sqlite":
        path = tmp_path / "index.db"
        factory = lambda: SqliteIndex(path)  # noqa: E731
    else:
        url = request.getfixturevalue("postgres_url")
        factory = lambda: PostgresIndex(url)  # noqa: E731

    def open_one() -> Index:
        index = factory()
        opened.append(index)
        return index

    yield open_one
    for index in opened:
        index.close()


@pytest.fixture
def index(open_adapter: Callable[[], Index]) -> Index:
    """One adapter instance, empty."""
    return open_adapter()


def values_of(match: dict[str, Any], tag: str) -> list[Any] | None:
    """Return the Value list of ``tag`` in a DICOM JSON match (None when empty)."""
    value: list[Any] | None = match[tag].get("Value")
    return value


def uids(index: Index, level: Level, **filters: str) -> list[str]:
    """Return the unique keys of the matches of a query, in order."""
    tag = {Level.STUDY: STUDY_UID, Level.SERIES: SERIES_UID, Level.IMAGE: SOP_UID}[level]
    result = index.search(Query(level=level, filters=filters))
    return [m[tag]["Value"][0] for m in result.matches]


def test_adapter_satisfies_the_index_port(index: Index) -> None:
    assert isinstance(index, Index)


def test_added_instance_is_located_with_its_blob(index: Index) -> None:
    assert index.add_instance(record("1.2.3.1.1")) is AddOutcome.STORED
    location = index.get_instance("1.2.3.1.1")
    assert location is not None
    assert location.study_instance_uid == "1.2.3"
    assert location.series_instance_uid == "1.2.3.1"
    assert location.blob == StoredBlob(key="blob-1.2.3.1.1", size=100, sha256="0" * 64)
    assert (location.number_of_frames, location.pixel_data_offset) == (1, 1234)
    assert location.transfer_syntax_uid == EXPLICIT_VR_LITTLE_ENDIAN
    assert index.get_instance("9.9.9") is None


def test_same_instance_added_twice_is_a_duplicate_that_changes_nothing(index: Index) -> None:
    index.add_instance(record("1.2.3.1.1"))
    before = index.statistics()
    again = record("1.2.3.1.1", size=999, PatientName="OTHER^NAME")
    assert index.add_instance(again) is AddOutcome.DUPLICATE
    assert index.statistics() == before
    location = index.get_instance("1.2.3.1.1")
    assert location is not None and location.blob.size == 100


def test_concurrent_adds_of_one_instance_store_it_exactly_once(index: Index) -> None:
    barrier = threading.Barrier(THREADS)

    def add(_: int) -> AddOutcome:
        barrier.wait()
        return index.add_instance(record("1.2.3.1.1"))

    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = list(pool.map(add, range(THREADS)))
    assert outcomes.count(AddOutcome.STORED) == 1
    assert outcomes.count(AddOutcome.DUPLICATE) == THREADS - 1
    assert index.statistics().instances == 1


def test_concurrent_adds_to_one_study_keep_exact_counts(index: Index) -> None:
    def add(number: int) -> AddOutcome:
        series = f"1.2.3.{number % 3 + 1}"
        return index.add_instance(
            record(f"{series}.{number}", series, SeriesNumber=str(number % 3 + 1))
        )

    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = list(pool.map(add, range(48)))
    assert set(outcomes) == {AddOutcome.STORED}
    (study,) = index.search(Query(level=Level.STUDY)).matches
    assert values_of(study, STUDY_RELATED_INSTANCES) == [48]
    assert values_of(study, STUDY_RELATED_SERIES) == [3]
    assert index.statistics().patients == 1


def test_hierarchy_counts_are_computed_at_each_level(index: Index) -> None:
    index.add_instance(record("1.2.3.1.1"))
    index.add_instance(record("1.2.3.1.2", InstanceNumber="2"))
    index.add_instance(record("1.2.3.2.1", "1.2.3.2", Modality="MR", SeriesNumber="2"))
    index.add_instance(record("1.2.4.1.1", "1.2.4.1", "1.2.4"))
    patient = index.search(Query(level=Level.PATIENT)).matches[0]
    assert values_of(patient, PATIENT_RELATED_STUDIES) == [2]
    assert values_of(patient, "00201202") == [3]
    assert values_of(patient, "00201204") == [4]
    study = index.search(Query(level=Level.STUDY, filters={"StudyInstanceUID": "1.2.3"}))
    match = study.matches[0]
    assert values_of(match, MODALITIES_IN_STUDY) == ["CT", "MR"]
    assert values_of(match, "00080062") == [CT_IMAGE_STORAGE]
    assert values_of(match, STUDY_RELATED_SERIES) == [2]
    assert values_of(match, STUDY_RELATED_INSTANCES) == [3]
    series = index.search(Query(level=Level.SERIES, filters={"StudyInstanceUID": "1.2.3"}))
    assert [values_of(m, SERIES_RELATED_INSTANCES) for m in series.matches] == [[2], [1]]
    assert index.statistics() == index.statistics().__class__(1, 2, 3, 4, 400)


def test_locate_orders_by_series_number_then_instance_number(index: Index) -> None:
    index.add_instance(record("1.2.3.2.10", "1.2.3.2", SeriesNumber="10", InstanceNumber="1"))
    index.add_instance(record("1.2.3.1.10", SeriesNumber="2", InstanceNumber="10"))
    index.add_instance(record("1.2.3.1.2", SeriesNumber="2", InstanceNumber="2"))
    index.add_instance(record("1.2.4.1.1", "1.2.4.1", "1.2.4"))
    found = [loc.sop_instance_uid for loc in index.locate("1.2.3")]
    assert found == ["1.2.3.1.2", "1.2.3.1.10", "1.2.3.2.10"]
    assert [x.sop_instance_uid for x in index.locate("1.2.3", "1.2.3.2")] == ["1.2.3.2.10"]
    assert [x.sop_instance_uid for x in index.locate("1.2.3", None, "1.2.3.1.2")] == ["1.2.3.1.2"]
    assert index.locate("9.9") == []


def test_metadata_is_served_as_stored_in_locate_order(index: Index) -> None:
    first, second = record("1.2.3.1.1"), record("1.2.3.1.2", InstanceNumber="2")
    index.add_instance(second)
    index.add_instance(first)
    assert list(index.metadata("1.2.3")) == [first.metadata, second.metadata]
    documents = list(index.metadata_documents("1.2.3"))
    assert [json.loads(d) for d in documents] == [first.metadata, second.metadata]
    stored_text = list(index.metadata_documents("1.2.3", "1.2.3.1", "1.2.3.1.2"))
    assert stored_text == documents[1:]
    assert "Hélène ✓" in documents[0]
    assert list(index.metadata("9.9")) == []


def test_study_attributes_keep_the_first_value_and_fill_empty_ones(index: Index) -> None:
    index.add_instance(record("1.2.3.1.1", StudyDescription="FIRST", AccessionNumber=None))
    index.add_instance(record("1.2.3.1.2", StudyDescription="SECOND", AccessionNumber="ACC9"))
    (match,) = index.search(Query(level=Level.STUDY)).matches
    assert values_of(match, STUDY_DESCRIPTION) == ["FIRST"]
    assert values_of(match, ACCESSION_NUMBER) == ["ACC9"]


def test_patient_and_series_attributes_fill_empty_ones_and_keep_the_rest(index: Index) -> None:
    index.add_instance(record("1.2.3.1.1", PatientBirthDate=None, Modality=None, SeriesNumber="1"))
    index.add_instance(record("1.2.3.1.2", PatientBirthDate="19800202", SeriesNumber="7"))
    (study,) = index.search(Query(level=Level.STUDY)).matches
    assert values_of(study, MODALITIES_IN_STUDY) == ["CT"]  # the series' modality, just filled
    index.add_instance(record("1.2.3.1.3", PatientBirthDate="19900303", Modality="MR"))
    (patient,) = index.search(Query(level=Level.PATIENT)).matches
    assert values_of(patient, "00100030") == ["19800202"]
    (series,) = index.search(Query(level=Level.SERIES)).matches
    assert values_of(series, "00080060") == ["CT"]
    assert values_of(series, SERIES_NUMBER) == [1]
    (study,) = index.search(Query(level=Level.STUDY)).matches
    assert values_of(study, MODALITIES_IN_STUDY) == ["CT"]
    born = Query(level=Level.PATIENT, filters={"PatientBirthDate": "19800202"})
    assert index.search(born).matches


def test_instance_of_a_known_study_stays_under_the_study_patient(index: Index) -> None:
    index.add_instance(record("1.2.3.1.1", PatientID="FIRST"))
    assert index.add_instance(record("1.2.3.2.1", "1.2.3.2", PatientID="OTHER")) is (
        AddOutcome.STORED
    )
    index.add_instance(record("1.2.3.2.2", "1.2.3.2", "9.9.9", PatientID="THIRD"))
    assert index.statistics() == index.statistics().__class__(1, 1, 2, 3, 300)
    assert uids(index, Level.IMAGE, PatientID="FIRST") == ["1.2.3.1.1", "1.2.3.2.1", "1.2.3.2.2"]
    assert uids(index, Level.STUDY, PatientID="OTHER") == []
    (patient,) = index.search(Query(level=Level.PATIENT)).matches
    assert values_of(patient, "00201204") == [3]


@pytest.fixture
def three_studies(index: Index) -> Index:
    """Three studies of two patients, with varied attributes."""
    index.add_instance(
        record(
            "1.1.1.1.1",
            "1.1.1.1",
            "1.1.1",
            PatientID="P1",
            PatientName="Dupont^Hélène",
            StudyDate="20240110",
            StudyTime="083000",
            AccessionNumber="A%1",
            Modality="CT",
        )
    )
    index.add_instance(
        record(
            "1.1.2.1.1",
            "1.1.2.1",
            "1.1.2",
            PatientID="P1",
            PatientName="Dupont^Hélène",
            StudyDate="20240220",
            StudyTime="120059",
            AccessionNumber="AB1",
            Modality="MR",
            sop_class=MR_IMAGE_STORAGE,
        )
    )
    index.add_instance(
        record(
            "1.1.3.1.1",
            "1.1.3.1",
            "1.1.3",
            PatientID="p2",
            PatientName="MARTIN^PAUL",
            StudyDate="20240305",
            StudyTime="120100",
            AccessionNumber="acc_2",
            Modality="CT",
            InstanceNumber="7",
        )
    )
    index.add_instance(
        record(
            "1.1.3.2.1",
            "1.1.3.2",
            "1.1.3",
            PatientID="p2",
            Modality="SR",
            SeriesNumber="2",
            sop_class=MR_IMAGE_STORAGE,
        )
    )
    return index


def test_studies_are_listed_newest_first(three_studies: Index) -> None:
    assert uids(three_studies, Level.STUDY) == ["1.1.3", "1.1.2", "1.1.1"]


def test_single_value_matching_is_exact_and_case_sensitive(three_studies: Index) -> None:
    assert uids(three_studies, Level.STUDY, PatientID="P1") == ["1.1.2", "1.1.1"]
    assert uids(three_studies, Level.STUDY, PatientID="p1") == []
    assert uids(three_studies, Level.STUDY, AccessionNumber="ACC_2") == []
    assert uids(three_studies, Level.STUDY, StudyDate="20240220") == ["1.1.2"]


def test_person_names_match_case_insensitively(three_studies: Index) -> None:
    assert uids(three_studies, Level.STUDY, PatientName="martin^paul") == ["1.1.3"]
    assert uids(three_studies, Level.STUDY, PatientName="mar*") == ["1.1.3"]
    assert uids(three_studies, Level.STUDY, PatientName="dupont^helene") == []


def test_wildcards_match_and_sql_specials_are_literal(three_studies: Index) -> None:
    assert uids(three_studies, Level.STUDY, AccessionNumber="A*") == ["1.1.2", "1.1.1"]
    assert uids(three_studies, Level.STUDY, AccessionNumber="A?1") == ["1.1.2", "1.1.1"]
    assert uids(three_studies, Level.STUDY, AccessionNumber="A%*") == ["1.1.1"]
    assert uids(three_studies, Level.STUDY, AccessionNumber="acc_*") == ["1.1.3"]
    assert uids(three_studies, Level.STUDY, AccessionNumber="a*") == ["1.1.3"]
    assert uids(three_studies, Level.STUDY, AccessionNumber="*") == ["1.1.3", "1.1.2", "1.1.1"]


def test_uid_list_matching_returns_any_listed(three_studies: Index) -> None:
    assert uids(three_studies, Level.STUDY, StudyInstanceUID="1.1.1\\1.1.3\\9.9") == [
        "1.1.3",
        "1.1.1",
    ]


def test_date_and_time_ranges_are_inclusive(three_studies: Index) -> None:
    studies = three_studies
    assert uids(studies, Level.STUDY, StudyDate="20240110-20240220") == ["1.1.2", "1.1.1"]
    assert uids(studies, Level.STUDY, StudyDate="20240220-") == ["1.1.3", "1.1.2"]
    assert uids(studies, Level.STUDY, StudyDate="-20240110") == ["1.1.1"]
    assert uids(studies, Level.STUDY, StudyTime="-1200") == ["1.1.2", "1.1.1"]
    assert uids(studies, Level.STUDY, StudyTime="1201-") == ["1.1.3"]


def test_fuzzy_names_ignore_case_and_accents_and_match_prefixes(three_studies: Index) -> None:
    def fuzzy(name: str) -> list[str]:
        query = Query(level=Level.STUDY, filters={"PatientName": name}, fuzzy=True)
        return [m[STUDY_UID]["Value"][0] for m in three_studies.search(query).matches]

    assert fuzzy("helene") == ["1.1.2", "1.1.1"]
    assert fuzzy("HÉL") == ["1.1.2", "1.1.1"]
    assert fuzzy("dup^hel") == ["1.1.2", "1.1.1"]
    assert fuzzy("paul") == ["1.1.3"]
    assert fuzzy("upont") == []


def test_higher_level_filters_restrict_lower_level_queries(three_studies: Index) -> None:
    assert uids(three_studies, Level.SERIES, PatientID="p2") == ["1.1.3.1", "1.1.3.2"]
    assert uids(three_studies, Level.SERIES, StudyInstanceUID="1.1.2") == ["1.1.2.1"]
    assert uids(three_studies, Level.IMAGE, StudyInstanceUID="1.1.3", Modality="SR") == [
        "1.1.3.2.1"
    ]
    assert uids(three_studies, Level.IMAGE, SeriesInstanceUID="1.1.3.1") == ["1.1.3.1.1"]


def test_patient_queries_match_on_their_studies_attributes(three_studies: Index) -> None:
    def patients(**filters: str) -> list[str]:
        result = three_studies.search(Query(level=Level.PATIENT, filters=filters))
        return [m[PATIENT_ID]["Value"][0] for m in result.matches]

    assert patients() == ["P1", "p2"]
    assert patients(StudyDate="20240301-") == ["p2"]
    assert patients(Modality="MR") == ["P1"]
    assert patients(PatientName="MARTIN*") == ["p2"]


def test_modalities_in_study_matches_studies_with_such_a_series(three_studies: Index) -> None:
    assert uids(three_studies, Level.STUDY, ModalitiesInStudy="SR") == ["1.1.3"]
    assert uids(three_studies, Level.STUDY, ModalitiesInStudy="MR\\SR") == ["1.1.3", "1.1.2"]
    assert uids(three_studies, Level.STUDY, Modality="CT") == ["1.1.3", "1.1.1"]


def test_unknown_matching_key_is_an_invalid_query(index: Index) -> None:
    with pytest.raises(InvalidQueryError) as raised:
        index.search(Query(level=Level.STUDY, filters={"PatientWeight": "70"}))
    assert raised.value.parameter == "PatientWeight"
    with pytest.raises(InvalidQueryError) as raised:
        index.search(Query(level=Level.STUDY, filters={"NotAKeyword": "x"}))
    assert raised.value.parameter == "NotAKeyword"


def test_matches_are_dicom_json_with_the_level_attributes(three_studies: Index) -> None:
    query = Query(level=Level.STUDY, filters={"StudyInstanceUID": "1.1.1"})
    (study,) = three_studies.search(query).matches
    assert study[PATIENT_NAME] == {"vr": "PN", "Value": [{"Alphabetic": "Dupont^Hélène"}]}
    assert study[PATIENT_ID] == {"vr": "LO", "Value": ["P1"]}
    assert study["00080020"] == {"vr": "DA", "Value": ["20240110"]}
    assert study["00080090"] == {"vr": "PN"}
    assert study[STUDY_RELATED_INSTANCES] == {"vr": "IS", "Value": [1]}
    assert list(study) == sorted(study)
    (series,) = three_studies.search(
        Query(level=Level.SERIES, filters={"SeriesInstanceUID": "1.1.1.1"})
    ).matches
    assert values_of(series, STUDY_UID) == ["1.1.1"]
    assert series[SERIES_NUMBER] == {"vr": "IS", "Value": [1]}
    assert PATIENT_ID not in series
    (image,) = three_studies.search(
        Query(level=Level.IMAGE, filters={"SOPInstanceUID": "1.1.3.1.1"})
    ).matches
    assert values_of(image, STUDY_UID) == ["1.1.3"]
    assert values_of(image, SERIES_UID) == ["1.1.3.1"]
    assert image["00280010"] == {"vr": "US", "Value": [64]}
    assert image["00200013"] == {"vr": "IS", "Value": [7]}


def test_include_all_and_named_attributes_are_returned(three_studies: Index) -> None:
    query = Query(
        level=Level.IMAGE, filters={"SOPInstanceUID": "1.1.3.1.1"}, include=frozenset({"all"})
    )
    (image,) = three_studies.search(query).matches
    assert values_of(image, PATIENT_ID) == ["p2"]
    assert values_of(image, "00080060") == ["CT"]
    assert values_of(image, STUDY_DESCRIPTION) == ["CT CHEST"]
    named = Query(
        level=Level.SERIES,
        filters={"SeriesInstanceUID": "1.1.2.1", "PatientName": ""},
        include=frozenset({"AccessionNumber", "NoSuchKeyword"}),
    )
    (series,) = three_studies.search(named).matches
    assert values_of(series, ACCESSION_NUMBER) == ["AB1"]
    assert values_of(series, PATIENT_NAME) == [{"Alphabetic": "Dupont^Hélène"}]


def test_limit_and_offset_page_through_matches(three_studies: Index) -> None:
    first = three_studies.search(Query(level=Level.STUDY, limit=2))
    assert [m[STUDY_UID]["Value"][0] for m in first.matches] == ["1.1.3", "1.1.2"]
    assert first.truncated
    rest = three_studies.search(Query(level=Level.STUDY, limit=2, offset=2))
    assert [m[STUDY_UID]["Value"][0] for m in rest.matches] == ["1.1.1"]
    assert not rest.truncated
    assert not three_studies.search(Query(level=Level.STUDY)).truncated


def test_stability_is_a_compare_and_set_on_new_arrivals(index: Index) -> None:
    index.add_instance(record("1.2.3.1.1", received_at=T0))
    index.add_instance(record("1.2.4.1.1", "1.2.4.1", "1.2.4", received_at=T0))
    assert index.unstable_studies(T0) == []
    assert sorted(index.unstable_studies(T0 + timedelta(seconds=1))) == ["1.2.3", "1.2.4"]
    index.add_instance(record("1.2.3.1.2", received_at=T0 + timedelta(seconds=2)))
    assert index.mark_stable("1.2.3") is False
    assert index.mark_stable("1.2.4") is True
    assert index.unstable_studies(T0 + timedelta(seconds=1)) == []
    assert index.unstable_studies(T0 + timedelta(seconds=3)) == ["1.2.3"]
    assert index.mark_stable("1.2.3") is True
    assert index.unstable_studies(T0 + timedelta(days=1)) == []
    index.add_instance(record("1.2.4.1.2", "1.2.4.1", "1.2.4", received_at=T0))
    assert index.unstable_studies(T0 + timedelta(days=1)) == ["1.2.4"]
    assert index.mark_stable("9.9.9") is False


def test_stability_compare_and_set_holds_across_handles(open_adapter: Callable[[], Index]) -> None:
    watcher, receiver = open_adapter(), open_adapter()
    receiver.add_instance(record("1.2.3.1.1"))
    assert watcher.unstable_studies(T0 + timedelta(seconds=1)) == ["1.2.3"]
    receiver.add_instance(record("1.2.3.1.2"))
    assert watcher.mark_stable("1.2.3") is False


def test_removing_the_last_instances_removes_empty_parents(three_studies: Index) -> None:
    index = three_studies
    removed = index.remove_instance("1.1.3.2.1")
    assert removed is not None and removed.series_instance_uid == "1.1.3.2"
    (study,) = index.search(Query(level=Level.STUDY, filters={"PatientID": "p2"})).matches
    assert values_of(study, MODALITIES_IN_STUDY) == ["CT"]
    assert values_of(study, STUDY_RELATED_SERIES) == [1]
    assert index.remove_instance("1.1.3.2.1") is None
    index.remove_instance("1.1.3.1.1")
    assert index.statistics().patients == 1
    assert uids(index, Level.STUDY) == ["1.1.2", "1.1.1"]
    assert index.get_instance("1.1.3.1.1") is None
    (patient,) = index.search(Query(level=Level.PATIENT)).matches
    assert values_of(patient, PATIENT_RELATED_STUDIES) == [2]


def test_newest_instances_are_the_last_indexed_first(three_studies: Index) -> None:
    index = three_studies
    everything = index.newest_instances(100)
    assert len(everything) == index.statistics().instances
    newest = index.newest_instances(2)
    assert newest == everything[:2]
    index.remove_instance(newest[0].sop_instance_uid)
    assert index.newest_instances(1) == [newest[1]]
    index.reject_instances([newest[1].sop_instance_uid])
    assert index.newest_instances(1) == [everything[2]]
    assert index.newest_instances(0) == []


def test_rejected_instances_disappear_but_their_bytes_are_kept(three_studies: Index) -> None:
    index = three_studies
    assert index.reject_instances(["1.1.3.2.1", "9.9.9.9"]) == 1
    assert index.get_instance("1.1.3.2.1") is None
    assert [x.sop_instance_uid for x in index.locate("1.1.3")] == ["1.1.3.1.1"]
    assert len(list(index.metadata_documents("1.1.3"))) == 1
    assert uids(index, Level.SERIES, StudyInstanceUID="1.1.3") == ["1.1.3.1"]
    assert uids(index, Level.STUDY, ModalitiesInStudy="SR") == []
    assert index.statistics() == index.statistics().__class__(2, 3, 3, 3, 300)
    assert "blob-1.1.3.2.1" in set(index.blob_keys())
    assert index.reject_instances(["1.1.3.2.1"]) == 0


def test_rejected_instances_stay_rejected_when_received_again(index: Index) -> None:
    index.add_instance(record("1.2.3.1.1"))
    assert index.reject_instances(["1.2.3.1.1", "1.2.3.1.2"]) == 1
    assert index.add_instance(record("1.2.3.1.1")) is AddOutcome.DUPLICATE
    assert index.add_instance(record("1.2.3.1.2")) is AddOutcome.DUPLICATE
    assert index.statistics().instances == 0
    assert index.search(Query(level=Level.STUDY)).matches == []


def test_a_study_losing_rejected_instances_becomes_unstable(index: Index) -> None:
    index.add_instance(record("1.2.3.1.1"))
    index.add_instance(record("1.2.3.1.2"))
    later = T0 + timedelta(seconds=1)
    assert index.unstable_studies(later) == ["1.2.3"]
    assert index.mark_stable("1.2.3") is True
    index.reject_instances(["1.2.3.1.2"])
    assert index.unstable_studies(later) == ["1.2.3"]


def test_statistics_count_entities_and_stored_bytes(three_studies: Index) -> None:
    statistics = three_studies.statistics()
    assert (statistics.patients, statistics.studies, statistics.series) == (2, 3, 4)
    assert (statistics.instances, statistics.stored_bytes) == (4, 400)


def test_blob_keys_lists_every_indexed_blob(three_studies: Index) -> None:
    assert sorted(three_studies.blob_keys()) == sorted(
        f"blob-{uid}" for uid in ("1.1.1.1.1", "1.1.2.1.1", "1.1.3.1.1", "1.1.3.2.1")
    )


def test_a_second_handle_sees_the_same_database(open_adapter: Callable[[], Index]) -> None:
    first = open_adapter()
    first.add_instance(record("1.2.3.1.1"))
    second = open_adapter()
    assert second.get_instance("1.2.3.1.1") is not None
    assert second.add_instance(record("1.2.3.1.1")) is AddOutcome.DUPLICATE


def add_from_processes(url: str, count: int, processes: int = 2) -> list[str]:
    """Add the same ``count`` instances from several processes at once; return all outcomes."""
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(processes), context.Queue()
    workers = [
        context.Process(target=_add_in_another_process, args=(url, count, start, results))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0] * processes
    return [outcome for worker_outcomes in outcomes for outcome in worker_outcomes]


def _add_in_another_process(url: str, count: int, start: Any, results: Any) -> None:
    index = open_index(url)
    start.wait()
    try:
        results.put([index.add_instance(record(f"1.2.3.1.{n}")).value for n in range(count)])
    finally:
        index.close()


def test_two_processes_adding_the_same_instances_store_each_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'index.db'}"
    open_index(url).close()
    count = 40
    assert add_from_processes(url, count).count("stored") == count
    index = open_index(url)
    assert index.statistics().instances == count
    index.close()
