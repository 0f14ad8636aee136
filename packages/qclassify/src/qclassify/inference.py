"""Using a finished run folder: load its model, predict images, evaluate its test split."""

from __future__ import annotations

import csv
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from qclassify.batches import EVAL_BATCH_SIZE, predict_proba
from qclassify.config import DEFAULT_Q_DEVICE, TrainConfig
from qclassify.data import read_split_csv
from qclassify.images import find_unreadable, list_images
from qclassify.metrics import evaluate_predictions, predict_classes
from qclassify.models import build_model, count_parameters, resolve_device
from qclassify.options import OptionError
from qclassify.report import plot_confusion_matrix, plot_roc
from qclassify.runfolder import (
    CONFIG_FILE,
    CONFUSION_MATRIX_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    MODEL_FILE,
    PREDICTIONS_FILE,
    ROC_FILE,
    SPLIT_FILE,
    check_separate,
    read_json,
    read_torch,
    write_csv,
    write_json,
)

__all__ = ["LoadedRun", "check_positive", "evaluate_run", "load_run", "predict_paths",
           "predict_proba"]

_CHECKPOINT_KEYS = ("model", "class_names", "n_qubits", "n_layers", "q_backend", "image_size",
                    "state_dict")


@dataclass
class LoadedRun:
    """A run folder's best model (in eval mode, on `device`) and what describes it."""

    run_dir: Path
    model: nn.Module
    model_name: str
    class_names: list[str]
    image_size: int
    positive_class: str | None
    decision_threshold: float | None  # on the positive-class probability; None: argmax
    decision_rule_note: str | None  # why a requested threshold fell back to argmax
    device: torch.device
    config: dict  # config.json; empty when the folder has none

    def proba(
        self, paths: Sequence[str | Path], *, batch_size: int = EVAL_BATCH_SIZE, progress: bool = False
    ) -> tuple[np.ndarray, float]:
        """Class probabilities (N, C) of image files, and the model's forward seconds."""
        return predict_proba(self.model, paths, image_size=self.image_size,
                             batch_size=batch_size, device=self.device, progress=progress)

    def predicted_classes(self, proba: np.ndarray) -> np.ndarray:
        """Class indices of probability rows, by the run's decision rule."""
        positive = (None if self.decision_threshold is None
                    else self.class_names.index(self.positive_class))
        return predict_classes(proba, positive=positive, threshold=self.decision_threshold)


def load_run(run_dir: str | Path, *, device: str = "auto") -> LoadedRun:
    """Rebuild the model saved in ``run_dir/model.pt``; no other file is required.

    Raises:
        ValueError: no such folder, no ``model.pt`` (training not run or not finished), a file
            that is not a usable qclassify checkpoint, or an unreadable ``config.json``.
    """
    run_dir = Path(run_dir)
    model_path = run_dir / MODEL_FILE
    if not run_dir.is_dir():
        raise ValueError(f"run folder {run_dir} does not exist")
    if not model_path.is_file():
        raise ValueError(
            f"{run_dir} holds no {MODEL_FILE}: train it with `qclassify fit` (or let the "
            "training finish) first"
        )
    checkpoint = read_torch(model_path)
    if not isinstance(checkpoint, dict) or any(k not in checkpoint for k in _CHECKPOINT_KEYS):
        raise ValueError(f"{model_path} is not a qclassify checkpoint (written by `qclassify fit`)")
    class_names = checkpoint["class_names"]
    if not (isinstance(class_names, list) and all(isinstance(n, str) for n in class_names)):
        raise ValueError(f"{model_path} is not a usable qclassify checkpoint: its class_names "
                         "are not a list of names")
    model = _rebuild_model(model_path, checkpoint)
    resolved = resolve_device(device)
    config_path = run_dir / CONFIG_FILE
    return LoadedRun(
        run_dir=run_dir,
        model=model.to(resolved).eval(),
        model_name=checkpoint["model"],
        class_names=class_names,
        image_size=int(checkpoint["image_size"]),
        positive_class=checkpoint.get("positive_class"),
        decision_threshold=checkpoint.get("decision_threshold"),
        decision_rule_note=checkpoint.get("decision_rule_note"),
        device=resolved,
        config=read_json(config_path) if config_path.is_file() else {},
    )


def _rebuild_model(model_path: Path, checkpoint: dict) -> nn.Module:
    """The checkpoint's model with its weights. Its settings pass `fit`'s own option checks
    before anything is built, so a crafted file gives an error naming it, not an allocator
    failure."""
    # Checkpoints written before the device was an option used PennyLane's default.qubit.
    q_device = checkpoint.get("q_device", DEFAULT_Q_DEVICE)
    settings = TrainConfig(model=checkpoint["model"], qubits=checkpoint["n_qubits"],
                           qlayers=checkpoint["n_layers"], q_backend=checkpoint["q_backend"],
                           q_device=q_device, image_size=checkpoint["image_size"])
    try:
        settings.validate()
        model = build_model(settings.model, len(checkpoint["class_names"]), weights="none",
                            n_qubits=settings.qubits, n_layers=settings.qlayers,
                            q_backend=settings.q_backend, q_device=settings.q_device)
        model.load_state_dict(checkpoint["state_dict"])
    except (ValueError, TypeError, RuntimeError, MemoryError) as err:
        # load_state_dict lists every mismatched tensor: its first line says enough.
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{model_path} is not a usable qclassify checkpoint: {reason}") from err
    return model


def evaluate_run(
    run_dir: str | Path,
    data_dir: str | Path | None = None,
    *,
    n_bootstrap: int = 500,
    positive: str | None = None,
    seed: int = 0,
    batch_size: int = EVAL_BATCH_SIZE,
    device: str = "auto",
    progress: bool = False,
) -> dict:
    """Evaluate a run on the ORIGINAL images of its test split (from ``split.csv``).

    Writes ``metrics.json`` (`qclassify.metrics.evaluate_predictions` plus
    ``inference_ms_per_image``, ``n_parameters``, ``train_seconds`` and ``model``),
    ``predictions.csv`` (``path,true_class,predicted_class,p_<class>...``),
    ``confusion_matrix.png`` and ``roc.png`` into the run folder, and returns the metrics.

    Args:
        data_dir: the dataset folder; defaults to the one recorded in ``config.json``.
        positive: positive class name of a two-class task; defaults to the training minority.

    Raises:
        ValueError: no model, no split.csv, test images missing, or a bad `positive`.
    """
    run = load_run(run_dir, device=device)
    positive_index = _positive_index(positive, run)
    data_dir = _data_dir(run, data_dir)
    # Its figures and CSV files would become images and files of the dataset.
    check_separate(run.run_dir, data_dir, option="run folder")
    if not (run.run_dir / SPLIT_FILE).is_file():
        raise ValueError(f"{run.run_dir} holds no {SPLIT_FILE}: cannot tell its test images")
    test = [s for s in read_split_csv(run.run_dir / SPLIT_FILE)
            if s.split == "test" and not s.synthetic]
    if not test:
        raise ValueError(f"{run.run_dir / SPLIT_FILE} lists no test images")
    missing = [s.path for s in test if not (data_dir / s.path).is_file()]
    if missing:
        raise ValueError(
            f"{len(missing)} test image(s) of {SPLIT_FILE} are missing from {data_dir} "
            f"(first: {missing[0]}); pass the DATA folder the run was trained on"
        )
    unknown = sorted({s.class_name for s in test} - set(run.class_names))
    if unknown:
        raise ValueError(f"test classes {', '.join(unknown)} are not classes of the model")
    labels = np.array([run.class_names.index(s.class_name) for s in test])
    proba, forward_seconds = run.proba([data_dir / s.path for s in test],
                                       batch_size=batch_size, progress=progress)
    metrics = evaluate_predictions(labels, proba, run.class_names, positive=positive_index,
                                   n_bootstrap=n_bootstrap, seed=seed,
                                   threshold=_threshold(run, positive_index))
    metrics.update(
        model=run.model_name,
        inference_ms_per_image=1000 * forward_seconds / len(test),
        n_parameters=count_parameters(run.model),
        train_seconds=_train_seconds(run.run_dir),
        decision_rule_note=run.decision_rule_note,
    )
    write_json(run.run_dir / METRICS_FILE, metrics)
    _write_predictions(run, test, labels, proba)
    title = f"{run.model_name} ({run.run_dir.name})"
    plot_confusion_matrix(np.asarray(metrics["confusion_matrix"]), run.class_names,
                          run.run_dir / CONFUSION_MATRIX_FILE, title=title)
    (run.run_dir / ROC_FILE).unlink(missing_ok=True)
    try:
        plot_roc(labels, proba, run.class_names, run.run_dir / ROC_FILE,
                 positive=positive_index, n_bootstrap=n_bootstrap, seed=seed, title=title)
    except ValueError as err:  # a test split without both classes has no ROC curve
        warnings.warn(f"no {ROC_FILE}: {err}", stacklevel=2)
    return metrics


def predict_paths(
    run_dir: str | Path,
    paths: Sequence[str | Path],
    *,
    batch_size: int = EVAL_BATCH_SIZE,
    device: str = "auto",
    progress: bool = False,
) -> list[dict[str, str | float]]:
    """Predict image files and every image below folders, in path order.

    Folders are searched recursively, a convenience for the user (dataset discovery reads
    class folders without their sub-folders); dot-entries inside them are skipped, while a
    file named explicitly is always used.

    Returns one row per readable image, keys in CSV column order:
    ``path, predicted_class, p_<class>...``. Unreadable images are skipped with a warning.

    Args:
        progress: progress bars (tqdm, on stderr) while images are checked and predicted.

    Raises:
        ValueError: a path does not exist, or no readable image was given.
    """
    run = load_run(run_dir, device=device)
    files = _expand(paths)
    for path, reason in find_unreadable(files, progress=progress).items():
        warnings.warn(f"skipping unreadable image {path}: {reason}", stacklevel=2)
        files.remove(Path(path))
    if not files:
        raise ValueError(f"no readable images among {', '.join(str(p) for p in paths)}")
    proba, _ = run.proba(files, batch_size=batch_size, progress=progress)
    predicted = run.predicted_classes(proba)
    return [
        {"path": str(path), "predicted_class": run.class_names[k],
         **_probability_columns(run.class_names, row)}
        for path, k, row in zip(files, predicted, proba, strict=True)
    ]


def _expand(paths: Sequence[str | Path]) -> list[Path]:
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += list_images(path, recursive=True)
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(f"{path} does not exist")
    return files


def _probability_columns(class_names: list[str], row: np.ndarray) -> dict[str, float]:
    return {f"p_{name}": float(p) for name, p in zip(class_names, row, strict=True)}


def _data_dir(run: LoadedRun, data_dir: str | Path | None) -> Path:
    if data_dir is not None:
        return Path(data_dir)
    if "data_dir" not in run.config:
        raise OptionError(f"{run.run_dir} records no data folder; pass DATA")
    return Path(run.config["data_dir"])


def check_positive(positive: str | None, class_names: Sequence[str]) -> None:
    """Raise ValueError unless `positive` is None or a class of a two-class task."""
    if positive is None:
        return
    if len(class_names) != 2:
        raise OptionError(f"--positive applies to two-class tasks; this one has "
                         f"{len(class_names)} classes")
    if positive not in class_names:
        raise OptionError(f"--positive {positive!r} is not a class; choose one of "
                         f"{', '.join(class_names)}")


def _positive_index(positive: str | None, run: LoadedRun) -> int | None:
    name = positive if positive is not None else run.positive_class
    if len(run.class_names) != 2 or name is None:
        check_positive(positive, run.class_names)
        return None
    check_positive(name, run.class_names)
    return run.class_names.index(name)


def _threshold(run: LoadedRun, positive_index: int | None) -> float | None:
    """The run's decision threshold; refused with another positive class than it was tuned
    for (a threshold on one class's probability is meaningless for the other)."""
    if run.decision_threshold is None:
        return None
    if positive_index is None or run.class_names[positive_index] != run.positive_class:
        raise OptionError(f"this run predicts with a decision threshold tuned for positive class "
                         f"{run.positive_class!r}; evaluate it with that positive class")
    return run.decision_threshold


def _train_seconds(run_dir: Path) -> float | None:
    history = run_dir / HISTORY_FILE
    if not history.is_file():
        return None
    with history.open(newline="", encoding="utf-8") as handle:
        return sum(float(row["seconds"]) for row in csv.DictReader(handle))


def _write_predictions(run: LoadedRun, test, labels: np.ndarray, proba: np.ndarray) -> None:
    columns = ["path", "true_class", "predicted_class", *(f"p_{c}" for c in run.class_names)]
    rows = (
        {"path": sample.path, "true_class": run.class_names[label],
         "predicted_class": run.class_names[k], **_probability_columns(run.class_names, row)}
        for sample, label, k, row in zip(test, labels, run.predicted_classes(proba), proba,
                                         strict=True)
    )
    write_csv(run.run_dir / PREDICTIONS_FILE, columns, rows)
