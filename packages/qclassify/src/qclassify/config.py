"""What a run folder's ``config.json`` records about a training run (`TrainConfig`, defined in
`qclassify.options`), and whether a run folder already holds a finished run with the same
options."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from torch import nn

from qclassify.data import SPLITS, DatasetSplit, default_positive_class, train_original_counts
from qclassify.groups import GroupSource, group_source
from qclassify.models import count_parameters
from qclassify.options import (  # re-exported: config.TrainConfig is where callers found it
    DEFAULT_Q_DEVICE,
    LR_SCHEDULES,
    MAX_IMAGE_SIZE,
    MAX_QLAYERS,
    MAX_QUBITS,
    PLACEMENT_OPTIONS,
    THRESHOLD_RULES,
    TrainConfig,
)
from qclassify.runfolder import RunFolder

__all__ = ["DEFAULT_Q_DEVICE", "LR_SCHEDULES", "MAX_IMAGE_SIZE", "MAX_QLAYERS", "MAX_QUBITS",
           "PLACEMENT_OPTIONS", "THRESHOLD_RULES", "TrainConfig", "config_group_source",
           "groups_record", "records_same_run", "run_info",
           "run_is_complete"]

_VERSIONED_PACKAGES = ("qclassify", "torch", "torchvision", "pennylane", "numpy", "scikit-learn")
# What a run recorded before an option existed: every version before recipes trained with
# the paper's recipe, whatever its weights.
_BEFORE_RECIPES = TrainConfig(recipe="paper").resolved()


def run_is_complete(
    run_dir: str | Path, config: TrainConfig, data_dir: str | Path | None = None
) -> bool:
    """True when `run_dir` holds a finished `fit` with the same options (and data, if given).

    Device and number of workers are not compared: they change where a run is computed, not
    what it computes. `config` is compared with its recipe applied (`TrainConfig.resolved`).
    An option missing from an older ``config.json`` counts as the paper recipe's value (it
    did not exist yet, and that value reproduces what that version did).
    """
    return RunFolder(run_dir).is_trained() and records_same_run(run_dir, config, data_dir)


def records_same_run(
    run_dir: str | Path, config: TrainConfig, data_dir: str | Path | None = None
) -> bool:
    """Whether `run_dir`'s ``config.json`` records these options (placement options aside)
    and, if given, this data folder; False without a readable ``config.json``."""
    try:
        stored = RunFolder(run_dir).read_config()
    except ValueError:
        return False
    if not stored:
        return False
    wanted = _comparable_options(config.resolved())
    found = _comparable_options({**asdict(_BEFORE_RECIPES), **stored.get("options", {})})
    same_data = data_dir is None or stored.get("data_dir") == str(Path(data_dir).resolve())
    return found == wanted and same_data and stored.get("groups") == groups_record(config)


def groups_record(config: TrainConfig) -> dict[str, str] | None:
    """What ``config.json`` records of the run's patient groups (the file and its sha256, or
    the DICOM keyword); None without groups."""
    source = config_group_source(config)
    return None if source is None else source.record()


def config_group_source(config: TrainConfig) -> GroupSource | None:
    """The patient groups of `config` (``groups`` or ``group_by``), None without."""
    return group_source(config.groups, config.group_by)


def run_info(
    data_dir: Path, config: TrainConfig, dataset: DatasetSplit, model: nn.Module,
    device: torch.device,
) -> dict:
    """The contents of ``config.json``: every option, the data, the classes and their counts,
    the positive class, the model's size, the device and the package versions."""
    original_counts = train_original_counts(dataset)
    positive = default_positive_class(dataset)
    return {
        "options": asdict(config.resolved()),  # the values training used
        "data_dir": str(data_dir),
        "layout": dataset.layout,
        "class_names": list(dataset.class_names),
        "positive_class": positive,
        "class_counts": {split: dataset.class_counts(split) for split in SPLITS},
        "train_original_counts": original_counts,
        "n_synthetic_train": sum(s.synthetic for s in dataset.samples),
        "groups": groups_record(config),
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
