"""A background worker: a daemon thread that runs one step when woken or every interval."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["PollingWorker"]

_log = logging.getLogger("drimbox.worker")
_JOIN_TIMEOUT = 30.0


class PollingWorker:
    """Runs ``step`` in a daemon thread: at start, when woken, and every ``interval`` seconds.

    A step that raises one of ``recoverable`` is logged and tried again at the next interval;
    any other exception is logged with its traceback and the thread goes on as well, so a bug in
    one step never silently stops the box's background work.

    Parameters
    ----------
    name
        Thread name (also the log event prefix).
    step
        The work of one round.
    interval
        Seconds between rounds when not woken.
    recoverable
        Exceptions expected while a dependency is down (logged without traceback).
    """

    def __init__(
        self,
        name: str,
        step: Callable[[], object],
        *,
        interval: float,
        recoverable: tuple[type[BaseException], ...] = (),
    ) -> None:
        self._name = name
        self._step = step
        self._interval = interval
        self._recoverable = recoverable
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called (a long step should return early)."""
        return self._stopping.is_set()

    def wake(self, *_: object) -> None:
        """Run a round now (arguments are ignored, so it can be any callback)."""
        self._wake.set()

    def start(self) -> None:
        """Start the thread (idempotent)."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, waiting for the round in progress."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=_JOIN_TIMEOUT)
            self._thread = None

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._step()
            except self._recoverable as error:
                _log.warning("%s.round_failed error=%s", self._name, error)
            except Exception:
                _log.exception("%s.round_error", self._name)
            self._wake.wait(self._interval)
            self._wake.clear()
