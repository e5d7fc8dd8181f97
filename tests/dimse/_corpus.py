"""Test data in every accepted transfer syntax, made with dcmtk and pydicom encoders."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
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

from drimbox.dicom.synthetic import SyntheticStudy, make_instance

__all__ = ["STORESCU_PROPOSAL", "TRANSFER_SYNTAX_CASES", "make_file"]

# Transfer syntax UID -> dcmtk converter command line (input and output paths appended), or
# None when pydicom's encoders make it.
_DCMTK_TOOLS: dict[str, tuple[str, ...] | None] = {
    ExplicitVRLittleEndian: ("/usr/bin/dcmconv", "+te"),
    ImplicitVRLittleEndian: ("/usr/bin/dcmconv", "+ti"),
    ExplicitVRBigEndian: ("/usr/bin/dcmconv", "+tb"),
    DeflatedExplicitVRLittleEndian: ("/usr/bin/dcmconv", "+td"),
    JPEGBaseline8Bit: ("/usr/bin/dcmcjpeg", "+eb"),
    JPEGExtended12Bit: ("/usr/bin/dcmcjpeg", "+ee"),
    JPEGLossless: ("/usr/bin/dcmcjpeg", "+el"),
    JPEGLosslessSV1: ("/usr/bin/dcmcjpeg", "+e1"),
    JPEGLSLossless: ("/usr/bin/dcmcjpls", "+el"),
    JPEGLSNearLossless: ("/usr/bin/dcmcjpls", "+en"),
    RLELossless: ("/usr/bin/dcmcrle",),
    JPEG2000Lossless: None,
    JPEG2000: None,
}

TRANSFER_SYNTAX_CASES = tuple(_DCMTK_TOOLS)
"""Every transfer syntax the storage tests exercise."""

STORESCU_PROPOSAL: dict[str, tuple[str, ...]] = {
    ImplicitVRLittleEndian: ("-xi",),
    ExplicitVRBigEndian: ("-xb",),
    JPEGBaseline8Bit: ("-xy",),
    JPEGExtended12Bit: ("-xx",),
    JPEGLosslessSV1: ("-xs",),
    JPEGLSLossless: ("-xt",),
    JPEGLSNearLossless: ("-xu",),
    JPEG2000Lossless: ("-xv",),
    JPEG2000: ("-xw",),
    RLELossless: ("-xr",),
}
"""storescu options making it propose (and so send unchanged) the file's transfer syntax first;
storescu has none for JPEG Lossless process 14, and re-deflates deflated data sets: pynetdicom
sends those two unchanged."""


def make_file(transfer_syntax_uid: str, directory: Path, seed: str = "ts") -> Path:
    """Write one synthetic instance encoded in ``transfer_syntax_uid``; return its path."""
    study = SyntheticStudy(seed=f"{seed}-{transfer_syntax_uid}", rows=64, columns=64)
    ds = make_instance(study, 0, 0)
    if transfer_syntax_uid == JPEGBaseline8Bit:
        pixels = (np.frombuffer(ds.PixelData, dtype="<u2") >> 4).astype(np.uint8)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = pixels.tobytes()
        del ds.RescaleIntercept, ds.RescaleSlope
    source = directory / f"{transfer_syntax_uid}.source.dcm"
    target = directory / f"{transfer_syntax_uid}.dcm"
    ds.save_as(source, enforce_file_format=True)
    tool = _DCMTK_TOOLS[transfer_syntax_uid]
    if tool is None:
        encoded = dcmread(source)
        if transfer_syntax_uid == JPEG2000:
            encoded.compress(transfer_syntax_uid, j2k_cr=[10], encoding_plugin="pylibjpeg")
        else:
            encoded.compress(transfer_syntax_uid, encoding_plugin="pylibjpeg")
        encoded.save_as(target, enforce_file_format=True)
    else:
        subprocess.run([*tool, str(source), str(target)], check=True, capture_output=True)
    written = dcmread(target, stop_before_pixels=True)
    assert written.file_meta.TransferSyntaxUID == transfer_syntax_uid
    return target
