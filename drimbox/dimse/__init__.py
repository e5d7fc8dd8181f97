"""The DIMSE adapter (pynetdicom): the box's DICOM node.

This package is the only place the box imports pynetdicom. pynetdicom keeps its settings in
module globals; :func:`configure_pynetdicom` sets the ones the box needs and is called by the
composition root (:mod:`drimbox.bootstrap`) and by tests, never at import time.
"""

from __future__ import annotations

__all__ = ["configure_pynetdicom"]


def configure_pynetdicom() -> None:
    """Set the pynetdicom globals the box relies on (idempotent).

    - ``STORE_RECV_CHUNKED_DATASET``: a received C-STORE data set is written to a temporary
      file as it arrives instead of being kept in memory, so memory stays flat whatever the
      instance size and the number of associations.
    - ``LOG_HANDLER_LEVEL = "none"``: no per-PDU/per-message debug handlers (they format every
      PDU even when debug logging is off, which costs throughput).
    """
    from pynetdicom import _config

    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.LOG_HANDLER_LEVEL = "none"
