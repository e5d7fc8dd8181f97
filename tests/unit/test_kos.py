"""KOS manifests and IOCM rejection notes: dciodvfy-valid, deterministic, round-tripping."""

from __future__ import annotations

import dataclasses
import io
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pydicom
import pytest
from lxml import etree
from pydicom.uid import CTImageStorage, MRImageStorage

from drimbox.dicom.kos import (
    KEY_OBJECT_SELECTION_DOCUMENT_STORAGE,
    ManifestRequest,
    ManifestSeries,
    ReferencedInstance,
    RejectionReason,
    RequestReference,
    build_manifest,
    build_rejection_note,
    manifest_uids,
    parse_kos,
    parse_rejection_note,
)
from drimbox.dicom.synthetic import SyntheticStudy, make_instance
from drimbox.errors import FailureReason, InvalidInstanceError, UnreadableInstanceError
from drimbox.identity import INS_NIR_TEST_OID, PatientIdentity
from tests.hl7.ans import KIN_MANIFEST

DCIODVFY = Path(sys.executable).parent / "dciodvfy"
ORG_ROOT = "1.2.250.1.999.42"
BASE_URL = "http://127.0.0.1:8080/dicom-web"
WHEN = datetime(2024, 1, 15, 10, 30, tzinfo=timezone(timedelta(hours=1)))
PATIENT = PatientIdentity(
    ins="279035121518989",
    ins_oid=INS_NIR_TEST_OID,
    qualified=True,
    ipp="IPP101",
    ipp_authority="1.2.250.1.213.4.5.2.4",
    birth_name="PAT-TROIS",
    first_given_name="DOMINIQUE",
    birth_date="19790328",
    sex="F",
)
# dciodvfy warnings accepted, each with its reason
ACCEPTED_WARNINGS = {
    # DRIM-M and IHE XDS-I.b (RAD-107 WADO-RS) put Retrieve URL (0008,1190) on each series of
    # the evidence; the PS3.3 Hierarchical Series Reference macro does not list it, so the KOS
    # is a Standard Extended SOP Class. Same in the ANS sample informatif/KIN/Manifest_KOS.
    r"Attribute is not present in standard DICOM IOD - \(0x0008,0x1190\) UR Retrieve URL",
    r"Dicom dataset contains attributes not present in standard DICOM IOD - this is a Standard "
    r"Extended SOP Class",
    # Type 2 study attributes left empty when the images carry none (PS3.3 allows it); only a
    # DICOMDIR builder would want them.
    r"Missing attribute or value that would be needed to build DICOMDIR - Study (ID|Date|Time)",
}


def dciodvfy(data: bytes, tmp_path: Path) -> list[str]:
    """Run dciodvfy; fail on any Error and on any warning not accepted above; return warnings."""
    path = tmp_path / "kos.dcm"
    path.write_bytes(data)
    result = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True, check=False)
    lines = (result.stdout + result.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    warnings = [line.removeprefix("Warning - ") for line in lines if line.startswith("Warning")]
    assert errors == [], errors
    unexpected = [w for w in warnings if not any(re.search(a, w) for a in ACCEPTED_WARNINGS)]
    assert unexpected == [], unexpected
    assert result.returncode == 0, lines
    return warnings


def study_series(study: SyntheticStudy) -> tuple[ManifestSeries, ...]:
    return tuple(
        ManifestSeries(
            str(study.series_instance_uid(s)),
            study.modality,
            tuple(
                ReferencedInstance(
                    str(make_instance(study, s, i).SOPClassUID), str(study.sop_instance_uid(s, i))
                )
                for i in range(study.instances_per_series)
            ),
        )
        for s in range(study.series_count)
    )


STUDY = SyntheticStudy(seed="kos", series_count=2, instances_per_series=3)
KOS_SERIES = ManifestSeries(  # a non-image object (a previous KOS) referenced as COMPOSITE
    "1.2.826.0.1.3680043.10.1337.99.1",
    "KO",
    (
        ReferencedInstance(
            KEY_OBJECT_SELECTION_DOCUMENT_STORAGE, "1.2.826.0.1.3680043.10.1337.99.2"
        ),
    ),
)


def request(version: int = 1, **changes: object) -> ManifestRequest:
    base = ManifestRequest(
        patient=PATIENT,
        study_instance_uid=str(STUDY.study_instance_uid),
        series=(*study_series(STUDY), KOS_SERIES),
        public_base_url=BASE_URL + "/",
        organization_uid_root=ORG_ROOT,
        version=version,
        institution_name="Centre de radiologie Ambroise",
        content_datetime=WHEN,
        requests=(
            RequestReference(
                accession_number="ACN103",
                accession_issuer="1.2.250.1.925.994044785528.27",
                placer_order_number="OPN103",
                placer_order_issuer="1.2.250.1.213.4.5.2.6",
            ),
        ),
        study_date="20240115",
        study_time="101500",
        study_description="Synthetic CT study",
        study_id="1",
        description="CT Head W contrast IV",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_manifest_of_a_synthetic_study_passes_dciodvfy(tmp_path: Path) -> None:
    dciodvfy(build_manifest(request()), tmp_path)


def test_manifest_without_optional_study_attributes_passes_dciodvfy(tmp_path: Path) -> None:
    minimal = request(
        requests=(), study_date="", study_time="", study_id="", description="", series=(KOS_SERIES,)
    )
    dciodvfy(build_manifest(minimal), tmp_path)


def test_parse_kos_round_trips_the_manifest() -> None:
    built = request()
    document = parse_kos(build_manifest(built))
    uids = manifest_uids(ORG_ROOT, built.study_instance_uid, 1)

    assert (document.sop_instance_uid, document.series_instance_uid) == (
        uids.sop_instance_uid,
        uids.series_instance_uid,
    )
    assert document.study_instance_uid == built.study_instance_uid
    assert document.title is not None and (document.title.value, document.title.scheme) == (
        "113030",
        "DCM",
    )
    assert (document.patient_id, document.issuer_of_patient_id) == (PATIENT.ins, INS_NIR_TEST_OID)
    assert document.accession_numbers == ("ACN103",)
    [(study_uid, series)] = document.evidence
    assert study_uid == built.study_instance_uid
    assert [(s.series_instance_uid, s.instances) for s in series] == [
        (s.series_instance_uid, s.instances) for s in built.series
    ]
    for one in series:
        assert one.retrieve_url == (
            f"{BASE_URL}/studies/{built.study_instance_uid}/series/{one.series_instance_uid}"
        )
        assert one.retrieve_location_uid is not None
    assert len(document.instances) == 7


def test_manifest_carries_the_drim_m_patient_and_request_attributes() -> None:
    ds = pydicom.dcmread(io.BytesIO(build_manifest(request())))

    assert ds.SOPClassUID == KEY_OBJECT_SELECTION_DOCUMENT_STORAGE
    assert ds.Modality == "KO"
    assert (ds.PatientID, ds.IssuerOfPatientID) == (PATIENT.ins, INS_NIR_TEST_OID)
    qualifier = ds.IssuerOfPatientIDQualifiersSequence[0]
    assert (qualifier.UniversalEntityID, qualifier.UniversalEntityIDType) == (
        INS_NIR_TEST_OID,
        "ISO",
    )
    other = ds.OtherPatientIDsSequence[0]
    assert (other.PatientID, other.TypeOfPatientID) == ("IPP101", "TEXT")
    assert other.IssuerOfPatientIDQualifiersSequence[0].UniversalEntityID == "1.2.250.1.213.4.5.2.4"
    assert (str(ds.PatientName), ds.PatientBirthDate, ds.PatientSex) == (
        "PAT-TROIS^DOMINIQUE",
        "19790328",
        "F",
    )
    [order] = ds.ReferencedRequestSequence
    assert (order.AccessionNumber, order.PlacerOrderNumberImagingServiceRequest) == (
        "ACN103",
        "OPN103",
    )
    assert order.IssuerOfAccessionNumberSequence[0].UniversalEntityID == (
        "1.2.250.1.925.994044785528.27"
    )
    assert order.OrderPlacerIdentifierSequence[0].UniversalEntityID == "1.2.250.1.213.4.5.2.6"
    assert order.StudyInstanceUID == ds.StudyInstanceUID
    title = ds.ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning) == (
        "113030",
        "DCM",
        "Manifest",
    )
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "2010"
    kinds = [item.ValueType for item in ds.ContentSequence]
    assert kinds == ["TEXT"] + ["IMAGE"] * 6 + ["COMPOSITE"]
    assert ds.ContentSequence[0].TextValue == "CT Head W contrast IV"
    assert (ds.ContentDate, ds.ContentTime, ds.TimezoneOffsetFromUTC) == (
        "20240115",
        "103000",
        "+0100",
    )


def test_rebuilding_a_version_gives_the_same_uids_and_bytes() -> None:
    first, again = build_manifest(request(1)), build_manifest(request(1))
    second = parse_kos(build_manifest(request(2)))
    assert first == again
    assert parse_kos(first).sop_instance_uid != second.sop_instance_uid
    assert parse_kos(first).series_instance_uid != second.series_instance_uid
    other_org = manifest_uids("1.2.250.1.999.43", str(STUDY.study_instance_uid), 1)
    assert other_org.sop_instance_uid != parse_kos(first).sop_instance_uid


def test_derived_uids_are_valid_dicom_uids() -> None:
    longest_root = "1." + "2" * 38
    with pytest.raises(ValueError, match="at most 40"):
        manifest_uids(longest_root + "2", "1.2.3.4", 1)
    for root in ("1.2", ORG_ROOT, longest_root):
        for version in (1, 2, 999):
            uids = manifest_uids(root, "1.2.3.4", version)
            for uid in (uids.sop_instance_uid, uids.series_instance_uid):
                assert len(uid) <= 64
                assert uid.startswith(root + ".")
                assert re.fullmatch(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*", uid)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"version": 0}, "versions start at 1"),
        ({"series": ()}, "at least one instance"),
        ({"series": (ManifestSeries("1.2.3", "CT", ()),)}, "at least one instance"),
        ({"content_datetime": datetime(2024, 1, 1)}, "timezone-aware"),
        ({"organization_uid_root": "1.2.abc"}, "organisation UID root"),
        ({"organization_uid_root": "1.02.3"}, "organisation UID root"),
    ],
)
def test_invalid_manifest_requests_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_manifest(request(**changes))  # type: ignore[arg-type]


def _kin_keywords(path: str = "data-set") -> set[str]:
    """Attribute keywords of the ANS KIN manifest dump at ``path`` (first item of sequences)."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    root = etree.parse(str(KIN_MANIFEST), parser).getroot()
    node = root.find(path)
    assert node is not None
    return {str(child.get("name")) for child in node}


def test_manifest_has_every_attribute_of_the_ans_kin_sample_but_documented_ones() -> None:
    ours = set(pydicom.dcmread(io.BytesIO(build_manifest(request()))).dir())
    kin = _kin_keywords()
    not_copied = {
        "OtherPatientNames",  # the sample repeats the names; the INS traits are in PatientName
        "PatientComments",  # the sample puts the birth place code there (free text field)
        "SeriesDate",  # optional (Type 3); ContentDate/InstanceCreationDate carry the date
        "SeriesTime",
    }
    assert kin - ours == not_copied
    assert {"ContentTemplateSequence", "RetrieveURL"} - ours == {"RetrieveURL"}  # per series


def test_referenced_request_and_evidence_items_have_the_kin_sample_attributes() -> None:
    ds = pydicom.dcmread(io.BytesIO(build_manifest(request())))
    request_item = "data-set/sequence[@name='ReferencedRequestSequence']/item"
    assert set(ds.ReferencedRequestSequence[0].dir()) == _kin_keywords(request_item)
    series_item = (
        "data-set/sequence[@name='CurrentRequestedProcedureEvidenceSequence']/item"
        "/sequence[@name='ReferencedSeriesSequence']/item"
    )
    ours = set(ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].dir())
    # the sample puts SeriesNumber in the evidence (not in the macro); we add RetrieveLocationUID
    assert _kin_keywords(series_item) ^ ours == {"SeriesNumber", "RetrieveLocationUID"}


@pytest.mark.parametrize("reason", list(RejectionReason))
def test_rejection_note_built_here_is_valid_and_recognised(
    reason: RejectionReason, tmp_path: Path
) -> None:
    rejected = study_series(dataclasses.replace(STUDY, series_count=1))
    note = build_rejection_note(
        reason,
        patient=PATIENT,
        study_instance_uid=str(STUDY.study_instance_uid),
        series=rejected,
        organization_uid_root=ORG_ROOT,
        content_datetime=datetime(2024, 2, 1, 8, 0, tzinfo=UTC),
        study_date="20240115",
        study_time="101500",
        accession_number="ACN103",
    )
    dciodvfy(note, tmp_path)
    parsed = parse_rejection_note(note)
    assert parsed is not None
    assert parsed.reason is reason
    assert parsed.document.title is not None
    assert parsed.document.title.meaning == reason.concept.meaning
    assert [(st, se, i.sop_instance_uid) for st, se, i in parsed.rejected] == [
        (str(STUDY.study_instance_uid), rejected[0].series_instance_uid, i.sop_instance_uid)
        for i in rejected[0].instances
    ]


def test_manifest_is_not_a_rejection_note() -> None:
    assert parse_rejection_note(build_manifest(request())) is None


def test_parse_kos_refuses_garbage_and_other_sop_classes() -> None:
    with pytest.raises(UnreadableInstanceError):
        parse_kos(b"not dicom at all")
    with pytest.raises(UnreadableInstanceError):
        parse_kos(build_manifest(request())[:200])
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, make_instance(STUDY, 0, 0), enforce_file_format=True)
    with pytest.raises(InvalidInstanceError) as caught:
        parse_kos(buffer.getvalue())
    assert caught.value.reason is FailureReason.SOP_CLASS_NOT_SUPPORTED


def test_mr_and_ct_image_classes_are_image_items() -> None:
    series = (
        ManifestSeries("1.2.3.1", "MR", (ReferencedInstance(MRImageStorage, "1.2.3.1.1"),)),
        ManifestSeries("1.2.3.2", "CT", (ReferencedInstance(CTImageStorage, "1.2.3.2.1"),)),
    )
    ds = pydicom.dcmread(io.BytesIO(build_manifest(request(series=series))))
    assert [item.ValueType for item in ds.ContentSequence] == ["TEXT", "IMAGE", "IMAGE"]


def test_dciodvfy_check_fails_on_a_broken_kos(tmp_path: Path) -> None:
    ds = pydicom.dcmread(io.BytesIO(build_manifest(request())))
    del ds.CurrentRequestedProcedureEvidenceSequence  # Type 1 in the Key Object Document module
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    with pytest.raises(AssertionError, match="Error"):
        dciodvfy(buffer.getvalue(), tmp_path)
