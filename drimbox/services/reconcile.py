"""Reconciliation of the index with the blob store (``drimbox verify``).

A crash between the durable blob write and the index commit leaves an *orphan* blob (held, not
indexed); it is invisible to every client and safe to remove. An indexed instance whose blob is
gone (*missing*) is data loss: it is reported, never silently dropped; the one exception is
:func:`check_newest_instances`, run at start after an unclean stop, which removes (logged,
audited) the newest rows whose blob never became durable because the box stopped mid-ingest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from drimbox.errors import BlobNotFoundError
from drimbox.ports import AuditLog, BlobStore, Index

__all__ = [
    "NEWEST_INSTANCES_CHECKED",
    "ORPHAN_GRACE_SECONDS",
    "ReconcileReport",
    "check_newest_instances",
    "reconcile",
]


@dataclass(slots=True)
class ReconcileReport:
    """What :func:`reconcile` found.

    Attributes
    ----------
    indexed
        Number of indexed instances checked.
    blobs
        Number of objects in the blob store.
    orphans
        Blob keys held but not indexed (after the grace period).
    missing
        Blob keys indexed but absent from the store.
    removed
        Orphans removed (with ``repair=True``).
    temporary_removed
        Leftovers of interrupted puts removed (with ``repair=True``): temporary files and
        incomplete multipart uploads over an hour old, unused spare files of ended processes.
    """

    indexed: int = 0
    blobs: int = 0
    orphans: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    removed: int = 0
    temporary_removed: int = 0

    @property
    def consistent(self) -> bool:
        """Whether nothing is wrong (orphans that were removed do not count)."""
        return not self.missing and len(self.orphans) == self.removed


_log = logging.getLogger("drimbox.reconcile")

ORPHAN_GRACE_SECONDS = 30.0
"""Default delay before an unindexed blob is confirmed an orphan: far longer than any put's
fsync plus its index commit, even on a saturated disk (a blob is written at its final key, then
synced, then indexed)."""


def reconcile(
    blobs: BlobStore,
    index: Index,
    audit: AuditLog,
    *,
    repair: bool = False,
    grace_seconds: float = ORPHAN_GRACE_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> ReconcileReport:
    """Compare the index with the blob store, optionally removing orphans.

    Parameters
    ----------
    blobs, index, audit
        The box's adapters.
    repair
        Remove orphan blobs.
    grace_seconds
        Orphan candidates are checked again after this delay, so that an instance being ingested
        right now (blob written, index commit a few milliseconds later) is never removed.
    sleep
        Injected for tests.

    Returns
    -------
    ReconcileReport
    """
    report = ReconcileReport()
    indexed = set(index.blob_keys())
    report.indexed = len(indexed)
    held = set(blobs.keys())
    report.blobs = len(held)
    candidates = held - indexed
    if candidates and grace_seconds > 0:
        sleep(grace_seconds)
    if candidates:
        now_indexed = set(index.blob_keys())
        report.orphans = sorted(candidates - now_indexed)
    report.missing = sorted(indexed - held)
    if repair:
        for key in report.orphans:
            blobs.delete(key)
            report.removed += 1
        report.temporary_removed = blobs.cleanup_temporary()
        audit.record(
            "verify.repair",
            "success",
            orphans_removed=report.removed,
            temporary_removed=report.temporary_removed,
        )
    audit.record(
        "verify",
        "success" if report.consistent else "inconsistent",
        missing=len(report.missing),
        orphans=len(report.orphans),
    )
    return report


NEWEST_INSTANCES_CHECKED = 512
"""How many of the newest index rows the start-up check looks at: far more than the instances
that can be in flight at once (one per association, 64 associations per process)."""


def check_newest_instances(
    blobs: BlobStore, index: Index, audit: AuditLog, *, limit: int = NEWEST_INSTANCES_CHECKED
) -> list[str]:
    """Remove the newest index rows whose blob is missing or shorter than indexed.

    Ingest commits an instance's index row while its blob is being synced and acknowledges
    it only once both are durable (:mod:`drimbox.services.ingest`). A power loss in between
    can leave a row whose blob never reached the disk: a sender re-sending the instance would
    then be told "duplicate, success" with nothing behind it. Such rows can only be among the
    newest; the box checks them at start, before it accepts associations, and removes those
    whose blob is missing or does not have its indexed size (journaling filesystems never
    expose a file longer than what was written). Each removal is logged and audited.

    Returns
    -------
    list of str
        The SOP Instance UIDs removed.
    """
    removed: list[str] = []
    for location in index.newest_instances(limit):
        try:
            size: int | None = blobs.size(location.blob.key)
        except BlobNotFoundError:
            size = None
        if size == location.blob.size:
            continue
        index.remove_instance(location.sop_instance_uid)
        removed.append(location.sop_instance_uid)
        audit.record(
            "dicom.instance.unindexed",
            "warning",
            sop_instance_uid=location.sop_instance_uid,
            study_instance_uid=location.study_instance_uid,
            blob_size=size,
            indexed_size=location.blob.size,
        )
        _log.warning(
            "startup.instance_unindexed sop_instance_uid=%s blob_size=%s indexed_size=%d "
            "reason=blob not durable (crash during ingest); the sender can send it again",
            location.sop_instance_uid,
            size,
            location.blob.size,
        )
    return removed
