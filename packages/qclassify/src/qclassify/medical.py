"""DICOM and NIfTI inputs, read by diffaug's torch-free reader (`diffaug.medical`, installed by
``pip install 'qclassify[dicom]'``), imported only when a medical file is met.

A sample of a multi-frame DICOM file or a NIfTI volume is one frame: with ``frames="middle"``
(the default) each file is one sample, its middle frame (``frame`` None); with ``frames="all"``
each frame is a sample (``frame`` 0, 1, ...), and all frames of a file are one group
(`group_of`), kept in one split.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import numpy as np

__all__ = ["MEDICAL_EXTRA", "MEDICAL_SUFFIXES", "ImageRef", "frame_indices", "is_medical",
           "read_medical"]

MEDICAL_EXTRA = "qclassify[dicom]"
# diffaug.medical's DICOM_SUFFIXES + NIFTI_SUFFIXES (a test keeps them in step): recognised
# without diffaug, so that a missing extra is named instead of "no images".
MEDICAL_SUFFIXES = (".dcm", ".dicom", ".nii", ".nii.gz")


class ImageRef(NamedTuple):
    """One image sample: a file, and for a multi-frame file or volume the frame (None: the
    middle one)."""

    path: Path
    frame: int | None = None


def is_medical(path: str | os.PathLike) -> bool:
    """A DICOM/NIfTI file by its extension, or (with the extra) a DICOM file without one."""
    path = Path(path)
    if path.name.lower().endswith(MEDICAL_SUFFIXES):
        return True
    if path.suffix:
        return False
    try:
        from diffaug.medical import is_medical as has_dicom_preamble
    except ImportError:  # without the extra, only extensions can tell
        return False
    return has_dicom_preamble(path)


def read_medical(path: str | os.PathLike, *, frame: int | None = None,
                 window: tuple[float, float] | None = None) -> np.ndarray:
    """Display intensities in [0, 1], float32 (H, W) or (H, W, 3) (`diffaug.medical.read_unit`:
    modality LUT, first window or `window`, MONOCHROME1 inverted).

    Raises:
        ImportError: the ``dicom`` extra is missing (one line naming ``qclassify[dicom]``).
        ValueError: the file cannot be decoded, or has no such frame.
    """
    medical = _reader(path)
    try:
        return medical.read_unit(path, frame=frame, window=window)
    except medical.MedicalExtraMissingError as err:
        raise ImportError(medical.missing_extra_message(path, err.name, MEDICAL_EXTRA)) from None


def frame_indices(path: str | os.PathLike, frames: str) -> list[int | None]:
    """The frames of one file that are samples: [None] (the middle one) for ``"middle"``."""
    if frames == "middle":
        return [None]
    medical = _reader(path)
    try:
        return [index for _, index in medical.list_samples(path, frames)]
    except medical.MedicalExtraMissingError as err:
        raise ImportError(medical.missing_extra_message(path, err.name, MEDICAL_EXTRA)) from None


def _reader(path: str | os.PathLike) -> ModuleType:
    try:
        from diffaug import medical
    except ImportError:
        raise ImportError(f"{path}: reading DICOM/NIfTI files needs diffaug's reader: "
                          f"pip install '{MEDICAL_EXTRA}'") from None
    return medical
