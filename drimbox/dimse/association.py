"""One established association: its data transfer phase, run on the thread that accepted it.

The thread reads PDUs, reassembles each DIMSE message from its PDV fragments (PS3.8 Annex
E) and handles it at once: a C-STORE data set goes straight from the socket into a spool
(memory up to :data:`SPOOL_MEMORY_BYTES`, then a temporary file), is handed to the ingest
service, and the C-STORE-RSP is sent when the instance is durable and indexed. No queue, no
other thread: one message costs one pass through this loop. What the ingest service defers
(the stored instance's audit record and subscribers) runs right after the response, while the
sender prepares its next request, and always before the next PDU is read: when the release is
answered, every instance of the association has been announced.

Protocol violations (a PDU out of place, a fragment on a context that was not accepted, a
command that cannot be decoded) abort the association (PS3.8 §9.3.8), with a log line saying
why. A data set larger than the ingest limit is drained but not kept, and refused with
"out of resources".
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from drimbox.dimse.commands import (
    Command,
    CommandError,
    CommandField,
    decode_command,
    encode_response,
)
from drimbox.dimse.pdu import (
    PDV_COMMAND,
    PDV_LAST,
    AbortReason,
    PduType,
    ProtocolError,
    encode_abort,
    encode_p_data,
    encode_release_response,
    iter_pdvs,
    read_pdu,
)
from drimbox.dimse.status import StorageStatus, error_comment, storage_status_for
from drimbox.services.ingest import IngestService

__all__ = ["SPOOL_MEMORY_BYTES", "AcceptedContext", "Association"]

_log = logging.getLogger("drimbox.dimse")

SPOOL_MEMORY_BYTES = 4 << 20
"""A received data set is kept in memory up to this size, then in a temporary file."""

MAXIMUM_COMMAND_BYTES = 64 << 10
"""Largest command set accepted (a C-STORE-RQ is a few hundred bytes)."""

VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"


@dataclass(frozen=True)
class AcceptedContext:
    """A presentation context accepted at association set-up."""

    abstract_syntax: str
    transfer_syntax: str


class _Spool:
    """A data set being received: bytes in memory, moved to a temporary file past a size."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self._memory: io.BytesIO | None = io.BytesIO()
        self._stream: BinaryIO = self._memory

    @property
    def too_large(self) -> bool:
        return self.size > self.limit

    def write(self, fragment: memoryview) -> None:
        kept = not self.too_large
        self.size += len(fragment)
        if self.too_large:  # drained, not kept: the data set is refused
            if kept:
                self._replace_stream()
            return
        if self._memory is not None and self.size > SPOOL_MEMORY_BYTES:
            spilled = tempfile.TemporaryFile(prefix="drimbox-c-store-")  # noqa: SIM115
            spilled.write(self._memory.getbuffer())
            self._memory = None
            self._stream = spilled
        self._stream.write(fragment)

    def stream(self) -> BinaryIO:
        self._stream.seek(0)
        return self._stream

    def reset(self) -> None:
        """Forget the data set (its temporary file is deleted): ready for the next one."""
        self._replace_stream()
        self.size = 0

    def _replace_stream(self) -> None:
        self._stream.close()
        self._memory = io.BytesIO()
        self._stream = self._memory


class Association:
    """The data transfer phase of one accepted association.

    Parameters
    ----------
    sock
        The connected socket (TCP_NODELAY set).
    reader
        A buffered reader over ``sock``; it may hold bytes already read.
    contexts
        Accepted presentation contexts by ID.
    peer_maximum_length
        The largest P-DATA-TF the requestor receives (0: no limit).
    maximum_length
        The largest PDU variable field the box reads.
    source
        ``AE@address`` of the requestor, for logs and the audit trail.
    """

    def __init__(
        self,
        *,
        sock: socket.socket,
        reader: BinaryIO,
        contexts: dict[int, AcceptedContext],
        peer_maximum_length: int,
        maximum_length: int,
        source: str,
        ingest: IngestService,
    ) -> None:
        self._socket = sock
        self._reader = reader
        self._contexts = contexts
        self._peer_maximum_length = peer_maximum_length
        self._maximum_length = maximum_length
        self._source = source
        self._ingest = ingest
        self._command = bytearray()
        self._pending: tuple[int, Command] | None = None  # a command waiting for its data set
        self._spool = _Spool(ingest.max_instance_bytes)

    def serve(self) -> None:
        """Serve until release, abort, a protocol violation or a timeout; close the socket."""
        try:
            self._serve()
        except ProtocolError as error:
            _log.warning(
                "dimse.association_aborted source=%s reason=%s detail=%s",
                self._source,
                error.reason.name.lower(),
                error,
            )
            self._send_quietly(encode_abort(error.reason))
        except TimeoutError:
            _log.warning("dimse.association_timeout source=%s", self._source)
            self._send_quietly(encode_abort(AbortReason.NOT_SPECIFIED))
        except OSError as error:
            _log.info("dimse.association_lost source=%s error=%s", self._source, error)
        finally:
            self._spool.reset()
            self._close()

    def _serve(self) -> None:
        while True:
            pdu = read_pdu(self._reader, self._maximum_length)
            if pdu is None:
                _log.info("dimse.association_closed_by_peer source=%s", self._source)
                return
            pdu_type, body = pdu
            if pdu_type == PduType.P_DATA_TF:
                self._on_p_data(memoryview(body))
            elif pdu_type == PduType.A_RELEASE_RQ:
                if self._pending is not None:
                    _log.warning("dimse.released_mid_message source=%s", self._source)
                self._socket.sendall(encode_release_response())
                _log.debug("dimse.association_released source=%s", self._source)
                return
            elif pdu_type == PduType.A_ABORT:
                _log.info("dimse.association_aborted_by_peer source=%s", self._source)
                return
            elif pdu_type in set(PduType):
                raise ProtocolError(
                    f"unexpected PDU type 0x{pdu_type:02X}", AbortReason.UNEXPECTED_PDU
                )
            else:
                raise ProtocolError(
                    f"unrecognised PDU type 0x{pdu_type:02X}", AbortReason.UNRECOGNIZED_PDU
                )

    def _on_p_data(self, body: memoryview) -> None:
        for context_id, control, fragment in iter_pdvs(body):
            if context_id not in self._contexts:
                raise ProtocolError(
                    f"PDV on presentation context {context_id}, which was not accepted",
                    AbortReason.UNEXPECTED_PDU_PARAMETER,
                )
            if control & PDV_COMMAND:
                self._on_command_fragment(context_id, control, fragment)
            else:
                self._on_data_fragment(context_id, control, fragment)

    def _on_command_fragment(self, context_id: int, control: int, fragment: memoryview) -> None:
        if self._pending is not None:
            raise ProtocolError(
                "command fragment while a data set was expected",
                AbortReason.UNEXPECTED_PDU_PARAMETER,
            )
        self._command += fragment
        if len(self._command) > MAXIMUM_COMMAND_BYTES:
            raise ProtocolError("command set too large", AbortReason.INVALID_PDU_PARAMETER_VALUE)
        if not control & PDV_LAST:
            return
        try:
            command = decode_command(bytes(self._command))
        except CommandError as error:
            raise ProtocolError(
                f"undecodable command set: {error}", AbortReason.INVALID_PDU_PARAMETER_VALUE
            ) from error
        finally:
            self._command.clear()
        if command.has_data_set:
            self._pending = (context_id, command)
        else:
            self._on_message(context_id, command)

    def _on_data_fragment(self, context_id: int, control: int, fragment: memoryview) -> None:
        if self._pending is None or self._pending[0] != context_id:
            raise ProtocolError(
                "data set fragment without its command", AbortReason.UNEXPECTED_PDU_PARAMETER
            )
        self._spool.write(fragment)
        if control & PDV_LAST:
            _, command = self._pending
            self._pending = None
            try:
                self._on_message(context_id, command)
            finally:
                self._spool.reset()

    def _on_message(self, context_id: int, command: Command) -> None:
        context = self._contexts[context_id]
        if command.command_field == CommandField.C_STORE_RQ and command.has_data_set:
            deferred: list[Callable[[], None]] = []
            try:
                status, comment = self._store(context, command, deferred)
                self._respond(context_id, command, CommandField.C_STORE_RSP, status, comment)
            finally:
                for announce in deferred:  # after the answer: off the sender's critical path
                    announce()
        elif command.command_field == CommandField.C_ECHO_RQ:
            if context.abstract_syntax == VERIFICATION_SOP_CLASS:
                status, comment = StorageStatus.SUCCESS, None
            else:
                status, comment = (
                    StorageStatus.SOP_CLASS_NOT_SUPPORTED,
                    "not a Verification context",
                )
            self._respond(context_id, command, CommandField.C_ECHO_RSP, status, comment)
        elif command.command_field == CommandField.C_CANCEL_RQ:
            return  # nothing to cancel: every request is answered before the next is read
        else:
            raise ProtocolError(
                f"DIMSE command 0x{command.command_field:04X} is not served here",
                AbortReason.UNEXPECTED_PDU_PARAMETER,
            )

    def _store(
        self, context: AcceptedContext, command: Command, deferred: list[Callable[[], None]]
    ) -> tuple[StorageStatus, str | None]:
        sop_instance_uid = command.affected_sop_instance_uid
        if command.affected_sop_class_uid != context.abstract_syntax:
            comment = f"SOP class {command.affected_sop_class_uid[:30]} is not this context's"
            _log.warning(
                "dimse.c_store_refused status=0x%04X source=%s sop_instance_uid=%s comment=%s",
                StorageStatus.SOP_CLASS_NOT_SUPPORTED,
                self._source,
                sop_instance_uid[:64],
                comment,
            )
            return StorageStatus.SOP_CLASS_NOT_SUPPORTED, error_comment(comment)
        try:
            if self._spool.too_large:
                raise self._ingest.refuse_too_large(
                    self._spool.size, source=self._source, sop_instance_uid=sop_instance_uid
                )
            self._ingest.store_dataset(
                self._spool.stream(),
                context.transfer_syntax,
                sop_class_uid=command.affected_sop_class_uid,
                sop_instance_uid=sop_instance_uid,
                source=self._source,
                deferred=deferred,
            )
        except Exception as error:
            status, comment = storage_status_for(error)
            if status is StorageStatus.PROCESSING_FAILURE:
                _log.exception("dimse.c_store_failed source=%s", self._source)
            return status, comment
        return StorageStatus.SUCCESS, None

    def _respond(
        self,
        context_id: int,
        command: Command,
        response_field: CommandField,
        status: StorageStatus,
        comment: str | None,
    ) -> None:
        message = encode_response(command, response_field, int(status), comment)
        self._socket.sendall(
            encode_p_data(context_id, PDV_COMMAND, message, self._peer_maximum_length)
        )

    def abort(self) -> None:
        """Abort from another thread (box stopping): send A-ABORT and shut the socket down."""
        self._send_quietly(encode_abort(AbortReason.NOT_SPECIFIED))
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)

    def _send_quietly(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self._socket.sendall(data)

    def _close(self) -> None:
        try:
            self._reader.close()
        finally:
            self._socket.close()
