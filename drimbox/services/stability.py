"""Study stability: a study with no new instance for a quiet period is stable.

The monitor polls the index for studies whose last instance arrived before ``now - quiet``,
marks each stable with :meth:`drimbox.ports.Index.mark_stable` (a compare-and-set: a study that
got a new instance meanwhile stays unstable) and emits its Study Instance UID to in-process
subscribers (the publication workflow). Several monitors sharing one index (several processes)
emit each study once, because only one ``mark_stable`` succeeds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from drimbox.errors import DrimboxError
from drimbox.ports import Index
from drimbox.services.worker import PollingWorker

__all__ = ["StabilityMonitor"]

_log = logging.getLogger("drimbox.stability")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class StabilityMonitor:
    """Marks quiet studies stable and tells subscribers.

    Parameters
    ----------
    index
        The instance index.
    quiet_seconds
        How long a study must go without a new instance to be stable.
    clock
        Returns the current UTC time.
    poll_interval
        Seconds between two polls of the background thread.
    """

    def __init__(
        self,
        index: Index,
        *,
        quiet_seconds: float,
        clock: Callable[[], datetime] = _utc_now,
        poll_interval: float = 1.0,
    ) -> None:
        self._index = index
        self._quiet = timedelta(seconds=quiet_seconds)
        self._clock = clock
        self._subscribers: list[Callable[[str], None]] = []
        self._lock = threading.Lock()
        self._worker = PollingWorker(
            "drimbox-stability", self.poll_once, interval=poll_interval, recoverable=(DrimboxError,)
        )

    def subscribe(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(study_instance_uid)`` each time a study becomes stable.

        Callbacks run on the monitor's thread; their exceptions are logged, never raised.
        """
        with self._lock:
            self._subscribers.append(callback)

    def poll_once(self) -> list[str]:
        """Mark every quiet study stable and notify subscribers.

        Returns
        -------
        list of str
            The Study Instance UIDs marked stable by this call.
        """
        quiet_since = self._clock() - self._quiet
        stable = []
        for study_instance_uid in self._index.unstable_studies(quiet_since):
            if self._index.mark_stable(study_instance_uid):
                stable.append(study_instance_uid)
                _log.info("stability.study_stable study_instance_uid=%s", study_instance_uid)
                self._notify(study_instance_uid)
        return stable

    def _notify(self, study_instance_uid: str) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(study_instance_uid)
            except Exception:
                _log.exception(
                    "stability.subscriber_failed study_instance_uid=%s", study_instance_uid
                )

    def start(self) -> None:
        """Start polling in a daemon thread (no-op when already started)."""
        self._worker.start()

    def stop(self) -> None:
        """Stop polling and wait for the thread to finish."""
        self._worker.stop()
