"""The box's DIMSE service class provider: C-ECHO and C-STORE.

- **Presentation contexts**: Verification, and every storage SOP class pynetdicom knows (images,
  SR, KOS, encapsulated PDF/CDA, waveforms...) with the transfer syntaxes of
  :data:`STORAGE_TRANSFER_SYNTAXES`; the first syntax the requestor proposes that the box
  supports is accepted (PS3.8 §9.3.2.2), and the data set is stored as received.
- **AE policy** (checked on A-ASSOCIATE-RQ, PS3.8 §9.3.4): a called AE title other than the
  box's is rejected ("called AE title not recognised"). With configured peers, only a
  (calling AE title, address) pair of the allow-list is accepted; without peers (the
  loopback-only development default) any calling AE title from a loopback address is. Others
  get A-ASSOCIATE-RJ rejected-permanent, source service-user, "calling AE title not
  recognised". Each rejection is logged and audited. Past :data:`MAXIMUM_ASSOCIATIONS`
  concurrent associations, A-ASSOCIATE-RJ rejected-transient, "local limit exceeded".
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
import ipaddress
import logging
import selectors
import socket
import threading
import time
from typing import BinaryIO, cast

from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AllStoragePresentationContexts

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
from drimbox.dimse.pdu import (
    APPLICATION_CONTEXT_NAME,
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
from drimbox.dimse.status import (
    ASSOCIATE_RJ_RESULT_REJECTED_PERMANENT,
    ASSOCIATE_RJ_SOURCE_SERVICE_USER,
    AssociateRejectReason,
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

STORAGE_TRANSFER_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    HTJ2K,
    RLELossless,
)
"""Transfer syntaxes accepted for storage (PS3.5 §10, Annex A); data sets are kept as received."""

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

_VERIFICATION_TRANSFER_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_RESULT_REJECTED_TRANSIENT = 0x02  # PS3.8 §9.3.4 Result
_SOURCE_PROVIDER_ACSE = 0x02  # PS3.8 §9.3.4 Source: service-provider (ACSE related)
_SOURCE_PROVIDER_PRESENTATION = 0x03  # service-provider (presentation related)
_REASON_APPLICATION_CONTEXT_NOT_SUPPORTED = 0x02  # source service-user
_REASON_PROTOCOL_VERSION_NOT_SUPPORTED = 0x02  # source provider ACSE
_REASON_LOCAL_LIMIT_EXCEEDED = 0x02  # source provider presentation


def _supported_syntaxes() -> dict[str, tuple[str, ...]]:
    supported = {VERIFICATION_SOP_CLASS: tuple(map(str, _VERIFICATION_TRANSFER_SYNTAXES))}
    for context in AllStoragePresentationContexts:
        supported[str(context.abstract_syntax)] = tuple(map(str, STORAGE_TRANSFER_SYNTAXES))
    return supported


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
        self._peers = peers
        self._loopback_only = loopback_only
        self._ingest = ingest
        self._audit = audit
        self._shared_listener = listener
        self._allowed = _resolve_peers(peers)
        self._supported = _supported_syntaxes()
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
        contexts = self._negotiate(request)
        sock.sendall(
            encode_associate_accept(
                request,
                [(context_id, result, syntax) for context_id, result, syntax, _ in contexts],
                maximum_length=MAXIMUM_PDU_LENGTH,
                implementation_class_uid=DRIMBOX_IMPLEMENTATION_CLASS_UID,
                implementation_version_name=DRIMBOX_IMPLEMENTATION_VERSION_NAME,
            )
        )
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
        if not request.supports_protocol_version:
            result, source, reason, why = (
                ASSOCIATE_RJ_RESULT_REJECTED_PERMANENT,
                _SOURCE_PROVIDER_ACSE,
                _REASON_PROTOCOL_VERSION_NOT_SUPPORTED,
                "protocol_version_not_supported",
            )
        elif request.application_context != APPLICATION_CONTEXT_NAME:
            result, source, reason, why = (
                ASSOCIATE_RJ_RESULT_REJECTED_PERMANENT,
                ASSOCIATE_RJ_SOURCE_SERVICE_USER,
                _REASON_APPLICATION_CONTEXT_NOT_SUPPORTED,
                "application_context_name_not_supported",
            )
        elif (policy := self._rejection_reason(request, address)) is not None:
            result, source, reason, why = (
                ASSOCIATE_RJ_RESULT_REJECTED_PERMANENT,
                ASSOCIATE_RJ_SOURCE_SERVICE_USER,
                int(policy),
                policy.name.lower(),
            )
        elif self._over_limit():
            result, source, reason, why = (
                _RESULT_REJECTED_TRANSIENT,
                _SOURCE_PROVIDER_PRESENTATION,
                _REASON_LOCAL_LIMIT_EXCEEDED,
                "local_limit_exceeded",
            )
        else:
            return True
        _log.warning(
            "dimse.association_rejected calling_aet=%s called_aet=%s address=%s reason=%s",
            request.calling_ae_title,
            request.called_ae_title,
            address,
            why,
        )
        self._audit.record(
            "dicom.association.rejected",
            "failure",
            calling_aet=request.calling_ae_title,
            called_aet=request.called_ae_title,
            address=address,
            reason=why,
        )
        _send_quietly(sock, encode_associate_reject(result, source, reason))  # after the audit
        return False

    def _over_limit(self) -> bool:
        with self._lock:
            return len(self._active) > MAXIMUM_ASSOCIATIONS

    def _rejection_reason(
        self, request: AssociateRequest, address: str
    ) -> AssociateRejectReason | None:
        if request.called_ae_title != self._ae_title:
            return AssociateRejectReason.CALLED_AE_TITLE_NOT_RECOGNIZED
        if self._allowed:
            if (request.calling_ae_title, _normalise_address(address)) in self._allowed:
                return None
            return AssociateRejectReason.CALLING_AE_TITLE_NOT_RECOGNIZED
        if _is_loopback(address):
            return None
        return AssociateRejectReason.CALLING_AE_TITLE_NOT_RECOGNIZED

    def _negotiate(self, request: AssociateRequest) -> list[tuple[int, ContextResult, str, str]]:
        """Answer each proposed context: (ID, result, transfer syntax, abstract syntax)."""
        answers: list[tuple[int, ContextResult, str, str]] = []
        seen: set[int] = set()
        for proposed in request.contexts:
            if proposed.context_id in seen:
                continue  # a duplicated ID: the first proposal is the one answered
            seen.add(proposed.context_id)
            echoed = proposed.transfer_syntaxes[0] if proposed.transfer_syntaxes else ""
            supported = self._supported.get(proposed.abstract_syntax)
            if supported is None:
                result, syntax = ContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED, echoed
            else:
                chosen = next((s for s in proposed.transfer_syntaxes if s in supported), None)
                result, syntax = (
                    (ContextResult.ACCEPTANCE, chosen)
                    if chosen is not None
                    else (ContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED, echoed)
                )
            answers.append((proposed.context_id, result, syntax, proposed.abstract_syntax))
        return answers


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


def _resolve_peers(peers: tuple[Peer, ...]) -> frozenset[tuple[str, str]]:
    allowed: set[tuple[str, str]] = set()
    for peer in peers:
        try:
            infos = socket.getaddrinfo(peer.host, None, proto=socket.IPPROTO_TCP)
            addresses = {_normalise_address(str(info[4][0])) for info in infos}
        except OSError:
            _log.warning("dimse.peer_unresolved aet=%s host=%s", peer.aet, peer.host)
            addresses = {_normalise_address(peer.host)}
        allowed.update((peer.aet, address) for address in addresses)
    return frozenset(allowed)


def _normalise_address(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(_normalise_address(address)).is_loopback
    except ValueError:
        return False
