"""``RUN/model-card.md``: what a run was trained on, how, how well it did and what it is not
for, written by ``qclassify evaluate`` from the run's own files.

Everything comes from ``config.json`` (the options are iterated, so options added later appear
without a change here), ``split.csv`` and ``metrics.json``, plus the diffaug manifest of the
data folder when there is one. No absolute path of the machine is written: folders and files
are named by their last component, as a reader who has the run and the data beside each other
would type them.
"""

from __future__ import annotations

import os
import shlex
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from qclassify.data import MANIFEST_NAME
from qclassify.metrics import METRIC_NAMES
from qclassify.runfolder import RunFolder, atomic_write, read_csv_rows, sha256_of_file

__all__ = ["MODEL_CARD_FILE", "model_card", "write_model_card"]

MODEL_CARD_FILE = "model-card.md"
_SPLITS = ("train", "val", "test")


def write_model_card(run_dir: str | Path, data_dir: str | Path | None = None) -> Path:
    """Write `model_card` to ``run_dir/model-card.md`` atomically; returns its path.

    Args:
        data_dir: the data folder, searched for a diffaug manifest; defaults to the one in
            ``config.json``.

    Raises:
        ValueError: ``metrics.json`` or ``config.json`` is missing or unreadable.
    """
    path = Path(run_dir) / MODEL_CARD_FILE
    text = model_card(run_dir, data_dir)
    return atomic_write(path, lambda file: file.write(text.encode("utf-8")))


def model_card(run_dir: str | Path, data_dir: str | Path | None = None) -> str:
    """The model card of an evaluated run, as markdown."""
    folder = RunFolder(run_dir)
    config, metrics = folder.read_config(), folder.read_metrics()
    if not config:
        raise ValueError(f"{folder.config_file} is missing: a model card needs the training "
                         "options")
    data = Path(data_dir) if data_dir is not None else Path(config.get("data_dir", "data"))
    rows = read_csv_rows(folder.split_file) if folder.split_file.is_file() else []
    sections = [
        f"# Model card: {folder.path.name}",
        _model_section(config),
        _data_section(config, rows, data),
        _recipe_section(config),
        _metrics_section(metrics),
        _decision_section(metrics),
        _limitations_section(config, metrics, rows),
        _reproduce_section(config, metrics, folder.path.name, data.name),
    ]
    return "\n\n".join(sections) + "\n"


def _model_section(config: Mapping[str, Any]) -> str:
    options = config.get("options", {})
    lines = [f"- Architecture: `{options.get('model')}`"]
    if options.get("model") == "qmobilenet":
        lines.append(f"- Quantum layer: {options.get('qubits')} qubits, {options.get('qlayers')} "
                     f"RY/CNOT layers, simulated with the `{options.get('q_backend')}` backend")
    lines += [f"- Parameters: {config.get('n_parameters')}",
              f"- Classes: {', '.join(config.get('class_names', []))}; positive class: "
              f"{config.get('positive_class')}",
              f"- Input: {options.get('image_size')} px square images"]
    return "## Model\n\n" + "\n".join(lines)


def _data_section(config: Mapping[str, Any], rows: list[dict[str, str]], data: Path) -> str:
    lines = [f"Data folder `{data.name}` ({config.get('layout')} layout)."]
    lines.append(_counts_table(config, rows))
    manifest = data / MANIFEST_NAME
    n_synthetic = config.get("n_synthetic_train", 0)
    if manifest.is_file():
        lines.append(f"Balanced with diffaug: {n_synthetic} synthetic training image(s) listed "
                     f"in `{MANIFEST_NAME}` (sha256 `{sha256_of_file(manifest)}`); synthetic "
                     "images are used for training only, never for validation or testing.")
    else:
        lines.append(f"No diffaug manifest in the data folder; {n_synthetic} synthetic "
                     "training image(s).")
    if rows and "group" in rows[0]:
        groups = {split: len({r["group"] for r in rows if r["split"] == split})
                  for split in _SPLITS}
        lines.append("Groups (split.csv `group` column; no group spans two splits): "
                     + ", ".join(f"{n} in {split}" for split, n in groups.items()) + ".")
    return "## Data\n\n" + "\n\n".join(lines)


def _counts_table(config: Mapping[str, Any], rows: list[dict[str, str]]) -> str:
    """Images per class and split, originals and synthetic apart (from split.csv; from
    config.json's counts when the run has no split.csv)."""
    classes = config.get("class_names", [])
    if not rows:
        counts = config.get("class_counts", {})
        body = [(name, *(counts.get(split, {}).get(name, 0) for split in _SPLITS))
                for name in classes]
        return _table(("Class", *_SPLITS), body)
    tally = Counter((r["class"], r["split"], r.get("synthetic", "0") == "1") for r in rows)
    body = [(name, *(tally[name, split, False] for split in _SPLITS), tally[name, "train", True])
            for name in classes]
    return _table(("Class", "train originals", "val", "test", "train synthetic"), body)


def _recipe_section(config: Mapping[str, Any]) -> str:
    options = config.get("options", {})
    body = [(f"`{name}`", f"`{_shown(value)}`") for name, value in options.items()]
    versions = config.get("versions", {})
    shown_versions = ", ".join(f"{name} {v}" for name, v in versions.items() if v)
    return ("## Training recipe\n\nEvery option of `qclassify fit`, from `config.json`:\n\n"
            + _table(("Option", "Value"), body) + f"\n\nVersions: {shown_versions}.")


def _metrics_section(metrics: Mapping[str, Any]) -> str:
    body = []
    for name in METRIC_NAMES:
        entry = metrics.get(name, {})
        interval = entry.get("ci95")
        shown = "n/a" if interval is None else f"[{interval[0]:.4f}, {interval[1]:.4f}]"
        value = entry.get("value")
        body.append((name, "n/a" if value is None else f"{value:.4f}", shown))
    positive = metrics.get("positive_class") or "macro average"
    return (f"## Test metrics\n\nOn {metrics.get('n_test')} original test images (positive "
            f"class: {positive}); 95% confidence intervals from {metrics.get('n_bootstrap')} "
            f"bootstrap resamples (seed {metrics.get('bootstrap_seed')}).\n\n"
            + _table(("Metric", "Value", "95% CI"), body)
            + f"\n\nConfusion matrix (rows: true class, columns: predicted; order "
              f"{', '.join(metrics.get('class_names', []))}): "
              f"`{metrics.get('confusion_matrix')}`.")


def _decision_section(metrics: Mapping[str, Any]) -> str:
    threshold = metrics.get("decision_threshold")
    if threshold is None:
        rule = "argmax: the class with the highest probability."
    else:
        rule = (f"predict {metrics.get('positive_class')} when its probability is at least "
                f"{threshold!r} (Youden-optimal on the validation split), else the other class.")
    note = metrics.get("decision_rule_note")
    return "## Decision rule\n\n" + rule + (f" Note: {note}" if note else "")


def _limitations_section(config: Mapping[str, Any], metrics: Mapping[str, Any],
                         rows: list[dict[str, str]]) -> str:
    n_train = (sum(r["split"] == "train" for r in rows) if rows
               else sum(config.get("class_counts", {}).get("train", {}).values()))
    train = config.get("train_original_counts", {})
    imbalance = (f"{max(train.values()) / min(train.values()):.1f}:1 (largest to smallest "
                 f"class, training originals)" if train and min(train.values()) > 0 else "n/a")
    return ("## Intended use and limitations\n\n"
            f"- Research use only; trained on {n_train} images from one source; not validated "
            "for clinical use.\n"
            f"- Class imbalance of the training data: {imbalance}; metrics of the minority "
            "class are the least certain.\n"
            f"- Test set: {metrics.get('n_test')} images; the confidence intervals above show "
            "how little a small test set pins the metrics down.\n"
            "- Inputs must be preprocessed as in training (see `qclassify export`'s JSON file).")


def _reproduce_section(config: Mapping[str, Any], metrics: Mapping[str, Any], run_name: str,
                       data_name: str) -> str:
    fit = ["qclassify", "fit", data_name, "--out", run_name,
           *_flags(config.get("options", {}).items())]
    evaluate = ["qclassify", "evaluate", run_name, data_name,
                "--bootstrap", str(metrics.get("n_bootstrap")),
                "--seed", str(metrics.get("bootstrap_seed"))]
    if metrics.get("positive_class") is not None:
        evaluate += ["--positive", str(metrics["positive_class"])]
    return ("## How to reproduce\n\nFrom the folder holding the data and the run:\n\n"
            f"```\n{shlex.join(fit)}\n{shlex.join(evaluate)}\n```")


def _flags(options: Iterable[tuple[str, Any]]) -> list[str]:
    """Command-line flags of config.json options: ``--name value``, ``--flag``/``--no-flag``
    for booleans, lists comma-joined, unset (None) options left out."""
    flags: list[str] = []
    for name, value in options:
        flag = "--" + name.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, _shown(value)]
    return flags


def _shown(value: Any) -> str:
    """A value as written in the card: absolute paths by their last component only."""
    if isinstance(value, (list, tuple)):
        return ",".join(_shown(item) for item in value)
    if isinstance(value, str) and os.path.isabs(value):
        return Path(value).name
    return str(value)


def _table(header: Iterable[str], body: Iterable[Iterable[Any]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in body]
    return "\n".join(lines)
