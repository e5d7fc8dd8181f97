"""The scale-out blob store: objects in an S3 bucket, through the ``minio`` SDK.

This is the only module of the box that imports ``minio`` (DESIGN §3). Objects are named by their
opaque key (flat: S3 needs no fan-out). A put never holds more than one part in memory: objects up
to ``part_size`` go in one PUT that already carries their SHA-256 as user metadata; larger ones are
streamed as a multipart upload (invisible until completed), then the SHA-256 is attached by an
in-place copy. The SHA-256 is computed here because S3 ETags are not content hashes (SeaweedFS's
are MD5s of parts, at best).

Timeouts and retries are short (connect 2 s, read 30 s, 2 retries) so that a dead server turns
into :class:`StorageUnavailableError` within seconds, not the SDK's default minutes.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import BinaryIO, cast

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import REPLACE, CopySource
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from urllib3.exceptions import HTTPError
from urllib3.util import Retry, Timeout

from drimbox.errors import (
    BlobNotFoundError,
    ConfigurationError,
    StorageFullError,
    StorageUnavailableError,
)
from drimbox.model import StoredBlob
from drimbox.storage._written import DurableWrite
from drimbox.storage.keys import is_valid_key, new_key, validate_key

__all__ = [
    "DEFAULT_PART_SIZE",
    "DEFAULT_STALE_AFTER_SECONDS",
    "MAX_COPY_SIZE",
    "MIN_PART_SIZE",
    "SHA256_METADATA",
    "S3BlobStore",
]

MIN_PART_SIZE = 5 * 1024 * 1024
"""Smallest multipart part S3 accepts (every part but the last), per the S3 API reference."""

MAX_PART_SIZE = 5 * 1024 * 1024 * 1024
"""Largest multipart part (and single PUT / single copy) S3 accepts."""

MAX_COPY_SIZE = MAX_PART_SIZE
"""Objects above this cannot be copied in place to attach metadata (they keep none)."""

DEFAULT_PART_SIZE = 8 * 1024 * 1024
"""Bytes held in memory per put; most DICOM instances fit in one part (a single PUT)."""

SHA256_METADATA = "sha256"
"""User metadata name (``x-amz-meta-sha256``) holding the object's lower-case hex SHA-256."""

CONTENT_TYPE = "application/octet-stream"

DEFAULT_STALE_AFTER_SECONDS = 3600.0
"""A multipart upload started this long ago belongs to no running put."""

MAX_READ_SIZE = 8 * 1024 * 1024
"""Largest single read of a stream: bounds its memory whatever ``chunk_size`` asks for."""

CONNECT_TIMEOUT_SECONDS = 2.0
READ_TIMEOUT_SECONDS = 30.0
RETRIES = 2
RETRY_BACKOFF_SECONDS = 0.2
RETRY_STATUSES = (500, 502, 503, 504)
HTTP_INSUFFICIENT_STORAGE = 507  # RFC 4918 §11.5
CONNECTIONS_PER_HOST = 32

_NOT_FOUND_CODES = frozenset({"NoSuchKey"})
_FULL_CODES = frozenset(
    {"EntityTooLarge", "QuotaExceeded", "XMinioStorageFull", "XMinioAdminBucketQuotaExceeded"}
)
_BUCKET_EXISTS_CODES = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})
_RANGE_NOT_SATISFIABLE_CODE = "InvalidRange"


@contextmanager
def _translated(action: str, *, lookup: bool = False) -> Iterator[None]:
    """Translate ``minio`` / ``urllib3`` errors into the box's storage errors.

    Parameters
    ----------
    action
        What was being done, for the message.
    lookup
        ``True`` when the operation reads an existing object: ``NoSuchKey`` then means
        :class:`BlobNotFoundError`.
    """
    try:
        yield
    except S3Error as exc:
        if lookup and exc.code in _NOT_FOUND_CODES:
            raise BlobNotFoundError(f"{action}: no such blob") from exc
        if exc.code in _FULL_CODES or exc.response.status == HTTP_INSUFFICIENT_STORAGE:
            raise StorageFullError(f"{action}: S3 refused the object ({exc.code})") from exc
        raise StorageUnavailableError(f"{action}: S3 error {exc.code}: {exc.message}") from exc
    except (ServerError, InvalidResponseError) as exc:
        status = getattr(exc, "status_code", None)
        if status == HTTP_INSUFFICIENT_STORAGE:
            raise StorageFullError(f"{action}: S3 has no space left") from exc
        raise StorageUnavailableError(f"{action}: S3 server failed: {exc}") from exc
    except (MinioException, HTTPError, OSError) as exc:
        raise StorageUnavailableError(f"{action}: S3 unreachable: {exc}") from exc


class _HashingReader:
    """A file-like ``read(size)`` over an iterator of chunks, hashing and counting what it pulls.

    Exceptions raised by the iterator are remembered in :attr:`source_error` so that the caller
    can tell them from the SDK's own failures.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = bytearray()
        self._exhausted = False
        self.digest = hashlib.sha256()
        self.size = 0
        self.source_error: BaseException | None = None

    def fill(self, size: int) -> bool:
        """Buffer at least ``size`` bytes unless the source ends first; tell whether it ended."""
        while len(self._buffer) < size and not self._exhausted:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self._exhausted = True
                break
            except BaseException as exc:
                self.source_error = exc
                raise
            self.digest.update(chunk)
            self.size += len(chunk)
            self._buffer += chunk
        return self._exhausted and len(self._buffer) < size

    def read(self, size: int = -1) -> bytes:
        """Return up to ``size`` bytes (all that remain if ``size < 0``); ``b""`` at the end."""
        if size < 0:
            while not self._exhausted:
                self.fill(len(self._buffer) + MIN_PART_SIZE)
            size = len(self._buffer)
        self.fill(size)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


class _ResponseChunks(Iterator[bytes]):
    """Chunks of an S3 GET response; the connection goes back to the pool at the end or on close."""

    def __init__(self, response: urllib3.BaseHTTPResponse, chunk_size: int) -> None:
        self._response: urllib3.BaseHTTPResponse | None = response
        self._chunk_size = min(chunk_size, MAX_READ_SIZE)

    def __next__(self) -> bytes:
        if self._response is None:
            raise StopIteration
        try:
            with _translated("stream"):
                chunk = self._response.read(self._chunk_size)
        except BaseException:
            self.close()
            raise
        if not chunk:
            response, self._response = self._response, None
            response.release_conn()
            raise StopIteration
        return chunk

    def close(self) -> None:
        """Abandon the response: close its connection (unread data) and release it (idempotent)."""
        if self._response is not None:
            response, self._response = self._response, None
            response.close()
            response.release_conn()

    def __del__(self) -> None:
        self.close()


class S3BlobStore:
    """A :class:`drimbox.ports.BlobStore` on an S3 bucket (SeaweedFS, MinIO, AWS...).

    Parameters
    ----------
    endpoint
        ``host:port`` of the S3 server (no scheme).
    access_key, secret_key
        Credentials (never logged).
    bucket
        Bucket holding the objects; created if missing.
    secure
        Use HTTPS (certificates checked against ``SSL_CERT_FILE`` or certifi's bundle).
    region
        Region used to sign requests.
    part_size
        Multipart part size, between 5 MiB and 5 GiB: the memory one put may hold.

    Raises
    ------
    ConfigurationError
        When ``endpoint`` carries a scheme or ``part_size`` is out of range.
    StorageUnavailableError
        When the server cannot be reached or the bucket cannot be created.
    """

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool = True,
        region: str = "us-east-1",
        part_size: int = DEFAULT_PART_SIZE,
    ) -> None:
        if "://" in endpoint:
            raise ConfigurationError(
                f"S3 endpoint {endpoint!r} must be host:port without a scheme: "
                "set s3_secure = true for HTTPS"
            )
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise ConfigurationError(
                f"S3 part size {part_size} is out of range: use {MIN_PART_SIZE} to {MAX_PART_SIZE}"
            )
        self._endpoint = endpoint
        self._bucket = bucket
        self._part_size = part_size
        self._http = urllib3.PoolManager(
            timeout=Timeout(connect=CONNECT_TIMEOUT_SECONDS, read=READ_TIMEOUT_SECONDS),
            retries=Retry(
                total=RETRIES, backoff_factor=RETRY_BACKOFF_SECONDS, status_forcelist=RETRY_STATUSES
            ),
            maxsize=CONNECTIONS_PER_HOST,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        )
        try:
            self._client = Minio(
                endpoint,
                access_key=access_key,
                secret_key=secret_key,
                secure=secure,
                region=region,
                http_client=self._http,
            )
        except ValueError as exc:
            raise ConfigurationError(f"S3 endpoint {endpoint!r} is invalid: {exc}") from exc
        self._ensure_bucket()

    def __repr__(self) -> str:
        return f"S3BlobStore(endpoint={self._endpoint!r}, bucket={self._bucket!r})"

    @property
    def bucket(self) -> str:
        """The bucket holding the objects."""
        return self._bucket

    def _ensure_bucket(self) -> None:
        with _translated(f"create bucket {self._bucket!r}"):
            if self._client.bucket_exists(self._bucket):
                return
            try:
                self._client.make_bucket(self._bucket)
            except S3Error as exc:
                if exc.code not in _BUCKET_EXISTS_CODES:  # else: created meanwhile by a peer
                    raise

    def write(self, chunks: Iterable[bytes]) -> DurableWrite:
        """Store a new object durably (see :meth:`put`): its handle is durable already."""
        return DurableWrite(self.put(chunks), self.delete)

    def put(self, chunks: Iterable[bytes]) -> StoredBlob:
        """Write a new object; see :meth:`drimbox.ports.BlobStore.put`.

        Exceptions raised by ``chunks`` itself propagate unchanged (a started multipart upload
        is aborted, so nothing becomes visible).

        Raises
        ------
        StorageFullError
            The server refused the object for lack of space or quota.
        StorageUnavailableError
            The server is unreachable, timed out or failed.
        """
        key = new_key()
        reader = _HashingReader(chunks)
        if reader.fill(self._part_size + 1):
            content = reader.read()
            with _translated("put"):
                self._client.put_object(
                    self._bucket,
                    key,
                    io.BytesIO(content),
                    len(content),
                    content_type=CONTENT_TYPE,
                    metadata={SHA256_METADATA: reader.digest.hexdigest()},
                )
            return StoredBlob(key=key, size=len(content), sha256=reader.digest.hexdigest())
        self._put_multipart(key, reader)
        return StoredBlob(key=key, size=reader.size, sha256=reader.digest.hexdigest())

    def _put_multipart(self, key: str, reader: _HashingReader) -> None:
        """Stream a large object part by part, then attach its SHA-256 by an in-place copy."""
        try:
            with _translated("put"):
                self._client.put_object(
                    self._bucket,
                    key,
                    cast(BinaryIO, reader),  # the SDK only calls read(size)
                    -1,
                    content_type=CONTENT_TYPE,
                    part_size=self._part_size,
                    num_parallel_uploads=1,  # one part in memory at a time
                )
        except BaseException:
            if reader.source_error is not None:
                raise reader.source_error from None
            raise
        if reader.size > MAX_COPY_SIZE:
            return  # the index keeps the SHA-256; S3 cannot copy such an object in one request
        try:
            with _translated("put"):
                self._client.copy_object(
                    self._bucket,
                    key,
                    CopySource(self._bucket, key),
                    metadata={SHA256_METADATA: reader.digest.hexdigest()},
                    metadata_directive=REPLACE,
                )
        except BaseException:
            # Leave nothing visible: the caller is told the put failed. If even this fails, the
            # object is an orphan that reconciliation finds (it is in no index).
            try:
                with _translated("put"):
                    self._client.remove_object(self._bucket, key)
            except StorageUnavailableError:
                pass
            raise

    def stream(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Yield the object's bytes in chunks of at most ``chunk_size``.

        The GET is sent now, so a missing key raises :class:`BlobNotFoundError` before the first
        chunk is asked for.
        """
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, not {chunk_size}")
        validate_key(key)
        with _translated("stream", lookup=True):
            response = self._client.get_object(self._bucket, key)
        return _ResponseChunks(response, chunk_size)

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """Return ``length`` bytes from ``offset`` (fewer at the end of the object)."""
        if offset < 0 or length < 0:
            raise ValueError(f"invalid range: offset {offset}, length {length}")
        validate_key(key)
        if length == 0:  # the SDK reads "length 0" as "to the end"
            self.size(key)
            return b""
        try:
            with _translated("read_range", lookup=True):
                response = self._client.get_object(self._bucket, key, offset=offset, length=length)
        except StorageUnavailableError as exc:
            cause = exc.__cause__
            if isinstance(cause, S3Error) and cause.code == _RANGE_NOT_SATISFIABLE_CODE:
                self.size(key)  # past the end of an existing object (BlobNotFoundError if not)
                return b""
            raise
        try:
            with _translated("read_range"):
                return response.read()
        finally:
            response.close()
            response.release_conn()

    def size(self, key: str) -> int:
        """Return the object's size in bytes."""
        validate_key(key)
        with _translated("size", lookup=True):
            size = self._client.stat_object(self._bucket, key).size
        if size is None:
            raise StorageUnavailableError("size: S3 did not report the object's size")
        return size

    def stored_sha256(self, key: str) -> str | None:
        """Return the SHA-256 kept in the object's metadata (``None`` for objects over 5 GiB)."""
        validate_key(key)
        with _translated("stored_sha256", lookup=True):
            metadata = self._client.stat_object(self._bucket, key).metadata
        value = None if metadata is None else metadata.get(f"x-amz-meta-{SHA256_METADATA}")
        return None if value is None else str(value)

    def delete(self, key: str) -> None:
        """Remove the object; a well-formed key that is not held is not an error."""
        validate_key(key)
        with _translated("delete"):
            self._client.remove_object(self._bucket, key)

    def keys(self) -> Iterator[str]:
        """Yield every key in the bucket (objects whose name is not a key are ignored)."""
        with _translated("keys"):
            for item in self._client.list_objects(self._bucket, recursive=True):
                name = item.object_name
                if name is not None and is_valid_key(name):
                    yield name

    def cleanup_temporary(self, stale_after_seconds: float = DEFAULT_STALE_AFTER_SECONDS) -> int:
        """Abort multipart uploads left by interrupted puts; return how many were aborted.

        The counterpart of :meth:`FilesystemBlobStore.cleanup_temporary`: the parts of an
        incomplete upload are invisible but take space until aborted.

        Parameters
        ----------
        stale_after_seconds
            Only uploads started at least this long ago are aborted, so puts in progress are
            spared. Pass ``0`` when no put can be running.
        """
        cutoff = datetime.now(UTC) - timedelta(seconds=stale_after_seconds)
        aborted = 0
        key_marker: str | None = None
        with _translated("cleanup_temporary"):
            while True:
                # ListMultipartUploads / AbortMultipartUpload have no public wrapper in the SDK.
                page = self._client._list_multipart_uploads(self._bucket, key_marker=key_marker)
                for upload in page.uploads:
                    started = upload.initiated_time
                    if (
                        is_valid_key(upload.object_name)
                        and upload.upload_id is not None
                        and started is not None
                        and started <= cutoff
                    ):
                        self._client._abort_multipart_upload(
                            self._bucket, upload.object_name, upload.upload_id
                        )
                        aborted += 1
                if not page.is_truncated or not page.next_key_marker:
                    return aborted
                key_marker = page.next_key_marker

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.clear()
