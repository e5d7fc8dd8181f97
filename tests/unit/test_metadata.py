"""DICOM JSON metadata and indexed attribute values computed from a header-only parse."""

from __future__ import annotations

import io

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

from drimbox.dicom.attributes import INDEXED_ATTRIBUTES
from drimbox.dicom.metadata import (
    BULKDATA_BASE_PLACEHOLDER,
    indexed_attribute_values,
    instance_metadata,
)
from drimbox.dicom.part10 import read_data_set_header
from drimbox.dicom.synthetic import SyntheticStudy, make_instance

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
ST, SE, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"


def _encoded(ds: Dataset) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return buffer.getvalue()


def _metadata(ds: Dataset) -> dict[str, object]:
    header = read_data_set_header(
        io.BytesIO(_encoded(ds)), EXPLICIT_VR_LITTLE_ENDIAN, max_inflated_bytes=1 << 30
    )
    return instance_metadata(
        header.dataset,
        study_instance_uid=ST,
        series_instance_uid=SE,
        sop_instance_uid=SOP,
        pixel_data=header.pixel_data,
    )


def test_pixel_data_becomes_a_bulk_data_uri_with_the_base_placeholder() -> None:
    metadata = _metadata(make_instance(SyntheticStudy(), 0, 0))

    assert metadata["7FE00010"] == {
        "vr": "OW",
        "BulkDataURI": f"{BULKDATA_BASE_PLACEHOLDER}/studies/{ST}/series/{SE}/instances/{SOP}"
        "/bulkdata/7FE00010",
    }


def test_metadata_holds_the_header_in_dicom_json_form_sorted_by_tag() -> None:
    metadata = _metadata(make_instance(SyntheticStudy(patient_name="DOE^JANE"), 0, 0))

    assert metadata["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "DOE^JANE"}]}
    assert metadata["00200013"] == {"vr": "IS", "Value": [1]}
    assert metadata["00280010"] == {"vr": "US", "Value": [64]}
    assert list(metadata) == sorted(metadata)
    assert not any(tag.startswith("0002") for tag in metadata)


def test_large_binary_values_in_sequences_get_a_path_in_their_bulk_data_uri() -> None:
    ds = make_instance(SyntheticStudy(), 0, 0)
    item = Dataset()
    item.add_new(0x00091010, "OB", b"\x01" * 4096)
    item.add_new(0x00091011, "OB", b"\x02" * 8)
    ds.add_new(0x00091000, "LO", "DRIMBOX TEST")
    ds.add_new(0x00091020, "SQ", Sequence([Dataset(), item]))

    metadata = _metadata(ds)

    [_, nested] = metadata["00091020"]["Value"]  # type: ignore[index]
    assert nested["00091010"]["BulkDataURI"].endswith("/bulkdata/00091020/1/00091010")
    assert nested["00091011"] == {"vr": "OB", "InlineBinary": "AgICAgICAgI="}


def test_indexed_attributes_cover_every_level_in_dicom_string_form() -> None:
    ds = make_instance(SyntheticStudy(patient_name="DOE^JANE", study_date="20240102"), 1, 2)
    ds.PatientID = ""

    values = indexed_attribute_values(_metadata(ds))

    assert set(values) == {k for keywords in INDEXED_ATTRIBUTES.values() for k in keywords}
    assert values["PatientName"] == "DOE^JANE"
    assert values["PatientID"] == ""
    assert values["StudyDate"] == "20240102"
    assert values["SeriesNumber"] == "2"
    assert values["InstanceNumber"] == "3"
    assert values["Rows"] == "64"
    assert values["IssuerOfPatientID"] is None
    assert values["NumberOfFrames"] is None


def _rich_instance() -> Dataset:
    ds = make_instance(SyntheticStudy(patient_name="MÜLLER^RENÉ"), 0, 0)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "", "AXIAL"]
    ds.OtherPatientIDs = "A\\B"
    ds.PatientComments = "  leading spaces kept, trailing dropped   "
    ds.add_new(0x00181310, "US", [0, 64, 64, 0])  # AcquisitionMatrix
    ds.add_new(0x00189087, "FD", 1000.5)  # DiffusionBValue
    ds.add_new(0x00200032, "DS", [-1.5, 2, 3.25])  # ImagePositionPatient
    ds.add_new(0x00280106, "SS", -5)  # SmallestImagePixelValue
    ds.add_new(0x00090010, "LO", "PRIVATE CREATOR")
    ds.add_new(0x00091001, "OB", b"\x00\x01\x02\x03")
    ds.add_new(0x00091002, "UN", b"\xff" * 2000)
    ds.add_new(0x00091003, "AT", [0x00100010, 0x7FE00010])
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "T-D3000", "SRT", "Chest"
    ds.AnatomicRegionSequence = Sequence([code])
    ds.ReferencedImageSequence = Sequence([])
    return ds


def test_fast_metadata_matches_pydicom_dicom_json_element_for_element() -> None:
    from drimbox.dicom.metadata import _pydicom_json, bulk_data_uri

    ds = _rich_instance()
    header = read_data_set_header(
        io.BytesIO(_encoded(ds)), EXPLICIT_VR_LITTLE_ENDIAN, max_inflated_bytes=1 << 30
    )
    expected = _pydicom_json(header.dataset, bulk_data_uri(ST, SE, SOP, ""))

    fast = _metadata(_rich_instance())

    del fast["7FE00010"]  # the pixel data is added separately
    assert fast == expected


def test_implicit_vr_and_latin_1_data_sets_give_the_same_metadata_as_pydicom() -> None:
    from drimbox.dicom.metadata import _pydicom_json, bulk_data_uri

    ds = _rich_instance()
    ds.SpecificCharacterSet = "ISO_IR 100"
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, ds)
    raw = buffer.getvalue()

    def parsed() -> Dataset:
        return read_data_set_header(
            io.BytesIO(raw), "1.2.840.10008.1.2", max_inflated_bytes=1 << 30
        ).dataset

    fast = instance_metadata(
        parsed(), study_instance_uid=ST, series_instance_uid=SE, sop_instance_uid=SOP,
        pixel_data=None,
    )  # fmt: skip

    assert fast == _pydicom_json(parsed(), bulk_data_uri(ST, SE, SOP, ""))
    assert fast["00100010"]["Value"] == [{"Alphabetic": "MÜLLER^RENÉ"}]
