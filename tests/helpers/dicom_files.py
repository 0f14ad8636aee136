"""Tiny uncompressed DICOM files for tests, written with pydicom: the tests' one DICOM writer.

Imported as ``from dicom_files import write_dicom`` (``tests`` is on pytest's pythonpath).
pydicom is imported inside the writer, through ``pytest.importorskip``, so a test module that
imports this one still collects in a session without pydicom (the test using it is skipped),
and nothing here imports torch (diffaug's torch-free session imports it too).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # SOP class of every file written here
FULL_12_BIT_WINDOW = (2048.0, 4096.0)  # (center, width) spanning the 12-bit stored range
CT_RESCALE = (1.0, -1024.0)  # (slope, intercept): stored values to Hounsfield-like units

# 4 x 4, 12-bit: enough for tests that only read attributes. Read-only: a shared default.
TINY_PIXELS = np.arange(16, dtype=np.uint16).reshape(4, 4)
TINY_PIXELS.flags.writeable = False


def write_dicom(path: Path, pixels: np.ndarray = TINY_PIXELS, *, bits_stored: int = 12,
                photometric: str = "MONOCHROME2", window: tuple[float, float] | None = None,
                rescale: tuple[float, float] | None = None, preamble: bool = True,
                patient_id: str | None = "P1", transfer_syntax: str | None = None) -> Path:
    """Write a Secondary Capture DICOM file holding ``pixels`` ((H, W) or (F, H, W)); return
    ``path``, its folder created if needed.

    Pixel attributes follow ``pixels``' dtype (signed for a signed dtype) and ``bits_stored``.
    Every file has SOP, series (one per folder) and study UIDs, derived from its path so reruns
    write the same bytes, Modality CT and ImageType ORIGINAL\\PRIMARY\\AXIAL: what diffaug's
    derived files copy or replace. ``patient_id=None`` leaves PatientID out (a file without a
    group). ``window`` is (center, width), ``rescale`` (slope, intercept); ``None`` leaves the
    attributes out. ``preamble=False`` writes no preamble nor DICM word (a file found only by
    its extension). ``transfer_syntax`` claims a compressed syntax the pixel bytes do not
    have (a file no pixel handler decodes); otherwise Explicit VR Little Endian.
    """
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(path)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["series", str(path.parent)])
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["study"])
    if patient_id is not None:
        ds.PatientID = patient_id
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.set_pixel_data(pixels, photometric, bits_stored, generate_instance_uid=False)
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if transfer_syntax is not None:
        ds.file_meta.TransferSyntaxUID = pydicom.uid.UID(transfer_syntax)
        ds.PixelData = encapsulate([b"\0" * 16])
    path.parent.mkdir(parents=True, exist_ok=True)
    # The encoding is given: a claimed syntax pydicom does not know would not tell it.
    ds.save_as(path, enforce_file_format=preamble, implicit_vr=False, little_endian=True)
    return path
