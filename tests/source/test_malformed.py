"""Malformed HL7 or CDA over MLLP: AE/AR with an ERR segment, nothing kept in the inbox, nothing
published; the box keeps serving the next (valid) report."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from drimbox.audit import MemoryAuditLog
from drimbox.hl7.inbox import HL7Inbox
from drimbox.hl7.mllp import send_message
from drimbox.hl7.reports import ReportWorker
from drimbox.model import ExamState
from drimbox.services.publication import INVALID_STUDY_UID
from drimbox.services.reports import ReportNotice
from tests.hl7.ans import OMI_SAMPLE
from tests.source._support import ans_message, ans_study, exam_datasets, with_study_uid
from tests.source.conftest import SiteFactory

EXAM_C = ans_study(103)
_OBX5 = b"^TEXT^XML^Base64^"


def with_cda(document: bytes) -> bytes:
    """CR_C-ORU whose OBX-5 carries ``document``."""
    raw = ans_message("CR_C-ORU")
    start = raw.index(_OBX5) + len(_OBX5)
    end = raw.index(b"|", start)
    return raw[:start] + base64.b64encode(document) + raw[end:]


def without_segment(name: bytes) -> bytes:
    raw = ans_message("CR_C-ORU")
    return b"\r".join(s for s in raw.split(b"\r") if not s.startswith(name))


XXE = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>'
# message -> expected MSA-1
MALFORMED = {
    "not HL7": (b"GET / HTTP/1.1\r\nHost: box\r\n\r\n", "AR"),
    "order message (OMI^O23)": (OMI_SAMPLE.read_bytes(), "AR"),
    "HL7 2.3": (ans_message("CR_C-ORU", {b"|P|2.5|": b"|P|2.3|"}), "AR"),
    "unknown event": (ans_message("CR_C-ORU", {b"ORU^R01^ORU_R01": b"ORU^R30^ORU_R30"}), "AR"),
    "no PID": (without_segment(b"PID|"), "AE"),
    "no CDA OBX": (without_segment(b"OBX|1|ED|"), "AE"),
    "bad Base64": (ans_message("CR_C-ORU", {_OBX5 + b"PD94": _OBX5 + b"*D94"}), "AE"),
    "CDA with external entity": (with_cda(XXE), "AE"),
    "CDA not well-formed": (with_cda(b"<ClinicalDocument xmlns='urn:hl7-org:v3'><id"), "AE"),
    "not a CDA": (with_cda(b"<?xml version='1.0'?><html><body/></html>"), "AE"),
}


@pytest.mark.integration
def test_malformed_messages_are_refused_and_nothing_is_kept_or_published(
    site_factory: SiteFactory,
) -> None:
    site = site_factory()
    site.push(site.load(exam_datasets(EXAM_C, "ACN103")))
    inbox = site.box.settings.data_dir / "hl7-inbox"

    for what, (message, code) in MALFORMED.items():
        ack = send_message("127.0.0.1", site.box.hl7_port, message, timeout=10).decode()
        segments = ack.split("\r")
        assert segments[0].startswith("MSH|"), what
        assert segments[1].startswith(f"MSA|{code}|"), (what, ack)
        assert any(s.startswith("ERR|") for s in segments), (what, ack)

    assert [p for d in ("pending", "done") for p in (inbox / d).iterdir()] == []
    assert site.box.publications.exams() == []
    assert site.box.publications.jobs() == []
    assert site.entries() == []

    assert site.send(ans_message("CR_C-ORU")) == "AA"  # still serving
    site.wait_state(EXAM_C, ExamState.PUBLISHED)
    assert len(site.entries()) == 1


INVALID_UIDS = {"text": "not-a-uid", "too-long": "1.2.3." + "4" * 70, "leading-zero": "1.2.03.4"}


@pytest.mark.integration
def test_reports_naming_an_invalid_study_uid_are_quarantined_and_the_box_keeps_working(
    site_factory: SiteFactory,
) -> None:
    site = site_factory()
    site.push(site.load(exam_datasets(EXAM_C, "ACN103")))
    for uid in INVALID_UIDS.values():
        assert site.send(with_study_uid(ans_message("CR_J-ORU"), ans_study(111), uid)) == "AA"

    assert site.send(ans_message("CR_C-ORU")) == "AA"

    site.wait_state(EXAM_C, ExamState.PUBLISHED)
    for uid in INVALID_UIDS.values():
        assert site.wait_state(uid, ExamState.QUARANTINED).reason == INVALID_STUDY_UID
    assert [e.manifest.study_instance_uid for e in site.entries()] == [EXAM_C]
    assert site.audit("publication.pacs_retrieve") == []  # the PACS was not asked


def test_report_worker_survives_an_unexpected_error_and_keeps_the_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inbox = HL7Inbox(tmp_path / "inbox")
    poison = inbox.store(ans_message("CR_J-ORU"))
    inbox.store(ans_message("CR_C-ORU"))
    handled: list[str] = []

    def handle(notice: ReportNotice) -> None:
        if notice.study_instance_uid == ans_study(111):
            raise RuntimeError("a bug")
        handled.append(notice.study_instance_uid)

    worker = ReportWorker(inbox, handle, MemoryAuditLog(), allow_test_oids=True)

    assert worker.run_once() == 1  # the next message is processed all the same

    assert handled == [EXAM_C]
    assert inbox.pending() == [poison]  # kept, retried at the next scan
    assert "kept pending" in caplog.text
