"""Every accepted transfer syntax is stored as received, byte for byte.

dcmtk ``storescu`` sends each file in its own transfer syntax when told to propose it first;
pynetdicom sends the data sets storescu cannot send unchanged (JPEG Lossless process 14, and
deflated data sets, which storescu re-deflates).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread

from drimbox.model import InstanceLocation
from tests.dimse._corpus import STORESCU_PROPOSAL, TRANSFER_SYNTAX_CASES, make_file
from tests.dimse._support import (
    BoxNode,
    data_set_bytes,
    pynetdicom_store,
    status_of,
    stored_data_set_bytes,
    storescu,
)


def _held(node: BoxNode, part10: Path) -> InstanceLocation:
    location = node.index.get_instance(str(dcmread(part10, stop_before_pixels=True).SOPInstanceUID))
    assert location is not None, "instance not indexed"
    return location


@pytest.mark.integration
@pytest.mark.parametrize("transfer_syntax_uid", TRANSFER_SYNTAX_CASES)
def test_c_store_keeps_the_data_set_byte_identical_in_its_transfer_syntax(
    box_node: BoxNode, tmp_path: Path, transfer_syntax_uid: str
) -> None:
    part10 = make_file(transfer_syntax_uid, tmp_path)

    if transfer_syntax_uid in STORESCU_PROPOSAL or transfer_syntax_uid == "1.2.840.10008.1.2.1":
        result = storescu(box_node.port, [part10], *STORESCU_PROPOSAL.get(transfer_syntax_uid, ()))
        assert result.returncode == 0, result.stderr
    else:
        [response] = pynetdicom_store(box_node.port, [part10])
        assert status_of(response) == 0x0000

    location = _held(box_node, part10)
    assert location.transfer_syntax_uid == transfer_syntax_uid
    assert stored_data_set_bytes(box_node.blobs, location.blob.key) == data_set_bytes(part10)


@pytest.mark.integration
def test_pixel_data_offset_points_at_the_pixel_data_value_in_the_stored_file(
    box_node: BoxNode, tmp_path: Path
) -> None:
    part10 = make_file("1.2.840.10008.1.2.1", tmp_path)
    pixels = dcmread(part10).PixelData

    storescu(box_node.port, [part10])

    location = _held(box_node, part10)
    assert location.pixel_data_offset is not None
    stored = box_node.blobs.read_range(location.blob.key, location.pixel_data_offset, len(pixels))
    assert stored == pixels
    assert location.number_of_frames == 1


@pytest.mark.integration
def test_pixel_data_offset_of_encapsulated_pixel_data_points_at_the_basic_offset_table_item(
    box_node: BoxNode, tmp_path: Path
) -> None:
    part10 = make_file("1.2.840.10008.1.2.5", tmp_path)

    storescu(box_node.port, [part10], "-xr")

    location = _held(box_node, part10)
    assert location.pixel_data_offset is not None
    item = box_node.blobs.read_range(location.blob.key, location.pixel_data_offset, 4)
    assert item == b"\xfe\xff\x00\xe0"  # (FFFE,E000) Item, little endian (PS3.5 §A.4)
