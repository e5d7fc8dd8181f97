"""Reconciliation of the index with the blob store (``drimbox verify``).

A crash between the durable blob write and the index commit leaves an *orphan* blob (held, not
indexed); it is invisible to every client and safe to remove. An indexed instance whose blob is
gone (*missing*) is data loss: it is reported, never silently dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from drimbox.ports import AuditLog, BlobStore, Index

__all__ = ["ORPHAN_GRACE_SECONDS", "ReconcileReport", "reconcile"]


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
    """

    indexed: int = 0
    blobs: int = 0
    orphans: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    removed: int = 0

    @property
    def consistent(self) -> bool:
        """Whether nothing is wrong (orphans that were removed do not count)."""
        return not self.missing and len(self.orphans) == self.removed


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
        audit.record("verify.repair", "success", orphans_removed=report.removed)
    audit.record(
        "verify",
        "success" if report.consistent else "inconsistent",
        missing=len(report.missing),
        orphans=len(report.orphans),
    )
    return report
