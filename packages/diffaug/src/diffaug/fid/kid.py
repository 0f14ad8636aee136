"""Kernel Inception distance (Bińkowski et al. 2018, "Demystifying MMD GANs", ICLR).

KID is the unbiased estimator of the squared maximum mean discrepancy (MMD²) between two sets
of Inception features with the cubic polynomial kernel k(x, y) = (x·y / d + 1)³, averaged over
random subsets; unlike FID it is unbiased, which matters for the small minority sets diffaug
works on. Nothing here imports torch: it takes feature arrays.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["KID_SUBSETS", "KID_SUBSET_SIZE", "KernelDistance", "kernel_inception_distance",
           "kid_subset_size", "polynomial_mmd2"]

# Bińkowski et al.'s reference implementation: 100 subsets of 1000 images.
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


class KernelDistance(NamedTuple):
    """KID: mean and standard deviation of the unbiased MMD² over random subsets."""

    mean: float
    std: float


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


def kid_subset_size(n1: int, n2: int, subset_size: int = KID_SUBSET_SIZE) -> int:
    """Images per KID subset: ``subset_size``, or half the smaller set (at least 2) when a set
    is smaller than that.

    Bińkowski et al. draw subsets of 1000 images to give KID a mean ± standard deviation. Taken
    literally, a set smaller than the subset size makes every subset the whole set, so all the
    subsets give the same value and the ± is 0, which reads as "exact". Subsets of half the
    smaller set differ from draw to draw, so the ± shows how much KID moves with the images it
    is computed on; every subset's MMD² is still unbiased, and its average over random subsets
    has the full sets' MMD² as its expectation.
    """
    if subset_size < 2:
        raise ValueError(f"KID subsets need at least 2 images, got subset_size={subset_size}")
    smaller = min(n1, n2)
    if smaller < 2:
        raise ValueError(f"KID needs at least 2 images in each set, got {n1} and {n2}")
    return subset_size if smaller >= subset_size else max(2, smaller // 2)


def kernel_inception_distance(
    features1: np.ndarray,
    features2: np.ndarray,
    *,
    num_subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
) -> KernelDistance:
    """KID: `polynomial_mmd2` on `num_subsets` pairs of random subsets of `kid_subset_size`
    feature vectors each, every subset drawn without replacement; their mean and standard
    deviation."""
    size = kid_subset_size(len(features1), len(features2), subset_size)
    rng = np.random.default_rng(seed)
    values = [
        polynomial_mmd2(
            features1[rng.choice(len(features1), size, replace=False)],
            features2[rng.choice(len(features2), size, replace=False)],
        )
        for _ in range(num_subsets)
    ]
    return KernelDistance(float(np.mean(values)), float(np.std(values)))
