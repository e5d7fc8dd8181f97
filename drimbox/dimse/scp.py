"""The box's DIMSE service class provider: C-ECHO and C-STORE (pynetdicom).

- **Presentation contexts**: Verification, and every storage SOP class pynetdicom knows (images,
  SR, KOS, encapsulated PDF/CDA, waveforms...) with the transfer syntaxes of
  :data:`STORAGE_TRANSFER_SYNTAXES`; the first syntax the requestor proposes that the box
  supports is accepted (PS3.8 §9.3.2.2), and the data set is stored as received.
- **AE policy** (checked on A-ASSOCIATE-RQ, PS3.8 §9.3.4): a called AE title other than the
  box's is rejected ("called AE title not recognised"). With configured peers, only a
  (calling AE title, address) pair of the allow-list is accepted; without peers (the
  loopback-only development default) any calling AE title from a loopback address is. Others
  get A-ASSOCIATE-RJ rejected-permanent, source service-user, "calling AE title not
  recognised". Each rejection is logged and audited.
- **Sockets**: TCP_NODELAY on every accepted socket; ``reuse_port`` sets SO_REUSEPORT on the
  listening socket so several receiver processes share the port.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO, cast

from pydicom.dataset import Dataset
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
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.transport import ThreadedAssociationServer

from drimbox.config import Peer
from drimbox.dicom.part10 import DICM_PREFIX, PREAMBLE_LENGTH
from drimbox.dimse.reactor import AcceptorContexts, EventDrivenRequestHandler
from drimbox.dimse.status import (
    ASSOCIATE_RJ_RESULT_REJECTED_PERMANENT,
    ASSOCIATE_RJ_SOURCE_SERVICE_USER,
    AssociateRejectReason,
    StorageStatus,
    error_comment,
    storage_status_for,
)
from drimbox.ports import AuditLog
from drimbox.services.ingest import IngestService

__all__ = ["STORAGE_TRANSFER_SYNTAXES", "VERIFICATION_SOP_CLASS", "DimseServer"]

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

VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"
"""Verification SOP Class UID (PS3.4 §A.4, PS3.6 Annex A)."""

_VERIFICATION_TRANSFER_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_MAXIMUM_PDU_SIZE = 1 << 20  # what we receive per P-DATA-TF; fewer, larger PDUs cost less
_MAXIMUM_ASSOCIATIONS = 64
_STOP_TIMEOUT_SECONDS = 5.0
_FILE_META_HEAD = PREAMBLE_LENGTH + len(DICM_PREFIX) + 12  # preamble, DICM, (0002,0000) UL


class _Server(ThreadedAssociationServer):
    """pynetdicom's threaded server with TCP_NODELAY on accepted sockets and SO_REUSEPORT."""

    reuse_port = False
    daemon_threads = True

    def server_bind(self) -> None:
        if self.reuse_port:
            cast(socket.socket, self.socket).setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client, address = super().get_request()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address


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
    reuse_port
        Set SO_REUSEPORT so that several processes can listen on the same port.
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
        reuse_port: bool = False,
    ) -> None:
        self._ae_title = ae_title
        self._address = (host, port)
        self._peers = peers
        self._loopback_only = loopback_only
        self._ingest = ingest
        self._audit = audit
        self._reuse_port = reuse_port
        self._allowed = _resolve_peers(peers)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def port(self) -> int | None:
        """The bound port, or ``None`` when not started."""
        return None if self._server is None else int(self._server.server_address[1])

    def start(self) -> int:
        """Bind and serve in a background thread; return the bound port."""
        with self._lock:
            if self._server is not None:
                return int(self._server.server_address[1])
            ae = _build_ae(self._ae_title)
            server_class = type("_BoundServer", (_Server,), {"reuse_port": self._reuse_port})
            server = ae.make_server(
                self._address,
                ae_title=self._ae_title,
                evt_handlers=[
                    (evt.EVT_REQUESTED, self._on_association_requested),
                    (evt.EVT_C_ECHO, self._on_c_echo),
                    (evt.EVT_C_STORE, self._on_c_store),
                ],
                server_class=server_class,
                request_handler=EventDrivenRequestHandler,
            )
            server.contexts = AcceptorContexts(server.contexts)
            ae._servers.append(server)
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.2},
                name=f"drimbox-dimse-{self._ae_title}",
                daemon=True,
            )
            thread.start()
            self._server, self._thread = server, thread
            port = int(server.server_address[1])
        _log.info("dimse.listening aet=%s host=%s port=%d", self._ae_title, self._address[0], port)
        return port

    def stop(self) -> None:
        """Stop accepting associations, abort the active ones and wait for the server thread.

        Aborts run in daemon threads and are waited for at most :data:`_STOP_TIMEOUT_SECONDS`:
        a peer that never closes its end must not keep the box from stopping.
        """
        with self._lock:
            server, self._server = self._server, None
            thread, self._thread = self._thread, None
        if server is None:
            return
        server.shutdown()
        aborts = [
            threading.Thread(target=association.abort, name="drimbox-dimse-abort", daemon=True)
            for association in server.active_associations
        ]
        for abort in aborts:
            abort.start()
        deadline = time.monotonic() + _STOP_TIMEOUT_SECONDS
        for abort in aborts:
            abort.join(max(0.0, deadline - time.monotonic()))
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
        _log.info("dimse.stopped aet=%s", self._ae_title)

    # -- association policy ------------------------------------------------------------------

    def _on_association_requested(self, event: evt.Event) -> None:
        association = event.assoc
        request = cast(Any, association.requestor.primitive)
        calling = str(request.calling_ae_title).strip()
        called = str(request.called_ae_title).strip()
        address = str(association.requestor.address)
        reason = self._rejection_reason(calling, called, address)
        if reason is None:
            return
        association.acse.send_reject(
            ASSOCIATE_RJ_RESULT_REJECTED_PERMANENT, ASSOCIATE_RJ_SOURCE_SERVICE_USER, reason
        )
        _log.warning(
            "dimse.association_rejected calling_aet=%s called_aet=%s address=%s reason=%s",
            calling,
            called,
            address,
            reason.name.lower(),
        )
        self._audit.record(
            "dicom.association.rejected",
            "failure",
            calling_aet=calling,
            called_aet=called,
            address=address,
            reason=reason.name.lower(),
        )
        association.kill()

    def _rejection_reason(
        self, calling: str, called: str, address: str
    ) -> AssociateRejectReason | None:
        if called != self._ae_title:
            return AssociateRejectReason.CALLED_AE_TITLE_NOT_RECOGNIZED
        if self._allowed:
            if (calling, _normalise_address(address)) in self._allowed:
                return None
            return AssociateRejectReason.CALLING_AE_TITLE_NOT_RECOGNIZED
        if _is_loopback(address):
            return None
        return AssociateRejectReason.CALLING_AE_TITLE_NOT_RECOGNIZED

    # -- services ----------------------------------------------------------------------------

    def _on_c_echo(self, event: evt.Event) -> int:
        return int(StorageStatus.SUCCESS)

    def _on_c_store(self, event: evt.Event) -> Dataset:
        request = cast(Any, event.request)
        context = event.context
        requestor = event.assoc.requestor
        source = f"{str(requestor.ae_title).strip()}@{requestor.address}"
        sop_class_uid = str(request.AffectedSOPClassUID or "")
        sop_instance_uid = str(request.AffectedSOPInstanceUID or "")
        if sop_class_uid != str(context.abstract_syntax):
            comment = f"SOP class {sop_class_uid[:30]} is not this context's"
            _log.warning(
                "dimse.c_store_refused status=0x%04X source=%s sop_instance_uid=%s comment=%s",
                StorageStatus.SOP_CLASS_NOT_SUPPORTED,
                source,
                sop_instance_uid[:64],
                comment,
            )
            return _status(StorageStatus.SOP_CLASS_NOT_SUPPORTED, comment)
        try:
            with _received_data_set(event) as data_set:
                self._ingest.store_dataset(
                    data_set,
                    str(context.transfer_syntax),
                    sop_class_uid=sop_class_uid,
                    sop_instance_uid=sop_instance_uid,
                    source=source,
                )
        except Exception as error:
            status, comment = storage_status_for(error)
            if status is StorageStatus.PROCESSING_FAILURE:
                _log.exception("dimse.c_store_failed source=%s", source)
            else:  # the ingest service already logged the refusal (one line, with its reason)
                _log.debug(
                    "dimse.c_store_refused status=0x%04X source=%s comment=%s",
                    status,
                    source,
                    comment,
                )
            return _status(status, comment)
        return _status(StorageStatus.SUCCESS, None)


class _received_data_set:  # noqa: N801  (a context manager used like a function)
    """Open the received data set, positioned after any File Meta Information."""

    def __init__(self, event: evt.Event) -> None:
        self._event = event
        self._file: BinaryIO | None = None

    def __enter__(self) -> BinaryIO:
        try:
            path: Path = self._event.dataset_path
        except AttributeError:  # configure_pynetdicom() not called: the data set is in memory
            stream = cast(BinaryIO, cast(Any, self._event.request).DataSet)
            stream.seek(0)
            return stream
        self._file = path.open("rb")
        head = self._file.read(_FILE_META_HEAD)
        (group_length,) = struct.unpack("<I", head[-4:])
        self._file.seek(_FILE_META_HEAD + group_length)
        return self._file

    def __exit__(self, *exc_info: object) -> None:
        if self._file is not None:
            self._file.close()


def _status(status: StorageStatus, comment: str | None) -> Dataset:
    response = Dataset()
    response.Status = int(status)
    if comment:
        response.ErrorComment = error_comment(comment)
    return response


def _build_ae(ae_title: str) -> Any:
    ae = AE(ae_title=ae_title)
    ae.maximum_pdu_size = _MAXIMUM_PDU_SIZE
    ae.maximum_associations = _MAXIMUM_ASSOCIATIONS
    ae.require_called_aet = False  # checked in _on_association_requested, with the audit
    ae.add_supported_context(VERIFICATION_SOP_CLASS, list(_VERIFICATION_TRANSFER_SYNTAXES))
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(
            cast(str, context.abstract_syntax), list(STORAGE_TRANSFER_SYNTAXES)
        )
    return ae


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
