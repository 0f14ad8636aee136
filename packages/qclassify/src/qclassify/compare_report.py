"""The report of ``qclassify compare``: Table 1 with CIs and paired tests, and the figures.

Every run was evaluated on the same test images; `write_report` checks that, computes the
paired tests of each run against the reference run (DeLong for AUC, McNemar for accuracy) and
writes ``results.csv``, ``results.md``, ``compare.json`` and the section-3 figures.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qclassify import figures
from qclassify.metrics import METRIC_NAMES, bootstrap_metrics, predict_classes
from qclassify.runfolder import RunFolder, atomic_write, write_csv, write_json
from qclassify.stats import delong_test, mcnemar_test

__all__ = ["FIGURE_FILES", "RESULT_COLUMNS", "RunOutcome", "result_row", "write_report"]

RESULT_COLUMNS = (
    "run", "model", "data", "role", "n_test",
    *(f"{m}{suffix}" for m in METRIC_NAMES for suffix in ("", "_ci_low", "_ci_high")),
    "n_parameters", "train_seconds", "inference_ms_per_image", "delong_p", "mcnemar_p",
)
FIGURE_FILES = {
    "confusion_matrices": "confusion_matrices.png",
    "roc_curves": "roc_curves.png",
    "radar": "radar.png",
    "metric_heatmap": "metric_heatmap.png",
    "bootstrap_violins": "bootstrap_violins.png",
    "relative_improvement": "relative_improvement.png",
    "training_curves": "training_curves.png",
}
SIGNIFICANCE_LEVEL = 0.05


@dataclass
class RunOutcome:
    """One evaluated run: its metrics.json and its test predictions (rows in path order)."""

    label: str
    model: str
    data: str
    role: str
    run_dir: Path
    metrics: dict
    paths: list[str]
    y_true: np.ndarray
    proba: np.ndarray


def write_report(
    report_dir: Path,
    outcomes: Sequence[RunOutcome],
    *,
    reference: str,
    n_bootstrap: int,
    seed: int,
    summary: Mapping,
) -> tuple[list[dict], dict[str, Path]]:
    """Write the table, the figures and ``compare.json``; return the rows and written files.

    Raises:
        ValueError: the runs were not evaluated on the same test images, classes or positive
            class.
    """
    first = _check_same_evaluation(outcomes)
    class_names, positive_name = first.metrics["class_names"], first.metrics["positive_class"]
    positive = None if positive_name is None else class_names.index(positive_name)
    by_label = {o.label: o for o in outcomes}
    rows = [result_row(o, by_label[reference], positive) for o in outcomes]
    context = {"reference": reference, "n_test": len(first.y_true), "class_names": class_names,
               "positive_class": positive_name, "n_bootstrap": n_bootstrap, "seed": seed}
    markdown = _markdown(rows, **context)
    report_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "results_csv": write_csv(report_dir / "results.csv", RESULT_COLUMNS,
                                 ({k: _csv_value(v) for k, v in row.items()} for row in rows)),
        "results_md": atomic_write(report_dir / "results.md",
                                   lambda file: file.write(markdown.encode("utf-8"))),
    }
    files.update(_figures(report_dir, outcomes, positive, n_bootstrap, seed))
    files["compare_json"] = report_dir / "compare.json"
    write_json(files["compare_json"], {
        **summary,
        **context,
        "averaging": first.metrics.get("averaging"),
        "runs": [{"label": o.label, "model": o.model, "data": o.data, "role": o.role,
                  "run_dir": _relative(o.run_dir, report_dir)} for o in outcomes],
        "files": {name: path.name for name, path in files.items()},
    })
    return rows, files


def _check_same_evaluation(outcomes: Sequence[RunOutcome]) -> RunOutcome:
    first = outcomes[0]
    for other in outcomes[1:]:
        if other.paths != first.paths or not np.array_equal(other.y_true, first.y_true):
            raise ValueError(
                f"{other.label} was evaluated on other test images than {first.label} "
                f"({other.run_dir} vs {first.run_dir}); every run must use DATA's test split"
            )
        for key in ("class_names", "positive_class"):
            if other.metrics.get(key) != first.metrics.get(key):
                raise ValueError(
                    f"{other.label} and {first.label} differ in {key} "
                    f"({other.metrics.get(key)} vs {first.metrics.get(key)})"
                )
    return first


def result_row(outcome: RunOutcome, reference: RunOutcome, positive: int | None) -> dict:
    """The `RESULT_COLUMNS` of one run, its p-values against `reference`."""
    metrics = outcome.metrics
    row = {"run": outcome.label, "model": outcome.model, "data": outcome.data,
           "role": outcome.role, "n_test": metrics["n_test"]}
    for name in METRIC_NAMES:
        interval = metrics[name]["ci95"] or [None, None]
        row.update({name: metrics[name]["value"], f"{name}_ci_low": interval[0],
                    f"{name}_ci_high": interval[1]})
    row.update({key: metrics.get(key) for key in
                ("n_parameters", "train_seconds", "inference_ms_per_image")})
    row["delong_p"], row["mcnemar_p"] = _paired_p_values(outcome, reference, positive)
    return row


def _paired_p_values(outcome: RunOutcome, reference: RunOutcome,
                     positive: int | None) -> tuple[float | None, float | None]:
    """DeLong (binary AUC) and McNemar (accuracy) p-values of `outcome` against `reference`."""
    if outcome is reference:
        return None, None
    y = outcome.y_true
    mcnemar = mcnemar_test(y, _predicted(reference, positive), _predicted(outcome, positive))
    delong = None
    if positive is not None:  # DeLong compares two binary AUCs; macro AUCs have no such test
        try:
            delong = delong_test(y == positive, reference.proba[:, positive],
                                 outcome.proba[:, positive]).p_value
        except ValueError as err:
            warnings.warn(f"no DeLong test for {outcome.label}: {err}", stacklevel=3)
    return delong, mcnemar.p_value


def _predicted(outcome: RunOutcome, positive: int | None) -> np.ndarray:
    """The run's predicted classes, by the decision rule its metrics.json records."""
    threshold = outcome.metrics.get("decision_threshold")
    return predict_classes(outcome.proba, positive=positive, threshold=threshold)


def _figures(report_dir: Path, outcomes: Sequence[RunOutcome], positive: int | None,
             n_bootstrap: int, seed: int) -> dict[str, Path]:
    labels = [o.label for o in outcomes]
    colors = figures.run_colors(labels)
    class_names = outcomes[0].metrics["class_names"]
    values = {o.label: {m: _nan_if_none(o.metrics[m]["value"]) for m in METRIC_NAMES}
              for o in outcomes}
    path = {name: report_dir / file for name, file in FIGURE_FILES.items()}
    drawn = {
        "confusion_matrices": lambda: figures.plot_confusion_grid(
            {o.label: np.asarray(o.metrics["confusion_matrix"]) for o in outcomes},
            class_names, path["confusion_matrices"]),
        "roc_curves": lambda: figures.plot_roc_comparison(
            {o.label: (o.y_true, o.proba) for o in outcomes}, path["roc_curves"],
            positive=positive, n_bootstrap=n_bootstrap, seed=seed, colors=colors),
        "radar": lambda: figures.plot_radar(values, path["radar"], colors=colors),
        "metric_heatmap": lambda: figures.plot_metric_heatmap(values, path["metric_heatmap"]),
        "training_curves": lambda: figures.plot_training_curves(
            {o.label: _read_history(o.run_dir) for o in outcomes}, path["training_curves"],
            colors=colors),
    }
    if n_bootstrap > 0:
        drawn["bootstrap_violins"] = lambda: figures.plot_bootstrap_violins(
            {o.label: bootstrap_metrics(o.y_true, o.proba, positive=positive,
                                        n_bootstrap=n_bootstrap, seed=seed,
                                        threshold=o.metrics.get("decision_threshold"))
             for o in outcomes},
            path["bootstrap_violins"], colors=colors)
    if len(outcomes) > 1:
        drawn["relative_improvement"] = lambda: figures.plot_relative_improvement(
            values, path["relative_improvement"], colors=colors)
    files = {}
    for name, draw in drawn.items():
        try:
            files[name] = draw()
        except ValueError as err:  # e.g. a test split without both classes has no ROC
            warnings.warn(f"no {FIGURE_FILES[name]}: {err}", stacklevel=3)
    return files


def _markdown(rows: Sequence[dict], *, reference: str, n_test: int, class_names: list[str],
              positive_class: str | None, n_bootstrap: int, seed: int) -> str:
    best = {m: max((r[m] for r in rows if r[m] is not None), default=None) for m in METRIC_NAMES}
    header = ["Run", "Role", *(figures.METRIC_LABELS[m] for m in METRIC_NAMES), "Parameters",
              "Train s", "ms/image", "DeLong p", "McNemar p"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [f"`{row['run']}`", row["role"]]
        for m in METRIC_NAMES:
            cell = _metric_cell(row[m], row[f"{m}_ci_low"], row[f"{m}_ci_high"])
            cells.append(f"**{cell}**" if row[m] is not None and row[m] == best[m] else cell)
        cells += [_integer(row["n_parameters"]), _fixed(row["train_seconds"], 1),
                  _fixed(row["inference_ms_per_image"], 2)]
        cells += ["reference" if row["run"] == reference else _p_value(row[k])
                  for k in ("delong_p", "mcnemar_p")]
        lines.append("| " + " | ".join(cells) + " |")
    task = (f"binary, positive class `{positive_class}`" if positive_class is not None
            else f"{len(class_names)} classes, macro averages, one-vs-rest macro AUC")
    notes = [
        f"Test set: the same {n_test} original images for every run ({task}).",
        f"Brackets: percentile bootstrap 95% CI over the test set ({n_bootstrap} resamples, "
        f"seed {seed}). Bold: best value of each column.",
        f"p-values: paired tests of each run against `{reference}` on the same test images, "
        "DeLong's test for AUC and McNemar's exact test for accuracy"
        + ("" if positive_class is not None else " (DeLong applies to binary AUCs only)") + ". "
        f"A difference with p >= {SIGNIFICANCE_LEVEL} is within the noise of {n_test} images.",
    ]
    figure_links = [f"![{name}]({file})" for name, file in FIGURE_FILES.items()]
    return "\n".join(["# qclassify compare", "", *lines, "", *notes, "", *figure_links, ""])


def _read_history(run_dir: Path) -> dict[str, list[float]]:
    rows = RunFolder(run_dir).read_history()
    columns = ("epoch", "train_loss", "val_loss", "val_auc")
    return {column: [row[column] for row in rows] for column in columns}


def _metric_cell(value, low, high) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" + ("" if low is None else f" [{low:.3f}, {high:.3f}]")


def _p_value(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _fixed(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _integer(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,}"


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _csv_value(value):
    return "" if value is None else value


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
