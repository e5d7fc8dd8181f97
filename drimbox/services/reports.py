"""Report notices: what the source workflow needs from a validated report (HL7 ORU/MDM + CDA)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from drimbox.identity import PatientIdentity, StudyFacts

__all__ = ["ReportAction", "ReportNotice", "notice_from_dict", "notice_to_dict"]


class ReportAction(StrEnum):
    """What a report asks of the published manifest."""

    PUBLISH = "publish"
    CANCEL = "cancel"


@dataclass(frozen=True, slots=True)
class ReportNotice:
    """A validated report, as the workflow needs it (built from HL7 ORU/MDM + CDA).

    Attributes
    ----------
    message_id
        Identifies the carrying message (and study): a message received twice is processed once.
    action
        Publish (or replace) / cancel.
    report_id
        The CDA document id.
    study_instance_uid
        The exam.
    facts
        What the report says of the study and the patient (for coherence checks).
    accession_number, placer_order_number
        Order identifiers.
    send_to_dmp, masked, invisible_to_patient
        DMP flags.
    confidentiality
        HL7 v3 confidentiality code of the report.
    author_id, author_name, organisation_id, organisation_name
        Who validated the report, for which organisation.
    exam_date
        ``YYYYMMDD``.
    region_codes
        Anatomic region codes (system, code, display) from the report.
    problems
        Identity-vigilance problems the protocol adapter found in the message itself (e.g.
        PID and CDA disagree): any quarantines the exam.
    modalities
        Modality codes the report gives (the images' modalities are authoritative).
    """

    message_id: str
    action: ReportAction
    report_id: str
    study_instance_uid: str
    facts: StudyFacts
    accession_number: str | None = None
    placer_order_number: str | None = None
    send_to_dmp: bool = True
    masked: bool = False
    invisible_to_patient: bool = False
    confidentiality: str = "N"
    author_id: str | None = None
    author_name: str | None = None
    organisation_id: str | None = None
    organisation_name: str | None = None
    exam_date: str | None = None
    region_codes: tuple[tuple[str, str, str], ...] = ()
    problems: tuple[str, ...] = ()
    modalities: tuple[str, ...] = ()

    @property
    def patient(self) -> PatientIdentity:
        """The patient identity the report carries."""
        return self.facts.patient


def notice_to_dict(notice: ReportNotice) -> dict[str, Any]:
    """JSON-able form of a notice (kept with the exam)."""
    data = asdict(notice)
    data["action"] = notice.action.value
    return data


def notice_from_dict(data: dict[str, Any]) -> ReportNotice:
    """Inverse of :func:`notice_to_dict`."""
    facts = data["facts"]
    patient = facts["patient"]
    return ReportNotice(
        message_id=data["message_id"],
        action=ReportAction(data["action"]),
        report_id=data["report_id"],
        study_instance_uid=data["study_instance_uid"],
        facts=StudyFacts(
            study_instance_uids=tuple(facts["study_instance_uids"]),
            accession_numbers=tuple(facts["accession_numbers"]),
            patient=PatientIdentity(**{**patient, "given_names": tuple(patient["given_names"])}),
        ),
        accession_number=data["accession_number"],
        placer_order_number=data["placer_order_number"],
        send_to_dmp=data["send_to_dmp"],
        masked=data["masked"],
        invisible_to_patient=data["invisible_to_patient"],
        confidentiality=data["confidentiality"],
        author_id=data["author_id"],
        author_name=data["author_name"],
        organisation_id=data["organisation_id"],
        organisation_name=data["organisation_name"],
        exam_date=data["exam_date"],
        region_codes=tuple(
            (str(system), str(code), str(display)) for system, code, display in data["region_codes"]
        ),
        problems=tuple(data.get("problems", ())),
        modalities=tuple(data.get("modalities", ())),
    )
