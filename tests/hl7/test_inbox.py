"""Durable HL7 inbox: persist before AA, refuse without persisting, survive kill -9."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from drimbox.hl7.er7 import parse_er7
from drimbox.hl7.inbox import HL7Inbox, make_report_handler
from drimbox.hl7.messages import ReportAction, ReportMessage
from drimbox.hl7.mllp import MllpServer, send_message
from tests.hl7.ans import OMI_SAMPLE, hl7_path

HOST = "127.0.0.1"


def msa_code(ack: bytes) -> str:
    segment = parse_er7(ack.decode()).first("MSA")
    assert segment is not None
    return segment.value(1)


def test_accepted_message_is_pending_with_an_opaque_name(tmp_path: Path) -> None:
    inbox = HL7Inbox(tmp_path)
    raw = hl7_path("CR_C-ORU").read_bytes()
    stored: list[tuple[str, ReportMessage]] = []
    handler = make_report_handler(inbox, on_stored=lambda i, m: stored.append((i, m)))

    assert msa_code(handler(raw)) == "AA"

    [message_id] = inbox.pending()
    assert re.fullmatch(r"[0-9]{20}-[0-9a-f]{16}", message_id)
    assert inbox.read(message_id) == raw
    assert [(i, m.action) for i, m in stored] == [(message_id, ReportAction.PUBLISH)]
    assert [p.name for p in (tmp_path / "pending").iterdir()] == [f"{message_id}.hl7"]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (OMI_SAMPLE.read_bytes(), "AR"),
        (b"garbage", "AR"),
        (hl7_path("CR_C-ORU").read_bytes().replace(b"Base64^PD94", b"Base64^!D94"), "AE"),
    ],
    ids=["unsupported-type", "not-hl7", "bad-base64"],
)
def test_refused_message_is_not_persisted(tmp_path: Path, raw: bytes, code: str) -> None:
    inbox = HL7Inbox(tmp_path)
    assert msa_code(make_report_handler(inbox)(raw)) == code
    assert inbox.pending() == []
    assert list((tmp_path / "tmp").iterdir()) == []


def test_pending_survives_a_restart_and_mark_done_is_idempotent(tmp_path: Path) -> None:
    first = HL7Inbox(tmp_path)
    ids = [first.store(hl7_path(n).read_bytes()) for n in ("CR_C-ORU", "CR_E-ORU", "CR_F-ORU")]
    (tmp_path / "tmp" / "partial-write").write_bytes(b"half a message")

    reopened = HL7Inbox(tmp_path)
    assert reopened.pending() == ids  # arrival order
    assert list((tmp_path / "tmp").iterdir()) == []  # never acknowledged: dropped
    reopened.mark_done(ids[1])
    reopened.mark_done(ids[1])
    assert HL7Inbox(tmp_path).pending() == [ids[0], ids[2]]
    assert reopened.read(ids[1]) == hl7_path("CR_E-ORU").read_bytes()
    with pytest.raises(FileNotFoundError):
        reopened.mark_done("00000000000000000000-0000000000000000")


def test_ids_from_outside_cannot_escape_the_inbox(tmp_path: Path) -> None:
    inbox = HL7Inbox(tmp_path)
    for bad in ("../../etc/passwd", "x", "00000000000000000000-000000000000000/"):
        with pytest.raises(ValueError, match="not an inbox message id"):
            inbox.mark_done(bad)
        with pytest.raises(ValueError, match="not an inbox message id"):
            inbox.read(bad)


def test_unwritable_inbox_answers_an_error_ack(tmp_path: Path) -> None:
    inbox = HL7Inbox(tmp_path)
    (tmp_path / "tmp").rmdir()  # the disk "refuses": storing fails
    ack = make_report_handler(inbox)(hl7_path("CR_C-ORU").read_bytes())
    assert msa_code(ack) == "AE"
    assert b"could not be stored" in ack
    assert inbox.pending() == []


def test_purge_done_removes_only_old_processed_messages(tmp_path: Path) -> None:
    inbox = HL7Inbox(tmp_path)
    done, pending = inbox.store(b"a"), inbox.store(b"b")
    inbox.mark_done(done)
    assert inbox.purge_done(older_than_seconds=3600) == 0
    assert inbox.purge_done(older_than_seconds=0) == 1
    assert inbox.pending() == [pending]


_SERVER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from drimbox.hl7.inbox import HL7Inbox, make_report_handler
    from drimbox.hl7.mllp import MllpServer
    server = MllpServer("127.0.0.1", 0, make_report_handler(HL7Inbox(Path(sys.argv[1]))))
    print(server.start(), flush=True)
    time.sleep(600)
    """
)


def test_message_acknowledged_before_kill_9_is_on_disk(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(tmp_path)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        raws = [hl7_path(n).read_bytes() for n in ("CR_G1-ORU", "CR_G1_MAJ-ORU")]
        acks = [send_message(HOST, port, raw, timeout=10) for raw in raws]
        os.kill(process.pid, signal.SIGKILL)  # no chance to flush or clean up
    finally:
        process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    assert [msa_code(a) for a in acks] == ["AA", "AA"]
    inbox = HL7Inbox(tmp_path)
    assert [inbox.read(i) for i in inbox.pending()] == raws


def test_mllp_server_with_inbox_handler_end_to_end(tmp_path: Path) -> None:
    inbox = HL7Inbox(tmp_path)
    with MllpServer(HOST, 0, make_report_handler(inbox)) as server:
        cancel = hl7_path("CR_I_Depublication-MDM").read_bytes()
        assert msa_code(send_message(HOST, server.port, cancel)) == "AA"
        adt = b"MSH|^~\\&|A|B|C|D|1||ADT^A01|X|P|2.5"
        assert msa_code(send_message(HOST, server.port, adt)) == "AR"
    assert [inbox.read(i) for i in inbox.pending()] == [cancel]
