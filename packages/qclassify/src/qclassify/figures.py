"""Figures of the paper's section 3, drawn with matplotlib only (no pyplot, no torch), and the
ROC curves with bootstrap bands they plot (`roc_band`, Figure 2).

Every function takes plain arrays or dicts keyed by run label (e.g. ``"qmobilenet@balanced"``),
writes one PNG atomically and returns its path. Metric values are floats, NaN where undefined
(drawn as "n/a" or zero). `run_colors` gives each run the same colour in every figure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from qclassify.metrics import CI_LEVEL, validate_predictions
from qclassify.runfolder import atomic_write

__all__ = [
    "FPR_GRID",
    "plot_bootstrap_violins",
    "plot_confusion_grid",
    "plot_confusion_matrix",
    "plot_metric_heatmap",
    "plot_per_seed_auc",
    "plot_radar",
    "plot_relative_improvement",
    "plot_roc",
    "plot_roc_comparison",
    "roc_band",
    "plot_training_curves",
    "run_colors",
    "weakest_run",
]

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


DPI = 150
METRIC_LABELS = {
    "accuracy": "Accuracy",
    "precision": "Precision",
    "recall": "Recall",
    "specificity": "Specificity",
    "f1": "F1",
    "auc": "AUC",
}
# Fixed colours for the runs of `qclassify compare`, so a run looks the same in every report
# whatever subset was run; other labels take the remaining tab10 colours in order.
KNOWN_RUN_COLORS = {
    "qmobilenet@balanced": "tab:red",
    "resnet18@original": "tab:blue",
    "mobilenet_v2@original": "tab:green",
    "densenet121@original": "tab:purple",
    "vgg16@original": "tab:orange",
    "qmobilenet@original": "tab:pink",
    "mobilenet_v2@balanced": "tab:cyan",
}
SPARE_COLORS = ("tab:brown", "tab:olive", "tab:gray")


def run_colors(labels: Sequence[str]) -> dict[str, str]:
    """One matplotlib colour per run label, stable across figures and reports."""
    taken = {KNOWN_RUN_COLORS[label] for label in labels if label in KNOWN_RUN_COLORS}
    spare = [c for c in (*KNOWN_RUN_COLORS.values(), *SPARE_COLORS) if c not in taken]
    unknown = [label for label in labels if label not in KNOWN_RUN_COLORS]
    # Beyond ten runs colours repeat; the legends still name every run.
    colors = {label: spare[i % len(spare)] for i, label in enumerate(unknown)}
    return {label: KNOWN_RUN_COLORS.get(label) or colors[label] for label in labels}


def plot_confusion_matrix(
    cm: np.ndarray, class_names: Sequence[str], path: str | Path, *, title: str | None = None
) -> Path:
    """One confusion matrix, rows = true class, columns = predicted class, counts annotated."""
    fig = Figure(figsize=(4.2, 3.8), layout="constrained")
    _draw_confusion(fig.add_subplot(), np.asarray(cm), class_names, title or "Confusion matrix")
    return _save(fig, path)


def plot_confusion_grid(
    matrices: Mapping[str, np.ndarray], class_names: Sequence[str], path: str | Path
) -> Path:
    """Figure 1: the confusion matrix of every run side by side (at most four per row)."""
    columns = min(4, len(matrices))
    rows = math.ceil(len(matrices) / columns)
    fig = Figure(figsize=(3.6 * columns, 3.4 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, (label, cm) in zip(axes, matrices.items(), strict=False):  # spare axes stay
        _draw_confusion(ax, np.asarray(cm), class_names, label)
    for ax in axes[len(matrices):]:
        ax.set_axis_off()
    fig.suptitle("Confusion matrices on the test set (rows: true, columns: predicted)")
    return _save(fig, path)


def plot_roc(
    y_true: np.ndarray,
    proba: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    *,
    positive: int | None,
    n_bootstrap: int = 200,
    seed: int = 0,
    title: str | None = None,
) -> Path:
    """ROC of one model with a bootstrap 95% band: the positive class's curve, or one
    one-vs-rest curve per class when `positive` is None."""
    fig = Figure(figsize=(5, 4.6), layout="constrained")
    ax = fig.add_subplot()
    classes = range(len(class_names)) if positive is None else [positive]
    colors = run_colors([str(name) for name in class_names])
    for k in classes:
        band = roc_band(y_true, proba, positive=k, n_bootstrap=n_bootstrap, seed=seed)
        name = class_names[k]
        label = f"{name} vs rest" if positive is None else f"positive: {name}"
        _draw_roc(ax, band, f"{label} (AUC {band['auc']:.3f})", colors[str(name)])
    _finish_roc(ax, title or "ROC curve with bootstrap 95% band")
    return _save(fig, path)


def plot_roc_comparison(
    predictions: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    *,
    positive: int | None,
    n_bootstrap: int = 200,
    seed: int = 0,
    colors: Mapping[str, str] | None = None,
) -> Path:
    """Figure 2 (left): every run's ROC curve with its bootstrap 95% band.

    `predictions` maps run label to ``(y_true, proba)``; macro view draws macro-average curves.
    """
    colors = colors or run_colors(list(predictions))
    fig = Figure(figsize=(6, 5.4), layout="constrained")
    ax = fig.add_subplot()
    for label, (y_true, proba) in predictions.items():
        band = roc_band(y_true, proba, positive=positive, n_bootstrap=n_bootstrap, seed=seed)
        _draw_roc(ax, band, f"{label} (AUC {band['auc']:.3f})", colors[label])
    kind = "" if positive is not None else " (macro-average one-vs-rest)"
    _finish_roc(ax, f"ROC curves{kind} with bootstrap 95% bands")
    return _save(fig, path)


def plot_radar(
    values: Mapping[str, Mapping[str, float]],
    path: str | Path,
    *,
    metrics: Sequence[str] = tuple(METRIC_LABELS),
    colors: Mapping[str, str] | None = None,
) -> Path:
    """Figure 2 (right): one polygon per run over the metrics (radius 0..1)."""
    colors = colors or run_colors(list(values))
    angles = np.linspace(0, 2 * np.pi, len(metrics), endpoint=False)
    closed = np.append(angles, angles[0])
    fig = Figure(figsize=(6.4, 5.6), layout="constrained")
    ax = fig.add_subplot(projection="polar")
    for label, scores in values.items():
        radius = np.array([_finite_or_zero(scores[m]) for m in metrics])
        ax.plot(closed, np.append(radius, radius[0]), color=colors[label], lw=2, label=label)
    ax.set_xticks(angles, [METRIC_LABELS.get(m, m) for m in metrics])
    ax.tick_params(axis="x", pad=14)
    ax.tick_params(axis="y", labelsize=7, labelcolor="dimgray")
    ax.set_ylim(0, 1)
    ax.set_yticks([0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_rlabel_position(180 / len(metrics))  # radial labels between the first two axes
    ax.set_title("Test-set metrics per run", pad=24)
    ax.legend(loc="upper left", bbox_to_anchor=(1.05, 1.0), fontsize="small")
    return _save(fig, path)


def plot_metric_heatmap(
    values: Mapping[str, Mapping[str, float]],
    path: str | Path,
    *,
    metrics: Sequence[str] = tuple(METRIC_LABELS),
) -> Path:
    """Figure 4: runs by metrics, cells annotated; darker blue is better."""
    labels = list(values)
    table = np.array([[values[label][m] for m in metrics] for label in labels], dtype=float)
    fig = Figure(figsize=(1.2 * len(metrics) + 2.6, 0.55 * len(labels) + 1.6), layout="constrained")
    ax = fig.add_subplot()
    low = np.floor(np.nanmin(table, initial=1.0) * 10) / 10 if np.isfinite(table).any() else 0.0
    image = ax.imshow(np.ma.masked_invalid(table), cmap="YlGnBu", vmin=min(low, 0.9), vmax=1.0,
                      aspect="auto")
    for (row, column), value in np.ndenumerate(table):
        dark = np.isfinite(value) and image.norm(value) > 0.6
        ax.text(column, row, "n/a" if not np.isfinite(value) else f"{value:.3f}",
                ha="center", va="center", color="white" if dark else "black", fontsize=9)
    ax.set_xticks(range(len(metrics)), [METRIC_LABELS.get(m, m) for m in metrics])
    ax.set_yticks(range(len(labels)), labels)
    ax.set_title("Test-set metrics")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return _save(fig, path)


def plot_bootstrap_violins(
    distributions: Mapping[str, Mapping[str, np.ndarray]],
    path: str | Path,
    *,
    metrics: Sequence[str] = ("accuracy", "auc", "f1"),
    colors: Mapping[str, str] | None = None,
) -> Path:
    """Figure 6: bootstrap distribution of each metric per run (median and quartiles marked)."""
    labels = list(distributions)
    colors = colors or run_colors(labels)
    fig = Figure(figsize=(4.2 * len(metrics), 4.4), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False).ravel()
    for ax, metric in zip(axes, metrics, strict=True):
        samples = [np.asarray(distributions[label][metric], dtype=float) for label in labels]
        samples = [s[np.isfinite(s)] for s in samples]
        drawn = [i for i, s in enumerate(samples) if len(s) > 1]
        if drawn:
            parts = ax.violinplot([samples[i] for i in drawn], positions=drawn,
                                  showextrema=False)
            for body, i in zip(parts["bodies"], drawn, strict=True):
                body.set(facecolor=colors[labels[i]], edgecolor="black", alpha=0.7)
            quartiles = np.array([np.percentile(samples[i], [25, 50, 75]) for i in drawn])
            ax.vlines(drawn, quartiles[:, 0], quartiles[:, 2], color="black", lw=5)
            ax.scatter(drawn, quartiles[:, 1], color="white", s=12, zorder=3)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_title(METRIC_LABELS.get(metric, metric))
        ax.set_ylabel("value on bootstrap resamples")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Bootstrap distributions of the test-set metrics "
                 "(white dot: median, bar: interquartile range)")
    return _save(fig, path)


def weakest_run(values: Mapping[str, Mapping[str, float]], metrics: Sequence[str]) -> str:
    """The run with the lowest mean over `metrics` (the paper's reference model, VGG16).

    Undefined values are left out of a run's mean; a run with none defined cannot be it.
    """
    means = {}
    for label, scores in values.items():
        defined = [scores[m] for m in metrics if np.isfinite(scores[m])]
        if defined:
            means[label] = np.mean(defined)
    if not means:
        raise ValueError(f"no run has a defined value of {', '.join(metrics)}")
    return min(means, key=means.__getitem__)


def plot_relative_improvement(
    values: Mapping[str, Mapping[str, float]],
    path: str | Path,
    *,
    metrics: Sequence[str] = tuple(METRIC_LABELS),
    colors: Mapping[str, str] | None = None,
) -> Path:
    """Figure 3: per metric, 100 * (score - weakest) / weakest for every other run."""
    colors = colors or run_colors(list(values))
    reference = weakest_run(values, metrics)
    others = [label for label in values if label != reference]
    width = 0.8 / max(len(others), 1)
    fig = Figure(figsize=(1.6 * len(metrics) + 3, 4.6), layout="constrained")
    ax = fig.add_subplot()
    for i, label in enumerate(others):
        gains = [_relative_gain(values[label][m], values[reference][m]) for m in metrics]
        positions = np.arange(len(metrics)) + (i - (len(others) - 1) / 2) * width
        bars = ax.bar(positions, np.nan_to_num(gains), width, color=colors[label], label=label)
        ax.bar_label(bars, [f"{g:+.0f}%" if np.isfinite(g) else "n/a" for g in gains],
                     fontsize=7, padding=2)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(metrics)), [METRIC_LABELS.get(m, m) for m in metrics])
    ax.set_ylabel(f"improvement over {reference} (%)")
    ax.set_title(f"Relative improvement over the weakest run ({reference})")
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_training_curves(
    histories: Mapping[str, Mapping[str, Sequence[float]]],
    path: str | Path,
    *,
    colors: Mapping[str, str] | None = None,
) -> Path:
    """Training loss (solid), validation loss (dashed) and validation AUC per epoch per run.

    Each history maps the columns of a run's ``history.csv`` (``epoch``, ``train_loss``,
    ``val_loss``, ``val_auc``) to per-epoch values.
    """
    colors = colors or run_colors(list(histories))
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    loss_ax, auc_ax = fig.subplots(1, 2)
    for label, history in histories.items():
        epochs = history["epoch"]
        loss_ax.plot(epochs, history["train_loss"], color=colors[label], marker=".", label=label)
        loss_ax.plot(epochs, history["val_loss"], color=colors[label], marker=".", ls="--")
        auc_ax.plot(epochs, history["val_auc"], color=colors[label], marker=".", label=label)
    loss_ax.set(title="Loss (solid: train, dashed: validation)", xlabel="epoch",
                ylabel="cross-entropy")
    auc_ax.set(title="Validation AUC", xlabel="epoch", ylabel="AUC", ylim=(0, 1.02))
    for ax in (loss_ax, auc_ax):
        ax.grid(alpha=0.3)
    auc_ax.legend(fontsize="small", loc="lower right")
    return _save(fig, path)


def plot_per_seed_auc(
    per_seed: Mapping[str, Mapping[int, float]],
    intervals: Mapping[str, tuple[float | None, list[float] | None]],
    path: str | Path,
    *,
    colors: Mapping[str, str] | None = None,
) -> Path:
    """Test AUC of every seed per run (dots, labelled by seed), with the mean across seeds
    (bar) and its 95% t-interval (whiskers); `intervals` maps a run to (mean, [lo, hi])."""
    labels = list(per_seed)
    colors = colors or run_colors(labels)
    fig = Figure(figsize=(1.4 * len(labels) + 3, 4.6), layout="constrained")
    ax = fig.add_subplot()
    for i, label in enumerate(labels):
        seeds = sorted(per_seed[label])
        offsets = np.linspace(-0.15, 0.15, len(seeds)) if len(seeds) > 1 else np.zeros(1)
        aucs = [_finite_or_zero(per_seed[label][seed]) for seed in seeds]
        ax.scatter(i + offsets, aucs, color=colors[label], s=22, zorder=3)
        mean, interval = intervals[label]
        if mean is not None:
            ax.hlines(mean, i - 0.3, i + 0.3, color="black", lw=2)
        if interval is not None:
            ax.vlines(i, *interval, color="black", lw=1)
            ax.hlines(interval, i - 0.1, i + 0.1, color="black", lw=1)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_ylabel("test AUC")
    ax.set_title("Test AUC per seed (dots), mean across seeds and its 95% t-interval")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _draw_confusion(ax, cm: np.ndarray, class_names: Sequence[str], title: str) -> None:
    image = ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(int(cm.max()), 1))
    row_totals = cm.sum(axis=1, keepdims=True)
    shares = cm / np.where(row_totals == 0, 1, row_totals)
    for (row, column), count in np.ndenumerate(cm):
        dark = image.norm(count) > 0.55
        ax.text(column, row, f"{count}\n{shares[row, column]:.0%}", ha="center", va="center",
                color="white" if dark else "black", fontsize=10)
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=30 if len(class_names) > 3 else 0)
    ax.set_yticks(ticks, class_names)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)


def _draw_roc(ax, band: Mapping, label: str, color: str) -> None:
    ax.plot(band["fpr"], band["tpr"], color=color, lw=2, label=label)
    if band["low"] is not None:
        ax.fill_between(band["fpr"], band["low"], band["high"], color=color, alpha=0.15, lw=0)


def _finish_roc(ax, title: str) -> None:
    ax.plot([0, 1], [0, 1], color="gray", ls=":", lw=1, label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false positive rate (1 - specificity)",
           ylabel="true positive rate (sensitivity)", title=title, aspect="equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")


def _relative_gain(score: float, reference: float) -> float:
    if not (np.isfinite(score) and np.isfinite(reference)) or reference == 0:
        return math.nan
    return 100.0 * (score - reference) / reference


def _finite_or_zero(value: float | None) -> float:
    return 0.0 if value is None or not np.isfinite(value) else float(value)


def _save(fig: Figure, path: str | Path) -> Path:
    """Write the PNG atomically (temporary name in the target folder, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda file: fig.savefig(file, dpi=DPI, format="png"))
