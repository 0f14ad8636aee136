"""Paired significance tests of two classifiers scored on the same test images.

With the 120-160 test images of the paper's datasets, many differences in Table 1 are within
noise; these tests say which are not. DeLong's test compares correlated AUCs (binary tasks);
McNemar's exact test compares accuracies through the images only one model gets right.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest, norm, rankdata, t, ttest_rel

__all__ = ["DeLongResult", "McNemarResult", "PairedTTestResult", "SeedSummary", "delong_covariance",
           "delong_test", "mcnemar_test", "paired_t_test", "summarize_seeds"]


@dataclass(frozen=True)
class DeLongResult:
    """AUCs of models a and b, the z statistic of their difference and its two-sided p-value."""

    auc_a: float
    auc_b: float
    z: float
    p_value: float


@dataclass(frozen=True)
class McNemarResult:
    """Images only model a classifies correctly, only b does, and the exact two-sided p-value."""

    only_a_correct: int
    only_b_correct: int
    p_value: float


def delong_covariance(is_positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of k classifiers and DeLong's covariance matrix of those AUCs.

    `scores` has shape (k, n_samples), higher meaning more positive. Fast DeLong of Sun & Xu
    (2014, IEEE Signal Process. Lett. 21:1389): the placement values of DeLong et al. (1988) from
    midranks, O(k n log n) instead of comparing every positive with every negative.
    """
    is_positive = np.asarray(is_positive, dtype=bool)
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if scores.shape[1] != len(is_positive):
        raise ValueError(f"scores have {scores.shape[1]} columns for {len(is_positive)} labels")
    positives, negatives = scores[:, is_positive], scores[:, ~is_positive]
    m, n = positives.shape[1], negatives.shape[1]
    if m < 2 or n < 2:
        raise ValueError(f"DeLong's test needs >= 2 positives and >= 2 negatives; got {m}, {n}")
    rank_within_pos = rankdata(positives, axis=1)
    rank_within_neg = rankdata(negatives, axis=1)
    rank_all = rankdata(np.concatenate([positives, negatives], axis=1), axis=1)
    # Placement of a positive: fraction of negatives below it (ties count half), and of a
    # negative: fraction of positives above it.
    positive_placements = (rank_all[:, :m] - rank_within_pos) / n
    negative_placements = 1.0 - (rank_all[:, m:] - rank_within_neg) / m
    aucs = positive_placements.mean(axis=1)
    covariance = (
        np.atleast_2d(np.cov(positive_placements)) / m
        + np.atleast_2d(np.cov(negative_placements)) / n
    )
    return aucs, covariance


def delong_test(is_positive: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> DeLongResult:
    """DeLong's two-sided test that two correlated ROC AUCs are equal."""
    aucs, covariance = delong_covariance(is_positive, np.vstack([score_a, score_b]))
    difference = aucs[0] - aucs[1]
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    if variance <= 0:
        # Placements identical up to a constant: the difference carries no sampling noise.
        z = 0.0 if difference == 0 else np.copysign(np.inf, difference)
    else:
        z = difference / np.sqrt(variance)
    return DeLongResult(float(aucs[0]), float(aucs[1]), float(z), float(2 * norm.sf(abs(z))))


def mcnemar_test(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> McNemarResult:
    """McNemar's exact test that two classifiers have the same accuracy on paired predictions.

    Only discordant images count: under the null each is equally likely to favour a or b, so
    the count favouring a is Binomial(discordant, 1/2).
    """
    y_true, pred_a, pred_b = (np.asarray(v) for v in (y_true, pred_a, pred_b))
    if not y_true.shape == pred_a.shape == pred_b.shape:
        raise ValueError("y_true, pred_a and pred_b must have the same shape")
    correct_a, correct_b = pred_a == y_true, pred_b == y_true
    only_a = int(np.sum(correct_a & ~correct_b))
    only_b = int(np.sum(correct_b & ~correct_a))
    discordant = only_a + only_b
    p_value = 1.0 if discordant == 0 else binomtest(only_a, discordant, 0.5).pvalue
    return McNemarResult(only_a, only_b, float(p_value))


@dataclass(frozen=True)
class SeedSummary:
    """A metric across the seeds of an ensemble: mean, sample standard deviation and the
    t-interval of the mean (None with fewer than two defined values)."""

    n: int
    mean: float | None
    sd: float | None
    ci95: list[float] | None

    def as_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "sd": self.sd, "ci95": self.ci95}


def summarize_seeds(values, *, level: float = 0.95,
                    bounds: tuple[float, float] | None = None) -> SeedSummary:
    """Mean, sd (ddof 1) and ``mean ± t_{(1+level)/2, n-1} · sd / sqrt(n)`` of per-seed values;
    undefined (None/NaN) values are left out.

    A t-interval, not a bootstrap: with a handful of seeds (typically 5) a bootstrap has only
    a few distinct resamples and its percentiles understate the spread. With `bounds` (the
    range a metric can take, e.g. (0, 1)) the interval is clipped to it: the symmetric interval
    can otherwise leave it (precision [-0.23, 0.49] over five seeds of which four were 0), and
    clipping keeps at least its coverage.
    """
    defined = np.array([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if len(defined) == 0:
        return SeedSummary(0, None, None, None)
    mean = float(defined.mean())
    if len(defined) < 2:
        return SeedSummary(1, mean, None, None)
    sd = float(defined.std(ddof=1))
    if sd == 0:
        return SeedSummary(len(defined), mean, 0.0, [mean, mean])
    interval = t.interval(level, len(defined) - 1, loc=mean, scale=sd / np.sqrt(len(defined)))
    if bounds is not None:
        interval = np.clip(interval, *bounds)
    return SeedSummary(len(defined), mean, sd, [float(end) for end in interval])


@dataclass(frozen=True)
class PairedTTestResult:
    """Student's paired t-test of per-seed values a against b (matched by seed)."""

    n_pairs: int
    mean_difference: float  # mean of a - b
    t: float
    p_value: float


def paired_t_test(values_a, values_b) -> PairedTTestResult:
    """`scipy.stats.ttest_rel` of a against b, two-sided; pairs with an undefined value dropped.

    Raises:
        ValueError: fewer than two defined pairs, or sequences of different lengths.
    """
    a, b = (np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
            for values in (values_a, values_b))
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in length: {len(a)} and {len(b)}")
    defined = np.isfinite(a) & np.isfinite(b)
    if defined.sum() < 2:
        raise ValueError(f"a paired t-test needs at least two seeds; got {int(defined.sum())}")
    result = ttest_rel(a[defined], b[defined])
    return PairedTTestResult(int(defined.sum()), float(np.mean(a[defined] - b[defined])),
                             float(result.statistic), float(result.pvalue))
