"""IOCM (IHE Imaging Object Change Management) on the receiving side.

A rejection note (a KOS whose title is in PS3.16 CID 7011) received like any instance makes
the instances it references invisible to every client (DICOMweb, DIMSE) and to manifests. The
study then receives no more instances and becomes stable again, which makes the publication
service rebuild (or withdraw) its manifest from what remains.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from drimbox.dicom.kos import KEY_OBJECT_SELECTION_DOCUMENT_STORAGE, parse_rejection_note
from drimbox.errors import DrimboxError
from drimbox.model import InstanceRecord
from drimbox.ports import AuditLog, BlobStore, Index

__all__ = ["RejectionHandler"]

_log = logging.getLogger("drimbox.iocm")


class RejectionHandler:
    """Ingest subscriber applying IOCM rejection notes.

    Parameters
    ----------
    index, blobs, audit
        Ports.
    on_rejected
        Called with the StudyInstanceUID of each study that lost instances (optional: the
        stability path reaches the publication service anyway).
    """

    def __init__(
        self,
        index: Index,
        blobs: BlobStore,
        audit: AuditLog,
        on_rejected: Callable[[str], object] | None = None,
    ) -> None:
        self._index = index
        self._blobs = blobs
        self._audit = audit
        self._on_rejected = on_rejected

    def __call__(self, record: InstanceRecord) -> None:
        """Inspect a newly stored instance; apply it if it is a rejection note."""
        if record.sop_class_uid != KEY_OBJECT_SELECTION_DOCUMENT_STORAGE:
            return
        try:
            note = parse_rejection_note(b"".join(self._blobs.stream(record.blob.key)))
        except DrimboxError as error:
            _log.warning("iocm.unreadable_kos sop=%s error=%s", record.sop_instance_uid, error)
            return
        if note is None:
            return
        by_study: dict[str, list[str]] = {}
        for study, _series, instance in note.rejected:
            by_study.setdefault(study, []).append(instance.sop_instance_uid)
        for study, sop_uids in by_study.items():
            hidden = self._index.reject_instances(sop_uids)
            self._audit.record(
                "iocm.rejection", "success", study=study, note=record.sop_instance_uid,
                reason=note.reason.value, referenced=len(sop_uids), hidden=hidden,
            )  # fmt: skip
            _log.info(
                "iocm.rejection study=%s reason=%s hidden=%d", study, note.reason.value, hidden
            )
            if self._on_rejected is not None:
                self._on_rejected(study)
