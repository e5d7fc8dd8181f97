"""Paths of the ANS DRIM-M test files copied under ``tests/data/ans`` (see PROVENANCE.md)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["ANS", "CDA", "HL7", "KIN_MANIFEST", "OMI_SAMPLE", "cda_path", "hl7_path"]

ANS = Path(__file__).resolve().parents[1] / "data" / "ans"
_EXAMS = ANS / "Referencement_DRIMBox" / "Jeux_de_donnees"
HL7 = _EXAMS / "HL7v2"
CDA = _EXAMS / "CDA"
KIN_MANIFEST = ANS / "informatif" / "KIN" / "Manifest_KOS.xml"
OMI_SAMPLE = ANS / "informatif" / "HL7v2_OMI_O23_Sample" / "OMI_O23-ImagingOrder.hl7"
_ANNEXES = frozenset("ABD")


def hl7_path(name: str) -> Path:
    """Return the path of message ``name`` (e.g. ``CR_C-ORU``)."""
    exam = name.split("-")[0].removeprefix("CR_")[0]
    folder = HL7 / "Annexes" if exam in _ANNEXES else HL7
    return folder / f"Examen_{exam}" / f"{name}.hl7"


def cda_path(name: str) -> Path:
    """Return the path of CDA report ``name`` (e.g. ``CR_C``)."""
    exam = name.removeprefix("CR_")[0]
    folder = CDA / "Annexes" if exam in _ANNEXES else CDA
    return folder / f"Examen_{exam}" / f"{name}.xml"
