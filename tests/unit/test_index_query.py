"""Query planning and DICOM JSON rendering shared by the index adapters."""

from __future__ import annotations

import pytest

from drimbox.errors import InvalidQueryError
from drimbox.index import MAXIMUM_LIMIT
from drimbox.index._dicomjson import dicom_json
from drimbox.index._query import (
    RANGE_UPPER_SENTINEL,
    Form,
    TermKind,
    fuzzy_key,
    plan_query,
    term_matches,
)
from drimbox.model import Level, Query


def test_fuzzy_key_drops_accents_and_case_and_separates_components() -> None:
    assert fuzzy_key("Dupont^Hélène") == " DUPONT HELENE"
    assert fuzzy_key("Müller-Lüdenscheidt^Zoë=ミュラー") == " MULLER-LUDENSCHEIDT ZOE"
    assert fuzzy_key(None) is None


def test_universal_matching_keeps_the_key_as_a_return_key() -> None:
    plan = plan_query(Query(level=Level.STUDY, filters={"AccessionNumber": "", "StudyID": "*"}))
    assert plan.conditions == ()
    assert {"AccessionNumber", "StudyID"} <= set(plan.returned)


def test_wildcards_become_escaped_like_patterns() -> None:
    plan = plan_query(Query(level=Level.STUDY, filters={"AccessionNumber": "a%b_c*?"}))
    (condition,) = plan.conditions
    (term,) = condition.terms
    assert term.kind is TermKind.LIKE
    assert term.patterns == ("a\\%b\\_c%_",)
    assert term_matches(term, "a%b_cXYZ")
    assert not term_matches(term, "aXbYcZZ")


def test_time_range_upper_bound_includes_every_time_it_prefixes() -> None:
    plan = plan_query(Query(level=Level.STUDY, filters={"StudyTime": "-1200"}))
    (term,) = plan.conditions[0].terms
    assert term_matches(term, "120059.123")
    assert term_matches(term, "1100")
    assert not term_matches(term, "1201")


@pytest.mark.parametrize(
    ("text", "lower", "upper"),
    [
        ("20240101120000-0500-20240102", "20240101120000", "20240102"),
        ("20240101120000+0100-20240102120000-0500", "20240101120000", "20240102120000"),
        ("-20240102120000.5-0500", None, "20240102120000.5"),
        ("20240101-", "20240101", None),
        ("2024-2025", "2024", "2025"),
    ],
)
def test_a_datetime_range_splits_between_bounds_not_inside_a_utc_offset(
    text: str, lower: str | None, upper: str | None
) -> None:
    query = Query(level=Level.IMAGE, filters={"AcquisitionDateTime": text})
    (term,) = plan_query(query).conditions[0].terms
    assert term.kind is TermKind.RANGE
    assert term.lower == lower
    assert term.upper == (None if upper is None else upper + RANGE_UPPER_SENTINEL)


def test_person_names_match_on_their_case_folded_or_fuzzy_column() -> None:
    exact = plan_query(Query(level=Level.STUDY, filters={"PatientName": "doe^john"}))
    assert exact.conditions[0].form is Form.CASE_FOLDED
    assert exact.conditions[0].column == "PatientName_ci"
    assert exact.conditions[0].terms[0].value == "DOE^JOHN"
    fuzzy = plan_query(Query(level=Level.STUDY, filters={"PatientName": "Hél^do"}, fuzzy=True))
    (term,) = fuzzy.conditions[0].terms
    assert term.patterns == ("% HEL%", "% DO%")
    assert term_matches(term, " DOE HELENE")


def test_study_computed_keys_match_on_lower_levels() -> None:
    plan = plan_query(Query(level=Level.STUDY, filters={"ModalitiesInStudy": "CT\\MR"}))
    (condition,) = plan.conditions
    assert (condition.keyword, condition.level) == ("Modality", Level.SERIES)
    with pytest.raises(InvalidQueryError) as raised:
        plan_query(Query(level=Level.STUDY, filters={"NumberOfStudyRelatedInstances": "3"}))
    assert raised.value.parameter == "NumberOfStudyRelatedInstances"


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        (Query(level=Level.STUDY, filters={"PixelData": "x"}), "PixelData"),
        (Query(level=Level.STUDY, filters={"Bogus": ""}), "Bogus"),
        (Query(level=Level.STUDY, offset=-1), "offset"),
        (Query(level=Level.STUDY, limit=-5), "limit"),
        (Query(level=Level.STUDY, filters={"StudyDate": "-"}), "StudyDate"),
    ],
)
def test_invalid_queries_name_the_offending_parameter(query: Query, parameter: str) -> None:
    with pytest.raises(InvalidQueryError) as raised:
        plan_query(query)
    assert raised.value.parameter == parameter


def test_limit_defaults_to_and_is_capped_at_the_maximum() -> None:
    assert plan_query(Query(level=Level.STUDY)).limit == MAXIMUM_LIMIT
    assert plan_query(Query(level=Level.STUDY, limit=MAXIMUM_LIMIT * 2)).limit == MAXIMUM_LIMIT
    assert plan_query(Query(level=Level.STUDY, limit=7)).limit == 7


def test_returned_keys_follow_the_level() -> None:
    series = plan_query(Query(level=Level.SERIES)).returned
    assert "StudyInstanceUID" in series and "PatientID" not in series
    assert "NumberOfSeriesRelatedInstances" in series
    image = plan_query(Query(level=Level.IMAGE, include=frozenset({"all"}))).returned
    assert {"PatientName", "StudyDate", "Modality", "SOPInstanceUID"} <= set(image)


def test_dicom_json_renders_each_vr_as_ps3_18_annex_f() -> None:
    rendered = dicom_json(
        {
            "PatientName": "Yamada^Tarou=山田^太郎",
            "SeriesNumber": "3",
            "ModalitiesInStudy": "CT\\MR",
            "StudyDescription": None,
            "NumberOfStudyRelatedInstances": 12,
            "SpecificCharacterSet": "",
        }
    )
    assert rendered == {
        "00080005": {"vr": "CS"},
        "00080061": {"vr": "CS", "Value": ["CT", "MR"]},
        "00081030": {"vr": "LO"},
        "00100010": {
            "vr": "PN",
            "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}],
        },
        "00200011": {"vr": "IS", "Value": [3]},
        "00201208": {"vr": "IS", "Value": [12]},
    }
    assert list(rendered) == sorted(rendered)
