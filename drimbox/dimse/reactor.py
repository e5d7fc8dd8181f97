"""Event-driven pynetdicom reactors: an acceptor that waits on events instead of polling.

Association reactor
-------------------

pynetdicom's acceptor reactor (``Association._run_reactor``, pynetdicom 3.0.4) sleeps a fixed
1 ms before each look at its DIMSE message queue, so every C-STORE waits 0.5 ms on average
(more on a loaded machine, where a 1 ms sleep often lasts 2) between its last P-DATA-TF and
its handler. :class:`EventDrivenAssociation` runs the same loop, in the same order, with the
same pause protocol (``_reactor_checkpoint``/``_is_paused``, used by ``send_*``/``release``),
but replaces that sleep by a wait on the DIMSE message queue's condition: a decoded message
wakes the reactor at once; with no message, it wakes every :data:`REACTOR_IDLE_SECONDS` to look
for release, abort, a dead DUL thread and the network timeout, as pynetdicom does. Idle CPU use
is thus that of pynetdicom's own loop.

DUL reactor
-----------
pynetdicom's DUL thread (``DULServiceProvider.run_reactor``) sleeps ``_run_loop_delay``
whenever it finds nothing to do, then polls the socket (``select`` with no timeout) and the
queue of primitives to send. Short delays cut latency but make the thread spin (on a
two-core machine it competes with the C-STORE handler); long delays add latency to every
P-DATA-TF received and every response sent. :class:`EventDrivenDUL` runs the same loop but
waits in ``select`` on the association's socket *and* on a wake-up socket pair written by
``send_pdu``: incoming data and outgoing primitives are handled at once, and an idle
association wakes only every :data:`DUL_IDLE_SECONDS` (ARTIM timer, events put by other
threads, stop requests).

Both loops are adapted from pynetdicom 3.0.4 (MIT License, copyright the pynetdicom
contributors; the notice travels with the installed package), checked against that version
(``pyproject.toml`` pins it);
:func:`make_event_driven` turns a freshly created acceptor into one, and
:class:`EventDrivenRequestHandler` does so for every association a server accepts.

Association set-up
------------------
pynetdicom deep-copies the server's supported contexts for each association;
:class:`AcceptorContexts` makes that copy cheap (tens of milliseconds saved per association).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import queue
import select
import socket
import ssl
import time
from typing import Any, cast

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import RequestHandler

__all__ = [
    "DUL_IDLE_SECONDS",
    "REACTOR_IDLE_SECONDS",
    "AcceptorContexts",
    "EventDrivenAssociation",
    "EventDrivenDUL",
    "EventDrivenRequestHandler",
    "make_event_driven",
]

_log = logging.getLogger("drimbox.dimse")

REACTOR_IDLE_SECONDS = 0.001
"""How often an idle reactor looks for release/abort (pynetdicom's fixed sleep)."""

DUL_IDLE_SECONDS = 0.001
"""How often an idle DUL thread wakes up (pynetdicom's default ``_run_loop_delay``)."""

_A_ABORT_SOURCE_PROVIDER = 0x02  # PS3.8 §9.3.8: DICOM UL service-provider initiated abort
_WAKE_BYTES = 4096


def make_event_driven(association: Association) -> None:
    """Turn a new acceptor (not started yet) and its DUL into event-driven ones.

    Same objects, same state: the subclasses add a wake-up socket pair and replace the loops.
    """
    association.__class__ = EventDrivenAssociation
    dul = association.dul
    dul.__class__ = EventDrivenDUL
    cast(EventDrivenDUL, dul).install_wakeup()


class EventDrivenAssociation(Association):
    """pynetdicom's acceptor :class:`~pynetdicom.association.Association`, woken by messages."""

    def _wait_for_message(self) -> None:
        messages = self.dimse.msg_queue
        with messages.not_empty:  # notified by every put()
            if not messages.queue:
                messages.not_empty.wait(REACTOR_IDLE_SECONDS)

    def _run_reactor(self) -> None:
        """Run pynetdicom's acceptor reactor loop, waiting on the message queue, not a sleep."""
        self._is_paused = False
        while not self._kill:
            self._wait_for_message()

            # The acceptor's send_*() methods pause the reactor so that it does not take
            # their responses off the queue.
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False

            context_id, message = self.dimse.get_msg(block=False)
            if message:
                self._serve_request(message, cast(int, context_id))

            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                _log.debug("dimse.association_released")
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            if self.acse.is_aborted():
                _log.debug("dimse.association_aborted")
                self.dul.receive_pdu(wait=False)  # so that EVT_ACSE_RECV fires
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            if self.dul.idle_timer_expired():
                _log.error("dimse.network_timeout")
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return


class EventDrivenDUL(DULServiceProvider):
    """pynetdicom's DUL service provider, woken by socket data and by primitives to send."""

    _wake_receiver: socket.socket | None = None
    _wake_sender: socket.socket | None = None

    def install_wakeup(self) -> None:
        """Create the wake-up socket pair (before the thread starts)."""
        self._wake_receiver, self._wake_sender = socket.socketpair()
        self._wake_receiver.setblocking(False)
        self._wake_sender.setblocking(False)

    def send_pdu(self, primitive: Any) -> None:
        """Queue a primitive to send, and wake the reactor up."""
        super().send_pdu(primitive)
        sender = self._wake_sender
        if sender is not None:
            # OSError: the pair is full (already woken) or closed (the reactor stopped).
            with contextlib.suppress(OSError):
                sender.send(b"\x00")

    def _wait_for_activity(self) -> None:
        receiver = self._wake_receiver
        transport = self.socket.socket if self.socket is not None else None
        if receiver is None or transport is None:
            time.sleep(DUL_IDLE_SECONDS)
            return
        if isinstance(transport, ssl.SSLSocket) and transport.pending():
            return  # decrypted bytes already buffered: select() would not see them
        try:
            readable, _, _ = select.select([transport, receiver], [], [], DUL_IDLE_SECONDS)
        except (OSError, ValueError):  # socket closed meanwhile: the loop notices
            return
        if receiver in readable:
            try:
                while receiver.recv(_WAKE_BYTES):
                    pass
            except OSError:  # drained (EAGAIN)
                pass

    def _close_wakeup(self) -> None:
        receiver, sender = self._wake_receiver, self._wake_sender
        self._wake_receiver = self._wake_sender = None
        for end in (receiver, sender):
            if end is not None:
                end.close()

    def run(self) -> None:
        """Thread body: the event-driven loop.

        pynetdicom's ``Thread`` target is the base class's ``run_reactor``, bound before the
        class was changed; the box leaves ``_config.PASS_CONTEXTVARS`` off, so that target
        carries no context to keep.
        """
        self.run_reactor()

    def run_reactor(self) -> None:
        """Run pynetdicom's DUL loop, waiting in ``select`` instead of sleeping."""
        try:
            self._run_event_driven()
        finally:
            self._close_wakeup()

    def _run_event_driven(self) -> None:
        self._idle_timer.start()
        idle = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
                idle = True
            if idle:
                self._wait_for_activity()
            if self._kill_thread:
                break
            # The ARTIM timer first, so that its event is queued ahead of any other.
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                # Per loop: either encode and send one primitive, or receive one PDU.
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception:
                _log.exception("dimse.dul_failed: aborting the association")
                # Bypass the state machine, which the exception may have left inconsistent.
                abort = A_ABORT_RQ()
                abort.source = _A_ABORT_SOURCE_PROVIDER
                abort.reason_diagnostic = 0x00
                if self.socket is not None:
                    self.socket.send(abort.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                idle = True
                continue
            self.state_machine.do_action(event)
            idle = False


class AcceptorContexts(list[PresentationContext]):
    """The server's supported contexts, copied cheaply for each new association.

    pynetdicom deep-copies them per association (about 130 storage SOP classes x 16 transfer
    syntaxes: tens of milliseconds, more on a loaded machine). Their only mutable part is
    the transfer syntax list (UIDs, ints and flags are immutable), so a shallow copy of each
    context with its own list is an equivalent copy.
    """

    def __deepcopy__(self, memo: dict[int, object]) -> list[PresentationContext]:
        copies = []
        for context in self:
            duplicate = copy.copy(context)
            duplicate._transfer_syntax = list(context._transfer_syntax)
            copies.append(duplicate)
        return copies


class EventDrivenRequestHandler(RequestHandler):
    """pynetdicom's request handler, building event-driven acceptors (:func:`make_event_driven`)."""

    def _create_association(self) -> Association:
        association = super()._create_association()
        make_event_driven(association)
        return association
