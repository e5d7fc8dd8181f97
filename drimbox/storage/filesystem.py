"""The default blob store: one file per object under a local directory.

Layout under ``root``::

    root/
      tmp/                 objects being written (removed on failure; stale ones by reconciliation)
      ab/cd/abcd...        stored objects, fanned out by the first hex digits of their key

A put of a stream writes a temporary file in ``tmp/`` (same filesystem), hashing and counting
while it streams, then ``fsync(file)``, ``rename`` into place and ``fsync(directory)``.

A put of content already in memory (a list or tuple of buffers: what ingest hands over) takes
a *spare file* (:mod:`drimbox.storage._spares`): an empty file created ahead, at its final path,
whose directory entry a batch's single directory sync already made durable. The put writes it
with one ``writev``, gives it the object's mode, and ``fsync(file)`` runs on a helper thread
(:mod:`drimbox.storage._background`) while the caller indexes; it is waited for before the put
counts as done: no rename, no temporary directory entry, one sync per object. The key is
fresh and random, so nothing names the object until the caller records its key (the index
commit that makes an instance visible, DESIGN §4); on failure the file is removed before the
error propagates. A crash before the caller records the key leaves an object nobody references
(possibly torn), exactly like a crash between the rename and the index commit of the streaming
path: ``drimbox verify --repair`` removes such orphans, after its grace period for puts in
progress. Either way, when :meth:`FilesystemBlobStore.put` returns, the object's bytes and its
directory entry are durable, and no client can see an object that is not.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path

from drimbox.errors import BlobNotFoundError, StorageFullError, StorageUnavailableError
from drimbox.fsync import fsync_directory
from drimbox.model import StoredBlob
from drimbox.storage._background import (
    Digest,
    fsync_in_background,
    sha256_in_background,
)
from drimbox.storage._spares import (
    LEASE_SUFFIX,
    SpareFiles,
    is_spare,
    object_path,
    remove_abandoned_spares,
)
from drimbox.storage._written import DurableWrite
from drimbox.storage.keys import FAN_OUT_DEPTH, FAN_OUT_WIDTH, is_valid_key, new_key

__all__ = ["DEFAULT_STALE_AFTER_SECONDS", "FilesystemBlobStore"]

DIRECTORY_MODE = 0o700
"""Stored objects are patient data: only the box's own user may list them."""

FILE_MODE = 0o600
"""Stored objects are patient data: only the box's own user may read them."""

TEMPORARY_DIRECTORY = "tmp"
TEMPORARY_SUFFIX = ".tmp"

DEFAULT_STALE_AFTER_SECONDS = 3600.0
"""A temporary file untouched for this long belongs to no running put."""

MAX_READ_SIZE = 8 * 1024 * 1024
"""Largest single read of a stream: bounds its memory whatever ``chunk_size`` asks for."""

_NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
_MAX_VECTORS = 64  # buffers per writev call, well below IOV_MAX (1024 on Linux)
_HEX_DIGITS = frozenset("0123456789abcdef")


@contextmanager
def _translated(action: str, *, lookup: bool = False) -> Iterator[None]:
    """Translate the operating system's errors into the box's storage errors.

    Parameters
    ----------
    action
        What was being done, for the message.
    lookup
        ``True`` when the operation opens an existing blob: a missing file then means
        :class:`BlobNotFoundError` rather than an unusable store.
    """
    try:
        yield
    except FileNotFoundError as exc:
        if lookup:
            raise BlobNotFoundError(f"{action}: no such blob") from exc
        raise StorageUnavailableError(f"{action}: {exc.strerror or exc}") from exc
    except OSError as exc:
        if exc.errno in _NO_SPACE_ERRNOS:
            raise StorageFullError(f"{action}: no space left on the blob store") from exc
        raise StorageUnavailableError(f"{action}: {exc.strerror or exc}") from exc


def _write_buffers(fd: int, buffers: Sequence[bytes]) -> int:
    """Write every buffer, in order, with as few ``writev`` calls as possible; return the size.

    Raises
    ------
    TypeError
        A buffer is not a bytes-like object (nothing is written then).
    """
    views = [memoryview(buffer).cast("B") for buffer in buffers]
    size = sum(len(view) for view in views)
    pending = [view for view in views if view]
    while pending:
        written = os.writev(fd, pending[:_MAX_VECTORS])  # may write less than asked
        while written:
            first = len(pending[0])
            if written < first:
                pending[0] = pending[0][written:]
                break
            written -= first
            del pending[0]
    return size


def _write_all(fd: int, chunk: bytes) -> None:
    """Write a whole chunk (``os.write`` may write less than asked)."""
    view = memoryview(chunk)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class _FileChunks(Iterator[bytes]):
    """Chunks of an open file, read with ``pread``; the descriptor closes at the end or on close."""

    def __init__(self, fd: int, chunk_size: int) -> None:
        self._fd: int | None = fd
        self._chunk_size = min(chunk_size, MAX_READ_SIZE)
        self._offset = 0

    def __next__(self) -> bytes:
        if self._fd is None:
            raise StopIteration
        with _translated("stream"):
            chunk = os.pread(self._fd, self._chunk_size, self._offset)
        if not chunk:
            self.close()
            raise StopIteration
        self._offset += len(chunk)
        return chunk

    def close(self) -> None:
        """Release the file descriptor (idempotent)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __del__(self) -> None:
        self.close()


class _SyncingWrite:
    """An object written at its final path whose syncs run on helper threads.

    Its file descriptor stays open until every sync has ended.
    """

    def __init__(
        self,
        key: str,
        path: Path,
        fd: int,
        size: int,
        digest: Digest,
        syncs: tuple[Future[None], ...],
    ) -> None:
        self._key = key
        self._path = path
        self._fd = fd
        self._size = size
        self._digest = digest
        self._syncs = syncs
        self._failure: BaseException | None = None

    def stored(self) -> StoredBlob:
        """Return the object's key, size and SHA-256 (it may not be durable yet)."""
        return StoredBlob(key=self._key, size=self._size, sha256=self._digest.result())

    def wait_durable(self) -> StoredBlob:
        """Wait for the syncs; on failure remove the object and raise a ``StorageError``."""
        try:
            with _translated("put"):
                self._finish()
        except BaseException:
            with contextlib.suppress(OSError):
                self._path.unlink()
            raise
        return self.stored()

    def discard(self) -> None:
        """Remove the object, once its syncs have ended (they must not outlive its fd)."""
        with contextlib.suppress(BaseException):
            self._finish()
        with contextlib.suppress(OSError):
            self._path.unlink()

    def _finish(self) -> None:
        if self._fd >= 0:
            for sync in self._syncs:  # every one is waited for, even after a failure
                try:
                    sync.result()
                except BaseException as error:
                    self._failure = self._failure or error
            fd, self._fd = self._fd, -1
            os.close(fd)
        if self._failure is not None:
            raise self._failure


class FilesystemBlobStore:
    """A :class:`drimbox.ports.BlobStore` on a local (or mounted) POSIX filesystem.

    Parameters
    ----------
    root
        Directory holding the objects; created (mode 0700) if missing.

    Raises
    ------
    StorageUnavailableError
        When ``root`` cannot be created or written.
    """

    def __init__(self, root: Path) -> None:
        self._root = Path(root)
        self._tmp = self._root / TEMPORARY_DIRECTORY
        self._directory_lock = threading.Lock()
        with _translated(f"open blob store {self._root}"):
            self._root.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
            self._tmp.mkdir(mode=DIRECTORY_MODE, exist_ok=True)
            if not os.access(self._tmp, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, "blob store directory is not writable")
            self._create_fan_out()
            remove_abandoned_spares(self._root, self._tmp)
        self._spares = SpareFiles(self._root, self._tmp)

    def _create_fan_out(self) -> None:
        """Create every fan-out directory once, durably, so that no put has to."""
        created = False
        for number in range(16**FAN_OUT_WIDTH):  # one level (FAN_OUT_DEPTH == 1)
            directory = self._root / f"{number:0{FAN_OUT_WIDTH}x}"
            if not directory.is_dir():
                directory.mkdir(mode=DIRECTORY_MODE, exist_ok=True)
                created = True
        if created:
            fsync_directory(self._root)

    @property
    def root(self) -> Path:
        """The directory holding the objects."""
        return self._root

    def __repr__(self) -> str:
        return f"FilesystemBlobStore(root={str(self._root)!r})"

    def _path(self, key: str) -> Path:
        return object_path(self._root, key)

    def put(self, chunks: Iterable[bytes]) -> StoredBlob:
        """Write a new object durably; see :meth:`drimbox.ports.BlobStore.put`.

        Exceptions raised by ``chunks`` itself propagate unchanged; in every failure case the
        partly written file is removed and no key becomes visible. A list or tuple of buffers
        is written in one ``writev``, directly at the object's final path (module docstring).

        Raises
        ------
        StorageFullError
            The filesystem is full (``ENOSPC``/``EDQUOT``).
        StorageUnavailableError
            Any other operating-system failure (permission, I/O error...).
        """
        if isinstance(chunks, list | tuple):
            return self._put_buffers(chunks)
        key = new_key()
        digest = hashlib.sha256()
        size = 0
        with _translated("put"):
            fd, temporary = self._open_temporary(key)
        visible: Path | None = None
        try:
            for chunk in chunks:
                with _translated("put"):
                    _write_all(fd, chunk)
                digest.update(chunk)
                size += len(chunk)
            with _translated("put"):
                os.fsync(fd)
                written, fd = fd, -1
                os.close(written)
                final = self._path(key)
                self._make_parents(final.parent)
                os.rename(temporary, final)
                visible = final
                fsync_directory(final.parent)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            temporary.unlink(missing_ok=True)
            if visible is not None:  # renamed but not durable: the caller is told it failed
                visible.unlink(missing_ok=True)
            raise
        return StoredBlob(key=key, size=size, sha256=digest.hexdigest())

    def write(self, chunks: Iterable[bytes]) -> _SyncingWrite | DurableWrite:
        """Write a new object and start its sync; see :meth:`drimbox.ports.BlobStore.write`.

        A list or tuple of buffers is written at its final path and synced (file and
        directory) on helper threads while the caller goes on; a stream is put durably at once.
        """
        if isinstance(chunks, list | tuple):
            return self._write_buffers(chunks)
        return DurableWrite(self.put(chunks), self.delete)

    def _put_buffers(self, buffers: Sequence[bytes]) -> StoredBlob:
        """Write content held in memory durably (see the module docstring)."""
        return self._write_buffers(buffers).wait_durable()

    def _write_buffers(self, buffers: Sequence[bytes]) -> _SyncingWrite:
        """Write content held in memory into a spare file, at its final path; start its sync.

        The SHA-256 of a large object is computed by another thread while this one writes and
        the file is synced (all release the GIL).
        """
        digest = sha256_in_background(buffers)
        with _translated("put"):
            try:
                key, fd = self._spares.take()
            except FileNotFoundError:  # a fan-out directory was removed under the store
                self._create_fan_out()
                key, fd = self._spares.take()
        final = self._path(key)
        try:
            with _translated("put"):
                size = _write_buffers(fd, buffers)
                os.fchmod(fd, FILE_MODE)  # an object from now on; durable with the bytes
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                final.unlink()
            raise
        return _SyncingWrite(key, final, fd, size, digest, (fsync_in_background(fd),))

    def _open_temporary(self, key: str) -> tuple[int, Path]:
        temporary = self._tmp / f"{key}{TEMPORARY_SUFFIX}"
        return os.open(temporary, _CREATE_FLAGS, FILE_MODE), temporary

    def _make_parents(self, directory: Path) -> None:
        """Create the fan-out directories of a blob, making each new entry durable."""
        if directory.is_dir():
            return
        with self._directory_lock:
            missing: list[Path] = []
            current = directory
            while current != self._root and not current.is_dir():
                missing.append(current)
                current = current.parent
            for path in reversed(missing):
                path.mkdir(mode=DIRECTORY_MODE, exist_ok=True)
                fsync_directory(path.parent)

    def stream(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Yield the object's bytes in chunks of at most ``chunk_size``.

        The object is opened now, so a missing key raises :class:`BlobNotFoundError` before the
        first chunk is asked for.
        """
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, not {chunk_size}")
        path = self._path(key)
        with _translated("stream", lookup=True):
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        return _FileChunks(fd, chunk_size)

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """Return ``length`` bytes from ``offset`` (fewer at the end of the object)."""
        if offset < 0 or length < 0:
            raise ValueError(f"invalid range: offset {offset}, length {length}")
        path = self._path(key)
        with _translated("read_range", lookup=True):
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            try:
                parts: list[bytes] = []
                # Clamp first: os.pread allocates its whole buffer, whatever the file holds.
                remaining = max(0, min(length, os.fstat(fd).st_size - offset))
                while remaining:
                    part = os.pread(fd, remaining, offset)
                    if not part:
                        break
                    parts.append(part)
                    offset += len(part)
                    remaining -= len(part)
            finally:
                os.close(fd)
        return b"".join(parts)

    def size(self, key: str) -> int:
        """Return the object's size in bytes."""
        path = self._path(key)
        with _translated("size", lookup=True):
            return os.stat(path).st_size

    def delete(self, key: str) -> None:
        """Remove the object; a well-formed key that is not held is not an error.

        The removal is not fsync'ed: after a crash the object may reappear, and reconciliation
        then finds it as an orphan again.
        """
        path = self._path(key)
        try:
            with _translated("delete", lookup=True):
                os.unlink(path)
        except BlobNotFoundError:
            return

    def keys(self) -> Iterator[str]:
        """Yield every stored key (never a temporary file), walking the fan-out tree."""
        yield from self._walk(self._root, depth=0, prefix="")

    def _walk(self, directory: Path, depth: int, prefix: str) -> Iterator[str]:
        with _translated("keys"):
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        for entry in entries:
            name = entry.name
            if depth < FAN_OUT_DEPTH:
                if len(name) == FAN_OUT_WIDTH and set(name) <= _HEX_DIGITS and entry.is_dir():
                    yield from self._walk(Path(entry.path), depth + 1, prefix + name)
            elif is_valid_key(name) and name.startswith(prefix) and entry.is_file():
                with _translated("keys"):
                    try:
                        spare = is_spare(entry.stat())
                    except FileNotFoundError:  # deleted meanwhile
                        continue
                if not spare:
                    yield name

    def cleanup_temporary(self, stale_after_seconds: float = DEFAULT_STALE_AFTER_SECONDS) -> int:
        """Remove temporary files left by interrupted puts; return how many were removed.

        The unused spare files of processes that ended without closing the store are removed
        too (and counted); the leases of running processes are never touched.

        Parameters
        ----------
        stale_after_seconds
            Only files not modified for this long are removed, so puts in progress are spared.
            Pass ``0`` when no put can be running (e.g. at start-up).
        """
        cutoff = time.time() - stale_after_seconds
        with _translated("cleanup_temporary"):
            removed = remove_abandoned_spares(self._root, self._tmp)
            entries = list(os.scandir(self._tmp))
        for entry in entries:
            if entry.name.endswith(LEASE_SUFFIX):  # a running process's spares
                continue
            try:
                status = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(status.st_mode) and status.st_mtime <= cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StorageUnavailableError(f"cleanup_temporary: {exc.strerror}") from exc
        return removed

    def close(self) -> None:
        """Remove this process's unused spare files; other operations hold no descriptor."""
        with _translated("close"):
            self._spares.close()
