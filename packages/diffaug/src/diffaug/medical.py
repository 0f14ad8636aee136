"""DICOM and NIfTI files: which files they are, their frames, and their pixels as a classifier or
FID sees them (display intensities in [0, 1]) or as ``diffaug balance`` augments them (stored
values). Writing synthetic copies is :mod:`diffaug.derived`'s.

pydicom and nibabel (the ``dicom`` extra) are imported at first use; without them a medical
file raises :class:`MedicalExtraMissingError`, whose message names the extra to install.

Display intensities of a grayscale DICOM frame, in this order:

1. Modality LUT (RescaleSlope/Intercept or a Modality LUT Sequence, ``apply_modality_lut``);
2. VOI LUT: the file's first window (WindowCenter/Width) or VOI LUT Sequence, or the caller's
   ``window=(center, width)`` instead (``apply_voi_lut``);
3. scaled to [0, 1] by the range the VOI transform can output (the window's output range maps
   to [0, 1]); without a window, by the modality values of the stored bit range
   (BitsStored, PixelRepresentation): a fixed scale per file type, never a per-image
   min-max, so that intensities mean the same in every file;
4. MONOCHROME1 (white is low) inverted, so that high is bright as in MONOCHROME2.

Colour DICOMs (RGB after pydicom's decoding) are divided by their bit range. NIfTI volumes are
read with nibabel's ``get_fdata`` (scl_slope/inter applied) and scaled by the volume's own
min-max (NIfTI has no window attribute), or by ``window``; arrays are taken as stored (first
axis = rows), without reorientation. Multi-frame DICOMs and 3-D volumes (axis 2 slices) are
either one sample, the middle frame (``frames="middle"``), or one sample per frame
(``frames="all"``): :func:`list_samples`.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from diffaug.io import UnreadableImageError

__all__ = ["DICOM_SUFFIXES", "FRAME_CHOICES", "MEDICAL_EXTRA", "NIFTI_SUFFIXES",
           "MedicalExtraMissingError", "StoredPixels", "frame_count", "is_medical",
           "list_samples", "medical_kind", "medical_suffix", "missing_extra_message", "read_stored", "read_unit",
           "require_medical_extra"]

DICOM_SUFFIXES = (".dcm", ".dicom")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: ``frames``: the middle frame of a multi-frame file or volume, or every frame as a sample.
FRAME_CHOICES = ("middle", "all")
MEDICAL_EXTRA = "diffaug[dicom]"
_MODULES = {"dicom": "pydicom", "nifti": "nibabel"}
# A DICOM Part 10 file: a 128-byte preamble, then the magic word.
_PREAMBLE_BYTES = 128
_DICOM_MAGIC = b"DICM"
_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
_INVERTED = "MONOCHROME1"


class MedicalExtraMissingError(ImportError):
    """A DICOM or NIfTI file met without pydicom/nibabel installed: ``name`` is the missing
    module, ``path`` the file (ImportError's own attributes, kept across processes)."""


def missing_extra_message(path: str | os.PathLike, module: str, extra: str) -> str:
    """The one-line error for a medical file without ``module``, naming the ``extra`` to
    install (qclassify names its own)."""
    return f"{path}: reading DICOM/NIfTI files needs {module}: pip install '{extra}'"


class StoredPixels(NamedTuple):
    """A file's pixels as stored, ready for :class:`diffaug.DiffusionAugmentor`: frames (or
    volume slices) are its channels, so each gets its own noise and shares t and gamma."""

    values: np.ndarray
    channel_axis: int | None
    intensity_range: tuple[float, float]


def medical_kind(path: str | os.PathLike) -> str | None:
    """``"dicom"``, ``"nifti"`` or None: by extension, or for a file without one, by the DICOM
    preamble and ``DICM`` magic word."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(DICOM_SUFFIXES):
        return "dicom"
    if path.suffix or not path.is_file():
        return None
    try:
        with open(path, "rb") as handle:
            head = handle.read(_PREAMBLE_BYTES + len(_DICOM_MAGIC))
    except OSError:
        return None
    return "dicom" if head[_PREAMBLE_BYTES:] == _DICOM_MAGIC else None


def is_medical(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a DICOM (.dcm, .dicom, or no extension with the DICM preamble) or
    NIfTI (.nii, .nii.gz) file."""
    return medical_kind(path) is not None


def medical_suffix(path: str | os.PathLike) -> str:
    """The file's medical extension as written (``.nii.gz`` whole); ``.dcm`` for a DICOM file
    without one."""
    name = Path(path).name
    for suffix in (*NIFTI_SUFFIXES[::-1], *DICOM_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[-len(suffix):]
    return DICOM_SUFFIXES[0]


def require_medical_extra(path: str | os.PathLike) -> Any:
    """The module that reads ``path`` (pydicom or nibabel); raises
    :class:`MedicalExtraMissingError` without it."""
    module = _MODULES[medical_kind(path) or "dicom"]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MedicalExtraMissingError(missing_extra_message(path, module, MEDICAL_EXTRA),
                                       name=module, path=os.fspath(path)) from None


def frame_count(path: str | os.PathLike) -> int:
    """Frames of a DICOM file (NumberOfFrames) or slices (axis 2) of a NIfTI volume."""
    if medical_kind(path) == "nifti":
        return _nifti_frames(_load_nifti(path).shape)
    dataset = _read_dicom(path, stop_before_pixels=True)
    return int(dataset.get("NumberOfFrames", 1) or 1)


def list_samples(path: str | os.PathLike, frames: str = "middle") -> list[tuple[Path, int]]:
    """The samples of one file as ``(path, frame_index)``: the middle frame, or every frame."""
    if frames not in FRAME_CHOICES:
        raise ValueError(f"frames must be one of {', '.join(FRAME_CHOICES)}; got {frames!r}.")
    count = frame_count(path)
    indices = range(count) if frames == "all" else [count // 2]
    return [(Path(path), index) for index in indices]


def read_unit(path: str | os.PathLike, *, frame: int | None = None,
              window: tuple[float, float] | None = None) -> NDArray[np.float32]:
    """One frame (default: the middle one) as display intensities in [0, 1], float32, shape
    (H, W) or (H, W, 3); see the module docstring for the scaling.

    Raises :class:`MedicalExtraMissingError` without the extra and
    :class:`diffaug.io.UnreadableImageError` (a ValueError) for a file that cannot be decoded:
    not DICOM/NIfTI, damaged, or compressed without the pixel-data plugin (named).
    """
    if window is not None and not window[1] > 0:
        raise ValueError(f"window width must be positive; got window={window}.")
    if medical_kind(path) == "nifti":
        return _nifti_unit(path, frame, window)
    dataset = _read_dicom(path)
    pixels = _select_frame(_decoded(dataset), dataset, frame)
    if int(dataset.get("SamplesPerPixel", 1)) > 1:
        return (pixels / _stored_range(dataset)[1]).astype(np.float32)
    return _grayscale_unit(dataset, pixels, window)


def read_stored(path: str | os.PathLike) -> StoredPixels:
    """Every frame of a file as stored (DICOM: decoded pixel values before any LUT; NIfTI: the
    unscaled data array) with the range that maps to [-1, 1]: the stored bit range for DICOM,
    the dtype's range (floats: the volume's min-max) for NIfTI."""
    if medical_kind(path) == "nifti":
        image = _load_nifti(path)
        values = _checked(path, lambda: np.asanyarray(image.dataobj.get_unscaled()))
        _nifti_frames(values.shape)
        low, high = ((float(values.min()), float(values.max())) if values.dtype.kind == "f"
                     else (float(np.iinfo(values.dtype).min), float(np.iinfo(values.dtype).max)))
        return StoredPixels(values, 2 if values.ndim == 3 else None, (low, high))
    dataset = _read_dicom(path)
    values = _decoded(dataset)
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1 and values.ndim == 4:
        raise UnreadableImageError("multi-frame colour DICOM cannot be augmented")
    channel_axis = 0 if frames > 1 else (-1 if values.ndim == 3 else None)
    return StoredPixels(values, channel_axis, _stored_range(dataset))


def _read_dicom(path: str | os.PathLike, *, stop_before_pixels: bool = False) -> Any:
    pydicom = require_medical_extra(path)
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except (pydicom.errors.InvalidDicomError, OSError, EOFError, ValueError, KeyError) as err:
        raise UnreadableImageError(f"not a readable DICOM file: {_first_line(err)}") from None


def _decoded(dataset: Any) -> np.ndarray:
    """The pixel data decoded by pydicom's handlers; a missing handler names its plugins."""
    if "PixelData" not in dataset:
        raise UnreadableImageError("the DICOM file holds no pixel data")
    try:
        return dataset.pixel_array
    except (RuntimeError, ValueError, AttributeError, KeyError, TypeError) as err:
        raise UnreadableImageError(_short_decoder_error(err)) from None


def _short_decoder_error(err: Exception) -> str:
    """pydicom's error on one line: its first sentence and the plugins it lists as missing."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if len(lines) > 1 and "missing dependencies" in lines[0]:
        return f"{lines[0].rstrip(':')}; install one of: {'; '.join(lines[1:])}"
    return lines[0] if lines else type(err).__name__


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _select_frame(pixels: np.ndarray, dataset: Any, frame: int | None) -> np.ndarray:
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    index = _frame_index(frame, frames)
    return pixels[index] if frames > 1 else pixels


def _frame_index(frame: int | None, frames: int) -> int:
    if frame is None:
        return frames // 2
    if not 0 <= frame < frames:
        raise ValueError(f"frame {frame} does not exist: the file has {frames} frame(s).")
    return frame


def _stored_range(dataset: Any) -> tuple[float, float]:
    """The values BitsStored bits can hold (signed when PixelRepresentation is 1)."""
    bits = int(dataset.BitsStored)
    if int(dataset.get("PixelRepresentation", 0)) == 1:
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0 ** bits - 1


def _grayscale_unit(dataset: Any, pixels: np.ndarray,
                    window: tuple[float, float] | None) -> NDArray[np.float32]:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if dataset.get("PhotometricInterpretation") not in _MONOCHROME:
        raise UnreadableImageError(f"photometric interpretation "
                                   f"{dataset.get('PhotometricInterpretation')!r} is not supported")
    if window is not None:  # the caller's window replaces the file's VOI LUT
        dataset.WindowCenter, dataset.WindowWidth = float(window[0]), float(window[1])
        dataset.pop("VOILUTSequence", None)
    modality = apply_modality_lut(pixels, dataset)
    bounds = apply_modality_lut(np.array(_stored_range(dataset)), dataset)
    if _has_voi(dataset):
        modality = apply_voi_lut(modality, dataset, index=0)
        bounds = apply_voi_lut(np.array(bounds), dataset, index=0)
    low, high = float(np.min(bounds)), float(np.max(bounds))
    unit = np.clip((np.asarray(modality, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    if dataset.PhotometricInterpretation == _INVERTED:
        unit = 1.0 - unit
    return unit.astype(np.float32)


def _has_voi(dataset: Any) -> bool:
    return "VOILUTSequence" in dataset or ("WindowCenter" in dataset and "WindowWidth" in dataset)


def _load_nifti(path: str | os.PathLike) -> Any:
    nibabel = require_medical_extra(path)
    try:
        return nibabel.load(os.fspath(path))
    except (nibabel.filebasedimages.ImageFileError, OSError, EOFError, ValueError) as err:
        raise UnreadableImageError(f"not a readable NIfTI file: {_first_line(err)}") from None


def _checked(path: str | os.PathLike, read: Any) -> np.ndarray:
    """``read()``, a nibabel data read, with a truncated or damaged file as unreadable."""
    try:
        return read()
    except (OSError, EOFError, ValueError) as err:
        raise UnreadableImageError(f"not a readable NIfTI file: {_first_line(err)}") from None


def _nifti_frames(shape: tuple[int, ...]) -> int:
    if len(shape) == 2:
        return 1
    if len(shape) == 3:
        return shape[2]
    raise UnreadableImageError(f"NIfTI of shape {shape}: only 2-D images and 3-D volumes are "
                               "read (a 4-D series needs one file per volume)")


def _nifti_unit(path: str | os.PathLike, frame: int | None,
                window: tuple[float, float] | None) -> NDArray[np.float32]:
    image = _load_nifti(path)
    volume = _checked(path, image.get_fdata)
    frames = _nifti_frames(volume.shape)
    plane = volume[:, :, _frame_index(frame, frames)] if volume.ndim == 3 else volume
    if window is not None:
        unit = _linear_window(plane, *window)
    else:
        low, high = float(volume.min()), float(volume.max())
        unit = (plane - low) / (high - low) if high > low else np.zeros_like(plane)
    return unit.astype(np.float32)


def _linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM's LINEAR window function (PS3.3 C.11.2.1.2.1) with output [0, 1]."""
    if width <= 1:
        return (values > center - 0.5).astype(np.float64)
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)
