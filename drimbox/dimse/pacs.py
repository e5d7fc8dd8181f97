"""The site's PACS as the source workflow sees it: C-FIND then C-MOVE to this box (SCU).

Satisfies :class:`drimbox.ports.Pacs`. The PACS must know this box's AE title as a move
destination (in Orthanc: ``DicomModalities``).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from drimbox.config import Peer
from drimbox.errors import PacsError

__all__ = ["DimsePacs", "QueryRetrieveStatus"]

_log = logging.getLogger("drimbox.dimse.pacs")


class QueryRetrieveStatus:
    """C-FIND / C-MOVE response statuses used here (PS3.4 §C.4.1.1.4, §C.4.2.1.5)."""

    SUCCESS = 0x0000
    PENDING = 0xFF00
    PENDING_WARNING = 0xFF01
    WARNING_SUB_OPERATIONS = 0xB000
    """Sub-operations complete, one or more failures or warnings (PS3.4 §C.4.2.1.5)."""


def _set_nodelay(event: Any) -> None:
    sock = event.assoc.dul.socket.socket
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class DimsePacs:
    """C-FIND/C-MOVE client of one PACS.

    Parameters
    ----------
    calling_aet
        This box's AE title (also the C-MOVE destination).
    peer
        The PACS.
    timeout
        Seconds for connection, network and DIMSE timeouts.
    """

    def __init__(self, *, calling_aet: str, peer: Peer, timeout: float = 30.0) -> None:
        self._calling_aet = calling_aet
        self._peer = peer
        self._timeout = timeout

    def _associate(self, context: str) -> Any:
        ae = AE(ae_title=self._calling_aet)
        ae.add_requested_context(context)
        ae.acse_timeout = self._timeout
        ae.dimse_timeout = self._timeout
        ae.network_timeout = self._timeout
        ae.connection_timeout = self._timeout
        assoc = ae.associate(
            self._peer.host,
            self._peer.port,
            ae_title=self._peer.aet,
            evt_handlers=[(evt.EVT_CONN_OPEN, _set_nodelay)],
        )
        if not assoc.is_established:
            raise PacsError(
                f"cannot associate with PACS {self._peer.aet} at "
                f"{self._peer.host}:{self._peer.port} (rejected, aborted or unreachable)"
            )
        return assoc

    def find_studies(
        self, study_instance_uid: str | None = None, accession_number: str | None = None
    ) -> list[str]:
        """Return the StudyInstanceUIDs the PACS holds matching either key (C-FIND, STUDY)."""
        found: list[str] = []
        for key, value in (
            ("StudyInstanceUID", study_instance_uid),
            ("AccessionNumber", accession_number),
        ):
            if not value:
                continue
            identifier = Dataset()
            identifier.QueryRetrieveLevel = "STUDY"
            identifier.StudyInstanceUID = ""
            identifier.AccessionNumber = ""
            setattr(identifier, key, value)
            assoc = self._associate(StudyRootQueryRetrieveInformationModelFind)
            try:
                for status, match in assoc.send_c_find(
                    identifier, StudyRootQueryRetrieveInformationModelFind
                ):
                    code = getattr(status, "Status", None)
                    if code is None:
                        raise PacsError("the PACS did not answer the C-FIND in time")
                    if code in (QueryRetrieveStatus.PENDING, QueryRetrieveStatus.PENDING_WARNING):
                        uid = str(getattr(match, "StudyInstanceUID", "") or "")
                        if uid and uid not in found:
                            found.append(uid)
                    elif code != QueryRetrieveStatus.SUCCESS:
                        raise PacsError(f"the PACS refused the C-FIND (status 0x{code:04X})")
            finally:
                assoc.release()
        return found

    def retrieve_study(self, study_instance_uid: str) -> int:
        """C-MOVE the study to this box; return the completed sub-operations."""
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = study_instance_uid
        assoc = self._associate(StudyRootQueryRetrieveInformationModelMove)
        completed = 0
        try:
            for status, _ in assoc.send_c_move(
                identifier, self._calling_aet, StudyRootQueryRetrieveInformationModelMove
            ):
                code = getattr(status, "Status", None)
                if code is None:
                    raise PacsError("the PACS did not answer the C-MOVE in time")
                completed = int(getattr(status, "NumberOfCompletedSuboperations", completed) or 0)
                if code in (QueryRetrieveStatus.PENDING, QueryRetrieveStatus.PENDING_WARNING):
                    continue
                failed = int(getattr(status, "NumberOfFailedSuboperations", 0) or 0)
                if code in (
                    QueryRetrieveStatus.SUCCESS,
                    QueryRetrieveStatus.WARNING_SUB_OPERATIONS,
                ):
                    if failed:
                        _log.warning(
                            "pacs.move_partial study=%s completed=%s failed=%s",
                            study_instance_uid,
                            completed,
                            failed,
                        )
                    return completed
                raise PacsError(f"the PACS refused the C-MOVE (status 0x{code:04X})")
        finally:
            assoc.release()
        return completed
