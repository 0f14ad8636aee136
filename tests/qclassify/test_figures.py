"""Tests of qclassify.figures: every figure function writes a readable PNG of sensible size,
atomically, and the module never needs torch. Contract tests, plus reference-implementation
checks of the ROC band against scikit-learn."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from qclassify import figures
from qclassify.metrics import bootstrap_metrics, point_metrics
from sklearn.metrics import roc_auc_score, roc_curve

RUNS = ("qmobilenet@balanced", "resnet18@original", "vgg16@original", "custom@original")


def make_predictions(n: int, n_classes: int, separation: float, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), y] += separation
    return y, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def assert_png(path, *, min_side: int = 300, max_side: int = 4000) -> None:
    """A complete PNG, not blank, of a size readable on screen; no temporary file left."""
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG"
        assert min_side <= min(image.size) and max(image.size) <= max_side
        assert np.asarray(image.convert("L")).std() > 5  # something was drawn
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []


@pytest.fixture(scope="module")
def runs():
    """Predictions of four runs on the same 80 test images, from good to poor."""
    predictions = {label: make_predictions(80, 2, 2.5 - 0.6 * i, seed=1)
                   for i, label in enumerate(RUNS)}
    values = {label: {k: v for k, v in point_metrics(y, p, positive=1).items()
                      if k != "confusion_matrix"} for label, (y, p) in predictions.items()}
    return predictions, values


def test_run_colors_are_stable_and_distinct():
    """Contract: a known run keeps its colour whatever the subset; colours differ within one."""
    full = figures.run_colors(RUNS)
    subset = figures.run_colors(RUNS[1:])
    assert full["resnet18@original"] == subset["resnet18@original"]
    assert len(set(full.values())) == len(RUNS)


def test_plot_confusion_matrix_and_grid(tmp_path, runs):
    predictions, _ = runs
    matrices = {label: point_metrics(y, p, positive=1)["confusion_matrix"]
                for label, (y, p) in predictions.items()}
    single = figures.plot_confusion_matrix(matrices[RUNS[0]], ["malignant", "benign"],
                                          tmp_path / "cm.png", title="proposed")
    grid = figures.plot_confusion_grid(matrices, ["malignant", "benign"], tmp_path / "grid.png")
    assert single == tmp_path / "cm.png" and grid == tmp_path / "grid.png"
    assert_png(single)
    assert_png(grid)


@pytest.mark.parametrize(("n_classes", "positive"), [(2, 1), (3, None)])
def test_plot_roc_single_model(tmp_path, n_classes, positive):
    y, proba = make_predictions(90, n_classes, 1.0, seed=2)
    names = [f"c{k}" for k in range(n_classes)]
    path = figures.plot_roc(y, proba, names, tmp_path / "sub" / "roc.png", positive=positive,
                           n_bootstrap=50)
    assert_png(path)


def test_roc_band_matches_sklearn_curve_and_brackets_it():
    """Reference implementation: the point curve is sklearn's roc_curve on the grid and the AUC
    sklearn's roc_auc_score; analytic: the band is ordered and (nearly) contains the curve."""
    y, proba = make_predictions(120, 2, 1.0, seed=3)
    band = figures.roc_band(y, proba, positive=1, n_bootstrap=100, seed=0)
    fpr, tpr, _ = roc_curve(y == 1, proba[:, 1])
    np.testing.assert_allclose(band["tpr"], np.interp(figures.FPR_GRID, fpr, tpr), atol=1e-12)
    assert band["auc"] == pytest.approx(roc_auc_score(y == 1, proba[:, 1]), abs=1e-12)
    assert np.all(band["low"] <= band["high"])
    inside = (band["low"] - 1e-9 <= band["tpr"]) & (band["tpr"] <= band["high"] + 1e-9)
    assert inside.mean() > 0.95


def test_comparison_figures(tmp_path, runs):
    """Contract: ROC comparison, radar, heatmap, violins and relative improvement all draw."""
    predictions, values = runs
    colors = figures.run_colors(list(predictions))
    distributions = {label: bootstrap_metrics(y, p, positive=1, n_bootstrap=100)
                     for label, (y, p) in predictions.items()}
    paths = [
        figures.plot_roc_comparison(predictions, tmp_path / "roc.png", positive=1,
                                   n_bootstrap=50, colors=colors),
        figures.plot_radar(values, tmp_path / "radar.png", colors=colors),
        figures.plot_metric_heatmap(values, tmp_path / "heatmap.png"),
        figures.plot_bootstrap_violins(distributions, tmp_path / "violins.png", colors=colors),
        figures.plot_relative_improvement(values, tmp_path / "improvement.png", colors=colors),
    ]
    for path in paths:
        assert_png(path)


def test_figures_tolerate_undefined_metrics(tmp_path, runs):
    """Contract: an undefined AUC (None/NaN from metrics.json) shows as n/a, not a crash."""
    _, values = runs
    values = {label: dict(scores) for label, scores in values.items()}
    values[RUNS[1]]["auc"] = float("nan")
    values[RUNS[2]]["precision"] = 0.0  # relative gain over a zero reference is undefined
    assert_png(figures.plot_metric_heatmap(values, tmp_path / "heatmap.png"))
    assert_png(figures.plot_relative_improvement(values, tmp_path / "improvement.png"))
    assert_png(figures.plot_radar(values, tmp_path / "radar.png"))


def test_weakest_run_is_the_lowest_mean():
    """Analytic oracle: the run whose metrics average lowest is the reference of Figure 3."""
    values = {"a": {"accuracy": 0.9, "auc": 0.8}, "b": {"accuracy": 0.5, "auc": 0.99},
              "c": {"accuracy": 0.7, "auc": float("nan")}}
    assert figures.weakest_run(values, ["accuracy", "auc"]) == "c"
    assert figures.weakest_run(values, ["auc"]) == "a"


def test_training_curves(tmp_path):
    histories = {
        label: {"epoch": [1, 2, 3], "train_loss": [0.7, 0.5, 0.4 + i / 10],
                "val_loss": [0.72, 0.6, 0.55], "val_auc": [0.6, 0.7 + i / 20, 0.8]}
        for i, label in enumerate(RUNS)
    }
    assert_png(figures.plot_training_curves(histories, tmp_path / "curves.png"))


def test_figures_get_the_permissions_of_an_ordinary_file(tmp_path, runs):
    """Contract: a figure is as readable as any file its user writes (the umask decides), not
    private like a `tempfile.mkstemp` file (0600)."""
    _, values = runs
    umask = os.umask(0o022)
    try:
        path = figures.plot_metric_heatmap(values, tmp_path / "heatmap.png")
        ordinary = tmp_path / "ordinary.txt"
        ordinary.write_text("x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(ordinary.stat().st_mode) == 0o644


def test_report_does_not_import_torch():
    """Contract: figures can be drawn where torch is not installed (fresh interpreter)."""
    code = "import sys, qclassify.figures; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
