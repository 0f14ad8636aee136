"""Fréchet and kernel Inception distances between image sets: the metric (pytorch-fid's
`fid_score.py`).

The pipeline behind `diffaug fid` and `balance --fid`: image folders, lists or pytorch-fid
.npz statistics -> Inception features (`diffaug.fid.features`, one network pass for every set)
-> statistics and FID (`diffaug.fid.frechet`) and, from the features, KID (`diffaug.fid.kid`).

Nothing here imports torch: statistics files and the distances work without the extra.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from diffaug.fid.features import InceptionFeatures
from diffaug.fid.frechet import FeatureStatistics, frechet_distance_between, npz_path
from diffaug.fid.images import list_images
from diffaug.fid.inception import FID_DIMS
from diffaug.fid.kid import KernelDistance, kernel_inception_distance
from diffaug.fid.runtime import require_fid_extra
from diffaug.io import MANIFEST_NAME, read_manifest

__all__ = [
    "FewImagesWarning",
    "FidReport",
    "compute_fid",
    "fid_of_balanced_classes",
    "save_fid_stats",
]

MIN_IMAGES = 2  # a covariance needs two feature vectors

ImageSource = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]  # noqa: UP007
#: ``progress(done_increment, total)``: called with 0 once the total is known, then per batch.
Progress = Callable[[int, int], None]


class FewImagesWarning(UserWarning):
    """A set has fewer images than feature dimensions: its covariance is singular."""


@dataclass(frozen=True)
class FidReport:
    """FID between two sets, KID when asked for, and the image counts (None for .npz inputs)."""

    fid: float
    kid: KernelDistance | None
    n_real: int | None
    n_other: int | None


def compute_fid(
    real: ImageSource,
    other: ImageSource,
    *,
    dims: int = 2048,
    batch_size: int = 50,
    device: str = "auto",
    num_workers: int | None = None,
    recursive: bool = False,
    kid: bool = False,
    progress: Progress | None = None,
    engine: str = "auto",
) -> FidReport:
    """FID (and KID) between two image folders, image lists or pytorch-fid .npz statistics.

    Same features, scaling and statistics as `python -m pytorch_fid REAL OTHER`, plus mixed
    sizes and 16-bit images (see `diffaug.fid.images`). Both inputs are checked (at least 2
    images each) before the network is built. KID is `diffaug.fid.kid.kernel_inception_distance`.
    `progress(done_increment, total)` is called with 0 once the number of images is known,
    then after every batch.
    """
    labels = [_label(real), _label(other)]
    stats = _statistics(
        [real, other], labels, recursive=recursive, progress=progress, dims=dims,
        batch_size=batch_size, device=device, num_workers=num_workers, engine=engine,
    )
    return _report(*stats, kid, labels)


def save_fid_stats(
    source: ImageSource,
    out: str | os.PathLike,
    *,
    dims: int = 2048,
    batch_size: int = 50,
    device: str = "auto",
    num_workers: int | None = None,
    recursive: bool = False,
    progress: Progress | None = None,
    engine: str = "auto",
) -> Path:
    """Write pytorch-fid's `mu`/`sigma` .npz of `source` to `out`; returns the written path."""
    if npz_path(out).exists():  # fail before the feature pass, not after it
        raise ValueError(f"{npz_path(out)}: already exists, not overwriting statistics")
    (stats,) = _statistics(
        [source], [_label(source)], recursive=recursive, progress=progress, dims=dims,
        batch_size=batch_size, device=device, num_workers=num_workers, engine=engine,
    )
    return stats.save(out)


def fid_of_balanced_classes(
    run_dir: str | os.PathLike,
    *,
    dims: int = 2048,
    batch_size: int = 50,
    device: str = "auto",
    num_workers: int | None = None,
    kid: bool = True,
    progress: Progress | None = None,
    engine: str = "auto",
) -> dict[str, FidReport]:
    """FID/KID of each class that `balance_folder` gave synthetic images: its original files
    (beside the synthetic ones, not in the manifest) vs its synthetic files, in the same split.
    Keyed "split/class", or "class" for class-folder layouts."""
    require_fid_extra()
    run_dir = Path(run_dir)
    try:
        rows = read_manifest(run_dir / MANIFEST_NAME)
    except OSError as err:
        raise ValueError(f"{run_dir / MANIFEST_NAME}: cannot read ({err.strerror})") from err
    synthetic: dict[str, list[Path]] = {}
    for row in rows:
        key = f"{row.split}/{row.class_name}" if row.split else row.class_name
        synthetic.setdefault(key, []).append(run_dir / row.path)
    listed = {path for paths in synthetic.values() for path in paths}
    sources, labels = [], []
    for key, paths in synthetic.items():
        folders = sorted({path.parent for path in paths})
        originals = [p for f in folders for p in list_images(f) if p not in listed]
        sources += [originals, paths]
        labels += [f"{key} originals", f"{key} synthetic"]
    stats = _statistics(
        sources, labels, recursive=False, progress=progress, dims=dims,
        batch_size=batch_size, device=device, num_workers=num_workers, engine=engine,
    )
    return {
        key: _report(stats[2 * i], stats[2 * i + 1], kid, labels[2 * i : 2 * i + 2])
        for i, key in enumerate(synthetic)
    }


def _statistics(
    sources: list[ImageSource],
    labels: list[str],
    *,
    recursive: bool,
    progress: Progress | None,
    **feature_options,
) -> list[FeatureStatistics]:
    """Statistics of every source: .npz files loaded, image sets through one network. Every
    source is resolved and counted before the network is built."""
    resolved = [
        _resolve(source, label, recursive=recursive)
        for source, label in zip(sources, labels, strict=True)
    ]
    image_sets = [(label, item) for item, label in zip(resolved, labels, strict=True)
                  if isinstance(item, list)]
    features = iter(_features_per_set(image_sets, progress, feature_options) if image_sets else [])
    return [
        FeatureStatistics.load(item) if isinstance(item, Path)
        else FeatureStatistics.from_features(next(features))
        for item in resolved
    ]


def _features_per_set(
    image_sets: list[tuple[str, list[Path]]], progress: Progress | None, feature_options: dict
) -> list[np.ndarray]:
    """Inception features of each set, from one pass over all images (fuller batches)."""
    extractor = InceptionFeatures(**feature_options)
    for label, files in image_sets:
        _warn_if_singular(len(files), extractor.dims, label)
    sizes = [len(files) for _, files in image_sets]
    advance = progress or (lambda done, total: None)
    advance(0, sum(sizes))
    everything = [path for _, files in image_sets for path in files]
    features = extractor(everything, on_batch=lambda done: advance(done, sum(sizes)))
    return np.split(features, np.cumsum(sizes)[:-1])


def _warn_if_singular(n_images: int, dims: int, label: str) -> None:
    if n_images > dims:
        return
    smaller = [str(d) for d in FID_DIMS if d < n_images - 1]
    remedy = f"KID or dims {'/'.join(smaller)}" if smaller else "KID"
    warnings.warn(
        f"{label}: {n_images} images for {dims}-dimensional features, so the covariance is "
        f"singular and FID strongly biased: prefer {remedy}",
        FewImagesWarning,
        stacklevel=5,
    )


def _resolve(source: ImageSource, label: str, *, recursive: bool) -> Path | list[Path]:
    """A .npz statistics path as a Path, anything else as its list of (at least 2) images."""
    if isinstance(source, (str, os.PathLike)) and os.fspath(source).endswith(".npz"):
        if not Path(source).is_file():
            raise ValueError(f"{source}: no such statistics file")
        return Path(source)
    require_fid_extra()
    if isinstance(source, (str, os.PathLike)):
        files = list_images(source, recursive=recursive)
    else:
        files = [Path(path) for path in source]
    if len(files) < MIN_IMAGES:
        raise ValueError(f"{label}: FID needs at least {MIN_IMAGES} images per set, "
                         f"found {len(files)}")
    return files


def _report(real: FeatureStatistics, other: FeatureStatistics, kid: bool, labels) -> FidReport:
    kernel = None
    if kid:
        for stats, label in zip((real, other), labels, strict=True):
            if stats.features is None:
                raise ValueError(f"{label}: KID needs images; a .npz file holds only mu and sigma")
        kernel = kernel_inception_distance(real.features, other.features)
    counts = [None if s.features is None else len(s.features) for s in (real, other)]
    try:
        fid = frechet_distance_between(real, other)
    except ValueError as err:  # name the inputs: the numerics do not know them
        raise ValueError(f"{labels[0]} vs {labels[1]}: {err}") from err
    return FidReport(fid, kernel, *counts)


def _label(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return f"list of {len(source)} images"
