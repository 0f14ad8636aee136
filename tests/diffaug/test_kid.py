"""KID (`diffaug.fid.kid`): the unbiased polynomial-kernel MMD² and its subset average.

Kinds: reference implementation (a direct O(n²) MMD² double sum), analytic oracles (the
unbiased MMD² has mean zero when both sets come from one distribution; averaged over random
subsets it has the full sets' MMD² as its expectation), same-seed rederivation (KID's subsets).
"""

from __future__ import annotations

import numpy as np
import pytest
from diffaug.fid.kid import (
    KID_SUBSETS,
    kernel_inception_distance,
    kid_subset_size,
    polynomial_mmd2,
)

EXACT_RTOL = 1e-10  # the same formula evaluated in a different order
STANDARD_ERRORS = 4  # statistical checks: a seeded draw within 4 standard errors


def direct_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD² estimator written out term by term (Bińkowski et al. 2018, eq. 3)."""
    def k(a, b):
        return (a @ b / len(a) + 1) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_polynomial_mmd2_matches_direct_formula() -> None:
    """Reference implementation: the O(n²) double sum."""
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((9, 5)), rng.standard_normal((7, 5)) + 0.4
    assert polynomial_mmd2(x, y) == pytest.approx(direct_mmd2(x, y), rel=EXACT_RTOL)


def redrawn_subset_mmd2(x: np.ndarray, y: np.ndarray, *, num_subsets: int, subset_size: int,
                        seed: int) -> list[float]:
    """The documented KID subsets redrawn by hand (x then y, without replacement, per subset)
    and each scored with the direct formula."""
    rng = np.random.default_rng(seed)
    return [direct_mmd2(x[rng.choice(len(x), subset_size, replace=False)],
                        y[rng.choice(len(y), subset_size, replace=False)])
            for _ in range(num_subsets)]


def test_kid_averages_mmd2_over_seeded_subsets() -> None:
    """Same-seed rederivation: redraw the documented subsets and average the direct formula."""
    rng_data = np.random.default_rng(8)
    x, y = rng_data.standard_normal((15, 4)), rng_data.standard_normal((12, 4)) + 0.3
    kid = kernel_inception_distance(x, y, num_subsets=5, subset_size=10, seed=3)
    values = redrawn_subset_mmd2(x, y, num_subsets=5, subset_size=10, seed=3)
    assert kid.mean == pytest.approx(np.mean(values), rel=EXACT_RTOL)
    assert kid.std == pytest.approx(np.std(values), rel=EXACT_RTOL)
    assert kid == kernel_inception_distance(x, y, num_subsets=5, subset_size=10, seed=3)


def test_kid_is_unbiased() -> None:
    """Analytic oracle: E[MMD²_u] = 0 when both sets come from one distribution, > 0 otherwise.
    Averaged over 200 independent pairs, the mean stays within 4 standard errors of 0, while a
    shift of 0.5 standard deviations is many standard errors away."""
    rng = np.random.default_rng(9)

    def mean_and_error(shift: float) -> tuple[float, float]:
        values = [
            polynomial_mmd2(rng.standard_normal((20, 8)), rng.standard_normal((20, 8)) + shift)
            for _ in range(200)
        ]
        return float(np.mean(values)), float(np.std(values) / np.sqrt(len(values)))

    same, same_error = mean_and_error(0.0)
    assert abs(same) < 4 * same_error
    shifted, shifted_error = mean_and_error(0.5)
    assert shifted > 10 * shifted_error


def test_kid_rederives_half_set_subsets_for_small_sets() -> None:
    """Same-seed rederivation: sets smaller than the subset size (1000) are compared on subsets
    of half the smaller set (45 -> 22), each drawn without replacement."""
    rng_data = np.random.default_rng(13)
    x, y = rng_data.standard_normal((60, 6)), rng_data.standard_normal((45, 6)) + 0.2
    kid = kernel_inception_distance(x, y, num_subsets=7, seed=5)
    values = redrawn_subset_mmd2(x, y, num_subsets=7, subset_size=22, seed=5)
    assert kid.mean == pytest.approx(np.mean(values), rel=EXACT_RTOL)
    assert kid.std == pytest.approx(np.std(values), rel=EXACT_RTOL)


def test_kid_std_reflects_sampling_and_mean_stays_unbiased() -> None:
    """Analytic oracle: for two 60-image sets the subsets (30 images, not all 60) differ, so
    the spread is a real fraction of the value, not rounding noise (taking whole sets gave
    std ~1e-16); the mean over random subsets has the full sets' unbiased MMD² as its
    expectation, so it lies within 4 standard errors of it."""
    rng = np.random.default_rng(14)
    x, y = rng.standard_normal((60, 32)), rng.standard_normal((60, 32)) + 0.3
    full = polynomial_mmd2(x, y)
    kid = kernel_inception_distance(x, y)
    assert kid.std > 0.05 * abs(full)
    assert abs(kid.mean - full) < STANDARD_ERRORS * kid.std / np.sqrt(KID_SUBSETS)
    many = kernel_inception_distance(x, y, num_subsets=2000, seed=1)
    assert abs(many.mean - full) < STANDARD_ERRORS * many.std / np.sqrt(2000)


@pytest.mark.parametrize(("n1", "n2", "expected"), [
    (60, 60, 30), (60, 45, 22), (3, 100, 2), (2, 2, 2), (1000, 4000, 1000), (999, 5000, 499),
])
def test_kid_subset_size(n1: int, n2: int, expected: int) -> None:
    """Contract: 1000 images per subset when both sets have them, else half the smaller set,
    at least 2."""
    assert kid_subset_size(n1, n2) == expected


@pytest.mark.parametrize(("n1", "n2", "subset_size", "message"), [
    (1, 10, 1000, "at least 2 images in each set"),
    (10, 10, 1, "subset_size=1"),
])
def test_kid_subset_size_errors(n1: int, n2: int, subset_size: int, message: str) -> None:
    """Contract: too few images, or subsets too small for an unbiased MMD², are clear errors."""
    with pytest.raises(ValueError, match=message):
        kid_subset_size(n1, n2, subset_size)
