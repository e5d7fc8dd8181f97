"""Making what was written durable by name: a file's content, a directory's entries.

Shared by the adapters that write files (blob store, SQLite index, HL7 inbox) and by the
composition root (the clean-stop marker). Linux and POSIX: a new, renamed or removed name is
durable only once its directory is synced.
"""

from __future__ import annotations

import os

__all__ = ["fsync_directory", "fsync_file"]


def fsync_directory(path: str | os.PathLike[str]) -> None:
    """Make a directory's entries (a new file, a rename, a new subdirectory) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Make a file's content durable, whoever wrote it (``fsync`` covers every descriptor)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
