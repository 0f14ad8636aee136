"""Synthetic DICOM and NIfTI files written by ``diffaug balance`` from medical sources.

Synthesis runs in stored-value space (:func:`diffaug.medical.read_stored`): the pixel values
before any LUT, scaled by their bit range to [-1, 1], diffused (eq. 1, 4), and written back with
the source's dtype, so every attribute that gives them meaning (PixelRepresentation,
BitsStored/Allocated, PhotometricInterpretation, rescale, window, NIfTI scl_slope/inter) is
copied unchanged. Every frame of a multi-frame file (every slice of a volume) is diffused, as
the channels of one image: one t and gamma per file (the manifest's), noise of its own per
frame and pixel.

DICOM output: the source's dataset with new pixel data, uncompressed Explicit VR Little Endian
(compressed sources are decoded: re-encoding them lossily would add a second, unrecorded
change), ImageType DERIVED\\SECONDARY, a DerivationDescription naming diffaug, t and gamma, a
SourceImageSequence item referencing the source, and new SOP and Series Instance UIDs derived
from (run seed, source UID), so reruns write the same bytes. All synthetic images of one source
series form one new series. NIfTI output: the source's affine and header, gzip-compressed
(without a timestamp) when the source is ``.nii.gz``.
"""

from __future__ import annotations

import copy
import gzip
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from diffaug.augment import DiffusionAugmentor, DiffusionDraw
from diffaug.io import atomic_write_bytes, sha256_hex
from diffaug.medical import medical_kind, medical_suffix, read_stored, require_medical_extra

__all__ = ["derived_dicom_bytes", "synthesize_medical", "synthetic_name"]

_DERIVED_IMAGE_TYPE = ("DERIVED", "SECONDARY")
_SYNTHETIC_PNG_SUFFIX = ".png"


def synthetic_name(source: str | os.PathLike, k: int) -> str:
    """``syn_<source-stem>_<k>`` with ``.png``, or the medical source's own extension (a DICOM
    file without one gets ``.dcm``)."""
    source = Path(source)
    if medical_kind(source) is None:
        return f"syn_{source.stem}_{k}{_SYNTHETIC_PNG_SUFFIX}"
    suffix = medical_suffix(source)
    stem = source.name[:-len(suffix)] if source.name.lower().endswith(suffix.lower()) else source.name
    return f"syn_{stem}_{k}{suffix}"


def synthesize_medical(settings: dict[str, Any], run_seed: int, source: Path,
                       variants: Sequence[tuple[Path, int]]) -> list[tuple[int, float, str]]:
    """Write one synthetic file per ``(target, seed)`` of ``variants`` from a DICOM or NIfTI
    ``source``; returns (t, gamma, sha256) of each."""
    stored = read_stored(source)
    augmentor = DiffusionAugmentor(**settings, channel_axis=stored.channel_axis,
                                   intensity_range=stored.intensity_range)
    encode = _dicom_encoder(source, run_seed) if medical_kind(source) == "dicom" else \
        _nifti_encoder(source)
    outcomes = []
    seeds = [seed for _, seed in variants]
    for (target, seed), (values, draw) in zip(variants, augmentor.variants(stored.values, seeds),
                                               strict=True):
        data = encode(values, seed, draw)
        atomic_write_bytes(target, data)
        outcomes.append((draw.t, draw.gamma, sha256_hex(data)))
    return outcomes


def _dicom_encoder(source: Path, run_seed: int) -> Any:
    pydicom = require_medical_extra(source)
    template = pydicom.dcmread(source)

    def encode(values: np.ndarray, seed: int, draw: DiffusionDraw) -> bytes:
        return derived_dicom_bytes(template, values, run_seed=run_seed, variant_seed=seed,
                                   t=draw.t, gamma=draw.gamma)

    return encode


def derived_dicom_bytes(source: Any, values: np.ndarray, *, run_seed: int, variant_seed: int,
                        t: int, gamma: float) -> bytes:
    """The synthetic DICOM file of ``values`` (the stored values of every frame of ``source``,
    a pydicom Dataset, which is not changed) as Explicit VR Little Endian bytes."""
    from pydicom.dataset import Dataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    dataset = copy.deepcopy(source)
    if dataset.file_meta.TransferSyntaxUID.is_compressed:
        dataset.decompress(generate_instance_uid=False)  # also RGB for YBR sources
    dataset.set_pixel_data(values, dataset.PhotometricInterpretation, int(dataset.BitsStored),
                           generate_instance_uid=False)
    source_uid = str(source.SOPInstanceUID)
    dataset.SOPInstanceUID = generate_uid(
        entropy_srcs=[str(run_seed), source_uid, str(variant_seed), "SOPInstanceUID"])
    dataset.SeriesInstanceUID = generate_uid(
        entropy_srcs=[str(run_seed), str(source.get("SeriesInstanceUID", source_uid)),
                      "SeriesInstanceUID"])
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.ImageType = [*_DERIVED_IMAGE_TYPE, *list(source.get("ImageType", []))[2:]]
    dataset.DerivationDescription = (f"diffaug forward diffusion (synthetic minority image): "
                                     f"t={t} gamma={gamma:.6f}")
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source_uid
    dataset.SourceImageSequence = [reference]
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _nifti_encoder(source: Path) -> Any:
    nibabel = require_medical_extra(source)
    image = nibabel.load(os.fspath(source))
    slope, inter = image.dataobj.slope, image.dataobj.inter
    compress = medical_suffix(source).lower().endswith(".gz")

    def encode(values: np.ndarray, seed: int, draw: DiffusionDraw) -> bytes:
        synthetic = type(image)(values, image.affine, image.header)
        synthetic.header.set_slope_inter(slope, inter)  # the source's scaling of stored values
        data = synthetic.to_bytes()
        return gzip.compress(data, mtime=0) if compress else data

    return encode
