"""ROC curves with bootstrap bands (Figure 2 of the paper), as arrays for plotting."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from qclassify.metrics import CI_LEVEL, validate_predictions

__all__ = ["FPR_GRID", "roc_band"]

FPR_GRID = np.linspace(0.0, 1.0, 201)


def roc_band(
    y_true: np.ndarray,
    proba: np.ndarray,
    *,
    positive: int | None,
    n_bootstrap: int = 200,
    seed: int = 0,
) -> dict[str, np.ndarray | float]:
    """ROC curve on `FPR_GRID` with a percentile bootstrap band.

    Binary view (`positive` given): the positive class's curve. Macro view: the mean of the
    one-vs-rest curves (interpolated onto the grid), matching the macro AUC. Returns
    ``{"fpr", "tpr", "low", "high", "auc"}``; low/high are None without defined resamples.
    """
    y, p = validate_predictions(y_true, proba, positive=positive)
    classes = range(p.shape[1]) if positive is None else [positive]

    def mean_curve(index: np.ndarray) -> np.ndarray | None:
        curves = []
        for k in classes:
            is_positive = y[index] == k
            if is_positive.all() or not is_positive.any():
                return None
            fpr, tpr, _ = roc_curve(is_positive, p[index, k])
            curves.append(np.interp(FPR_GRID, fpr, tpr))
        return np.mean(curves, axis=0)

    full = np.arange(len(y))
    tpr = mean_curve(full)
    if tpr is None:
        raise ValueError("the ROC curve needs both positive and negative examples of each class")
    indices = np.random.default_rng(seed).integers(0, len(y), size=(n_bootstrap, len(y)))
    resampled = [c for c in map(mean_curve, indices) if c is not None]
    tail = 100 * (1 - CI_LEVEL) / 2
    low, high = np.percentile(resampled, [tail, 100 - tail], axis=0) if resampled else (None, None)
    auc = float(np.mean([roc_auc_score(y == k, p[:, k]) for k in classes]))
    return {"fpr": FPR_GRID, "tpr": tpr, "low": low, "high": high, "auc": auc}
