"""DMP / MSSanté flags of the CI-SIS "CDA in HL7v2" profile.

Each flag is an OBX whose OBX-3 is ``<FLAG>^<label>^MetaDMPMSS`` and whose OBX-5 is ``Y`` or ``N``
(HL7 table 0136, coded ``expandedYes-NoIndicator``), after the OBX carrying the CDA.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "FLAG_CODING_SYSTEM",
    "DmpFlag",
    "ReportFlags",
]

FLAG_CODING_SYSTEM = "MetaDMPMSS"
"""CI-SIS coding system of the DMP / MSSanté OBX flags (OBX-3.3)."""


class DmpFlag(StrEnum):
    """OBX flags of the CI-SIS "CDA in HL7v2" profile (coding system ``MetaDMPMSS``)."""

    MASKED_TO_PROFESSIONALS = "MASQUE_PS"
    HIDDEN_FROM_PATIENT = "INVISIBLE_PATIENT"
    HIDDEN_FROM_LEGAL_REPRESENTATIVES = "INVISIBLE_REP_LEGAUX"
    SECRET_CONNECTION = "CONNEXION_SECRETE"  # noqa: S105 (a flag name, not a password)
    CONFIDENTIALITY_CHANGED = "MODIF_CONF_CODE"
    TO_DMP = "DESTDMP"
    TO_MSSANTE_PROFESSIONALS = "DESTMSSANTEPS"
    TO_MSSANTE_PATIENT = "DESTMSSANTEPAT"
    RECEIPT_ACKNOWLEDGMENT = "ACK_RECEPTION"
    READ_ACKNOWLEDGMENT = "ACK_LECTURE_MSS"


@dataclass(frozen=True, slots=True)
class ReportFlags:
    """The ``MetaDMPMSS`` flags of a message, by name (``True`` for ``Y``)."""

    values: Mapping[str, bool] = field(default_factory=dict)

    def get(self, flag: DmpFlag | str, default: bool = False) -> bool:
        """Return a flag's value, ``default`` when the sender did not send it."""
        return self.values.get(str(flag), default)

    @property
    def to_dmp(self) -> bool:
        """``DESTDMP``: the document goes to the patient's DMP (absent: no)."""
        return self.get(DmpFlag.TO_DMP)

    @property
    def hidden_from_patient(self) -> bool:
        """``INVISIBLE_PATIENT``: not visible to the patient until an announcement."""
        return self.get(DmpFlag.HIDDEN_FROM_PATIENT)

    @property
    def hidden_from_legal_representatives(self) -> bool:
        """``INVISIBLE_REP_LEGAUX``: not visible to the patient's legal representatives."""
        return self.get(DmpFlag.HIDDEN_FROM_LEGAL_REPRESENTATIVES)

    @property
    def masked_to_professionals(self) -> bool:
        """``MASQUE_PS``: masked to health professionals."""
        return self.get(DmpFlag.MASKED_TO_PROFESSIONALS)
