"""Fréchet and kernel Inception distances between image sets (the `fid` extra).

FID is pytorch-fid's number, d² = ||mu1 - mu2||² + tr(S1 + S2 - 2 sqrt(S1 S2)) over Inception
pool features (`diffaug.features`), computed without `scipy.linalg.sqrtm`: S1 S2 is similar to
the symmetric S1^½ S2 S1^½, so tr sqrt(S1 S2) is the sum of the square roots of that matrix's
(real, non-negative) eigenvalues. When the sets are small it is cheaper still: with centred
feature matrices X1, X2, the non-zero eigenvalues of S1 S2 are the squared singular values of
X1 X2ᵀ / sqrt((n1 - 1)(n2 - 1)), so the trace term is a nuclear norm of an n1 x n2 matrix.
Both are exact, need no "imaginary component" fix-ups and take milliseconds to seconds
where `sqrtm` on 2048 x 2048 takes tens of seconds on a CPU.

KID (Bińkowski et al. 2018) is the unbiased MMD² with the cubic polynomial kernel, averaged
over random subsets; unlike FID it is unbiased for the small minority sets diffaug works on.

Nothing here imports torch: statistics files and the distances work without the extra.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Union

import numpy as np

__all__ = [
    "FID_DIMS",
    "FeatureStatistics",
    "FewImagesWarning",
    "FidReport",
    "KernelDistance",
    "compute_fid",
    "fid_of_balanced_classes",
    "frechet_distance",
    "frechet_distance_between",
    "kernel_inception_distance",
    "polynomial_mmd2",
    "save_fid_stats",
    "trace_sqrt_product",
    "trace_sqrt_product_from_features",
]

# pytorch-fid's InceptionV3.BLOCK_INDEX_BY_DIM keys, repeated here so the CLI can offer them
# without importing torch (a test checks they agree).
FID_DIMS = (64, 192, 768, 2048)
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000

ImageSource = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]  # noqa: UP007


class FewImagesWarning(UserWarning):
    """A set has fewer images than feature dimensions: its covariance is singular."""


class KernelDistance(NamedTuple):
    """KID: mean and standard deviation of the unbiased MMD² over random subsets."""

    mean: float
    std: float


@dataclass(frozen=True)
class FeatureStatistics:
    """Mean and covariance of Inception features (pytorch-fid's mu, sigma), with the features
    themselves when they were computed here rather than loaded from a .npz file."""

    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray | None = None

    @classmethod
    def from_features(cls, features: np.ndarray) -> FeatureStatistics:
        """Statistics exactly as pytorch-fid takes them: np.mean and np.cov(rowvar=False)."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or len(features) < 2:
            raise ValueError(f"need at least 2 feature vectors (n, dims), got shape {features.shape}")
        return cls(np.mean(features, axis=0), np.cov(features, rowvar=False), features)

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureStatistics:
        """Read a pytorch-fid statistics file (arrays `mu` and `sigma`)."""
        try:
            with np.load(path) as stats:
                return cls(stats["mu"][:], stats["sigma"][:])
        except (OSError, KeyError, ValueError) as err:
            raise ValueError(f"{path}: not a FID statistics file with mu and sigma ({err})") from err

    def save(self, path: str | os.PathLike) -> Path:
        """Write `mu` and `sigma` like pytorch-fid's --save-stats (".npz" appended if missing),
        atomically; an existing file is refused, as pytorch-fid does."""
        path = _npz_path(path)
        if path.exists():
            raise ValueError(f"{path}: already exists, not overwriting statistics")
        handle, temporary = tempfile.mkstemp(suffix=".npz.part", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as out:
                np.savez_compressed(out, mu=self.mu, sigma=self.sigma)
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
        return path


@dataclass(frozen=True)
class FidReport:
    """FID between two sets, KID when asked for, and the image counts (None for .npz inputs)."""

    fid: float
    kid: KernelDistance | None
    n_real: int | None
    n_other: int | None


def _null_clipped(eigenvalues: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with rounding noise around zero set to zero (the rank
    tolerance of np.linalg.matrix_rank: largest eigenvalue x size x machine epsilon)."""
    tolerance = eigenvalues.max(initial=0.0) * eigenvalues.size * np.finfo(np.float64).eps
    return np.where(eigenvalues > tolerance, eigenvalues, 0.0)


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr sqrtm(sigma1 @ sigma2) for covariance matrices, exactly, via two symmetric eigenproblems."""
    values1, vectors1 = np.linalg.eigh(sigma1)
    root1 = (vectors1 * np.sqrt(_null_clipped(values1))) @ vectors1.T
    middle = root1 @ sigma2 @ root1
    middle_values = np.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sqrt(_null_clipped(middle_values)).sum())


def trace_sqrt_product_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """tr sqrtm(cov(features1) @ cov(features2)) as the nuclear norm of X1c X2cᵀ (centred rows),
    divided by sqrt((n1 - 1)(n2 - 1)); cheap when the sets are smaller than the dimension."""
    centred1 = features1 - features1.mean(axis=0)
    centred2 = features2 - features2.mean(axis=0)
    scale = np.sqrt((len(features1) - 1) * (len(features2) - 1))
    return float(np.linalg.norm(centred1 @ centred2.T, ord="nuc") / scale)


def _check_shapes(mu1, sigma1, mu2, sigma2) -> None:
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(
            f"statistics do not match: {mu1.shape[0]} and {mu2.shape[0]} dimensions "
            "(compute both with the same --dims)"
        )
    if sigma1.shape != (mu1.shape[0], mu1.shape[0]):
        raise ValueError(f"sigma has shape {sigma1.shape}, expected {(mu1.shape[0],) * 2}")


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2); same arguments and value
    as pytorch-fid's `calculate_frechet_distance`, without its matrix square root."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    _check_shapes(mu1, sigma1, mu2, sigma2)
    diff = mu1 - mu2
    return float(
        diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    )


def frechet_distance_between(real: FeatureStatistics, other: FeatureStatistics) -> float:
    """FID of two statistics, taking the trace term from the features when both sets have them
    and the n1 x n2 product is cheaper than the dims x dims eigenproblems."""
    _check_shapes(real.mu, real.sigma, other.mu, other.sigma)
    dims = real.mu.shape[0]
    if real.features is None or other.features is None:
        return frechet_distance(real.mu, real.sigma, other.mu, other.sigma)
    n1, n2 = len(real.features), len(other.features)
    if n1 * n2 * (dims + min(n1, n2)) > dims**3:
        return frechet_distance(real.mu, real.sigma, other.mu, other.sigma)
    diff = real.mu - other.mu
    trace_term = trace_sqrt_product_from_features(real.features, other.features)
    return float(diff @ diff + np.trace(real.sigma) + np.trace(other.sigma) - 2 * trace_term)


def polynomial_mmd2(features1: np.ndarray, features2: np.ndarray) -> float:
    """Unbiased MMD² with the KID kernel k(x, y) = (x·y / dims + 1)³."""
    dims = features1.shape[1]
    k11 = (features1 @ features1.T / dims + 1) ** 3
    k22 = (features2 @ features2.T / dims + 1) ** 3
    k12 = (features1 @ features2.T / dims + 1) ** 3
    m, n = len(features1), len(features2)
    within1 = (k11.sum() - np.trace(k11)) / (m * (m - 1))
    within2 = (k22.sum() - np.trace(k22)) / (n * (n - 1))
    return float(within1 + within2 - 2 * k12.mean())


def kernel_inception_distance(
    features1: np.ndarray,
    features2: np.ndarray,
    *,
    num_subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
) -> KernelDistance:
    """KID: `polynomial_mmd2` on `num_subsets` pairs of random subsets (without replacement)
    of min(subset_size, n1, n2) feature vectors each; mean and standard deviation."""
    size = min(subset_size, len(features1), len(features2))
    if size < 2:
        raise ValueError(f"KID needs at least 2 images in each set, got {len(features1)} and {len(features2)}")
    rng = np.random.default_rng(seed)
    values = [
        polynomial_mmd2(
            features1[rng.choice(len(features1), size, replace=False)],
            features2[rng.choice(len(features2), size, replace=False)],
        )
        for _ in range(num_subsets)
    ]
    return KernelDistance(float(np.mean(values)), float(np.std(values)))


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
    progress: Callable[[int, int], None] | None = None,
) -> FidReport:
    """FID (and KID) between two image folders, image lists or pytorch-fid .npz statistics.

    Same features, scaling and statistics as `python -m pytorch_fid REAL OTHER`, plus mixed
    sizes and 16-bit images (see `diffaug.features`). `progress(done_increment, total)` is
    called with 0 once the number of images is known, then after every batch.
    """
    labels = [_label(real), _label(other)]
    stats = _statistics(
        [real, other], labels, recursive=recursive, progress=progress, dims=dims,
        batch_size=batch_size, device=device, num_workers=num_workers,
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
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write pytorch-fid's `mu`/`sigma` .npz of `source` to `out`; returns the written path."""
    if _npz_path(out).exists():  # fail before the feature pass, not after it
        raise ValueError(f"{_npz_path(out)}: already exists, not overwriting statistics")
    (stats,) = _statistics(
        [source], [_label(source)], recursive=recursive, progress=progress, dims=dims,
        batch_size=batch_size, device=device, num_workers=num_workers,
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
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, FidReport]:
    """FID/KID of each class that `balance_folder` gave synthetic images: its original files
    (beside the synthetic ones, not in the manifest) vs its synthetic files, in the same split.
    Keyed "split/class", or "class" for class-folder layouts."""
    from diffaug.io import MANIFEST_NAME, read_manifest

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
        originals = [p for f in folders for p in _resolve(f, recursive=False) if p not in listed]
        sources += [originals, paths]
        labels += [f"{key} originals", f"{key} synthetic"]
    stats = _statistics(
        sources, labels, recursive=False, progress=progress, dims=dims,
        batch_size=batch_size, device=device, num_workers=num_workers,
    )
    return {
        key: _report(stats[2 * i], stats[2 * i + 1], kid, labels[2 * i : 2 * i + 2])
        for i, key in enumerate(synthetic)
    }


def _statistics(
    sources: list[ImageSource], labels: list[str], *, recursive: bool, progress, **feature_options
) -> list[FeatureStatistics]:
    """Statistics of every source: .npz files loaded, image sets through one network."""
    resolved = [_resolve(source, recursive=recursive) for source in sources]
    image_sets = [(label, item) for item, label in zip(resolved, labels, strict=True)
                  if isinstance(item, list)]
    features = iter(_features_per_set(image_sets, progress, feature_options) if image_sets else [])
    return [
        FeatureStatistics.load(item) if isinstance(item, Path)
        else FeatureStatistics.from_features(next(features))
        for item in resolved
    ]


def _features_per_set(image_sets: list[tuple[str, list[Path]]], progress, feature_options) -> list:
    """Inception features of each set, from one pass over all images (fuller batches)."""
    from diffaug.features import InceptionFeatures

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


def _resolve(source: ImageSource, *, recursive: bool) -> Path | list[Path]:
    """A .npz statistics path as a Path, anything else as its list of image files."""
    if isinstance(source, (str, os.PathLike)) and os.fspath(source).endswith(".npz"):
        if not Path(source).is_file():
            raise ValueError(f"{source}: no such statistics file")
        return Path(source)
    from diffaug.features import list_images, require_fid_extra

    require_fid_extra()
    if isinstance(source, (str, os.PathLike)):
        return list_images(source, recursive=recursive)
    files = [Path(path) for path in source]
    if len(files) < 2:
        raise ValueError(f"FID needs at least 2 images per set, got a list of {len(files)}")
    return files


def _report(real: FeatureStatistics, other: FeatureStatistics, kid: bool, labels) -> FidReport:
    kernel = None
    if kid:
        for stats, label in zip((real, other), labels, strict=True):
            if stats.features is None:
                raise ValueError(f"{label}: KID needs images; a .npz file holds only mu and sigma")
        kernel = kernel_inception_distance(real.features, other.features)
    counts = [None if s.features is None else len(s.features) for s in (real, other)]
    return FidReport(frechet_distance_between(real, other), kernel, *counts)


def _npz_path(path: str | os.PathLike) -> Path:
    """`path` with ".npz" appended when missing, as np.savez_compressed names its file."""
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def _label(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return f"list of {len(source)} images"
