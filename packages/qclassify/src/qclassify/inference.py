"""Using a finished run folder: load its model, predict images, evaluate its test split."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from qclassify.batches import EVAL_BATCH_SIZE, predict_proba
from qclassify.config import DEFAULT_Q_DEVICE, TrainConfig
from qclassify.data import frame_samples
from qclassify.devices import resolve_device
from qclassify.figures import plot_confusion_matrix, plot_roc
from qclassify.images import ImageRef, list_images, unreadable_reason
from qclassify.medical import frame_indices, is_medical
from qclassify.metrics import evaluate_predictions, predict_classes
from qclassify.modelcard import write_model_card
from qclassify.models import build_model, count_parameters
from qclassify.options import OptionError
from qclassify.predict_batches import (
    BatchEngine,
    BatchPrediction,
    TorchEngine,
    predict_refs,
)
from qclassify.runfolder import (
    MODEL_FILE,
    ROC_FILE,
    SPLIT_FILE,
    RunFolder,
    check_separate,
    checkpoint_settings,
)
from qclassify.runtime import choose_engine

__all__ = ["Evaluation", "LoadedRun", "check_positive", "evaluate_run", "evaluate_test_split",
           "load_run", "predict_files", "predict_paths", "predict_proba", "save_evaluation"]

# What a checkpoint says besides its weights (``state_dict``).
_SETTINGS_KEYS = ("model", "class_names", "n_qubits", "n_layers", "q_backend", "image_size")


@dataclass
class LoadedRun:
    """A run folder's best model (in eval mode, on `device`) and what describes it."""

    run_dir: Path
    model_name: str
    class_names: list[str]
    image_size: int
    positive_class: str | None
    decision_threshold: float | None  # on the positive-class probability; None: argmax
    decision_rule_note: str | None  # why a requested threshold fell back to argmax
    device: torch.device
    config: dict  # config.json; empty when the folder has none
    frames: str = "middle"  # DICOM/NIfTI frames: the training run's choice unless overridden
    window: tuple[float, float] | None = None
    # model.pt's entries but its weights (with the q_backend asked for), which build `model`.
    _settings: dict = field(default_factory=dict, repr=False)
    _model: nn.Module | None = field(default=None, repr=False)  # None: not built yet

    @property
    def model(self) -> nn.Module:
        """The model; built from model.pt at first use when `load_run` did not build it.

        Raises:
            ValueError: the checkpoint's settings or weights are unusable (naming model.pt).
        """
        if self._model is None:
            folder = RunFolder(self.run_dir)
            weights = _weights(folder.model_file, folder.read_checkpoint())
            self._model = _rebuild_model(folder.model_file, self._settings, weights, self.device)
        return self._model

    def proba(
        self, paths: Sequence[str | Path | ImageRef], *, batch_size: int = EVAL_BATCH_SIZE,
        progress: bool = False,
    ) -> tuple[np.ndarray, float]:
        """Class probabilities (N, C) of image files (or frames), and the forward seconds."""
        return predict_proba(self.model, paths, image_size=self.image_size,
                             batch_size=batch_size, device=self.device, progress=progress,
                             window=self.window)

    @property
    def models(self) -> list[nn.Module]:
        """The models whose probabilities are averaged: this run's one (see `EnsembleRun`)."""
        return [self.model]

    def read_options(self, frames: str | None, window: tuple[float, float] | None) -> None:
        """Use `frames`/`window` instead of the training run's (None keeps the run's)."""
        if frames is not None:
            self.frames = frames
        if window is not None:
            self.window = window

    def predicted_classes(self, proba: np.ndarray) -> np.ndarray:
        """Class indices of probability rows, by the run's decision rule."""
        positive = (None if self.decision_threshold is None
                    else self.class_names.index(self.positive_class))
        return predict_classes(proba, positive=positive, threshold=self.decision_threshold)


def load_run(run_dir: str | Path, *, device: str = "auto", q_backend: str | None = None,
             build_model: bool = True) -> LoadedRun:
    """Rebuild the model saved in ``run_dir/model.pt``; no other file is required. How
    DICOM/NIfTI files are read (frames, window) comes from ``config.json``'s options.

    Without `build_model` only the checkpoint's description is checked and the model is built
    at the first use of ``.model`` (never, by a prediction from a cached ONNX export): its
    settings and weights are then checked there.

    `q_backend` overrides the checkpoint's circuit simulation: both backends share their
    weights (same state-dict key), so ``"torch"`` runs a PennyLane-trained model through the
    exact PyTorch simulation (what `qclassify.export` traces), without PennyLane installed.

    Raises:
        ValueError: no such folder, no ``model.pt`` (training not run or not finished), a file
            that is not a usable qclassify checkpoint, or an unreadable ``config.json``.
    """
    folder = RunFolder(run_dir)
    run_dir, model_path = folder.path, folder.model_file
    if not run_dir.is_dir():
        raise ValueError(f"run folder {run_dir} does not exist")
    if not model_path.is_file() and folder.is_ensemble():
        raise ValueError(f"{run_dir} is a seed ensemble (fit --seeds): use "
                         "qclassify.ensemble_run (load_ensemble, evaluate_any, predict_any), "
                         "or one of its seed-<k> member folders")
    if not model_path.is_file():
        raise ValueError(
            f"{run_dir} holds no {MODEL_FILE}: train it with `qclassify fit` (or let the "
            "training finish) first"
        )
    resolved = resolve_device(device)
    model = None  # built at first use
    if build_model:
        checkpoint = folder.read_checkpoint()
        settings = _checked_settings(model_path, checkpoint, q_backend)
        model = _rebuild_model(model_path, settings, _weights(model_path, checkpoint), resolved)
    else:
        settings = _checked_settings(model_path, folder.read_checkpoint_settings(), q_backend)
    config = folder.read_config()
    options = config.get("options", {})
    window = options.get("window")
    return LoadedRun(
        run_dir=run_dir,
        model_name=settings["model"],
        class_names=settings["class_names"],
        image_size=int(settings["image_size"]),
        positive_class=settings.get("positive_class"),
        decision_threshold=settings.get("decision_threshold"),
        decision_rule_note=settings.get("decision_rule_note"),
        device=resolved,
        config=config,
        frames=options.get("frames", "middle"),
        window=None if window is None else (float(window[0]), float(window[1])),
        _settings=settings,
        _model=model,
    )


def _checked_settings(model_path: Path, checkpoint: object, q_backend: str | None) -> dict:
    """A copy of a checkpoint's entries but its weights (`q_backend` replacing its own),
    once they describe a model that `fit` could have trained."""
    if not isinstance(checkpoint, dict) or any(k not in checkpoint for k in _SETTINGS_KEYS):
        raise ValueError(f"{model_path} is not a qclassify checkpoint (written by `qclassify fit`)")
    class_names = checkpoint["class_names"]
    if not (isinstance(class_names, list) and all(isinstance(n, str) for n in class_names)):
        raise ValueError(f"{model_path} is not a usable qclassify checkpoint: its class_names "
                         "are not a list of names")
    settings = checkpoint_settings(checkpoint)
    if q_backend is not None:
        settings["q_backend"] = q_backend
    _train_config(model_path, settings)
    return settings


def _weights(model_path: Path, checkpoint: object) -> dict:
    """A checkpoint's ``state_dict``."""
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{model_path} is not a qclassify checkpoint (written by `qclassify fit`)")
    return checkpoint["state_dict"]


def _rebuild_model(model_path: Path, settings: dict, weights: dict,
                   device: torch.device) -> nn.Module:
    """The checkpoint's model with its weights, in eval mode on `device`.

    Raises:
        ValueError: settings or weights that make no model of this kind, naming the file.
    """
    config = _train_config(model_path, settings)
    try:
        model = build_model(config.model, len(settings["class_names"]), weights="none",
                            n_qubits=config.qubits, n_layers=config.qlayers,
                            q_backend=config.q_backend, q_device=config.q_device,
                            stem=config.stem)
        model.load_state_dict(weights)
    except (ValueError, TypeError, RuntimeError, MemoryError) as err:
        raise _unusable(model_path, err) from err
    return model.to(device).eval()


def _train_config(model_path: Path, settings: dict) -> TrainConfig:
    """A checkpoint's model settings, through `fit`'s own option checks: a crafted file gives
    an error naming it before anything is built, not an allocator failure."""
    # Checkpoints written before the device was an option used PennyLane's default.qubit;
    # those written before --stem existed used the standard stem.
    config = TrainConfig(model=settings["model"], qubits=settings["n_qubits"],
                         qlayers=settings["n_layers"], q_backend=settings["q_backend"],
                         q_device=settings.get("q_device", DEFAULT_Q_DEVICE),
                         image_size=settings["image_size"],
                         stem=settings.get("stem", "standard"))
    try:
        config.validate()
    except (ValueError, TypeError) as err:
        raise _unusable(model_path, err) from err
    return config


def _unusable(model_path: Path, err: Exception) -> ValueError:
    # load_state_dict lists every mismatched tensor: its first line says enough.
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return ValueError(f"{model_path} is not a usable qclassify checkpoint: {reason}")


@dataclass
class Evaluation:
    """A run evaluated on the original images of its test split: the metrics, and the
    predictions they come from (rows in ``split.csv`` order)."""

    run: LoadedRun
    metrics: dict  # `qclassify.metrics.evaluate_predictions` plus the run's size and timings
    paths: list[str]  # test images, relative to the data folder (`sample_name`)
    labels: np.ndarray  # true class indices
    proba: np.ndarray  # class probabilities (N, C)

    @property
    def predicted(self) -> np.ndarray:
        """Predicted class indices, by the run's decision rule."""
        return self.run.predicted_classes(self.proba)


def evaluate_test_split(
    run_dir: str | Path,
    data_dir: str | Path | None = None,
    *,
    n_bootstrap: int = 500,
    positive: str | None = None,
    seed: int = 0,
    batch_size: int = EVAL_BATCH_SIZE,
    device: str = "auto",
    progress: bool = False,
    frames: str | None = None,
    window: tuple[float, float] | None = None,
) -> Evaluation:
    """Evaluate a run on the ORIGINAL images of its test split (from ``split.csv``); writes
    nothing (`save_evaluation` does). `frames`/`window` override the run's DICOM/NIfTI
    reading (``frames`` regroups the test files' frames).

    The metrics are `qclassify.metrics.evaluate_predictions` plus ``model``,
    ``inference_ms_per_image``, ``n_parameters``, ``train_seconds`` and
    ``decision_rule_note``.

    Args:
        data_dir: the dataset folder; defaults to the one recorded in ``config.json``.
        positive: positive class name of a two-class task; defaults to the training minority.

    Raises:
        ValueError: no model, no split.csv, test images missing, or a bad `positive`.
    """
    run = load_run(run_dir, device=device)
    run.read_options(frames, window)
    folder = RunFolder(run.run_dir)
    positive_index = _positive_index(positive, run)
    data_dir = _data_dir(run.run_dir, run.config, data_dir)
    if not folder.split_file.is_file():
        raise ValueError(f"{run.run_dir} holds no {SPLIT_FILE}: cannot tell its test images")
    test = [s for s in folder.read_split() if s.split == "test" and not s.synthetic]
    if not test:
        raise ValueError(f"{folder.split_file} lists no test images")
    missing = [s.path for s in test if not (data_dir / s.path).is_file()]
    if missing:
        raise ValueError(
            f"{len(missing)} test image(s) of {SPLIT_FILE} are missing from {data_dir} "
            f"(first: {missing[0]}); pass the DATA folder the run was trained on"
        )
    unknown = sorted({s.class_name for s in test} - set(run.class_names))
    if unknown:
        raise ValueError(f"test classes {', '.join(unknown)} are not classes of the model")
    if frames is not None:
        test = frame_samples(data_dir, test, frames)
    labels = np.array([run.class_names.index(s.class_name) for s in test])
    proba, forward_seconds = run.proba([ImageRef(data_dir / s.path, s.frame) for s in test],
                                       batch_size=batch_size, progress=progress)
    metrics = evaluate_predictions(labels, proba, run.class_names, positive=positive_index,
                                   n_bootstrap=n_bootstrap, seed=seed,
                                   threshold=_threshold(run, positive_index))
    history = folder.read_history()
    metrics.update(
        model=run.model_name,
        inference_ms_per_image=1000 * forward_seconds / len(test),
        n_parameters=count_parameters(run.model),
        train_seconds=sum(row["seconds"] for row in history) if history else None,
        decision_rule_note=run.decision_rule_note,
    )
    return Evaluation(run, metrics, [sample_name(s.path, s.frame) for s in test], labels, proba)


def sample_name(path: str | Path, frame: int | None) -> str:
    """How predictions name a sample: its path, with ``#<frame>`` for one frame of a file."""
    return str(path) if frame is None else f"{path}#{frame}"


def save_evaluation(evaluation: Evaluation, data_dir: str | Path | None = None) -> RunFolder:
    """Write ``metrics.json``, ``model-card.md`` (`qclassify.modelcard`), ``predictions.csv`` (``path,true_class,predicted_class,
    p_<class>...``), ``confusion_matrix.png`` and ``roc.png`` (with the bootstrap band of the
    metrics' resamples) into the evaluated run's folder.

    Raises:
        ValueError: the run folder lies inside the data folder (its files would become part
            of the dataset).
    """
    run, metrics = evaluation.run, evaluation.metrics
    folder = RunFolder(run.run_dir)
    data = _data_dir(run.run_dir, run.config, data_dir)
    check_separate(run.run_dir, data, option="run folder")
    folder.write_metrics(metrics)
    if run.config:  # a card needs the training options; foreign folders have none
        write_model_card(run.run_dir, data)
    columns = ["path", "true_class", "predicted_class", *(f"p_{c}" for c in run.class_names)]
    folder.write_predictions(columns, (
        {"path": path, "true_class": run.class_names[label],
         "predicted_class": run.class_names[k], **_probability_columns(run.class_names, row)}
        for path, label, k, row in zip(evaluation.paths, evaluation.labels,
                                       evaluation.predicted, evaluation.proba, strict=True)
    ))
    title = f"{run.model_name} ({run.run_dir.name})"
    positive_index = (None if metrics.get("positive_class") is None
                      else run.class_names.index(metrics["positive_class"]))
    plot_confusion_matrix(np.asarray(metrics["confusion_matrix"]), run.class_names,
                          folder.confusion_matrix_file, title=title)
    folder.roc_file.unlink(missing_ok=True)
    try:
        plot_roc(evaluation.labels, evaluation.proba, run.class_names, folder.roc_file,
                 positive=positive_index, n_bootstrap=metrics["n_bootstrap"],
                 seed=metrics["bootstrap_seed"], title=title)
    except ValueError as err:  # a test split without both classes has no ROC curve
        warnings.warn(f"no {ROC_FILE}: {err}", stacklevel=2)
    return folder


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
    frames: str | None = None,
    window: tuple[float, float] | None = None,
) -> Evaluation:
    """`evaluate_test_split` then `save_evaluation`: what ``qclassify evaluate`` does.

    Raises:
        ValueError: see both; the folder overlap is checked before any image is predicted.
    """
    folder = RunFolder(run_dir)
    if folder.model_file.is_file():  # else evaluate_test_split says what is missing
        data = _data_dir(folder.path, folder.read_config(), data_dir)
        check_separate(folder.path, data, option="run folder")  # before predicting anything
    evaluation = evaluate_test_split(run_dir, data_dir, n_bootstrap=n_bootstrap,
                                     positive=positive, seed=seed, batch_size=batch_size,
                                     device=device, progress=progress, frames=frames,
                                     window=window)
    save_evaluation(evaluation, data_dir)
    return evaluation


def predict_paths(
    run_dir: str | Path,
    paths: Sequence[str | Path],
    *,
    batch_size: int = EVAL_BATCH_SIZE,
    device: str = "auto",
    progress: bool = False,
    frames: str | None = None,
    window: tuple[float, float] | None = None,
    engine: str = "auto",
) -> list[dict[str, str | float]]:
    """Predict image files and every image below folders, in path order.

    DICOM/NIfTI files are read as the run was trained (``config.json``) unless `frames` or
    `window` say otherwise; with frames "all" each frame is a row, ``path#<frame>``.

    Folders are searched recursively, a convenience for the user (dataset discovery reads
    class folders without their sub-folders); dot-entries inside them are skipped, while a
    file named explicitly is always used.

    Returns one row per readable image, keys in CSV column order:
    ``path, predicted_class, p_<class>...``. Unreadable images are skipped with a warning.

    Args:
        progress: a progress bar (tqdm, on stderr) while images are predicted.
        engine: ``"torch"``, ``"onnxruntime"`` (CPU; the model exported once into the run
            folder's cache, `qclassify.onnx_engine`) or ``"auto"`` (onnxruntime on a CPU when
            ``qclassify[onnx]`` is installed, else torch; `qclassify.runtime.choose_engine`).

    Raises:
        ValueError: a path does not exist, no readable image was given, or an engine that
            cannot run on the device. OnnxExtraMissingError: onnxruntime without its extra.
    """
    engine, q_backend = resolve_engine(engine, device)
    run = load_run(run_dir, device=device, q_backend=q_backend,
                   build_model=engine != "onnxruntime")
    run.read_options(frames, window)
    return predict_files(run, paths, batch_size=batch_size, progress=progress, engine=engine)


def predict_files(
    run: LoadedRun,
    paths: Sequence[str | Path],
    *,
    batch_size: int = EVAL_BATCH_SIZE,
    progress: bool = False,
    engine: str = "torch",
) -> list[dict[str, str | float]]:
    """`predict_paths` with a loaded run (or anything with its ``class_names``, ``frames``,
    ``window``, ``image_size``, ``predicted_classes``, ``models`` and ``device``, such as a
    seed ensemble). Each image is decoded once, by the prediction itself
    (`qclassify.predict_batches`): an unreadable one is skipped there, with a warning."""
    refs, unreadable = _sample_refs(_expand(paths), run.frames)
    # Without samples, no session is loaded (nor model exported) for nothing.
    prediction = (predict_refs(_engine(run, engine), refs, image_size=run.image_size,
                               window=run.window, batch_size=batch_size, progress=progress)
                  if refs else BatchPrediction())
    unreadable.update(prediction.unreadable)
    for path, reason in unreadable.items():
        warnings.warn(f"skipping unreadable image {path}: {reason}", stacklevel=2)
    if not prediction.refs:
        raise ValueError(f"no readable images among {', '.join(str(p) for p in paths)}")
    predicted = run.predicted_classes(prediction.proba)
    return [
        {"path": sample_name(*ref), "predicted_class": run.class_names[k],
         **_probability_columns(run.class_names, row)}
        for ref, k, row in zip(prediction.refs, predicted, prediction.proba, strict=True)
    ]


def resolve_engine(engine: str, device: str) -> tuple[str, str | None]:
    """The engine `predict` uses on `device` (`choose_engine`), and the circuit backend to
    load the run with: the ONNX export traces the exact torch simulation of a
    PennyLane-trained circuit."""
    engine = choose_engine(engine, resolve_device(device).type)
    return engine, "torch" if engine == "onnxruntime" else None


def _engine(run: LoadedRun, engine: str) -> BatchEngine:
    """What computes the probabilities: the run's models in torch, or their ONNX export."""
    if engine != "onnxruntime":
        return TorchEngine(run.models, run.device)
    from qclassify.onnx_engine import OnnxRunner

    return OnnxRunner.for_run(run)


def _sample_refs(files: list[Path], frames: str) -> tuple[list[ImageRef], dict[str, str]]:
    """The samples of `files` (each frame of a DICOM/NIfTI file with ``frames="all"``), and
    why each file whose frames cannot be listed is left out."""
    refs, unreadable = [], {}
    for path in files:
        try:
            indices = frame_indices(path, frames) if is_medical(path) else [None]
        except ValueError as err:
            unreadable[str(path)] = unreadable_reason(err)
            continue
        refs += [ImageRef(path, frame) for frame in indices]
    return refs, unreadable


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


def _data_dir(run_dir: Path, config: dict, data_dir: str | Path | None) -> Path:
    """DATA as given, else the data folder that the run's config.json records."""
    if data_dir is not None:
        return Path(data_dir)
    if "data_dir" not in config:
        raise OptionError(f"{run_dir} records no data folder; pass DATA")
    return Path(config["data_dir"])


def check_positive(positive: str | None, class_names: Sequence[str]) -> None:
    """Raise ValueError unless `positive` is None or a class of a two-class task."""
    if positive is None:
        return
    if len(class_names) != 2:
        raise OptionError(f"applies to two-class tasks; this one has {len(class_names)} "
                          "classes", "positive")
    if positive not in class_names:
        raise OptionError(f"{positive!r} is not a class; choose one of "
                          f"{', '.join(class_names)}", "positive")


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
