"""What the index keeps about an instance: indexed attribute values and DICOM JSON metadata.

The metadata is computed once, at ingest, from the header parse (the pixel data is never read),
and served as-is by WADO-RS ``/metadata`` (PS3.18 §10.4.1.1.2). Bulk data (the pixel data, and
binary values larger than :data:`BULK_DATA_THRESHOLD` bytes) appear as ``BulkDataURI``
(PS3.18 §F.2.6) of the form::

    {+base}/studies/<study>/series/<series>/instances/<sop>/bulkdata/<path>

where ``{+base}`` is :data:`BULKDATA_BASE_PLACEHOLDER`, replaced by the DICOMweb layer with
the request's base URL (a plain string replace on the stored JSON text), and ``<path>`` is the
element's tag as 8 upper-case hex digits, prefixed for an element nested in sequences by
``<sequence tag>/<item index>/`` for each enclosing sequence (e.g. ``00540016/0/00181078``).
"""

from __future__ import annotations

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from drimbox.dicom.attributes import INDEXED_ATTRIBUTES
from drimbox.dicom.part10 import PixelDataElement
from drimbox.model import DicomJson

__all__ = [
    "BULKDATA_BASE_PLACEHOLDER",
    "BULK_DATA_THRESHOLD",
    "bulk_data_uri",
    "indexed_attribute_values",
    "instance_metadata",
]

BULKDATA_BASE_PLACEHOLDER = "{+base}"
"""Stands for the DICOMweb base URL in stored ``BulkDataURI`` values; replaced at serve time."""

BULK_DATA_THRESHOLD = 1024
"""Binary values (OB, OD, OF, OL, OV, OW, UN) longer than this many bytes become bulk data."""

_VALUE_SEPARATOR = "\\"  # PS3.5 §6.4, value multiplicity


def bulk_data_uri(
    study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str, path: str
) -> str:
    """Return the stored ``BulkDataURI`` of the bulk data at ``path`` in an instance.

    Parameters
    ----------
    study_instance_uid, series_instance_uid, sop_instance_uid
        The instance.
    path
        The element's tag as 8 hex digits, prefixed by ``<sequence tag>/<item index>/`` for
        each enclosing sequence.

    Returns
    -------
    str
        A URI starting with :data:`BULKDATA_BASE_PLACEHOLDER`.
    """
    return (
        f"{BULKDATA_BASE_PLACEHOLDER}/studies/{study_instance_uid}/series/{series_instance_uid}"
        f"/instances/{sop_instance_uid}/bulkdata/{path}"
    )


def instance_metadata(
    dataset: Dataset,
    *,
    study_instance_uid: str,
    series_instance_uid: str,
    sop_instance_uid: str,
    pixel_data: PixelDataElement | None,
) -> DicomJson:
    """Return the DICOM JSON metadata of an instance (PS3.18 §F.2), bulk data as URIs.

    Parameters
    ----------
    dataset
        The data set without its pixel data (as parsed by
        :func:`drimbox.dicom.part10.read_data_set_header`); no File Meta Information.
    study_instance_uid, series_instance_uid, sop_instance_uid
        The instance's identity (already validated), used in the bulk data URIs.
    pixel_data
        The pixel data element, added as a ``BulkDataURI`` when present.

    Returns
    -------
    DicomJson
        Keys are upper-case 8-hex-digit tags in ascending order.
    """
    paths: dict[int, str] = {}
    _collect_paths(dataset, "", paths)

    def bulk_data_element_handler(element: DataElement) -> str:
        path = paths.get(id(element), f"{int(element.tag):08X}")
        return bulk_data_uri(study_instance_uid, series_instance_uid, sop_instance_uid, path)

    document: DicomJson = dataset.to_json_dict(
        bulk_data_threshold=BULK_DATA_THRESHOLD,
        bulk_data_element_handler=bulk_data_element_handler,
        suppress_invalid_tags=True,
    )
    if pixel_data is not None:
        tag = f"{pixel_data.tag:08X}"
        document[tag] = {
            "vr": pixel_data.vr,
            "BulkDataURI": bulk_data_uri(
                study_instance_uid, series_instance_uid, sop_instance_uid, tag
            ),
        }
    return dict(sorted(document.items()))


def _collect_paths(dataset: Dataset, prefix: str, paths: dict[int, str]) -> None:
    """Record the bulk data path of every element, by object identity.

    Iterating a data set converts its raw elements and keeps the converted ones, so the
    elements seen here are the very objects ``to_json_dict`` hands to the bulk data handler.
    """
    for element in dataset:
        path = f"{prefix}{int(element.tag):08X}"
        paths[id(element)] = path
        if element.VR == "SQ":
            for index, item in enumerate(element.value):
                _collect_paths(item, f"{path}/{index}/", paths)


def indexed_attribute_values(dataset: Dataset) -> dict[str, str | None]:
    """Return every indexed attribute (:data:`INDEXED_ATTRIBUTES`) in its DICOM string form.

    Parameters
    ----------
    dataset
        The parsed data set.

    Returns
    -------
    dict
        By pydicom keyword: ``None`` when absent, ``""`` when present but empty, else the
        value as DICOM text (PN ``Family^Given``, DA ``YYYYMMDD``, numbers as decimal text,
        multiple values joined with ``\\``).
    """
    values: dict[str, str | None] = {}
    for keywords in INDEXED_ATTRIBUTES.values():
        for keyword in keywords:
            values[keyword] = _string_form(dataset, keyword)
    return values


def _string_form(dataset: Dataset, keyword: str) -> str | None:
    if keyword not in dataset:
        return None
    value = dataset[keyword].value
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return _VALUE_SEPARATOR.join(_one_value(v) for v in value)
    return _one_value(value)


def _one_value(value: object) -> str:
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("ascii", errors="replace")
    return str(value)
