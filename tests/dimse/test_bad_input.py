"""Bad input over DIMSE is refused with the right status and an Error Comment; nothing is stored."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from drimbox.dicom.synthetic import SyntheticStudy, make_instance
from drimbox.dimse.status import StorageStatus
from drimbox.errors import FailureReason
from tests.dimse._support import BoxNode, data_set_bytes, pynetdicom_store, status_of
from tests.dimse.conftest import BoxNodeFactory

_PLACEHOLDER = "1.2.3.4.5.6.7.8.9.123456789"


def _write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def _with_raw_uid(path: Path, placeholder: str, value: bytes) -> Path:
    """Replace the (unique) encoded ``placeholder`` UI value, length field included.

    pydicom refuses to encode invalid UIDs, so they are patched into the encoded file; data set
    elements are not covered by any group length, so the file stays well-formed.
    """
    raw = path.read_bytes()
    encoded = placeholder.encode() + (b"\x00" if len(placeholder) % 2 else b"")
    position = raw.index(encoded)
    assert raw.count(encoded) == 1
    padded = value + (b"\x00" if len(value) % 2 else b"")
    patched = (
        raw[: position - 2]
        + struct.pack("<H", len(padded))
        + padded
        + raw[position + len(encoded) :]
    )
    path.write_bytes(patched)
    return path


def _assert_nothing_stored(node: BoxNode) -> None:
    assert node.index.statistics().instances == 0
    assert list(node.blobs.keys()) == []


def _instance(seed: str) -> Dataset:
    return make_instance(SyntheticStudy(seed=seed), 0, 0)


@pytest.mark.integration
@pytest.mark.parametrize(
    "bad_uid",
    [b"../../etc/passwd", b"1.2.840.abc", b"1." + b"2" * 70, b"1.02.3", b"1..2", b""],
    ids=["path-like", "non-numeric", "too-long", "leading-zero", "empty-component", "empty"],
)
def test_invalid_study_instance_uid_is_refused_as_cannot_understand(
    box_node: BoxNode, tmp_path: Path, bad_uid: bytes
) -> None:
    ds = _instance("bad-uid")
    ds.StudyInstanceUID = _PLACEHOLDER
    part10 = _with_raw_uid(_write(ds, tmp_path / "bad.dcm"), _PLACEHOLDER, bad_uid)

    [response] = pynetdicom_store(box_node.port, [part10])

    expected = (
        StorageStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
        if not bad_uid
        else StorageStatus.CANNOT_UNDERSTAND
    )
    assert status_of(response) == expected
    assert "StudyInstanceUID" in str(response.ErrorComment)
    _assert_nothing_stored(box_node)
    [refusal] = [e for e in box_node.audit.events if e["event"] == "dicom.instance.refused"]
    reason = FailureReason.MISSING_ATTRIBUTE if not bad_uid else FailureReason.INVALID_UID
    assert refusal["reason"] == reason


@pytest.mark.integration
def test_command_and_data_set_sop_instance_uid_mismatch_is_refused(
    box_node: BoxNode, tmp_path: Path
) -> None:
    ds = _instance("mismatch")
    part10 = _write(ds, tmp_path / "mismatch.dcm")
    raw = part10.read_bytes()
    uid = str(ds.SOPInstanceUID).encode()
    position = raw.index(uid) + len(uid) - 1  # first occurrence: the File Meta Information
    other_digit = b"1" if raw[position : position + 1] != b"1" else b"2"
    part10.write_bytes(raw[:position] + other_digit + raw[position + 1 :])
    # pynetdicom puts the Media Storage SOP Instance UID in the command

    [response] = pynetdicom_store(box_node.port, [part10])

    assert status_of(response) == StorageStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    assert "SOP Instance UID" in str(response.ErrorComment)
    _assert_nothing_stored(box_node)


@pytest.mark.integration
@pytest.mark.parametrize("keyword", ["SeriesInstanceUID", "SOPClassUID", "PatientID"])
def test_missing_mandatory_attribute_is_refused(
    box_node: BoxNode, tmp_path: Path, keyword: str
) -> None:
    ds = _instance(f"missing-{keyword}")
    delattr(ds, keyword)

    [response] = pynetdicom_store(box_node.port, [_write(ds, tmp_path / "missing.dcm")])

    assert status_of(response) == StorageStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    assert keyword in str(response.ErrorComment)
    _assert_nothing_stored(box_node)


@pytest.mark.integration
def test_empty_patient_id_is_accepted_because_it_is_type_2(
    box_node: BoxNode, tmp_path: Path
) -> None:
    ds = _instance("empty-patient-id")
    ds.PatientID = ""

    [response] = pynetdicom_store(box_node.port, [_write(ds, tmp_path / "empty.dcm")])

    assert status_of(response) == StorageStatus.SUCCESS
    assert box_node.index.statistics().instances == 1


@pytest.mark.integration
@pytest.mark.parametrize("cut", [1, 1000, 8000])
def test_truncated_data_set_is_refused_as_cannot_understand(
    box_node: BoxNode, tmp_path: Path, cut: int
) -> None:
    part10 = _write(_instance(f"truncated-{cut}"), tmp_path / "whole.dcm")
    part10.write_bytes(part10.read_bytes()[:-cut])

    [response] = pynetdicom_store(box_node.port, [part10])

    assert status_of(response) == StorageStatus.CANNOT_UNDERSTAND
    assert "truncated" in str(response.ErrorComment)
    _assert_nothing_stored(box_node)


@pytest.mark.integration
def test_oversized_data_set_is_refused_as_out_of_resources(
    box_node_factory: BoxNodeFactory, tmp_path: Path
) -> None:
    node = box_node_factory(max_instance_bytes=4096)
    part10 = _write(_instance("oversized"), tmp_path / "big.dcm")  # 8 KiB of pixels

    [response] = pynetdicom_store(node.port, [part10])

    assert status_of(response) == StorageStatus.OUT_OF_RESOURCES
    assert "limit" in str(response.ErrorComment)
    _assert_nothing_stored(node)


@pytest.mark.integration
def test_the_size_limit_applies_to_each_instance_of_an_association(
    box_node_factory: BoxNodeFactory, tmp_path: Path
) -> None:
    files = [
        _write(make_instance(SyntheticStudy(seed="limit"), 0, n), tmp_path / f"{n}.dcm")
        for n in range(3)
    ]
    oversized = _instance("oversized")
    oversized.PixelData = bytes(2 * len(oversized.PixelData))
    oversized.Rows = 2 * oversized.Rows
    largest = max(len(data_set_bytes(path)) for path in files)
    node = box_node_factory(max_instance_bytes=largest + 64)

    responses = pynetdicom_store(
        node.port, [files[0], _write(oversized, tmp_path / "big.dcm"), files[1], files[2]]
    )

    assert [status_of(r) for r in responses] == [0, StorageStatus.OUT_OF_RESOURCES, 0, 0]
    assert node.index.statistics().instances == 3


@pytest.mark.integration
def test_a_refused_instance_does_not_stop_the_rest_of_the_association(
    box_node: BoxNode, tmp_path: Path
) -> None:
    good = _write(_instance("good"), tmp_path / "good.dcm")
    bad = _write(_instance("bad"), tmp_path / "bad.dcm")
    bad.write_bytes(bad.read_bytes()[:-10])

    responses = pynetdicom_store(box_node.port, [bad, good])

    assert [status_of(r) for r in responses] == [StorageStatus.CANNOT_UNDERSTAND, 0x0000]
    assert box_node.index.statistics().instances == 1


@pytest.mark.integration
def test_each_refusal_is_logged_once_with_its_reason(
    box_node: BoxNode, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = _write(_instance("logged"), tmp_path / "bad.dcm")
    bad.write_bytes(bad.read_bytes()[:-10])

    with caplog.at_level("INFO"):
        pynetdicom_store(box_node.port, [bad])

    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1
    assert "reason=unreadable" in refusals[0]
    assert "truncated" in refusals[0]
