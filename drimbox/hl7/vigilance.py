"""Identity vigilance on a received report: why it must not be published as it is.

Pure checks combining :mod:`drimbox.identity` with what the message says: qualified INS in PID,
PID traits against the CDA ``recordTarget``, TXA-12 against the CDA id, a StudyInstanceUID to
publish, and the DMP flag. The study-versus-images checks
(:func:`drimbox.identity.study_mismatches`) need the stored instances and belong to the
publication service.
"""

from __future__ import annotations

from drimbox.hl7.messages import ReportAction, ReportMessage
from drimbox.identity import identity_mismatches, publication_problems

__all__ = ["report_problems"]


def report_problems(
    message: ReportMessage,
    *,
    allow_test_oids: bool = True,
    compare_birth_place: bool = True,
    check_dmp_flag: bool = True,
) -> list[str]:
    """Return the reasons to quarantine ``message`` instead of acting on it (empty: none).

    Parameters
    ----------
    message
        A parsed report message.
    allow_test_oids
        ``False`` in production (test / demonstration INS OIDs are refused).
    compare_birth_place
        Whether PID-11 ``BDL`` and the CDA birthplace must agree.
    check_dmp_flag
        Whether a missing ``DESTDMP`` is a problem (the publication workflow records it as its
        own state, "not for the DMP", rather than as a quarantine).

    Returns
    -------
    list of str
        Reasons without identity values. A cancellation is only checked for what identifies
        the document (a cancelled report needs no DMP consent).
    """
    problems = publication_problems(message.patient, allow_test_oids=allow_test_oids)
    problems += identity_mismatches(
        message.patient,
        message.document.patient,
        labels=("PID", "CDA"),
        compare_birth_place=compare_birth_place,
    )
    cda_id = message.document.document_id.root
    if message.document_unique_id and message.document_unique_id != cda_id:
        problems.append("TXA-12 unique document number differs from the CDA ClinicalDocument/id")
    if not message.study_instance_uids:
        problems.append("the report names no StudyInstanceUID (serviceEvent/id or ZDS-1)")
    if check_dmp_flag and message.action is not ReportAction.CANCEL and not message.flags.to_dmp:
        problems.append("DESTDMP is not Y: the report is not to be shared")
    return problems
