"""Image data sets for the pixel-data tests: multi-frame, RGB, signed, smooth, 1-bit, non-image.

Built on :func:`drimbox.dicom.synthetic.make_instance`, so they carry every Patient/Study/Series
attribute a real instance does.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels.utils import pack_bits
from pydicom.uid import BasicTextSRStorage, ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from drimbox.dicom.synthetic import SyntheticStudy, make_instance, synthetic_uid

__all__ = [
    "dcmtk",
    "make_bitmap",
    "make_grayscale",
    "make_rgb",
    "make_structured_report",
    "part10",
    "psnr",
]


def part10(dataset: Dataset) -> bytes:
    """Serialise ``dataset`` as a Part 10 file."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def make_grayscale(
    *,
    rows: int = 64,
    columns: int = 64,
    frames: int = 1,
    signed: bool = False,
    smooth: bool = False,
    photometric: str = "MONOCHROME2",
    seed: str = "pixels",
) -> Dataset:
    """A 12-bit CT-like instance; each frame differs; ``smooth`` gives a gentle gradient."""
    dataset = make_instance(SyntheticStudy(seed=seed, rows=rows, columns=columns), 0, 0)
    y, x = np.mgrid[0:rows, 0:columns]
    stack = []
    for frame in range(frames):
        if smooth:
            image = 1000 + 800 * np.sin(x / columns * np.pi) * np.cos(y / rows * np.pi / 2)
            image = image + 10 * frame
        else:
            rng = np.random.default_rng(frame)
            image = (x * 17 + y * 5 + frame * 101) % 4096 + rng.integers(0, 16, (rows, columns))
        stack.append(np.clip(image, 0, 4095))
    pixels = np.stack(stack).round()
    if signed:
        pixels = pixels - 2048
    dtype = "<i2" if signed else "<u2"
    dataset.PixelRepresentation = int(signed)
    dataset.PhotometricInterpretation = photometric
    dataset.PixelData = pixels.astype(dtype).tobytes()
    if frames > 1:
        dataset.NumberOfFrames = frames
    return dataset


def make_rgb(*, rows: int = 48, columns: int = 64, frames: int = 1) -> Dataset:
    """An 8-bit RGB secondary capture, colour-by-pixel."""
    dataset = make_instance(SyntheticStudy(seed="rgb", modality="OT"), 0, 0)
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    y, x = np.mgrid[0:rows, 0:columns]
    stack = [
        np.stack(((x * 4 + f * 30) % 256, (y * 5) % 256, ((x + y) * 2 + f) % 256), axis=-1)
        for f in range(frames)
    ]
    for keyword in ("WindowCenter", "WindowWidth"):
        del dataset[keyword]
    dataset.Rows, dataset.Columns = rows, columns
    dataset.SamplesPerPixel = 3
    dataset.PhotometricInterpretation = "RGB"
    dataset.PlanarConfiguration = 0
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 8, 8, 7
    dataset.PixelData = np.stack(stack).astype(np.uint8).tobytes()
    if frames > 1:
        dataset.NumberOfFrames = frames
    return dataset


def make_bitmap(
    *, rows: int = 5, columns: int = 7, frames: int = 3
) -> tuple[Dataset, npt.NDArray[np.uint8]]:
    """A 1-bit multi-frame image whose frames do not start on a byte (35 bits each)."""
    dataset = make_instance(SyntheticStudy(seed="bits", modality="OT"), 0, 0)
    pixels = np.arange(frames * rows * columns).reshape(frames, rows, columns) % 3 == 0
    pixels = pixels.astype(np.uint8)
    for keyword in ("WindowCenter", "WindowWidth"):
        del dataset[keyword]
    dataset.Rows, dataset.Columns = rows, columns
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 1, 1, 0
    dataset.NumberOfFrames = frames
    dataset.PixelData = pack_bits(pixels)
    return dataset, pixels


def make_structured_report() -> Dataset:
    """A Basic Text SR without pixel data (a non-image object)."""
    dataset = make_instance(SyntheticStudy(seed="sr", modality="OT"), 0, 0)
    keep = {
        "SpecificCharacterSet",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "PatientID",
        "PatientName",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "InstanceNumber",
    }
    for element in list(dataset):
        if element.keyword not in keep:
            del dataset[element.tag]
    uid = synthetic_uid("sr", "instance")
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = BasicTextSRStorage
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = uid
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.Modality = "SR"
    dataset.ValueType = "CONTAINER"
    dataset.ContinuityOfContent = "SEPARATE"
    dataset.CompletionFlag = "COMPLETE"
    dataset.VerificationFlag = "UNVERIFIED"
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.TextValue = "No abnormality — énoncé accentué."
    dataset.ContentSequence = [item]
    return dataset


def dcmtk(tool: str, source: bytes, tmp_path: Path, *options: str) -> Dataset:
    """Run a dcmtk converter (``/usr/bin/<tool> [options] in out``) and read its output."""
    source_path, target_path = tmp_path / f"{tool}-in.dcm", tmp_path / f"{tool}-out.dcm"
    source_path.write_bytes(source)
    subprocess.run(
        [f"/usr/bin/{tool}", *options, str(source_path), str(target_path)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return dcmread(target_path)


def psnr(reference: npt.NDArray[np.generic], test: npt.NDArray[np.generic], peak: float) -> float:
    """Peak signal-to-noise ratio in dB."""
    error = np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else float(10 * np.log10(peak**2 / error))
