"""The storage package's public API, and its promise not to import minio until S3 is used."""

from __future__ import annotations

import subprocess
import sys

import drimbox.storage


def test_public_api_is_sorted_and_complete() -> None:
    assert drimbox.storage.__all__ == sorted(drimbox.storage.__all__)
    assert set(drimbox.storage.__all__) == {"FilesystemBlobStore", "MemoryBlobStore", "S3BlobStore"}
    for name in drimbox.storage.__all__:
        assert getattr(drimbox.storage, name).__name__ == name


def test_importing_the_package_does_not_import_minio_until_s3_is_asked_for() -> None:
    probe = (
        "import sys, drimbox.storage\n"
        "assert 'minio' not in sys.modules, 'minio imported eagerly'\n"
        "drimbox.storage.S3BlobStore\n"
        "assert 'minio' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
