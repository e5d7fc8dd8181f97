"""Attributes the index keeps per level, for QIDO-RS and C-FIND.

The sets follow PS3.18 §10.6.3.3 (QIDO-RS required return attributes) and PS3.4 §C.6.2.1
(Study Root query/retrieve keys). Keys are pydicom keywords; the index stores their values in the
DICOM string form described in :class:`drimbox.model.InstanceRecord`.
"""

from __future__ import annotations

from types import MappingProxyType

from drimbox.model import Level

__all__ = [
    "COMPUTED_ATTRIBUTES",
    "INDEXED_ATTRIBUTES",
    "LEVEL_UNIQUE_KEY",
    "PERSON_NAME_ATTRIBUTES",
    "level_of",
]

INDEXED_ATTRIBUTES: MappingProxyType[Level, tuple[str, ...]] = MappingProxyType(
    {
        Level.PATIENT: (
            "PatientID",
            "IssuerOfPatientID",
            "PatientName",
            "PatientBirthDate",
            "PatientSex",
        ),
        Level.STUDY: (
            "StudyInstanceUID",
            "StudyDate",
            "StudyTime",
            "AccessionNumber",
            "ReferringPhysicianName",
            "StudyID",
            "StudyDescription",
            "SpecificCharacterSet",
            "TimezoneOffsetFromUTC",
            "InstitutionName",
        ),
        Level.SERIES: (
            "SeriesInstanceUID",
            "Modality",
            "SeriesNumber",
            "SeriesDescription",
            "SeriesDate",
            "SeriesTime",
            "BodyPartExamined",
            "PerformedProcedureStepStartDate",
            "PerformedProcedureStepStartTime",
        ),
        Level.IMAGE: (
            "SOPInstanceUID",
            "SOPClassUID",
            "InstanceNumber",
            "Rows",
            "Columns",
            "BitsAllocated",
            "NumberOfFrames",
            "ContentDate",
            "ContentTime",
            "AcquisitionDateTime",
        ),
    }
)
"""Attributes stored at each level, by pydicom keyword."""

COMPUTED_ATTRIBUTES: MappingProxyType[Level, tuple[str, ...]] = MappingProxyType(
    {
        Level.PATIENT: (
            "NumberOfPatientRelatedStudies",
            "NumberOfPatientRelatedSeries",
            "NumberOfPatientRelatedInstances",
        ),
        Level.STUDY: (
            "ModalitiesInStudy",
            "SOPClassesInStudy",
            "NumberOfStudyRelatedSeries",
            "NumberOfStudyRelatedInstances",
        ),
        Level.SERIES: ("NumberOfSeriesRelatedInstances",),
        Level.IMAGE: (),
    }
)
"""Attributes computed from the hierarchy rather than stored (PS3.4 §C.3.4)."""

LEVEL_UNIQUE_KEY: MappingProxyType[Level, str] = MappingProxyType(
    {
        Level.PATIENT: "PatientID",
        Level.STUDY: "StudyInstanceUID",
        Level.SERIES: "SeriesInstanceUID",
        Level.IMAGE: "SOPInstanceUID",
    }
)
"""Unique key of each level (PS3.4 §C.2.2.1)."""

PERSON_NAME_ATTRIBUTES = frozenset({"PatientName", "ReferringPhysicianName"})
"""Indexed attributes of VR PN, subject to fuzzy matching."""

_LEVEL_BY_KEYWORD = {
    keyword: level
    for level, keywords in (*INDEXED_ATTRIBUTES.items(), *COMPUTED_ATTRIBUTES.items())
    for keyword in keywords
}


def level_of(keyword: str) -> Level | None:
    """Return the level at which ``keyword`` is indexed, or ``None`` if it is not indexed.

    Parameters
    ----------
    keyword
        A pydicom keyword.

    Returns
    -------
    Level or None
    """
    return _LEVEL_BY_KEYWORD.get(keyword)
