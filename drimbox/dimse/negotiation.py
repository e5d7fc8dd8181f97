"""Association negotiation (PS3.8 §9.3.2-9.3.4, PS3.7 Annex D): who may associate, what is accepted.

- **Presentation contexts**: Verification, and every storage SOP class pynetdicom knows (images,
  SR, KOS, encapsulated PDF/CDA, waveforms...) with the transfer syntaxes of
  :data:`STORAGE_TRANSFER_SYNTAXES`; the first syntax the requestor proposes that the box
  supports is accepted (PS3.8 §9.3.2.2), and the data set is stored as received.
- **AE policy**: a called AE title other than the box's is rejected ("called AE title not
  recognised"). With configured peers, only a (calling AE title, address) pair of the
  allow-list is accepted; without peers (the loopback-only development default) any calling AE
  title from a loopback address is. Others get A-ASSOCIATE-RJ rejected-permanent, source
  service-user, "calling AE title not recognised". A protocol version or application context
  the box does not support, and an association over the limit (rejected-transient, "local limit
  exceeded"), are refused too.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import NamedTuple

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
from drimbox.dimse.association import VERIFICATION_SOP_CLASS
from drimbox.dimse.pdu import APPLICATION_CONTEXT_NAME, AssociateRequest, ContextResult
from drimbox.dimse.status import (
    ASSOCIATE_RJ_RESULT_REJECTED_PERMANENT,
    ASSOCIATE_RJ_SOURCE_SERVICE_USER,
    AssociateRejectReason,
)

__all__ = [
    "STORAGE_TRANSFER_SYNTAXES",
    "AcceptorPolicy",
    "ContextAnswer",
    "Rejection",
    "negotiate",
    "supported_syntaxes",
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

_VERIFICATION_TRANSFER_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_RESULT_REJECTED_TRANSIENT = 0x02  # PS3.8 §9.3.4 Result
_SOURCE_PROVIDER_ACSE = 0x02  # PS3.8 §9.3.4 Source: service-provider (ACSE related)
_SOURCE_PROVIDER_PRESENTATION = 0x03  # service-provider (presentation related)
_REASON_APPLICATION_CONTEXT_NOT_SUPPORTED = 0x02  # source service-user
_REASON_PROTOCOL_VERSION_NOT_SUPPORTED = 0x02  # source provider ACSE
_REASON_LOCAL_LIMIT_EXCEEDED = 0x02  # source provider presentation


def supported_syntaxes() -> dict[str, tuple[str, ...]]:
    """Abstract syntax -> the transfer syntaxes accepted for it."""
    supported = {VERIFICATION_SOP_CLASS: tuple(map(str, _VERIFICATION_TRANSFER_SYNTAXES))}
    for context in AllStoragePresentationContexts:
        supported[str(context.abstract_syntax)] = tuple(map(str, STORAGE_TRANSFER_SYNTAXES))
    return supported


class Rejection(NamedTuple):
    """An A-ASSOCIATE-RJ to send (PS3.8 §9.3.4), and why, for the log and the audit trail."""

    result: int
    source: int
    reason: int
    why: str


class ContextAnswer(NamedTuple):
    """The answer to one proposed presentation context."""

    context_id: int
    result: ContextResult
    transfer_syntax: str
    abstract_syntax: str


class AcceptorPolicy:
    """Who may associate with the box.

    Parameters
    ----------
    ae_title
        The box's AE title (the called AE title requestors must use).
    peers
        Allowed (AE title, host) pairs; empty means any calling AE title from a loopback
        address.
    """

    def __init__(self, ae_title: str, peers: tuple[Peer, ...]) -> None:
        self._ae_title = ae_title
        self._allowed = _resolve_peers(peers)

    def rejection(
        self, request: AssociateRequest, address: str, *, over_limit: bool
    ) -> Rejection | None:
        """Return the rejection ``request`` from ``address`` gets, or ``None`` to accept it."""
        if not request.supports_protocol_version:
            return Rejection(
                ASSOCIATE_RJ_RESULT_REJECTED_PERMANENT,
                _SOURCE_PROVIDER_ACSE,
                _REASON_PROTOCOL_VERSION_NOT_SUPPORTED,
                "protocol_version_not_supported",
            )
        if request.application_context != APPLICATION_CONTEXT_NAME:
            return Rejection(
                ASSOCIATE_RJ_RESULT_REJECTED_PERMANENT,
                ASSOCIATE_RJ_SOURCE_SERVICE_USER,
                _REASON_APPLICATION_CONTEXT_NOT_SUPPORTED,
                "application_context_name_not_supported",
            )
        if (policy := self._ae_rejection(request, address)) is not None:
            return Rejection(
                ASSOCIATE_RJ_RESULT_REJECTED_PERMANENT,
                ASSOCIATE_RJ_SOURCE_SERVICE_USER,
                int(policy),
                policy.name.lower(),
            )
        if over_limit:
            return Rejection(
                _RESULT_REJECTED_TRANSIENT,
                _SOURCE_PROVIDER_PRESENTATION,
                _REASON_LOCAL_LIMIT_EXCEEDED,
                "local_limit_exceeded",
            )
        return None

    def _ae_rejection(
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


def negotiate(
    request: AssociateRequest, supported: dict[str, tuple[str, ...]]
) -> list[ContextAnswer]:
    """Answer each proposed presentation context (PS3.8 §9.3.3.2)."""
    answers: list[ContextAnswer] = []
    seen: set[int] = set()
    for proposed in request.contexts:
        if proposed.context_id in seen:
            continue  # a duplicated ID: the first proposal is the one answered
        seen.add(proposed.context_id)
        echoed = proposed.transfer_syntaxes[0] if proposed.transfer_syntaxes else ""
        syntaxes = supported.get(proposed.abstract_syntax)
        if syntaxes is None:
            result, syntax = ContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED, echoed
        else:
            chosen = next((s for s in proposed.transfer_syntaxes if s in syntaxes), None)
            result, syntax = (
                (ContextResult.ACCEPTANCE, chosen)
                if chosen is not None
                else (ContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED, echoed)
            )
        answers.append(ContextAnswer(proposed.context_id, result, syntax, proposed.abstract_syntax))
    return answers


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
