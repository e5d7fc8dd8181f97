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
    header = read_data_set_header(
        io.BytesIO(_encoded(ds)), EXPLICIT_VR_LITTLE_ENDIAN, max_inflated_bytes=1 << 30
    )

    values = indexed_attribute_values(header.dataset)

    assert set(values) == {k for keywords in INDEXED_ATTRIBUTES.values() for k in keywords}
    assert values["PatientName"] == "DOE^JANE"
    assert values["PatientID"] == ""
    assert values["StudyDate"] == "20240102"
    assert values["SeriesNumber"] == "2"
    assert values["InstanceNumber"] == "3"
    assert values["Rows"] == "64"
    assert values["IssuerOfPatientID"] is None
    assert values["NumberOfFrames"] is None
