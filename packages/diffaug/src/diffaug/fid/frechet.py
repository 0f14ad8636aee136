"""Gaussian statistics of Inception features and their Fréchet distance (FID's numerics).

FID is pytorch-fid's number, d² = ||mu1 - mu2||² + tr(S1 + S2 - 2 sqrt(S1 S2)) over Inception
pool features (`diffaug.fid.features`), computed without `scipy.linalg.sqrtm`: S1 S2 is similar to
the symmetric S1^½ S2 S1^½, so tr sqrt(S1 S2) is the sum of the square roots of that matrix's
(real, non-negative) eigenvalues. When the sets are small it is cheaper still: with centred
feature matrices X1, X2, the non-zero eigenvalues of S1 S2 are the squared singular values of
X1 X2ᵀ / sqrt((n1 - 1)(n2 - 1)), so the trace term is a nuclear norm of an n1 x n2 matrix.
Both are exact, need no "imaginary component" fix-ups and take milliseconds to seconds
where `sqrtm` on 2048 x 2048 takes tens of seconds on a CPU. Nothing here imports torch.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffaug.fid.inception import BLOCK_INDEX_BY_DIM, first_line
from diffaug.io import atomic_write

__all__ = [
    "MAX_STATISTICS_DIMS",
    "FeatureStatistics",
    "frechet_distance",
    "frechet_distance_between",
    "npz_path",
    "trace_sqrt_product",
    "trace_sqrt_product_from_features",
]

# pytorch-fid's largest feature size: a statistics file declaring more is refused before its
# arrays are read (a crafted 1.6 MB file can declare a 298 GiB sigma).
MAX_STATISTICS_DIMS = max(BLOCK_INDEX_BY_DIM)
NUMERIC_KINDS = "fiu"  # float, signed and unsigned integer arrays; no objects, strings or records
# What a damaged or crafted .npz raises while it is read: zipfile and numpy's header parser, a
# truncated or corrupt deflate stream, an unsupported compression method.
_UNREADABLE_NPZ = (OSError, KeyError, ValueError, EOFError, NotImplementedError,
                   zipfile.BadZipFile, zlib.error)


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
        """Read a pytorch-fid statistics file: `mu` of shape (d,) and `sigma` (d, d), real
        numbers, finite, d at most `MAX_STATISTICS_DIMS`. Shapes and types are checked in the
        .npy headers before any array is read; nothing is unpickled.

        Raises:
            ValueError: anything else, naming the file.
        """
        try:
            _check_declared_arrays(path)
            with np.load(path, allow_pickle=False) as stats:
                mu, sigma = stats["mu"], stats["sigma"]
        except _UNREADABLE_NPZ as err:
            raise ValueError(f"{path}: not a FID statistics file with mu and sigma "
                             f"({first_line(err)})") from err
        for name, array in (("mu", mu), ("sigma", sigma)):
            if not np.isfinite(array).all():
                raise ValueError(f"{path}: {name} holds NaN or infinite values")
        return cls(mu.astype(np.float64), sigma.astype(np.float64))

    def save(self, path: str | os.PathLike) -> Path:
        """Write `mu` and `sigma` like pytorch-fid's --save-stats (".npz" appended if missing),
        atomically; an existing file is refused, as pytorch-fid does."""
        path = npz_path(path)
        if path.exists():
            raise ValueError(f"{path}: already exists, not overwriting statistics")
        with atomic_write(path) as out:
            np.savez_compressed(out, mu=self.mu, sigma=self.sigma)
        return path


def _check_declared_arrays(path: str | os.PathLike) -> None:
    """Refuse (ValueError) a .npz whose `mu`/`sigma` headers declare anything but real numbers
    of shapes (d,) and (d, d), d <= MAX_STATISTICS_DIMS; reads the headers only."""
    with zipfile.ZipFile(path) as archive:
        mu_shape = _declared_shape(archive, "mu")
        sigma_shape = _declared_shape(archive, "sigma")
    if len(mu_shape) != 1 or not 1 <= mu_shape[0] <= MAX_STATISTICS_DIMS:
        raise ValueError(f"mu has shape {mu_shape}; expected (d,) with d from 1 to "
                         f"{MAX_STATISTICS_DIMS}")
    if sigma_shape != mu_shape * 2:
        raise ValueError(f"sigma has shape {sigma_shape}; expected {mu_shape * 2}")


def _declared_shape(archive: zipfile.ZipFile, name: str) -> tuple[int, ...]:
    """The shape that array `name` of a .npz declares, after checking its type is numeric."""
    with archive.open(f"{name}.npy") as member:  # KeyError when missing
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise ValueError(f"{name}: .npy format version {version} is not supported")
    if dtype.kind not in NUMERIC_KINDS:
        raise ValueError(f"{name} holds {dtype} values, not numbers")
    return shape


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
    return _fid(mu1, sigma1, mu2, sigma2, lambda: trace_sqrt_product(sigma1, sigma2))


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
    return _fid(real.mu, real.sigma, other.mu, other.sigma,
                lambda: trace_sqrt_product_from_features(real.features, other.features))


def _fid(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
         trace_sqrt: Callable[[], float]) -> float:
    """||mu1 - mu2||^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr(sqrt(sigma1 sigma2)), the last term from
    `trace_sqrt` (from the covariances or from the features)."""
    _check_finite(mu1, sigma1, mu2, sigma2)
    diff = mu1 - mu2
    return _finite_fid(lambda: diff @ diff + np.trace(sigma1) + np.trace(sigma2)
                       - 2 * trace_sqrt())


def _check_finite(*arrays: np.ndarray) -> None:
    if not all(np.isfinite(array).all() for array in arrays):
        raise ValueError("statistics hold NaN or infinite values")


def _finite_fid(compute: Callable[[], float]) -> float:
    """`compute()` as a float; a ValueError instead of LinAlgError, overflow or NaN (statistics
    far outside what Inception features give)."""
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            value = float(compute())
    except np.linalg.LinAlgError as err:
        raise ValueError(f"FID cannot be computed from these statistics ({err})") from err
    if not np.isfinite(value):
        raise ValueError("FID is not finite: the statistics' values overflow float64")
    return value


def npz_path(path: str | os.PathLike) -> Path:
    """`path` with ".npz" appended when missing, as np.savez_compressed names its file."""
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")
