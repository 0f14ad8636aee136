"""Table 1 metrics with seeded bootstrap 95% confidence intervals (paper section 3).

Two averaging modes, chosen by `positive`:

* ``positive=k`` (binary view): precision, recall (= sensitivity), specificity, F1 and AUC of
  class ``k`` against the rest, AUC from ``proba[:, k]``. With two classes this is the usual
  binary evaluation of the paper's Table 1.
* ``positive=None`` (macro): every metric is the unweighted mean over classes of its
  one-vs-rest value; AUC is scikit-learn's one-vs-rest macro AUC.

Predicted classes are the argmax of the probabilities, or, in the binary view with a
`threshold` (a decision threshold tuned on validation data, see `youden_threshold`), the
positive class exactly when its probability is at least the threshold. Point values come from
scikit-learn (specificity from its confusion matrix). The bootstrap recomputes the same
metrics on every resample from per-resample confusion counts and rank counts in numpy, because
500 calls of the scikit-learn functions would take seconds; tests check both agree resample by
resample.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

__all__ = [
    "CI_LEVEL",
    "METRIC_NAMES",
    "METRIC_RANGE",
    "bootstrap_metrics",
    "evaluate_predictions",
    "merge_near_ties",
    "percentile_interval",
    "point_metrics",
    "predict_classes",
    "validate_predictions",
    "youden_threshold",
]

METRIC_NAMES = ("accuracy", "precision", "recall", "specificity", "f1", "auc")
METRIC_RANGE = (0.0, 1.0)  # every metric of METRIC_NAMES is a proportion
CI_LEVEL = 0.95
# Resamples where a metric is undefined (AUC of a resample holding one class) are dropped; if
# more than this fraction goes, the rest describes a conditioned population, not the test set.
MAX_UNDEFINED_FRACTION = 0.1


def validate_predictions(
    y_true: np.ndarray, proba: np.ndarray, *, positive: int | None, n_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Check labels and class probabilities; return them as int64 / float64 arrays."""
    y = np.asarray(y_true)
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"proba must have shape (n_samples, n_classes >= 2); got {p.shape}")
    if n_classes is not None and p.shape[1] != n_classes:
        raise ValueError(f"proba has {p.shape[1]} columns but there are {n_classes} class names")
    if y.ndim != 1 or len(y) != len(p) or len(y) == 0:
        raise ValueError(
            f"y_true must be a non-empty 1-D array with one label per proba row; "
            f"got shape {y.shape} for proba {p.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"y_true must hold class indices 0..{p.shape[1] - 1}")
    if positive is not None and not 0 <= positive < p.shape[1]:
        raise ValueError(f"positive must be a class index 0..{p.shape[1] - 1}; got {positive}")
    return y.astype(np.int64), p


def predict_classes(
    proba: np.ndarray, *, positive: int | None = None, threshold: float | None = None
) -> np.ndarray:
    """Predicted class indices: argmax, or with `threshold` (two classes, `positive` given)
    `positive` where ``proba[:, positive] >= threshold`` and the other class elsewhere."""
    p = np.asarray(proba)
    if threshold is None:
        return p.argmax(axis=1)
    if positive is None or p.shape[1] != 2:
        raise ValueError("a decision threshold needs two classes and a positive class")
    return np.where(p[:, positive] >= threshold, positive, 1 - positive)


def merge_near_ties(scores: np.ndarray, tolerance: float) -> np.ndarray:
    """`scores` with each run of values that lie within `tolerance` of their sorted neighbour
    replaced by the run's smallest value, so that rank statistics (ROC AUC) count them as
    ties instead of ordering them by float round-off."""
    scores = np.asarray(scores)
    order = np.argsort(scores, kind="stable")
    ranked = scores[order]
    starts_run = np.concatenate([[True], np.diff(ranked) > tolerance])
    run_start = np.maximum.accumulate(np.where(starts_run, np.arange(len(ranked)), 0))
    merged = np.empty_like(ranked)
    merged[order] = ranked[run_start]
    return merged


def youden_threshold(is_positive: np.ndarray, score: np.ndarray) -> float | None:
    """The score threshold that maximises Youden's J = sensitivity + specificity - 1 (the
    balanced accuracy's optimum) over scikit-learn's ROC curve; ties go to the highest
    threshold. Predict positive where ``score >= threshold``.

    Returns None when no threshold beats chance (J <= 0 everywhere): the only "optimum" is then
    scikit-learn's first threshold, +inf, a rule that never predicts the positive class.

    Raises:
        ValueError: `is_positive` holds a single class (no ROC curve).
    """
    truth = np.asarray(is_positive, dtype=bool)
    if truth.all() or not truth.any():
        raise ValueError("choosing a decision threshold needs both classes among the labels")
    fpr, tpr, thresholds = roc_curve(truth, score)
    youden = tpr - fpr
    best = int(np.argmax(youden))  # first maximum: the highest threshold among ties
    if youden[best] <= 0:
        return None
    return float(thresholds[best])


def point_metrics(
    y_true: np.ndarray, proba: np.ndarray, *, positive: int | None,
    threshold: float | None = None,
) -> dict:
    """The six metrics on the whole test set, computed with scikit-learn.

    Returns ``{name: float}`` for `METRIC_NAMES` (AUC is NaN when the test set holds a single
    class) plus ``"confusion_matrix"`` (rows = true class, columns = predicted class).
    Classes are predicted by `predict_classes` with `threshold`.
    """
    y, p = validate_predictions(y_true, proba, positive=positive)
    labels = np.arange(p.shape[1])
    y_pred = predict_classes(p, positive=positive, threshold=threshold)
    cm = confusion_matrix(y, y_pred, labels=labels)
    if positive is None:
        precision, recall, f1, _ = precision_recall_fscore_support(
            y, y_pred, labels=labels, average="macro", zero_division=0
        )
        auc_truth, auc_score = np.eye(len(labels), dtype=int)[y], p
    else:
        precision, recall, f1, _ = precision_recall_fscore_support(
            y == positive, y_pred == positive, average="binary", zero_division=0
        )
        auc_truth, auc_score = (y == positive).astype(int), p[:, positive]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined AUC is reported as NaN, not as a warning
        try:
            auc = roc_auc_score(auc_truth, auc_score, average="macro")
        except ValueError:
            auc = math.nan
    return {
        "accuracy": float(accuracy_score(y, y_pred)),
        "precision": float(precision),
        "recall": float(recall),
        "specificity": float(_count_metrics(cm[np.newaxis], positive)["specificity"][0]),
        "f1": float(f1),
        "auc": float(auc),
        "confusion_matrix": cm,
    }


def bootstrap_metrics(
    y_true: np.ndarray,
    proba: np.ndarray,
    *,
    positive: int | None,
    n_bootstrap: int = 500,
    seed: int = 0,
    threshold: float | None = None,
) -> dict[str, np.ndarray]:
    """The six metrics on `n_bootstrap` resamples (test indices drawn with replacement).

    Resample ``b`` uses indices ``numpy.random.default_rng(seed).integers(0, n, (n_bootstrap,
    n))[b]``. Returns ``{name: array of shape (n_bootstrap,)}``; NaN marks a resample where the
    metric is undefined (AUC when a class it needs is missing from the resample).
    """
    y, p = validate_predictions(y_true, proba, positive=positive)
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be >= 0; got {n_bootstrap}")
    n, n_classes = p.shape
    indices = np.random.default_rng(seed).integers(0, n, size=(n_bootstrap, n))
    y_pred = predict_classes(p, positive=positive, threshold=threshold)
    flat = (np.arange(n_bootstrap)[:, None] * n_classes + y[indices]) * n_classes + y_pred[indices]
    cm = np.bincount(flat.ravel(), minlength=n_bootstrap * n_classes**2)
    cm = cm.reshape(n_bootstrap, n_classes, n_classes)
    metrics = _count_metrics(cm, positive)
    auc_classes = range(n_classes) if positive is None else [positive]
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class_auc = [_resampled_auc(y == k, p[:, k], indices) for k in auc_classes]
    metrics["auc"] = np.mean(per_class_auc, axis=0)
    return {name: metrics[name] for name in METRIC_NAMES}


def percentile_interval(
    samples: np.ndarray, *, level: float = CI_LEVEL, name: str = "metric"
) -> list[float] | None:
    """Percentile bootstrap interval ``[lo, hi]`` of the defined (finite) resamples.

    Returns None (with a warning) when more than 10% of the resamples are undefined, and None
    silently when there are no resamples at all.
    """
    samples = np.asarray(samples, dtype=np.float64)
    if samples.size == 0:
        return None
    defined = samples[np.isfinite(samples)]
    if len(defined) < (1 - MAX_UNDEFINED_FRACTION) * samples.size:
        warnings.warn(
            f"{name}: undefined in {samples.size - len(defined)} of {samples.size} bootstrap "
            "resamples (a class is missing from them); no confidence interval reported",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(defined, [tail, 100 - tail])
    return [float(low), float(high)]


def evaluate_predictions(
    y_true: np.ndarray,
    proba: np.ndarray,
    class_names: list[str],
    *,
    positive: int | None,
    n_bootstrap: int = 500,
    seed: int = 0,
    threshold: float | None = None,
) -> dict:
    """The ``metrics.json`` structure of DESIGN.md for one model's test-set predictions.

    ``{"accuracy": {"value": v, "ci95": [lo, hi]}, ... (the six METRIC_NAMES) ...,
    "confusion_matrix": [[...]], "n_test": N, "positive_class": name or None,
    "class_names": [...], "averaging": "binary" | "macro", "n_bootstrap": B,
    "bootstrap_seed": seed, "decision_threshold": threshold (None: argmax), "roc": {class name:
    {"fpr": [...], "tpr": [...], "thresholds":
    [...]}}}`` with plain floats and lists only (undefined values are None). ``roc`` holds the
    positive class's curve in the binary view and every class's one-vs-rest curve in the macro
    view; the first threshold, above every score, is None.
    """
    y, p = validate_predictions(y_true, proba, positive=positive, n_classes=len(class_names))
    point = point_metrics(y, p, positive=positive, threshold=threshold)
    resampled = bootstrap_metrics(y, p, positive=positive, n_bootstrap=n_bootstrap, seed=seed,
                                  threshold=threshold)
    result: dict = {
        name: {
            "value": _json_float(point[name]),
            "ci95": percentile_interval(resampled[name], name=name),
        }
        for name in METRIC_NAMES
    }
    curve_classes = range(len(class_names)) if positive is None else [positive]
    result.update(
        confusion_matrix=point["confusion_matrix"].tolist(),
        n_test=len(y),
        positive_class=None if positive is None else class_names[positive],
        class_names=list(class_names),
        averaging="macro" if positive is None else "binary",
        n_bootstrap=n_bootstrap,
        bootstrap_seed=seed,
        decision_threshold=threshold,
        roc={class_names[k]: _roc_points(y == k, p[:, k]) for k in curve_classes},
    )
    return result


def _count_metrics(cm: np.ndarray, positive: int | None) -> dict[str, np.ndarray]:
    """Accuracy, precision, recall, specificity and F1 from a stack of confusion matrices."""
    tp, fp, fn, tn = _one_vs_rest_counts(cm)
    if positive is not None:
        tp, fp, fn, tn = (count[:, positive] for count in (tp, fp, fn, tn))
    per_class = {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }
    if positive is None:
        per_class = {name: value.mean(axis=-1) for name, value in per_class.items()}
    total = cm.sum(axis=(1, 2))
    return {"accuracy": _ratio(np.trace(cm, axis1=1, axis2=2), total), **per_class}


def _one_vs_rest_counts(cm: np.ndarray) -> tuple[np.ndarray, ...]:
    """TP, FP, FN, TN per class, each of shape (n_matrices, n_classes)."""
    tp = np.diagonal(cm, axis1=1, axis2=2)
    fp = cm.sum(axis=1) - tp
    fn = cm.sum(axis=2) - tp
    tn = cm.sum(axis=(1, 2))[:, None] - tp - fp - fn
    return tp, fp, fn, tn


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator with 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    denominator = np.asarray(denominator)
    safe = np.where(denominator == 0, 1, denominator)
    return np.where(denominator == 0, 0.0, numerator / safe)


def _resampled_auc(is_positive: np.ndarray, score: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC of each resample (one row of `indices` each), ties counted half.

    Per resample, counts positives and negatives at every distinct score; a positive at score s
    beats the negatives below s and ties with those at s. NaN where a resample lacks a class.
    """
    n_resamples = len(indices)
    distinct, rank = np.unique(score, return_inverse=True)
    keys = np.arange(n_resamples)[:, None] * len(distinct) + rank[indices]
    drawn_positive = is_positive[indices]

    def count(mask: np.ndarray) -> np.ndarray:
        flat = np.bincount(keys[mask], minlength=n_resamples * len(distinct))
        return flat.reshape(n_resamples, len(distinct))

    positives, negatives = count(drawn_positive), count(~drawn_positive)
    negatives_below = np.cumsum(negatives, axis=1) - negatives
    wins = (positives * (negatives_below + 0.5 * negatives)).sum(axis=1)
    pairs = positives.sum(axis=1) * negatives.sum(axis=1)
    return np.where(pairs > 0, wins / np.where(pairs > 0, pairs, 1), np.nan)


def _roc_points(is_positive: np.ndarray, score: np.ndarray) -> dict[str, list] | None:
    if is_positive.all() or not is_positive.any():
        return None
    fpr, tpr, thresholds = roc_curve(is_positive, score)
    return {
        "fpr": fpr.tolist(),
        "tpr": tpr.tolist(),
        "thresholds": [_json_float(t) for t in thresholds],
    }


def _json_float(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
