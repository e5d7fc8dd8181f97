"""The DIMSE adapter: the box's DICOM node.

The acceptor (C-ECHO/C-STORE SCP) is the box's own (:mod:`drimbox.dimse.scp`); the PACS client
(C-FIND/C-MOVE SCU, :mod:`drimbox.dimse.pacs`) uses pynetdicom. This package is the only place
the box imports pynetdicom. pynetdicom keeps its settings in module globals;
:func:`configure_pynetdicom` sets the ones the box needs and is called by the composition root
(:mod:`drimbox.bootstrap`) and by tests, never at import time.
"""

from __future__ import annotations

__all__ = ["configure_pynetdicom"]


def configure_pynetdicom() -> None:
    """Set the pynetdicom globals the box relies on (idempotent).

    - ``LOG_HANDLER_LEVEL = "none"``: no per-PDU/per-message debug handlers (they format every
      PDU even when debug logging is off, which costs throughput).
    """
    from pynetdicom import _config

    _config.LOG_HANDLER_LEVEL = "none"
