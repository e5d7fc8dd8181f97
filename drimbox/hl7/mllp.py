"""MLLP (Minimal Lower Layer Protocol) server and client.

Framing per HL7 v2.5 Appendix C (MLLP release 1): ``<VT> message <FS><CR>`` with VT = 0x0B,
FS = 0x1C, CR = 0x0D. One thread per connection; every socket has TCP_NODELAY.

Robustness: bytes outside a frame are discarded until the next start block (resync); a start
block inside a frame abandons the partial frame and starts a new one; a frame larger than
``max_message_size`` is answered AR (header read best effort) and the connection closed; a
connection silent for ``idle_timeout`` seconds, or slower than ``frame_timeout`` for one frame,
is closed. A handler that raises gets an AE with "application internal error" sent back; the
server keeps serving.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable

from drimbox.hl7.er7 import build_ack, read_header
from drimbox.hl7.errors import AcknowledgmentCode, ErrorCode

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "END_BLOCK",
    "START_BLOCK",
    "MllpServer",
    "frame",
    "send_message",
]

START_BLOCK = b"\x0b"
"""MLLP start block, VT (HL7 v2.5 Appendix C.4.2)."""
END_BLOCK = b"\x1c\x0d"
"""MLLP end block, FS CR (HL7 v2.5 Appendix C.4.2)."""
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
"""Default largest accepted message (bytes between the blocks)."""
DEFAULT_IDLE_TIMEOUT = 30.0
DEFAULT_FRAME_TIMEOUT = 120.0
DEFAULT_MAX_CONNECTIONS = 64
_RECEIVE_SIZE = 65536
_LISTEN_BACKLOG = 64
_DRAIN_SECONDS = 1.0
_log = logging.getLogger(__name__)

Handler = Callable[[bytes], bytes]


def frame(message: bytes) -> bytes:
    """Wrap ``message`` in MLLP start and end blocks."""
    return START_BLOCK + message + END_BLOCK


class _FrameTooLargeError(Exception):
    def __init__(self, head: bytes) -> None:
        super().__init__("frame too large")
        self.head = head


class _FrameReader:
    """Incremental MLLP deframer for one connection."""

    def __init__(self, max_size: int) -> None:
        self._max_size = max_size
        self._pending = bytearray()
        self._scanned = 0  # bytes of the current frame already searched for blocks
        self._in_frame = False
        self.discarded = 0
        self.frame_started_at = 0.0

    @property
    def in_frame(self) -> bool:
        return self._in_frame

    def feed(self, data: bytes) -> list[bytes]:
        """Consume received bytes; return the complete frames they finish.

        Raises
        ------
        _FrameTooLargeError
            When the current frame exceeds the limit (its first bytes are kept for the ACK).
        """
        self._pending += data
        frames: list[bytes] = []
        while self._pending:
            if not self._in_frame:
                start = self._pending.find(START_BLOCK)
                if start < 0:
                    self.discarded += len(self._pending)
                    self._pending.clear()
                    break
                self.discarded += start
                del self._pending[: start + 1]
                self._in_frame, self._scanned = True, 0
                self.frame_started_at = time.monotonic()
                continue
            offset = max(0, self._scanned - 1)
            end = self._pending.find(END_BLOCK, offset)
            restart = self._pending.find(START_BLOCK, offset)
            if restart >= 0 and (end < 0 or restart < end):  # new frame before this one ended
                self.discarded += restart
                del self._pending[:restart]
                self._in_frame = False
                continue
            if end >= 0:
                frames.append(bytes(self._pending[:end]))
                del self._pending[: end + len(END_BLOCK)]
                self._in_frame = False
                continue
            self._scanned = len(self._pending)
            if len(self._pending) > self._max_size:
                head = bytes(self._pending[:4096])
                self._pending.clear()
                self._in_frame = False
                raise _FrameTooLargeError(head)
            break
        return frames


class MllpServer:
    """A threaded MLLP server calling ``handler(message) -> ack`` for every frame.

    Parameters
    ----------
    host, port
        Where to listen (``port=0``: an ephemeral port, see :meth:`start`).
    handler
        Called with each message (without framing); returns the acknowledgment to send.
    max_message_size
        Larger frames are answered AR and the connection is closed.
    idle_timeout
        Seconds without any byte after which a connection is closed.
    frame_timeout
        Seconds allowed to receive one whole frame (slow senders).
    max_connections
        Connections beyond this number are closed as soon as accepted.
    """

    def __init__(
        self,
        host: str,
        port: int,
        handler: Handler,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self._address = (host, port)
        self._handler = handler
        self._max_size = max_message_size
        self._idle_timeout = idle_timeout
        self._frame_timeout = frame_timeout
        self._max_connections = max_connections
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._workers: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def start(self) -> int:
        """Bind, listen and serve in background threads; return the bound port."""
        listener = socket.create_server(self._address, backlog=_LISTEN_BACKLOG)
        listener.settimeout(0.2)
        self._listener = listener
        self._stopping.clear()
        self._thread = threading.Thread(target=self._accept_loop, name="mllp-accept", daemon=True)
        self._thread.start()
        port: int = listener.getsockname()[1]
        _log.info("hl7.mllp.listening", extra={"host": self._address[0], "port": port})
        return port

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`).

        Raises
        ------
        RuntimeError
            When the server is not started.
        """
        if self._listener is None:
            raise RuntimeError("the MLLP server is not started")
        port: int = self._listener.getsockname()[1]
        return port

    def stop(self) -> None:
        """Stop accepting, close every connection and wait for the threads."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            connections = list(self._connections)
            workers = list(self._workers)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        for worker in workers:
            worker.join(timeout=5)

    def __enter__(self) -> MllpServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                connection, peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                raise
            with self._lock:
                busy = len(self._connections) >= self._max_connections
            if busy:
                _log.warning(
                    "hl7.mllp.too_many_connections", extra={"limit": self._max_connections}
                )
                connection.close()
                continue
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            worker = threading.Thread(
                target=self._serve, args=(connection,), name=f"mllp-{peer[1]}", daemon=True
            )
            with self._lock:
                self._connections.add(connection)
                self._workers.add(worker)
            worker.start()

    def _serve(self, connection: socket.socket) -> None:
        reader = _FrameReader(self._max_size)
        try:
            with connection:
                connection.settimeout(min(self._idle_timeout, 1.0))
                last_byte = time.monotonic()
                while not self._stopping.is_set():
                    now = time.monotonic()
                    if reader.in_frame and now - reader.frame_started_at > self._frame_timeout:
                        _log.warning("hl7.mllp.frame_timeout")
                        return
                    try:
                        data = connection.recv(_RECEIVE_SIZE)
                    except TimeoutError:
                        if time.monotonic() - last_byte > self._idle_timeout:
                            _log.info("hl7.mllp.idle_timeout")
                            return
                        continue
                    if not data:
                        return
                    last_byte = time.monotonic()
                    try:
                        frames = reader.feed(data)
                    except _FrameTooLargeError as exc:
                        _log.warning("hl7.mllp.too_large", extra={"limit": self._max_size})
                        connection.sendall(frame(self._too_large(exc.head)))
                        _drain_and_close(connection, self._max_size)
                        return
                    for message in frames:
                        connection.sendall(frame(self._handle(message)))
                    if reader.discarded > self._max_size:  # a stream of non-HL7 bytes
                        _log.warning("hl7.mllp.garbage", extra={"discarded": reader.discarded})
                        return
        except OSError as exc:
            _log.info("hl7.mllp.connection_error", extra={"error": type(exc).__name__})
        finally:
            with self._lock:
                self._connections.discard(connection)
                self._workers.discard(threading.current_thread())

    def _handle(self, message: bytes) -> bytes:
        try:
            return self._handler(message)
        except Exception:  # the handler's bug must not kill the listener
            _log.exception("hl7.mllp.handler_failed")
            return build_ack(
                read_header(message),
                AcknowledgmentCode.ERROR,
                error_code=ErrorCode.APPLICATION_INTERNAL_ERROR,
                reason="internal error while processing the message; send it again later",
            )

    def _too_large(self, head: bytes) -> bytes:
        return build_ack(
            read_header(head),
            AcknowledgmentCode.REJECT,
            error_code=ErrorCode.APPLICATION_INTERNAL_ERROR,
            reason=f"message exceeds the {self._max_size}-byte limit; connection closed",
        )


def _drain_and_close(connection: socket.socket, limit: int) -> None:
    """Half-close, then read what the peer still sends (bounded) so it sees the ACK, not a reset."""
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + _DRAIN_SECONDS
        received = 0
        while received <= limit and time.monotonic() < deadline:
            data = connection.recv(_RECEIVE_SIZE)
            if not data:
                break
            received += len(data)


def send_message(host: str, port: int, message: bytes, timeout: float = 30.0) -> bytes:
    """Send one message over MLLP and return the acknowledgment (without framing).

    Parameters
    ----------
    host, port
        The MLLP server.
    message
        The HL7 message.
    timeout
        Seconds allowed for connecting and for the answer.

    Raises
    ------
    ConnectionError
        When the server closes the connection before a complete answer.
    TimeoutError
        When no answer arrives in time.
    """
    with socket.create_connection((host, port), timeout=timeout) as connection:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection.sendall(frame(message))
        reader = _FrameReader(DEFAULT_MAX_MESSAGE_SIZE)
        while True:
            data = connection.recv(_RECEIVE_SIZE)
            if not data:
                raise ConnectionError("the MLLP server closed the connection without answering")
            frames = reader.feed(data)
            if frames:
                return frames[0]
