"""Spare files: objects' files created ahead of their content, their directory entries durable.

A put of content held in memory must make durable both the object's bytes and its directory
entry. Creating the file at put time costs two syncs per object (the file, then its directory).
Instead, :class:`SpareFiles` creates a batch of empty files at once, at their final paths in one
fan-out directory, and syncs that directory once: a put then takes a spare, writes it, marks it
as an object and syncs the file alone. One sync per object instead of two, and one helper thread
less per put, whose wake-up would compete with the storing thread for the interpreter.

- A spare is an empty file with mode :data:`SPARE_MODE`; an object never has that mode
  (:meth:`drimbox.storage.filesystem.FilesystemBlobStore.keys` skips spares). A put sets
  the object's mode with ``fchmod`` before the file sync, which makes the mode durable with the
  bytes.
- A batch's keys share their first two hex digits (the fan-out directory); the other 30 are
  random: 120 bits, still unguessable and unique.
- Each process's spares are listed in a *lease* file under ``tmp/``, locked (``flock``) for
  the process's lifetime and synced before the spares are created (it lists the current batch
  and the previous one, whose last spares may still be being written). When a store opens, the
  leases nobody holds any more (their process ended without :meth:`SpareFiles.close`: a crash,
  ``kill -9``) are read and the spares still unused are removed, so nothing is left behind and
  a running process's spares are never touched.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
import threading
import weakref
from pathlib import Path

from drimbox.fsync import fsync_directory
from drimbox.storage.keys import FAN_OUT_WIDTH, KEY_BYTES, fan_out, is_valid_key

__all__ = [
    "LEASE_SUFFIX",
    "SPARE_MODE",
    "SpareFiles",
    "is_spare",
    "object_path",
    "remove_abandoned_spares",
]

SPARE_MODE = 0o000
"""Permission bits of a spare file; an object has :data:`~drimbox.storage.filesystem.FILE_MODE`."""

LEASE_SUFFIX = ".spares"
"""Suffix of a lease file (in the store's ``tmp/`` directory)."""

BATCH_SIZE = 32
"""Spare files created at once: one directory sync and one lease sync per batch."""

_PREFIX_BYTES = FAN_OUT_WIDTH // 2  # random bytes written as the fan-out directory's hex digits
_NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_FRESH_LEASE_SUFFIX = ".spares-new"  # a lease being created, not locked yet
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def object_path(root: Path, key: str) -> Path:
    """The path of the object (or spare) ``key`` under a store's ``root`` (validated fan-out)."""
    return root.joinpath(*fan_out(key))


def is_spare(status: os.stat_result) -> bool:
    """Tell whether a regular file's status is that of an unused spare (mode and size)."""
    return stat.S_IMODE(status.st_mode) == SPARE_MODE and status.st_size == 0


class _Held:
    """What a process holds: its unused spares and its lease (released by close or collection)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.owner = os.getpid()
        self.free: list[tuple[str, int]] = []  # (key, open write descriptor)
        self.lease: tuple[Path, int] | None = None
        self.previous: list[str] = []  # keys of the batch before the current one

    def release(self) -> None:
        """Remove the unused spares, then the lease; a forked child leaves its parent's alone."""
        if self.owner != os.getpid():
            return
        free, self.free = self.free, []
        for key, fd in free:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(object_path(self.root, key))
        if self.lease is not None:
            (path, fd), self.lease = self.lease, None
            with contextlib.suppress(OSError):
                path.unlink()
            os.close(fd)  # releases the lock only now, once nothing is left to clean


class SpareFiles:
    """The spare files of one store in one process.

    They are removed by :meth:`close`, or when the object is garbage-collected.

    Parameters
    ----------
    root
        The store's root (its fan-out directories exist).
    temporary
        The store's ``tmp/`` directory, where the lease file lives.
    batch_size
        Spares created at once.
    """

    def __init__(self, root: Path, temporary: Path, batch_size: int = BATCH_SIZE) -> None:
        self._root = root
        self._temporary = temporary
        self._batch_size = batch_size
        self._lock = threading.Lock()
        self._held = _Held(root)
        self._finalizer = weakref.finalize(self, self._held.release)

    def take(self) -> tuple[str, int]:
        """Return a spare's key and open write descriptor; the caller owns both from now on.

        Raises
        ------
        OSError
            A batch could not be created (nothing of it is left then).
        """
        with self._lock:
            held = self._held
            if held.owner != os.getpid():  # a forked child: the parent's spares stay its own
                held.owner, held.free, held.lease, held.previous = os.getpid(), [], None, []
            if not held.free:
                held.free = self._create_batch()
            return held.free.pop()

    def close(self) -> None:
        """Remove the unused spares and the lease (idempotent)."""
        with self._lock:
            self._held.release()

    def _create_batch(self) -> list[tuple[str, int]]:
        lease_fd = self._lease_descriptor()
        prefix = secrets.token_hex(_PREFIX_BYTES)  # the batch's fan-out directory
        keys = [
            prefix + secrets.token_hex(KEY_BYTES - _PREFIX_BYTES) for _ in range(self._batch_size)
        ]
        directory = object_path(self._root, keys[0]).parent
        # The lease lists this batch and the previous one (all taken, possibly still being
        # written by puts in flight), so it stays small however long the process runs.
        listing = "".join(key + "\n" for key in (*self._held.previous, *keys)).encode("ascii")
        self._held.previous = keys
        os.pwrite(lease_fd, listing, 0)
        os.ftruncate(lease_fd, len(listing))
        os.fdatasync(lease_fd)  # listed before they exist: a crash leaves nothing unlisted
        created: list[tuple[str, int]] = []
        try:
            for key in keys:
                try:
                    path = object_path(self._root, key)
                    created.append((key, os.open(path, _CREATE_FLAGS, SPARE_MODE)))
                except OSError as error:  # no inode left: use the spares made, if any
                    if error.errno not in _NO_SPACE_ERRNOS or not created:
                        raise
                    break
            fsync_directory(directory)
        except BaseException:
            for key, fd in created:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(object_path(self._root, key))
            raise
        return created

    def _lease_descriptor(self) -> int:
        if self._held.lease is None:
            name = secrets.token_hex(8)
            fresh = self._temporary / f"{name}{_FRESH_LEASE_SUFFIX}"
            path = self._temporary / f"{name}{LEASE_SUFFIX}"
            fd = os.open(fresh, _CREATE_FLAGS, 0o600)
            try:
                # Locked before it gets the name the clean-up looks for: never taken for dead.
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.rename(fresh, path)
                fsync_directory(self._temporary)
            except BaseException:
                os.close(fd)
                for leftover in (fresh, path):
                    with contextlib.suppress(OSError):
                        leftover.unlink()
                raise
            self._held.lease = (path, fd)
        return self._held.lease[1]


def remove_abandoned_spares(root: Path, temporary: Path) -> int:
    """Remove the unused spares of processes that ended without closing; return how many.

    A lease whose lock can be taken belongs to no running process: its spares still unused
    (mode and size of a spare) are removed, then the lease. Spares a put has used are objects
    and stay.

    Raises
    ------
    OSError
        The temporary directory cannot be listed, or a removal failed.
    """
    removed = 0
    with os.scandir(temporary) as scanned:
        entries = list(scanned)
    for entry in entries:
        if not entry.name.endswith(LEASE_SUFFIX) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            fd = os.open(entry.path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:  # its process closed it meanwhile
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its process runs
            with os.fdopen(os.dup(fd), "rb") as lease:
                listed = lease.read().decode("ascii", "replace").split()
            for key in listed:
                if is_valid_key(key):
                    removed += _remove_if_spare(object_path(root, key))
            with contextlib.suppress(FileNotFoundError):  # its process closed it meanwhile
                os.unlink(entry.path)
        finally:
            os.close(fd)
    return removed


def _remove_if_spare(path: Path) -> int:
    try:
        status = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return 0
    if not stat.S_ISREG(status.st_mode) or not is_spare(status):
        return 0
    os.unlink(path)
    return 1
