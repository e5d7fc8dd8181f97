"""From received HL7 report messages to the source workflow.

The MLLP handler (:func:`drimbox.hl7.inbox.make_report_handler`) persists each accepted message
before answering AA; :class:`ReportWorker` then takes messages from the inbox, turns each into
one :class:`~drimbox.services.reports.ReportNotice` per study it documents, hands them to the
publication service and marks the message done. A message whose processing fails for a
retryable reason (database or storage unavailable) stays in the inbox and is tried again.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable

from drimbox.errors import DrimboxError, IndexUnavailableError, StorageError
from drimbox.hl7.cda import InstanceIdentifier
from drimbox.hl7.errors import HL7Error
from drimbox.hl7.inbox import HL7Inbox
from drimbox.hl7.messages import ReportAction as MessageAction
from drimbox.hl7.messages import ReportMessage, parse_report_message
from drimbox.hl7.vigilance import report_problems
from drimbox.identity import StudyFacts
from drimbox.ports import AuditLog
from drimbox.services.reports import ReportAction, ReportNotice
from drimbox.services.worker import PollingWorker

__all__ = ["NO_STUDY_PREFIX", "ReportWorker", "notices_from_message"]

_log = logging.getLogger("drimbox.hl7.reports")
NO_STUDY_PREFIX = "no-study-"
"""Key prefix of the exam recorded for a report that names no StudyInstanceUID."""


def notices_from_message(
    message: ReportMessage,
    raw: bytes,
    *,
    allow_test_oids: bool,
    compare_birth_place: bool = False,
) -> list[ReportNotice]:
    """Return one notice per study the report documents.

    Parameters
    ----------
    message
        The parsed message.
    raw
        Its bytes (their SHA-256 identifies the message: MSH-10 is not reliable in practice).
    allow_test_oids
        ``False`` in production.
    compare_birth_place
        Whether PID-11 and the CDA birthplace must agree (off by default: the ANS samples
        disagree on it for half the exams while every other trait agrees).

    Returns
    -------
    list of ReportNotice
    """
    problems = report_problems(
        message,
        allow_test_oids=allow_test_oids,
        compare_birth_place=compare_birth_place,
        check_dmp_flag=False,
    )
    document = message.document
    digest = hashlib.sha256(raw).hexdigest()
    author = document.author or document.legal_authenticator
    organisation = document.custodian or author
    orders = document.orders
    placer = next((o.placer_order.extension for o in orders if o.placer_order), None)
    modalities = tuple(code.code for code in document.modalities)
    regions = tuple(
        (f"urn:oid:{code.code_system}" if code.code_system else "", code.code,
         code.display_name or "")
        for code in document.anatomic_regions
    )  # fmt: skip
    action = ReportAction.CANCEL if message.action is MessageAction.CANCEL else ReportAction.PUBLISH
    # A report naming no study is still recorded (and quarantined) under a key of its own, so
    # that two such reports never overwrite each other.
    studies = message.study_instance_uids or (f"{NO_STUDY_PREFIX}{digest[:40]}",)
    notices = []
    for study in studies:
        facts = StudyFacts(
            study_instance_uids=() if study.startswith(NO_STUDY_PREFIX) else (study,),
            accession_numbers=message.accession_numbers,
            patient=message.patient,
        )
        notices.append(
            ReportNotice(
                message_id=f"{digest}:{study}",
                action=action,
                report_id=_identifier(document.document_id.root, document.document_id.extension),
                study_instance_uid=study,
                facts=facts,
                accession_number=next(iter(message.accession_numbers), None),
                placer_order_number=placer or message.order.placer_order_number or None,
                send_to_dmp=message.flags.to_dmp,
                masked=message.flags.masked_to_professionals,
                invisible_to_patient=message.flags.hidden_from_patient,
                confidentiality=document.confidentiality_code or "N",
                author_id=_id_value(author.identifier if author else None),
                author_name=author.name if author else None,
                organisation_id=_id_value(organisation.organization_id if organisation else None),
                organisation_name=organisation.organization_name if organisation else None,
                exam_date=(document.service_start or document.effective_time or "")[:8] or None,
                region_codes=regions,
                problems=tuple(problems),
                modalities=modalities,
            )
        )
    return notices


def _identifier(root: str, extension: str | None) -> str:
    return f"{root}^{extension}" if extension else root


def _id_value(identifier: InstanceIdentifier | None) -> str | None:
    if identifier is None:
        return None
    return identifier.extension or identifier.root or None


class ReportWorker:
    """Drains the HL7 inbox into the publication service.

    Parameters
    ----------
    inbox
        The durable inbox.
    handle_report
        The publication service's entry point.
    audit
        The audit trail.
    allow_test_oids
        ``False`` in production.
    poll_interval
        Seconds between inbox scans when idle.
    """

    def __init__(
        self,
        inbox: HL7Inbox,
        handle_report: Callable[[ReportNotice], object],
        audit: AuditLog,
        *,
        allow_test_oids: bool,
        poll_interval: float = 2.0,
    ) -> None:
        self._inbox = inbox
        self._handle_report = handle_report
        self._audit = audit
        self._allow_test_oids = allow_test_oids
        self._worker = PollingWorker(
            "drimbox-hl7",
            self.run_once,
            interval=poll_interval,
            recoverable=(OSError, DrimboxError),
        )
        self._lock = threading.Lock()

    def wake(self, *_: object) -> None:
        """Ask the worker to scan the inbox now (usable as the handler's ``on_stored``)."""
        self._worker.wake()

    def run_once(self) -> int:
        """Process every pending message; return how many were completed."""
        completed = 0
        with self._lock:
            for inbox_id in self._inbox.pending():
                if self._worker.stopping:
                    break
                if self._process(inbox_id):
                    completed += 1
        return completed

    def _process(self, inbox_id: str) -> bool:
        raw = self._inbox.read(inbox_id)
        try:
            message = parse_report_message(raw)
        except HL7Error as error:  # accepted earlier, refused now: keep a trace, drop it
            self._audit.record("hl7.report", "unparseable", inbox_id=inbox_id, reason=str(error))
            self._inbox.mark_done(inbox_id)
            return True
        try:
            for notice in notices_from_message(message, raw, allow_test_oids=self._allow_test_oids):
                self._handle_report(notice)
        except (IndexUnavailableError, StorageError) as error:
            _log.warning("hl7.report_retry inbox_id=%s error=%s", inbox_id, error)
            return False
        except DrimboxError as error:
            self._audit.record("hl7.report", "failure", inbox_id=inbox_id, reason=str(error))
            _log.error("hl7.report_failed inbox_id=%s error=%s", inbox_id, error)
        except Exception:  # a bug must neither stop the worker nor lose the message
            _log.exception("hl7.report_error inbox_id=%s (kept pending)", inbox_id)
            return False
        self._inbox.mark_done(inbox_id)
        return True

    def start(self) -> None:
        """Start the worker thread."""
        self._worker.start()

    def stop(self) -> None:
        """Stop the worker thread."""
        self._worker.stop()
