"""S3BlobStore specifics, on a real SeaweedFS: metadata, bucket creation, configuration, pooling."""

from __future__ import annotations

import hashlib
import io
import socket
import time

import pytest
from minio.error import S3Error, ServerError
from urllib3 import HTTPResponse
from urllib3.exceptions import ProtocolError

from drimbox.errors import (
    BlobNotFoundError,
    ConfigurationError,
    StorageFullError,
    StorageUnavailableError,
)
from drimbox.storage.s3 import DEFAULT_PART_SIZE, MIN_PART_SIZE, S3BlobStore, _translated
from tests.fixtures.seaweedfs import SeaweedFS

UNREACHABLE_DEADLINE_SECONDS = 5.0


def make_store(server: SeaweedFS, bucket: str, part_size: int = MIN_PART_SIZE) -> S3BlobStore:
    return S3BlobStore(
        server.endpoint,
        server.access_key,
        server.secret_key,
        bucket,
        secure=False,
        region=server.region,
        part_size=part_size,
    )


@pytest.mark.parametrize("length", [100, MIN_PART_SIZE + 1], ids=["single-put", "multipart"])
def test_sha256_is_kept_as_object_metadata(
    seaweedfs: SeaweedFS, s3_bucket: str, length: int
) -> None:
    store = make_store(seaweedfs, s3_bucket)
    data = bytes(range(256)) * (length // 256) + b"\x01" * (length % 256)
    stored = store.put([data[i : i + 100_000] for i in range(0, len(data), 100_000)])
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert store.stored_sha256(stored.key) == stored.sha256
    assert store.size(stored.key) == length


def test_bucket_is_created_once_and_shared_by_several_stores(
    seaweedfs: SeaweedFS, s3_bucket: str
) -> None:
    assert not seaweedfs.client().bucket_exists(s3_bucket)
    first = make_store(seaweedfs, s3_bucket)
    assert seaweedfs.client().bucket_exists(s3_bucket)
    key = first.put([b"shared"]).key
    second = make_store(seaweedfs, s3_bucket)
    assert b"".join(second.stream(key)) == b"shared"
    first.close()
    second.close()


def test_keys_ignore_objects_that_are_not_blob_keys(seaweedfs: SeaweedFS, s3_bucket: str) -> None:
    store = make_store(seaweedfs, s3_bucket)
    key = store.put([b"x"]).key
    seaweedfs.client().put_object(s3_bucket, "notes/README.txt", io.BytesIO(b"hi"), 2)
    assert list(store.keys()) == [key]


def test_an_abandoned_stream_does_not_poison_the_connection_pool(
    seaweedfs: SeaweedFS, s3_bucket: str
) -> None:
    store = make_store(seaweedfs, s3_bucket)
    big = store.put([b"a" * 3_000_000]).key
    small = store.put([b"b" * 10]).key
    for _ in range(40):  # more than the pool holds
        chunks = store.stream(big, chunk_size=1024)
        assert next(chunks) == b"a" * 1024
        chunks.close()  # type: ignore[attr-defined]
        assert store.read_range(small, 0, 10) == b"b" * 10


@pytest.mark.parametrize(
    ("endpoint", "part_size", "message"),
    [
        ("http://127.0.0.1:9000", DEFAULT_PART_SIZE, "without a scheme"),
        ("127.0.0.1:9000", MIN_PART_SIZE - 1, "part size"),
        ("127.0.0.1:9000", 6 * 1024**3, "part size"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(
    endpoint: str, part_size: int, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        S3BlobStore(endpoint, "a", "b", "bucket", secure=False, part_size=part_size)


def test_a_server_that_does_not_listen_is_unavailable_within_seconds() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError, match="unreachable"):
        S3BlobStore(f"127.0.0.1:{port}", "a", "b", "drimbox", secure=False)
    assert time.monotonic() - started < UNREACHABLE_DEADLINE_SECONDS


def test_wrong_credentials_are_unavailable_not_missing(
    seaweedfs: SeaweedFS, s3_bucket: str
) -> None:
    with pytest.raises(StorageUnavailableError, match="S3 error"):
        S3BlobStore(seaweedfs.endpoint, "nobody", "wrong-secret", s3_bucket, secure=False)


def s3_error(code: str, status: int) -> S3Error:
    """An error exactly as the SDK raises it for an S3 error response."""
    return S3Error(HTTPResponse(status=status), code, f"{code} message", "/b/k", "req", "host")


@pytest.mark.parametrize(
    ("raised", "lookup", "expected"),
    [
        (s3_error("NoSuchKey", 404), True, BlobNotFoundError),
        (s3_error("NoSuchKey", 404), False, StorageUnavailableError),
        (s3_error("NoSuchBucket", 404), True, StorageUnavailableError),
        (s3_error("EntityTooLarge", 400), False, StorageFullError),
        (s3_error("QuotaExceeded", 403), False, StorageFullError),
        (s3_error("XMinioStorageFull", 507), False, StorageFullError),
        (s3_error("AccessDenied", 403), True, StorageUnavailableError),
        (ServerError("insufficient storage", 507), False, StorageFullError),
        (ServerError("bad gateway", 502), False, StorageUnavailableError),
        (ProtocolError("connection aborted"), False, StorageUnavailableError),
        (ConnectionResetError(), False, StorageUnavailableError),
    ],
    ids=repr,
)
def test_sdk_errors_become_the_box_storage_errors(
    raised: Exception, lookup: bool, expected: type[Exception]
) -> None:
    with pytest.raises(expected) as translated, _translated("put", lookup=lookup):
        raise raised
    assert translated.value.__cause__ is raised
