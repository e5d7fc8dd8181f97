"""The fast KOS walk reads what pydicom reads, or hands the stream over to pydicom."""

from __future__ import annotations

import dataclasses
from io import BytesIO

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from registry._fhir import BundleError
from registry.loader import synthetic_entries
from registry.models import ManifestSubmission
from registry.service._kos import KosFacts, read_kos_facts
from registry.service._rules import check_submission

_IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
_EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"


def _synthetic() -> tuple[ManifestSubmission, bytes]:
    manifest, kos, _ = next(iter(synthetic_entries(1, seed=5, instances=4)))
    return manifest, kos


def _pydicom_facts(kos: bytes) -> KosFacts:
    dataset = dcmread(BytesIO(kos))
    return KosFacts(
        dataset.get("SOPClassUID"),
        dataset.get("SOPInstanceUID"),
        frozenset(
            item.get("StudyInstanceUID")
            for item in dataset.get("CurrentRequestedProcedureEvidenceSequence", [])
        ),
    )


def _reencoded(kos: bytes, *, transfer_syntax: str | None, undefined_lengths: bool) -> bytes:
    dataset = dcmread(BytesIO(kos))
    for element in dataset.iterall():
        if element.VR == "SQ":
            element.is_undefined_length = undefined_lengths
            for item in element.value:
                item.is_undefined_length_sequence_item = undefined_lengths
    if transfer_syntax is not None:
        dataset.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    output = BytesIO()
    dataset.save_as(output)
    return output.getvalue()


@pytest.mark.parametrize("transfer_syntax", [None, _IMPLICIT_VR_LITTLE_ENDIAN])
@pytest.mark.parametrize("undefined_lengths", [False, True])
def test_fast_walk_reads_the_same_facts_as_pydicom(
    transfer_syntax: str | None, undefined_lengths: bool
) -> None:
    _, kos = _synthetic()
    encoded = _reencoded(kos, transfer_syntax=transfer_syntax, undefined_lengths=undefined_lengths)
    facts = read_kos_facts(encoded)
    assert facts is not None
    assert facts == _pydicom_facts(encoded)
    assert facts.sop_class_uid == "1.2.840.10008.5.1.4.1.1.88.59"


def test_truncated_or_foreign_streams_are_left_to_pydicom() -> None:
    _, kos = _synthetic()
    assert read_kos_facts(kos[:-3]) is None
    assert read_kos_facts(b"\0" * 128 + b"DICX" + kos[132:]) is None
    assert read_kos_facts(b"not dicom") is None
    # the walk reads little endian only: a stream declaring big endian goes to pydicom
    declared = kos.replace(b"1.2.840.10008.1.2.1\0", _EXPLICIT_VR_BIG_ENDIAN.encode() + b"\0")
    assert declared != kos
    assert read_kos_facts(declared) is None
    dataset = dcmread(BytesIO(kos))
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian  # deflated
    output = BytesIO()
    dataset.save_as(output)
    assert read_kos_facts(output.getvalue()) is None


def test_every_corrupted_byte_gives_pydicom_s_answer_or_a_fallback() -> None:
    _, kos = _synthetic()
    for cut in range(132, len(kos), 7):
        facts = read_kos_facts(kos[:cut])
        if facts is not None:  # the cut fell on an element boundary: pydicom agrees
            assert facts == _pydicom_facts(kos[:cut])


def test_a_kos_of_another_study_is_refused_through_either_reader() -> None:
    manifest, kos = _synthetic()
    other = dataclasses.replace(manifest, study_instance_uid="1.2.3.4")
    with pytest.raises(BundleError, match="does not reference the StudyInstanceUID"):
        check_submission(other, kos, production=False)
    dataset = dcmread(BytesIO(kos))
    dataset.file_meta.TransferSyntaxUID = (
        DeflatedExplicitVRLittleEndian  # deflated: pydicom reads it
    )
    output = BytesIO()
    dataset.save_as(output)
    assert read_kos_facts(output.getvalue()) is None
    check_submission(manifest, output.getvalue(), production=False)
    with pytest.raises(BundleError, match="does not reference the StudyInstanceUID"):
        check_submission(other, output.getvalue(), production=False)


def test_a_dataset_that_is_not_a_kos_is_refused() -> None:
    manifest, kos = _synthetic()
    dataset = dcmread(BytesIO(kos))
    dataset.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    assert isinstance(dataset, Dataset)
    output = BytesIO()
    dataset.save_as(output)
    with pytest.raises(BundleError, match="not a Key Object Selection"):
        check_submission(manifest, output.getvalue(), production=False)
