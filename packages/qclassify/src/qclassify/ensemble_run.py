"""Using a finished seed ensemble (`qclassify.ensemble`): the mean of its members'
probabilities (float64), classified by the ensemble's decision rule (argmax, or with
``--threshold youden`` the threshold tuned on the ensemble's validation probabilities), and
its evaluation with every member's metrics beside the ensemble's."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from qclassify.batches import EVAL_BATCH_SIZE, mean_probability
from qclassify.inference import (
    Evaluation,
    LoadedRun,
    evaluate_run,
    evaluate_test_split,
    load_run,
    predict_files,
    predict_paths,
    resolve_engine,
    save_evaluation,
)
from qclassify.metrics import METRIC_NAMES, METRIC_RANGE, evaluate_predictions, predict_classes
from qclassify.runfolder import RunFolder, check_separate
from qclassify.stats import summarize_seeds

__all__ = ["EnsembleEvaluation", "EnsembleRun", "evaluate_any", "evaluate_ensemble",
           "load_ensemble", "mean_probability", "members_summary", "predict_any"]


@dataclass
class EnsembleRun:
    """A finished seed ensemble, usable wherever a `LoadedRun` is predicted with: the mean of
    its members' probabilities, classified by the ensemble's decision rule."""

    run_dir: Path
    members: dict[str, LoadedRun]  # by member name, in seed order
    config: dict  # the ensemble's config.json

    @property
    def class_names(self) -> list[str]:
        return self._first.class_names

    @property
    def positive_class(self) -> str | None:
        return self._first.positive_class

    @property
    def model_name(self) -> str:
        return self._first.model_name

    @property
    def decision_threshold(self) -> float | None:
        return self.config.get("decision_threshold")

    @property
    def decision_rule_note(self) -> str | None:
        return self.config.get("decision_rule_note")

    @property
    def frames(self) -> str:
        return self._first.frames

    @property
    def window(self) -> tuple[float, float] | None:
        return self._first.window

    @property
    def image_size(self) -> int:
        return self._first.image_size

    @property
    def device(self) -> torch.device:
        return self._first.device

    @property
    def models(self) -> list[nn.Module]:
        """The members' models, in seed order (their probabilities are averaged)."""
        return [member.model for member in self.members.values()]

    def read_options(self, frames: str | None, window: tuple[float, float] | None) -> None:
        """Read images with `frames`/`window` instead of the training runs' (None keeps them)."""
        for member in self.members.values():
            member.read_options(frames, window)

    @property
    def _first(self) -> LoadedRun:
        return next(iter(self.members.values()))

    def predicted_classes(self, proba: np.ndarray) -> np.ndarray:
        """Class indices of ensemble probability rows, by the ensemble's decision rule."""
        positive = (None if self.decision_threshold is None
                    else self.class_names.index(self.positive_class))
        return predict_classes(proba, positive=positive, threshold=self.decision_threshold)


def load_ensemble(run_dir: str | Path, *, device: str = "auto", q_backend: str | None = None,
                  build_model: bool = True) -> EnsembleRun:
    """Load every member of a finished seed ensemble (`build_model`: see `load_run`).

    Raises:
        ValueError: not an ensemble, an unfinished one, or a member that `load_run` refuses.
    """
    folder = RunFolder(run_dir)
    if not folder.is_finished_ensemble():
        raise ValueError(f"{folder.path} holds no finished seed ensemble: finish it with "
                         "`qclassify fit ... --seeds ... --resume` first")
    members = {member.path.name: load_run(member.path, device=device, q_backend=q_backend,
                                          build_model=build_model)
               for member in folder.members()}
    return EnsembleRun(folder.path, members, folder.read_config())


def members_summary(member_metrics: dict[str, dict]) -> dict[str, dict]:
    """Mean, sd and 95% t-interval across members of each metric's value (`summarize_seeds`)."""
    return {name: summarize_seeds([m[name]["value"] for m in member_metrics.values()],
                                  bounds=METRIC_RANGE).as_dict()
            for name in METRIC_NAMES}


@dataclass
class EnsembleEvaluation(Evaluation):
    """The ensemble's evaluation (``run`` is an `EnsembleRun`) and each member's, by name."""

    members: dict[str, Evaluation] = dataclasses.field(default_factory=dict)


def evaluate_ensemble(
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
) -> EnsembleEvaluation:
    """Evaluate every member on the shared test split (each gets its own metrics.json,
    predictions.csv and figures), then the ensemble from the mean of their probabilities.

    The ensemble's metrics.json has the schema of a single run's plus ``members`` (each
    member's six metrics) and ``members_summary`` (`members_summary`); its ``n_parameters``,
    ``train_seconds`` and ``inference_ms_per_image`` are the members' sums.

    Raises:
        ValueError: an unfinished ensemble, or what `evaluate_test_split` refuses.
    """
    folder = RunFolder(run_dir)
    if not folder.is_finished_ensemble():
        load_ensemble(run_dir)  # raises, naming the folder
    config = folder.read_config()
    check_separate(folder.path, data_dir or config["data_dir"], option="run folder")
    members = {}
    for member in folder.members():
        members[member.path.name] = evaluate_test_split(
            member.path, data_dir, n_bootstrap=n_bootstrap, positive=positive, seed=seed,
            batch_size=batch_size, device=device, progress=progress, frames=frames,
            window=window)
        save_evaluation(members[member.path.name], data_dir)
    ensemble = EnsembleRun(folder.path, {name: e.run for name, e in members.items()}, config)
    first = next(iter(members.values()))
    proba = mean_probability([e.proba for e in members.values()])
    metrics = evaluate_predictions(first.labels, proba, ensemble.class_names,
                                   positive=_positive_index(first.metrics),
                                   n_bootstrap=n_bootstrap, seed=seed,
                                   threshold=ensemble.decision_threshold)
    member_metrics = {name: {m: e.metrics[m] for m in METRIC_NAMES}
                      for name, e in members.items()}
    metrics.update(
        model=ensemble.model_name,
        **{key: _sum_or_none([e.metrics.get(key) for e in members.values()])
           for key in ("inference_ms_per_image", "n_parameters", "train_seconds")},
        decision_rule_note=ensemble.decision_rule_note,
        members=member_metrics,
        members_summary=members_summary(member_metrics),
    )
    evaluation = EnsembleEvaluation(ensemble, metrics, first.paths, first.labels, proba,
                                    members=members)
    save_evaluation(evaluation, data_dir)
    return evaluation


def _positive_index(metrics: dict) -> int | None:
    """The positive class the members were evaluated with (None: macro averages)."""
    name = metrics.get("positive_class")
    return None if name is None else metrics["class_names"].index(name)


def _sum_or_none(values: list) -> float | None:
    return None if any(v is None for v in values) else sum(values)


def evaluate_any(run_dir: str | Path, data_dir: str | Path | None = None,
                 **options) -> Evaluation:
    """What ``qclassify evaluate RUN`` does: `evaluate_ensemble` for a folder made with
    ``fit --seeds``, else `qclassify.inference.evaluate_run` (same keyword options)."""
    evaluate = evaluate_ensemble if RunFolder(run_dir).is_ensemble() else evaluate_run
    return evaluate(run_dir, data_dir, **options)


def predict_any(run_dir: str | Path, paths: Sequence[str | Path], *, device: str = "auto",
                batch_size: int = EVAL_BATCH_SIZE, progress: bool = False,
                frames: str | None = None, window: tuple[float, float] | None = None,
                engine: str = "auto") -> list[dict[str, str | float]]:
    """What ``qclassify predict RUN`` does: `qclassify.inference.predict_paths`, or for a
    folder made with ``fit --seeds`` the same rows from the members' mean probability (with
    ``engine="onnxruntime"``: one ONNX graph averaging the members)."""
    if not RunFolder(run_dir).is_ensemble():
        return predict_paths(run_dir, paths, device=device, batch_size=batch_size,
                             progress=progress, frames=frames, window=window, engine=engine)
    engine, q_backend = resolve_engine(engine, device)
    run = load_ensemble(run_dir, device=device, q_backend=q_backend,
                        build_model=engine != "onnxruntime")
    run.read_options(frames, window)
    return predict_files(run, paths, batch_size=batch_size, progress=progress, engine=engine)
