"""The box's DIMSE service class provider: C-ECHO and C-STORE.

- **Negotiation and AE policy**: :mod:`drimbox.dimse.negotiation`; each rejection is logged and
  audited, then sent. Past :data:`MAXIMUM_ASSOCIATIONS` concurrent associations,
  A-ASSOCIATE-RJ rejected-transient, "local limit exceeded".
- **Sockets**: TCP_NODELAY on every accepted socket.
- **Several processes** (``drimbox serve --dimse-processes N``) share one listening socket
  (:func:`bind_listener`, inherited by the receiver processes). Each process waits for a
  pending connection, then accepts it at once when it serves no association, or after
  :data:`ACCEPT_DEFER_SECONDS` per association it serves: the least busy process takes the
  next association (SO_REUSEPORT would spread them by a hash of the peer's address, often
  onto the same process).
- **Threads**: one per association, which negotiates, then reads, stores and answers every
  message itself (:mod:`drimbox.dimse.association`).

Why not pynetdicom's acceptor: for each C-STORE it hands the PDUs from its DUL thread to
its association thread through queues, decodes the command into a pydicom Dataset and writes
the data set to a temporary file before the handler runs; measured here, that alone cost
2.5-2.9 ms per instance, more than storing it durably. The Upper Layer state machine an
acceptor needs (PS3.8 §9.2) is small: :mod:`drimbox.dimse.pdu` and
:mod:`drimbox.dimse.commands` implement it; pynetdicom remains the box's SCU
(:mod:`drimbox.dimse.pacs`) and gives the list of storage SOP classes.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from typing import BinaryIO, cast

from drimbox.affinity import pin_to_dimse_cpu
from drimbox.config import Peer
from drimbox.dicom.part10 import (
    DRIMBOX_IMPLEMENTATION_CLASS_UID,
    DRIMBOX_IMPLEMENTATION_VERSION_NAME,
)
from drimbox.dimse.association import (
    VERIFICATION_SOP_CLASS,
    AcceptedContext,
    Association,
)
from drimbox.dimse.negotiation import (
    STORAGE_TRANSFER_SYNTAXES,
    AcceptorPolicy,
    negotiate,
    supported_syntaxes,
)
from drimbox.dimse.pdu import (
    AbortReason,
    AssociateRequest,
    ContextResult,
    PduType,
    ProtocolError,
    decode_associate_request,
    encode_abort,
    encode_associate_accept,
    encode_associate_reject,
    read_pdu,
)
from drimbox.ports import AuditLog
from drimbox.services.ingest import IngestService

__all__ = [
    "ACCEPT_DEFER_SECONDS",
    "MAXIMUM_ASSOCIATIONS",
    "STORAGE_TRANSFER_SYNTAXES",
    "VERIFICATION_SOP_CLASS",
    "DimseServer",
    "bind_listener",
]

_log = logging.getLogger("drimbox.dimse")

MAXIMUM_ASSOCIATIONS = 64
"""Concurrent associations served; more are rejected-transient (PS3.8 §9.3.4)."""

ACCEPT_DEFER_SECONDS = 0.01
"""With a shared listener, how long a process defers an accept per association it serves."""

_MAXIMUM_DEFERRED_ASSOCIATIONS = 8

MAXIMUM_PDU_LENGTH = 1 << 20
"""Largest P-DATA-TF variable field announced (PS3.8 Annex D.1): fewer, larger PDUs cost less."""

_PDU_READ_LIMIT = 16 << 20  # PDUs up to this size are read even past what was announced
_REQUEST_READ_LIMIT = 1 << 20  # an A-ASSOCIATE-RQ with every storage class is ~20 KiB
_ARTIM_SECONDS = 30.0  # waiting for the A-ASSOCIATE-RQ (PS3.8 §9.1.5)
_NETWORK_TIMEOUT_SECONDS = 60.0  # an established association silent this long is aborted
_ACCEPT_POLL_SECONDS = 0.2
_STOP_TIMEOUT_SECONDS = 5.0
_READ_BUFFER_BYTES = 256 << 10
_LISTEN_BACKLOG = 128


class DimseServer:
    """The box's DICOM node: C-ECHO and C-STORE SCP.

    Parameters
    ----------
    ae_title
        The box's AE title (the called AE title requestors must use).
    host, port
        Where to listen (port 0 picks a free port).
    peers
        Allowed (AE title, host) pairs; empty means any calling AE title from a loopback
        address.
    loopback_only
        Whether the box listens on loopback only (the development default).
    ingest
        Stores received instances.
    audit
        Association rejections are recorded there.
    listener
        A listening socket shared with other processes (:func:`bind_listener`); ``host`` and
        ``port`` are then ignored. Without it, the server binds its own.
    """

    def __init__(
        self,
        *,
        ae_title: str,
        host: str,
        port: int,
        peers: tuple[Peer, ...],
        loopback_only: bool,
        ingest: IngestService,
        audit: AuditLog,
        listener: socket.socket | None = None,
    ) -> None:
        self._ae_title = ae_title
        self._address = (host, port)
        self._loopback_only = loopback_only
        self._ingest = ingest
        self._audit = audit
        self._shared_listener = listener
        self._policy = AcceptorPolicy(ae_title, peers)
        self._supported = supported_syntaxes()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._active: dict[socket.socket, Association | None] = {}
        self._handlers: set[threading.Thread] = set()

    @property
    def port(self) -> int | None:
        """The bound port, or ``None`` when not started."""
        return None if self._listener is None else int(self._listener.getsockname()[1])

    def active_sockets(self) -> tuple[socket.socket, ...]:
        """The sockets of the associations being served (for diagnostics)."""
        with self._lock:
            return tuple(self._active)

    def start(self) -> int:
        """Bind and serve in a background thread; return the bound port."""
        with self._lock:
            if self._listener is not None:
                return int(self._listener.getsockname()[1])
            listener = self._shared_listener or bind_listener(*self._address)
            self._stopping.clear()
            thread = threading.Thread(
                target=self._accept_loop,
                args=(listener,),
                name=f"drimbox-dimse-{self._ae_title}",
                daemon=True,
            )
            self._listener, self._thread = listener, thread
            thread.start()
            port = int(listener.getsockname()[1])
        _log.info("dimse.listening aet=%s host=%s port=%d", self._ae_title, self._address[0], port)
        return port

    def stop(self) -> bool:
        """Stop accepting associations, abort the active ones and wait for their threads.

        Waits at most :data:`_STOP_TIMEOUT_SECONDS`: a peer that never closes its end must not
        keep the box from stopping. Returns whether every association thread has ended (no
        instance is being stored any more).
        """
        with self._lock:
            listener, self._listener = self._listener, None
            thread, self._thread = self._thread, None
        if listener is None:
            return True
        self._stopping.set()
        deadline = time.monotonic() + _STOP_TIMEOUT_SECONDS
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
        listener.close()
        with self._lock:
            active = list(self._active.items())
            handlers = list(self._handlers)
        for sock, association in active:
            if association is not None:
                association.abort()
            else:
                _shutdown(sock)
        for handler in handlers:
            handler.join(max(0.0, deadline - time.monotonic()))
        ended = not any(handler.is_alive() for handler in handlers)
        _log.info("dimse.stopped aet=%s all_associations_ended=%s", self._ae_title, ended)
        return ended

    # -- accepting -----------------------------------------------------------------------------

    def _accept_loop(self, listener: socket.socket) -> None:
        listener.setblocking(False)
        shared = self._shared_listener is not None
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            while not self._stopping.is_set():
                if not selector.select(_ACCEPT_POLL_SECONDS):
                    continue
                if shared and (busy := self._active_count()):
                    time.sleep(min(busy, _MAXIMUM_DEFERRED_ASSOCIATIONS) * ACCEPT_DEFER_SECONDS)
                self._accept(listener)

    def _accept(self, listener: socket.socket) -> None:
        try:
            sock, address = listener.accept()
        except BlockingIOError:  # another process took it
            return
        except OSError as error:
            if not self._stopping.is_set():
                _log.warning("dimse.accept_failed error=%s", error)
                time.sleep(_ACCEPT_POLL_SECONDS)
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        handler = threading.Thread(
            target=self._handle,
            args=(sock, str(address[0])),
            name=f"drimbox-dimse-association-{address[0]}:{address[1]}",
            daemon=True,
        )
        with self._lock:
            self._active[sock] = None
            self._handlers.add(handler)
        handler.start()

    def _active_count(self) -> int:
        with self._lock:
            return len(self._active)

    def _handle(self, sock: socket.socket, address: str) -> None:
        pin_to_dimse_cpu()  # with the sync threads (drimbox.affinity)
        try:
            association = self._establish(sock, address)
            if association is not None:
                with self._lock:
                    if sock in self._active:
                        self._active[sock] = association
                if self._stopping.is_set():
                    association.abort()
                association.serve()
        except Exception:  # never let one association's failure go unlogged
            _log.exception("dimse.association_failed address=%s", address)
        finally:
            sock.close()
            with self._lock:
                self._active.pop(sock, None)
                self._handlers.discard(threading.current_thread())

    def _establish(self, sock: socket.socket, address: str) -> Association | None:
        """Negotiate the association; return it when accepted, ``None`` when not."""
        sock.settimeout(_ARTIM_SECONDS)
        reader = cast(BinaryIO, sock.makefile("rb", buffering=_READ_BUFFER_BYTES))
        try:
            pdu = read_pdu(reader, _REQUEST_READ_LIMIT)
            if pdu is None:
                reader.close()
                return None
            pdu_type, body = pdu
            if pdu_type != PduType.A_ASSOCIATE_RQ:
                raise ProtocolError(
                    f"PDU type 0x{pdu_type:02X} before A-ASSOCIATE-RQ", AbortReason.UNEXPECTED_PDU
                )
            request = decode_associate_request(body)
        except ProtocolError as error:
            _log.warning(
                "dimse.association_aborted address=%s reason=%s detail=%s",
                address,
                error.reason.name.lower(),
                error,
            )
            _send_quietly(sock, encode_abort(error.reason))
            reader.close()
            return None
        except (TimeoutError, OSError) as error:
            _log.info("dimse.association_request_lost address=%s error=%s", address, error)
            reader.close()
            return None
        if not self._admit(sock, request, address):
            reader.close()
            return None
        contexts = negotiate(request, self._supported)
        accept = encode_associate_accept(
            request,
            [(context_id, result, syntax) for context_id, result, syntax, _ in contexts],
            maximum_length=MAXIMUM_PDU_LENGTH,
            implementation_class_uid=DRIMBOX_IMPLEMENTATION_CLASS_UID,
            implementation_version_name=DRIMBOX_IMPLEMENTATION_VERSION_NAME,
        )
        try:
            sock.sendall(accept)
        except OSError as error:
            _log.info("dimse.association_request_lost address=%s error=%s", address, error)
            reader.close()
            return None
        accepted = {
            context_id: AcceptedContext(abstract, syntax)
            for context_id, result, syntax, abstract in contexts
            if result is ContextResult.ACCEPTANCE
        }
        source = f"{request.calling_ae_title}@{address}"
        _log.debug(
            "dimse.association_accepted source=%s contexts=%d accepted=%d",
            source,
            len(contexts),
            len(accepted),
        )
        sock.settimeout(_NETWORK_TIMEOUT_SECONDS)
        return Association(
            sock=sock,
            reader=reader,
            contexts=accepted,
            peer_maximum_length=request.maximum_length,
            maximum_length=_PDU_READ_LIMIT,
            source=source,
            ingest=self._ingest,
        )

    # -- association policy ------------------------------------------------------------------

    def _admit(self, sock: socket.socket, request: AssociateRequest, address: str) -> bool:
        """Send A-ASSOCIATE-RJ (logged, audited) and return ``False`` when refused."""
        rejection = self._policy.rejection(request, address, over_limit=self._over_limit())
        if rejection is None:
            return True
        _log.warning(
            "dimse.association_rejected calling_aet=%s called_aet=%s address=%s reason=%s",
            request.calling_ae_title,
            request.called_ae_title,
            address,
            rejection.why,
        )
        self._audit.record(
            "dicom.association.rejected",
            "failure",
            calling_aet=request.calling_ae_title,
            called_aet=request.called_ae_title,
            address=address,
            reason=rejection.why,
        )
        reject = encode_associate_reject(rejection.result, rejection.source, rejection.reason)
        _send_quietly(sock, reject)  # after the audit
        return False

    def _over_limit(self) -> bool:
        with self._lock:
            return len(self._active) > MAXIMUM_ASSOCIATIONS


def bind_listener(host: str, port: int) -> socket.socket:
    """Bind and listen on (``host``, ``port``) with TCP_NODELAY; port 0 picks a free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        listener.bind((host, port))
        listener.listen(_LISTEN_BACKLOG)
    except BaseException:
        listener.close()
        raise
    return listener


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(data)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
