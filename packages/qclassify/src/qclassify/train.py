"""Training with a recipe (`qclassify.options.RECIPES`), writing a run folder (DESIGN.md).

The paper's recipe (section 2.5): cross-entropy (eq. 15) with Adam(lr 1e-4, betas 0.9/0.999,
weight decay 1e-4); the L2 term of eq. 15 is Adam's weight decay. Training stops when the
monitored validation metric (the loss, or the AUC) has not improved for `patience` epochs,
and the best epoch's weights are restored and saved.
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.utils.class_weight import compute_class_weight
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from qclassify.batches import (
    deterministic_algorithms,
    make_loader,
    predict_dataset_logits,
    probabilities,
)
from qclassify.config import TrainConfig, config_group_source, records_same_run, run_info
from qclassify.data import DatasetSplit, discover_dataset
from qclassify.devices import resolve_device
from qclassify.distributed import SINGLE_PROCESS, Ranks, current_ranks
from qclassify.images import ImageDataset
from qclassify.metrics import merge_near_ties, youden_threshold
from qclassify.models import build_model
from qclassify.optim import is_better_epoch, make_optimizer, make_scheduler
from qclassify.options import OptionError
from qclassify.runfolder import MODEL_FILE, RUN_FILES, RunFolder, check_separate

__all__ = [
    "CHECKPOINT_FORMAT",
    "HISTORY_COLUMNS",
    "TRAINING_MEMORY_FORMAT",
    "EpochRecord",
    "FitResult",
    "check_decision_rule",
    "fit",
]

HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_accuracy", "val_auc", "seconds")
CHECKPOINT_FORMAT = 1
# Training's layout of images and convolution weights: NHWC made a CPU training step of
# mobilenet_v2 (64 px, batch 32, one thread) about a quarter faster in interleaved runs.
# Saved weights are the same tensors whatever the layout.
TRAINING_MEMORY_FORMAT = torch.channels_last
TRAINING_STATE_FORMAT = 1
# Validation probabilities closer than this are scored as ties when epochs are compared.
# Images can share one output exactly: a network from scratch outputs one constant in its first
# epochs, and the quantum head maps every image whose 2^n reduced features have the same single
# non-zero entry to the same basis state (amplitude encoding, eq. 7, drops the norm). Float32
# round-off (up to ~6e-7 between memory formats) then orders such images at random, moving the
# validation AUC by noise (0.864 vs 0.873 for one BreastMNIST member) and with it the best epoch.
NEAR_TIE_TOLERANCE = 1e-6
# Hidden folder inside a run folder where an --overwrite run is trained until it is finished.
_STAGING_PREFIX = ".fit-"


@dataclass(frozen=True)
class EpochRecord:
    """One row of ``history.csv``."""

    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    val_auc: float
    seconds: float

    def summary(self, total_epochs: int | None = None) -> str:
        """The one-line log of the epoch ("epoch 3/30  train_loss ...")."""
        of_total = "" if total_epochs is None else f"/{total_epochs}"
        return (
            f"epoch {self.epoch}{of_total}  train_loss {self.train_loss:.4f}  val_loss {self.val_loss:.4f}  "
            f"val_accuracy {self.val_accuracy:.4f}  val_auc {self.val_auc:.4f}  "
            f"{self.seconds:.1f}s"
        )


@dataclass
class FitResult:
    """What `fit` did: the run folder, every epoch, and which epoch's weights were kept."""

    run_dir: Path
    history: list[EpochRecord]
    best_epoch: int
    stopped_early: bool
    class_names: list[str]
    n_parameters: int
    device: str
    train_seconds: float = field(init=False)

    def __post_init__(self) -> None:
        self.train_seconds = sum(record.seconds for record in self.history)


def fit(
    data_dir: str | Path,
    run_dir: str | Path,
    config: TrainConfig,
    *,
    progress: bool = True,
    overwrite: bool = False,
    resume: bool = False,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    split_seed: int | None = None,
    on_start: Callable[[], None] | None = None,
) -> FitResult:
    """Train `config.model` on `data_dir` and write the run folder `run_dir`.

    Writes ``config.json`` and ``split.csv`` first, ``history.csv`` after every epoch and
    ``model.pt`` (the best epoch's weights and everything needed to rebuild the model) last;
    ``config.json`` is then completed with the decision rule (``decision_threshold``, and
    ``decision_rule_note`` when ``--threshold youden`` fell back to argmax, with a warning).

    Args:
        progress: show a progress bar per epoch (tqdm, on stderr).
        overwrite: replace the run files of an earlier run in `run_dir`; otherwise such a
            folder is refused. The new run is trained in a hidden folder inside `run_dir` and
            replaces the old one only once its ``model.pt`` is written, so an interrupted
            overwrite leaves the old run as it was.
        resume: continue an interrupted run in `run_dir` after its last finished epoch (the
            training state written after every epoch: model, optimizer, scheduler, progress
            and RNG states), with the same options and data; the result equals an
            uninterrupted run's.
        split_seed: seeds the split of a class-folder dataset instead of ``config.seed`` (the
            members of a seed ensemble share one split); recorded in ``config.json``.
        on_epoch: called with each epoch's record as soon as the epoch ends.
        on_start: called once the data, options and model are ready, before anything is
            written (the CLI prints the recipe then, so a refused run prints only its error).

    `config` is resolved first (`TrainConfig.resolved`): its recipe fills the options it
    leaves unset, and config.json records the result.

    Raises:
        ValueError: bad options, bad data (see `discover_dataset`), an occupied run folder, a
            run folder inside the data folder or the data folder inside it.
        WeightsUnavailableError: ImageNet weights requested but not downloadable.
    """
    config.validate()
    config = config.resolved()
    # Under torchrun (DDP): rank 0 alone validates, logs and writes the run folder.
    ranks = current_ranks()
    ranks.check_supported(config.batch_size, resume=resume)
    device = ranks.device_for(resolve_device(config.device))
    data_dir, run_dir = Path(data_dir).resolve(), Path(run_dir)
    check_separate(run_dir, data_dir)
    dataset = discover_dataset(
        data_dir, seed=config.seed if split_seed is None else split_seed,
        val_fraction=config.val_fraction, test_fraction=config.test_fraction,
        frames=config.frames, groups=config_group_source(config),
    )
    check_decision_rule(config, dataset)
    if resume:  # refused before the model is built (and ImageNet weights are read)
        _check_resumable(run_dir, config, data_dir, dataset, overwrite)
    torch.manual_seed(config.seed)  # model initialisation draws from torch's global generator
    model = build_model(
        config.model, len(dataset.class_names), weights=config.weights,
        n_qubits=config.qubits, n_layers=config.qlayers, q_backend=config.q_backend,
        q_device=config.q_device, stem=config.stem,
    )
    info = run_info(data_dir, config, dataset, model, device)
    if on_start is not None:
        on_start()
    if ranks.is_distributed:
        info.update(torchrun_processes=ranks.world_size)
    if split_seed is not None:  # a plain run's config.json stays as it was
        info["split_seed"] = split_seed
    if resume or not ranks.is_main:
        staging, staged = run_dir, RunFolder(run_dir)
    else:
        staging = prepare_run_dir(run_dir, overwrite)
        staged = RunFolder(staging)
        staged.write_config(info)
        staged.write_split(dataset.samples)

    with deterministic_algorithms():
        history, best_epoch, best_state, val_outputs = _train(
            model, dataset, config, device, staging, progress and ranks.is_main,
            on_epoch if ranks.is_main else None, resume=resume, ranks=ranks)
    threshold, threshold_note = _decision_rule(config, info, val_outputs)
    if threshold_note is not None:
        warnings.warn(threshold_note, stacklevel=2)
    info.update(decision_threshold=threshold, decision_rule_note=threshold_note)
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "model": config.model,
        "class_names": list(dataset.class_names),
        "n_qubits": config.qubits,
        "n_layers": config.qlayers,
        "q_backend": config.q_backend,
        "q_device": config.q_device,
        "image_size": config.image_size,
        "stem": config.stem,
        "positive_class": info["positive_class"],
        "decision_threshold": threshold,
        "decision_rule_note": threshold_note,
        "best_epoch": best_epoch,
        "state_dict": best_state,
    }
    if ranks.is_main:
        staged.write_config(info)
        staged.write_checkpoint(checkpoint)
        staged.training_state_file.unlink()  # model.pt is the finished run; nothing to resume
        _replace_run(staging, run_dir)
    model.load_state_dict(best_state)
    return FitResult(
        run_dir=run_dir,
        history=history,
        best_epoch=best_epoch,
        stopped_early=len(history) < config.epochs,
        class_names=list(dataset.class_names),
        n_parameters=info["n_parameters"],
        device=str(device),
    )


def check_decision_rule(config: TrainConfig, dataset: DatasetSplit) -> None:
    """Refuse a decision threshold (``--threshold youden``) for a task without two classes."""
    if config.threshold != "argmax" and len(dataset.class_names) != 2:
        raise OptionError(f"{config.threshold} needs a two-class task; {dataset.root} has "
                          f"{len(dataset.class_names)} classes", "threshold")


@dataclass
class _Progress:
    """Where training stands after an epoch: what `fit --resume` saves and restores."""

    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_loss: float = math.inf
    best_auc: float = -math.inf  # of the best epoch
    best_state: dict[str, torch.Tensor] | None = None
    best_val: tuple[np.ndarray, np.ndarray] | None = None  # labels, probabilities

    def should_stop(self, epoch: int, patience: int) -> bool:
        return self.best_epoch < epoch and epoch - self.best_epoch >= patience


class TrainingOutcome(NamedTuple):
    """What `_train` returns: every epoch, and the best epoch with its weights and its
    validation labels and probabilities."""

    history: list[EpochRecord]
    best_epoch: int
    best_state: dict[str, torch.Tensor]
    val_outputs: tuple[np.ndarray, np.ndarray]


def _train(model: nn.Module, dataset: DatasetSplit, config: TrainConfig, device: torch.device,
           run_dir: Path, progress: bool, on_epoch: Callable[[EpochRecord], None] | None,
           resume: bool = False, ranks: Ranks = SINGLE_PROCESS) -> TrainingOutcome:
    def loader(split: str, train: bool) -> DataLoader:
        samples = dataset.subset(split)
        augment_seed = config.seed if train and config.augment else None
        images = ImageDataset(dataset.image_refs(samples), dataset.labels(samples),
                              config.image_size, augment_seed=augment_seed, cache=True,
                              window=config.window)
        return make_loader(images, batch_size=config.batch_size // ranks.world_size,
                           num_workers=config.num_workers, shuffle=train, seed=config.seed,
                           device=device, epoch_keys=augment_seed is not None,
                           num_replicas=ranks.world_size, rank=ranks.rank)

    folder = RunFolder(run_dir)
    # Checked before any image is decoded; moved to the device once, not every epoch.
    loss_weights = class_weights(config.class_weight, dataset.labels(dataset.subset("train")),
                                 len(dataset.class_names))
    if loss_weights is not None:
        loss_weights = loss_weights.to(device)
    train_loader = loader("train", train=True)
    val_samples = dataset.subset("val")
    # Decoded and resized once for the whole run, like the training images (`ImageDataset`).
    val_images = ImageDataset(dataset.image_refs(val_samples), None, config.image_size,
                              cache=True, window=config.window)
    val_labels = torch.as_tensor(dataset.labels(val_samples))
    model.to(device, memory_format=TRAINING_MEMORY_FORMAT)
    optimizer = make_optimizer(model.parameters(), config)
    # Stepped once per epoch; early stopping may end training before the schedule does.
    scheduler = make_scheduler(optimizer, config)
    state = (_restore(folder, model, optimizer, scheduler, device) if resume
             else _Progress())
    trained = ranks.wrap(model, device)
    for epoch in range(len(state.history) + 1, config.epochs + 1):
        if state.should_stop(epoch - 1, config.patience):
            break
        start = time.perf_counter()
        train_loader.sampler.set_epoch(epoch)
        train_loss = _train_epoch(trained, train_loader, optimizer, device,
                                  progress=progress, desc=f"epoch {epoch}/{config.epochs}",
                                  label_smoothing=config.label_smoothing,
                                  class_weight=loss_weights, ranks=ranks)
        if scheduler is not None:
            scheduler.step()
        val_loss, labels, proba = ranks.from_main(
            lambda: _validate(model, val_images, val_labels, device))
        record = EpochRecord(
            epoch=epoch,
            train_loss=train_loss,
            val_loss=val_loss,
            val_accuracy=float(accuracy_score(labels, proba.argmax(axis=1))),
            val_auc=_auc(labels, proba),
            seconds=time.perf_counter() - start,
        )
        state.history.append(record)
        if is_better_epoch(config.monitor, val_loss, record.val_auc, state.best_loss,
                           state.best_auc):
            state.best_epoch, state.best_val = epoch, (labels, proba)
            state.best_loss, state.best_auc = val_loss, record.val_auc
            state.best_state = _cpu_copy(model.state_dict())
        if ranks.is_main:
            folder.write_history(HISTORY_COLUMNS, (asdict(r) for r in state.history))
            _save(folder, state, model, optimizer, scheduler)
        if on_epoch is not None:
            on_epoch(record)
    if state.best_state is None:  # every validation loss was NaN: keep the last weights
        state.best_epoch, state.best_val = len(state.history), (labels, proba)
        state.best_state = _cpu_copy(model.state_dict())
    return TrainingOutcome(state.history, state.best_epoch, state.best_state, state.best_val)


def _validate(model: nn.Module, val_images: ImageDataset, val_labels: torch.Tensor,
              device: torch.device) -> tuple[float, np.ndarray, np.ndarray]:
    """Validation loss, labels and probabilities of the unwrapped `model`.

    The same computation as evaluate/predict on model.pt (batches.predict_proba), so the best
    epoch's validation probabilities, and a threshold tuned on them, are reproducible from the
    saved model.
    """
    logits, _ = predict_dataset_logits(model, val_images, device=device)
    return F.cross_entropy(logits, val_labels).item(), val_labels.numpy(), probabilities(logits)


def _cpu_copy(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state_dict.items()}


def _save(folder: RunFolder, state: _Progress, model: nn.Module, optimizer: torch.optim.Optimizer,
          scheduler: torch.optim.lr_scheduler.LRScheduler | None) -> None:
    """Everything needed to continue after this epoch, as tensors and plain containers (so it
    loads with weights_only=True): model, optimizer, scheduler, progress and RNG states."""
    labels, proba = state.best_val if state.best_val is not None else (None, None)
    folder.write_training_state({
        "format": TRAINING_STATE_FORMAT,
        "model": _cpu_copy(model.state_dict()),
        "optimizer": optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "history": [asdict(record) for record in state.history],
        "best_epoch": state.best_epoch,
        "best_loss": state.best_loss,
        "best_auc": state.best_auc,
        "best_state": state.best_state,
        "best_val_labels": None if labels is None else torch.from_numpy(labels),
        "best_val_proba": None if proba is None else torch.from_numpy(proba),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    })


def _restore(folder: RunFolder, model: nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler | None,
             device: torch.device) -> _Progress:
    """Load what `_save` wrote into the model, optimizer and scheduler; the saved progress."""
    saved = folder.read_training_state()
    if not isinstance(saved, dict) or saved.get("format") != TRAINING_STATE_FORMAT:
        raise ValueError(f"{folder.training_state_file} is not a qclassify training state")
    model.load_state_dict(saved["model"])
    model.to(device)
    optimizer.load_state_dict(saved["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"])
    if saved["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    best_val = (None if saved["best_val_labels"] is None
                else (saved["best_val_labels"].numpy(), saved["best_val_proba"].numpy()))
    # States saved before --monitor existed monitored the loss: their best AUC is unused.
    return _Progress([EpochRecord(**row) for row in saved["history"]], saved["best_epoch"],
                     saved["best_loss"], saved.get("best_auc", -math.inf), saved["best_state"],
                     best_val)


def _decision_rule(
    config: TrainConfig, info: dict, val_outputs: tuple[np.ndarray, np.ndarray]
) -> tuple[float | None, str | None]:
    """The decision threshold (None: argmax) and, when ``--threshold youden`` had to fall back
    to argmax, why. Youden's threshold is the positive-class probability that maximises J on
    the validation split, from the best epoch's predictions."""
    if config.threshold == "argmax":
        return None, None
    labels, proba = val_outputs
    positive = info["class_names"].index(info["positive_class"])
    try:
        threshold = youden_threshold(labels == positive, proba[:, positive])
    except ValueError as err:
        raise ValueError(f"--threshold {config.threshold}: {err}") from err
    if threshold is None:
        return None, (f"--threshold {config.threshold}: no threshold beats chance on the "
                      "validation split (Youden's J <= 0 everywhere); predicting by argmax")
    return threshold, None


def class_weights(rule: str, train_labels: np.ndarray, n_classes: int) -> torch.Tensor | None:
    """The per-class weights of the training cross-entropy: None for ``"none"``; for
    ``"balanced"`` scikit-learn's ``compute_class_weight("balanced")`` of the training labels.

    Raises:
        OptionError: "balanced" with a class that has no training image.
    """
    if rule == "none":
        return None
    missing = sorted(set(range(n_classes)) - set(np.asarray(train_labels).tolist()))
    if missing:
        raise OptionError(f"balanced needs training images of every class; class index(es) "
                          f"{missing} have none", "class_weight")
    weights = compute_class_weight(rule, classes=np.arange(n_classes), y=train_labels)
    return torch.as_tensor(weights, dtype=torch.float32)


def _train_epoch(model, loader, optimizer, device, *, progress: bool, desc: str,
                 label_smoothing: float = 0.0, class_weight: torch.Tensor | None = None,
                 ranks: Ranks = SINGLE_PROCESS) -> float:
    """One pass over `loader`; the mean cross-entropy (eq. 15 without its L2 term) per image
    (of every rank's images, under torchrun), with `label_smoothing` and `class_weight` (the
    weighted mean, as torch's cross_entropy computes it per batch; the validation loss is
    never smoothed or weighted: it measures the model); `class_weight` is on `device`."""
    model.train()
    total_loss, n_images = 0.0, 0
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress, unit="batch")
    for images, labels in bar:
        images = images.to(device, non_blocking=True, memory_format=TRAINING_MEMORY_FORMAT)
        labels = labels.to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(images), labels, weight=class_weight,
                               label_smoothing=label_smoothing)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(labels)
        n_images += len(labels)
        bar.set_postfix(loss=f"{total_loss / n_images:.4f}", refresh=False)
    total_loss, n_images = ranks.sum(total_loss, n_images)
    return total_loss / n_images


def _auc(labels: np.ndarray, proba: np.ndarray) -> float:
    """ROC AUC: positive-class probability for two classes (probabilities within
    `NEAR_TIE_TOLERANCE` of each other count as ties), one-vs-rest macro for more; NaN when
    the validation set misses a class."""
    if len(np.unique(labels)) < proba.shape[1]:
        return math.nan
    if proba.shape[1] == 2:
        return float(roc_auc_score(labels, merge_near_ties(proba[:, 1], NEAR_TIE_TOLERANCE)))
    return float(roc_auc_score(labels, proba, multi_class="ovr", average="macro"))


def _check_resumable(run_dir: Path, config: TrainConfig, data_dir: Path, dataset: DatasetSplit,
                     overwrite: bool) -> None:
    """Refuse `resume` unless `run_dir` holds an interrupted run of these options and data
    with the same split (OptionError: the user must change the command)."""
    folder = RunFolder(run_dir)
    if overwrite:
        raise OptionError("--resume continues a run and --overwrite replaces it: choose one")
    if folder.model_file.is_file():
        raise OptionError(f"{run_dir} holds a finished run: nothing to resume")
    if not folder.training_state_file.is_file():
        raise OptionError(f"{run_dir} holds no interrupted run to resume (no "
                          f"{folder.training_state_file.name}); start it without --resume")
    if not records_same_run(run_dir, config, data_dir):
        raise OptionError(f"{run_dir} was trained with other options or data; resume it with "
                          f"the options of its {folder.config_file.name}")
    if folder.read_split() != list(dataset.samples):
        raise OptionError(f"the images of {data_dir} are no longer split as "
                          f"{folder.split_file} records; the run cannot be resumed")


def prepare_run_dir(run_dir: Path, overwrite: bool, staging_prefix: str = _STAGING_PREFIX) -> Path:
    """The folder to write a new run (or seed ensemble) into: `run_dir` itself when it holds
    no run, else (with `overwrite`) a new hidden staging folder inside it, named
    `staging_prefix` + random hex, that the caller moves in at the end. Staging folders that
    an interrupted earlier overwrite left behind are removed."""
    folder = RunFolder(run_dir)
    occupied = bool(folder.existing_files() or folder.member_folders())
    if occupied and not overwrite:
        finished = folder.model_file.is_file() or folder.is_finished_ensemble()
        state = "a finished" if finished else "an unfinished"
        raise OptionError(
            f"{run_dir} already holds {state} run; pass --overwrite"
            + ("" if finished else " (or --resume to continue it)")
            + " or choose another --out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob(f"{staging_prefix}*"):
        shutil.rmtree(stale)
    if not occupied:
        return run_dir
    staging = run_dir / f"{staging_prefix}{secrets.token_hex(4)}"
    staging.mkdir()
    return staging


def _replace_run(staging: Path, run_dir: Path) -> None:
    """Move the finished run in `staging` into `run_dir`, removing the old run's files.

    The old model.pt goes first and the new one comes last: a crash in between leaves an
    unfinished run (refused by evaluate and predict), never a model beside another run's split.
    """
    if staging == run_dir:
        return
    for name in (MODEL_FILE, *RUN_FILES):
        (run_dir / name).unlink(missing_ok=True)
    for member in RunFolder(run_dir).member_folders():  # a seed ensemble replaced by one run
        shutil.rmtree(member)
    for name in sorted(RUN_FILES, key=lambda name: name == MODEL_FILE):
        if (staging / name).exists():
            os.replace(staging / name, run_dir / name)
    staging.rmdir()
