"""The options of a training run (`TrainConfig`), what a run folder's ``config.json`` records
about them, and whether a run folder already holds a finished run with the same options."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from torch import nn

from qclassify.data import SPLITS, DatasetSplit
from qclassify.models import MODEL_NAMES, check_image_size, count_parameters
from qclassify.quantum import BACKENDS
from qclassify.runfolder import CONFIG_FILE, HISTORY_FILE, MODEL_FILE, read_json

__all__ = ["DEFAULT_Q_DEVICE", "LR_SCHEDULES", "MAX_IMAGE_SIZE", "MAX_QLAYERS", "MAX_QUBITS",
           "PLACEMENT_OPTIONS", "THRESHOLD_RULES", "TrainConfig", "run_info", "run_is_complete"]

# Options that decide where a run is computed, not what it computes: a finished run is reused
# whatever they were.
PLACEMENT_OPTIONS = ("device", "num_workers")
DEFAULT_Q_DEVICE = "default.qubit"
# How a model turns probabilities into a class: argmax, or (two classes) the validation split's
# Youden-optimal threshold on the positive-class probability.
THRESHOLD_RULES = ("argmax", "youden")
LR_SCHEDULES = ("constant", "cosine")
# Upper bounds that keep a model buildable in memory, checked before any tensor is allocated
# (a crafted checkpoint or option must give an error, not an allocator failure): n qubits need
# Linear(1280, 2^n), 335 MB of weights at n = 16; the paper uses n = 8 and L = 2.
MAX_QUBITS = 16
MAX_QLAYERS = 100
# 3 x 4096^2 float32 inputs are 200 MB per image; the paper uses 224.
MAX_IMAGE_SIZE = 4096
_VERSIONED_PACKAGES = ("qclassify", "torch", "torchvision", "pennylane", "numpy", "scikit-learn")


@dataclass
class TrainConfig:
    """Every option of ``qclassify fit``; the defaults are the paper's recipe (section 2.5)."""

    model: str = "qmobilenet"
    qubits: int = 4
    qlayers: int = 2
    q_backend: str = "torch"
    q_device: str = DEFAULT_Q_DEVICE  # the PennyLane device of q_backend="pennylane"
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-4
    patience: int = 5
    image_size: int = 224
    weights: str = "imagenet"
    seed: int = 0
    augment: bool = False  # random flips and small affine maps of training images
    threshold: str = "argmax"  # or "youden": a decision threshold tuned on validation
    lr_schedule: str = "constant"  # or "cosine": annealed to 0 over --epochs
    device: str = "auto"
    num_workers: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15

    def validate(self) -> None:
        """Raise ValueError naming the first option with an impossible value."""
        if self.model not in MODEL_NAMES:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(MODEL_NAMES)}")
        for name in ("qubits", "qlayers", "epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        for name, most in (("qubits", MAX_QUBITS), ("qlayers", MAX_QLAYERS),
                           ("image_size", MAX_IMAGE_SIZE)):
            if getattr(self, name) > most:
                raise ValueError(f"--{name.replace('_', '-')} must be at most {most}")
        if self.q_backend not in BACKENDS:
            raise ValueError(f"--q-backend must be one of {', '.join(BACKENDS)}; "
                             f"got {self.q_backend!r}")
        if self.num_workers < 0:
            raise ValueError("--num-workers must be 0 or more")
        if not (self.lr > 0 and self.weight_decay >= 0):
            raise ValueError("--lr must be positive and --weight-decay non-negative")
        if self.threshold not in THRESHOLD_RULES:
            raise ValueError(f"--threshold must be one of {', '.join(THRESHOLD_RULES)}; "
                             f"got {self.threshold!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}; "
                             f"got {self.lr_schedule!r}")
        if not self.q_device:
            raise ValueError("--q-device must name a PennyLane device, e.g. default.qubit")
        check_image_size(self.image_size)


def run_is_complete(
    run_dir: str | Path, config: TrainConfig, data_dir: str | Path | None = None
) -> bool:
    """True when `run_dir` holds a finished `fit` with the same options (and data, if given).

    Device and number of workers are not compared: they change where a run is computed, not
    what it computes. An option missing from an older ``config.json`` counts as its default
    (it did not exist yet, and its default reproduces what that version did).
    """
    run_dir = Path(run_dir)
    if not all((run_dir / name).is_file() for name in (CONFIG_FILE, HISTORY_FILE, MODEL_FILE)):
        return False
    try:
        stored = read_json(run_dir / CONFIG_FILE)
    except (OSError, ValueError):
        return False
    wanted = _comparable_options(config)
    found = _comparable_options({**asdict(TrainConfig()), **stored.get("options", {})})
    same_data = data_dir is None or stored.get("data_dir") == str(Path(data_dir).resolve())
    return found == wanted and same_data


def run_info(
    data_dir: Path, config: TrainConfig, dataset: DatasetSplit, model: nn.Module,
    device: torch.device,
) -> dict:
    """The contents of ``config.json``: every option, the data, the classes and their counts,
    the positive class, the model's size, the device and the package versions."""
    train_originals = dataset.subset("train", originals_only=True)
    original_counts = {name: 0 for name in dataset.class_names}
    for sample in train_originals:
        original_counts[sample.class_name] += 1
    # Binary tasks: the positive class is the training minority (of the original images, so a
    # balanced copy of the same data keeps it); ties go to the first class name.
    positive = (
        min(dataset.class_names, key=lambda name: original_counts[name])
        if len(dataset.class_names) == 2 else None
    )
    return {
        "options": asdict(config),
        "data_dir": str(data_dir),
        "layout": dataset.layout,
        "class_names": list(dataset.class_names),
        "positive_class": positive,
        "class_counts": {split: dataset.class_counts(split) for split in SPLITS},
        "train_original_counts": original_counts,
        "n_synthetic_train": sum(s.synthetic for s in dataset.samples),
        "n_parameters": count_parameters(model),
        "device": str(device),
        "versions": {"python": platform.python_version(), **_versions()},
    }


def _comparable_options(options: TrainConfig | dict) -> dict:
    """The options as config.json stores them (JSON types), placement options left out."""
    as_dict = asdict(options) if isinstance(options, TrainConfig) else options
    as_json = json.loads(json.dumps(as_dict))
    return {k: v for k, v in as_json.items() if k not in PLACEMENT_OPTIONS}


def _versions() -> dict[str, str | None]:
    found = {}
    for package in _VERSIONED_PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found
