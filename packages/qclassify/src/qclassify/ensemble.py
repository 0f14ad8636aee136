"""Seed ensembles (``qclassify fit --seeds``): one member per seed in one run folder.

Layout (`RunFolder` owns the names): ``RUN/config.json`` is the first member's run information
plus ``{"ensemble": {"seeds": [...], "members": ["seed-0", ...], "complete": true}}`` and the
ensemble's decision rule; ``RUN/split.csv`` is the one split every member uses (a class-folder
split is seeded by the FIRST seed, so members differ only in initialisation, batch order and
augmentation); ``RUN/seed-<k>/`` is a complete single run of `qclassify.train.fit`.
Using a finished ensemble (mean probability) is `qclassify.ensemble_run`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qclassify.config import TrainConfig, config_group_source, records_same_run
from qclassify.data import discover_dataset
from qclassify.ensemble_run import mean_probability
from qclassify.inference import load_run
from qclassify.metrics import youden_threshold
from qclassify.options import OptionError
from qclassify.runfolder import ENSEMBLE_KEY, RUN_FILES, RunFolder, check_separate, member_name
from qclassify.train import EpochRecord, FitResult, check_decision_rule, fit, prepare_run_dir

__all__ = ["EnsembleFitResult", "ensemble_is_complete", "fit_or_reuse_seeds", "fit_seeds"]

# Hidden folder inside RUN where an --overwrite ensemble is trained until it is finished.
_STAGING_PREFIX = ".fit-seeds-"


@dataclass
class EnsembleFitResult:
    """What `fit_seeds` did: the members trained now (by seed) and those already finished."""

    run_dir: Path
    seeds: list[int]
    trained: dict[int, FitResult]
    skipped: list[int]
    decision_threshold: float | None


def fit_seeds(
    data_dir: str | Path,
    run_dir: str | Path,
    config: TrainConfig,
    seeds: Sequence[int],
    *,
    progress: bool = True,
    overwrite: bool = False,
    resume: bool = False,
    on_epoch: Callable[[int, EpochRecord], None] | None = None,
    on_start: Callable[[], None] | None = None,
) -> EnsembleFitResult:
    """Train one member per seed into ``run_dir/seed-<k>/`` with `qclassify.train.fit`.

    ``config.seed`` is ignored: member k uses seed k, and all share the split of the first
    seed. `resume` skips finished members, resumes an interrupted one and trains the rest;
    `overwrite` trains the whole ensemble in a hidden folder and swaps it in at the end.
    `on_epoch` is called with the member's seed and each epoch's record; `on_start` once,
    as `fit` calls it, for the first member that is trained.

    Raises:
        OptionError: no seeds, an occupied folder (without `overwrite`/`resume`), or a folder
            `resume` cannot continue; ValueError as `fit`.
    """
    seeds = sorted(set(seeds))
    if not seeds or any(seed < 0 for seed in seeds):
        raise OptionError("must list one or more non-negative seeds", "seeds")
    config.validate()
    config = config.resolved()  # the recipe's values, recorded and compared like a plain run's
    data_dir, run_dir = Path(data_dir).resolve(), Path(run_dir)
    check_separate(run_dir, data_dir)
    first = dataclasses.replace(config, seed=seeds[0])
    dataset = discover_dataset(data_dir, seed=seeds[0], val_fraction=config.val_fraction,
                               test_fraction=config.test_fraction, frames=config.frames,
                               groups=config_group_source(config))
    check_decision_rule(config, dataset)  # before the folder is written to
    if resume:
        _check_resumable(RunFolder(run_dir), first, seeds, data_dir, dataset.samples, overwrite)
        staged = RunFolder(run_dir)
    else:
        staged = RunFolder(prepare_run_dir(run_dir, overwrite, _STAGING_PREFIX))
        staged.write_split(dataset.samples)
        staged.write_config({"options": dataclasses.asdict(first), "data_dir": str(data_dir),
                             ENSEMBLE_KEY: _ensemble_record(seeds, complete=False)})
    trained, skipped = {}, []
    for seed in seeds:
        member, member_config = staged.member(seed), dataclasses.replace(config, seed=seed)
        if member.is_trained() and records_same_run(member.path, member_config, data_dir):
            skipped.append(seed)
            continue
        interrupted = member.training_state_file.is_file()
        trained[seed] = fit(data_dir, member.path, member_config, progress=progress,
                            overwrite=not interrupted, resume=interrupted,
                            split_seed=seeds[0], on_epoch=_for_member(on_epoch, seed),
                            on_start=None if trained else on_start)
    threshold = _finish(staged, seeds, config)
    _replace_ensemble(staged.path, run_dir)
    return EnsembleFitResult(run_dir, seeds, trained, skipped, threshold)


def _for_member(on_epoch: Callable[[int, EpochRecord], None] | None,
                seed: int) -> Callable[[EpochRecord], None] | None:
    """`fit`'s per-epoch callback for the member of `seed`."""
    return None if on_epoch is None else (lambda record: on_epoch(seed, record))


def _ensemble_record(seeds: Sequence[int], *, complete: bool) -> dict:
    return {"seeds": list(seeds), "members": [member_name(s) for s in seeds],
            "complete": complete}


def _finish(folder: RunFolder, seeds: list[int], config: TrainConfig) -> float | None:
    """Write the ensemble's final config.json: the first member's run information, the
    ensemble record and the ensemble's decision rule. Returns the decision threshold."""
    info = folder.member(seeds[0]).read_config()
    info.pop("split_seed", None)
    threshold, note = None, None
    if config.threshold != "argmax":
        threshold, note = _ensemble_threshold(folder, seeds, info)
    info.update(decision_threshold=threshold, decision_rule_note=note,
                **{ENSEMBLE_KEY: _ensemble_record(seeds, complete=True)})
    folder.write_config(info)
    return threshold


def _ensemble_threshold(folder: RunFolder, seeds: list[int],
                        info: dict) -> tuple[float | None, str | None]:
    """Youden's threshold on the ensemble's (averaged) validation probabilities; None and why
    when no threshold beats chance."""
    data_dir = Path(info["data_dir"])
    val = [s for s in folder.read_split() if s.split == "val"]
    members = [load_run(folder.member(seed).path, device=info["options"]["device"])
               for seed in seeds]
    proba = mean_probability([m.proba([data_dir / s.path for s in val])[0] for m in members])
    positive = info["class_names"].index(info["positive_class"])
    is_positive = np.array([s.class_name == info["positive_class"] for s in val])
    threshold = youden_threshold(is_positive, proba[:, positive])
    if threshold is None:
        return None, ("--threshold youden: no threshold beats chance on the ensemble's "
                      "validation probabilities (Youden's J <= 0 everywhere); predicting by argmax")
    return threshold, None


def ensemble_is_complete(run_dir: str | Path, config: TrainConfig, seeds: Sequence[int],
                         data_dir: str | Path | None = None) -> bool:
    """Whether `run_dir` holds a finished ensemble of these options, seeds (and data)."""
    folder = RunFolder(run_dir)
    return folder.is_finished_ensemble() and _same_ensemble(folder, config, seeds, data_dir)


def _same_ensemble(folder: RunFolder, config: TrainConfig, seeds: Sequence[int],
                   data_dir: str | Path | None) -> bool:
    seeds = sorted(set(seeds))
    first = dataclasses.replace(config, seed=seeds[0])
    return (folder.is_ensemble() and records_same_run(folder.path, first, data_dir)
            and folder.ensemble_seeds() == seeds)


def _check_resumable(folder: RunFolder, config: TrainConfig, seeds: list[int], data_dir: Path,
                     samples: Sequence, overwrite: bool) -> None:
    """Refuse `resume` unless the folder holds an unfinished ensemble of these options, seeds
    and data with the same split."""
    if overwrite:
        raise OptionError("--resume continues a run and --overwrite replaces it: choose one")
    if not folder.is_ensemble():
        raise OptionError(f"{folder.path} holds no seed ensemble to resume; start it without "
                          "--resume")
    if not _same_ensemble(folder, config, seeds, data_dir):
        raise OptionError(f"{folder.path} was trained with other options, seeds or data; "
                          f"resume it with the options of its {folder.config_file.name}")
    if folder.read_split() != list(samples):
        raise OptionError(f"the images of {data_dir} are no longer split as "
                          f"{folder.split_file} records; the run cannot be resumed")
    if ensemble_is_complete(folder.path, config, seeds, data_dir):
        raise OptionError(f"{folder.path} holds a finished run: nothing to resume")


def _replace_ensemble(staging: Path, run_dir: Path) -> None:
    """Move the finished ensemble in `staging` into `run_dir`, removing the old run.

    The old config.json goes first and the new one comes last: a crash in between leaves a
    folder that evaluate and predict refuse, never members beside another run's split.
    """
    if staging == run_dir:
        return
    old = RunFolder(run_dir)
    old.config_file.unlink(missing_ok=True)
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for member in old.member_folders():
        shutil.rmtree(member)
    new = RunFolder(staging)
    for member in new.member_folders():
        os.replace(member, run_dir / member.name)
    os.replace(new.split_file, old.split_file)
    os.replace(new.config_file, old.config_file)
    staging.rmdir()


def fit_or_reuse_seeds(data_dir: str | Path, run_dir: str | Path, config: TrainConfig,
                       seeds: Sequence[int], *, progress: bool = True) -> bool:
    """What ``compare --seeds`` does with a row's folder: reuse a finished ensemble of these
    options and seeds, continue an interrupted one (its finished members kept), or train it
    anew over whatever the folder held. Returns whether anything was trained."""
    if ensemble_is_complete(run_dir, config, seeds, data_dir):
        return False
    resume = _same_ensemble(RunFolder(run_dir), config, seeds, data_dir)
    fit_seeds(data_dir, run_dir, config, seeds, progress=progress, overwrite=not resume,
              resume=resume)
    return True
