"""``qclassify compare``: the experiment of the paper's section 3 on any dataset.

The proposed model (qmobilenet on the diffaug-balanced copy of DATA), the four baselines on
the original data and two ablations are trained into ``REPORT/runs/<model>@<data>/`` and all
evaluated on the same ORIGINAL test images with the same seed. A finished run folder is
reused, so an interrupted comparison continues where it stopped. The results table, paired
significance tests against the proposed model and the figures are written by
`qclassify.compare_report`.
"""

from __future__ import annotations

import dataclasses
import filecmp
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from qclassify.compare_report import RunOutcome, write_report
from qclassify.compare_seeds import write_seed_report
from qclassify.config import TrainConfig, config_group_source, run_is_complete
from qclassify.data import discover_dataset
from qclassify.distributed import current_ranks
from qclassify.ensemble import fit_or_reuse_seeds
from qclassify.ensemble_run import evaluate_any
from qclassify.inference import check_positive
from qclassify.options import MODEL_NAMES, OptionError
from qclassify.runfolder import RunFolder, check_separate
from qclassify.train import fit

__all__ = ["DATA_SETTINGS", "DEFAULT_RUNS", "CompareResult", "RunSpec", "compare", "select_runs"]

DATA_SETTINGS = ("original", "balanced")
RUNS_FOLDER = "runs"


@dataclass(frozen=True)
class RunSpec:
    """One model trained on one version of the data; `role` says why it is in the table."""

    model: str
    data: str  # "original" (DATA) or "balanced" (the diffaug copy, AUG)
    role: str  # "proposed", "baseline", "ablation" or "extra"

    @property
    def label(self) -> str:
        return f"{self.model}@{self.data}"


DEFAULT_RUNS = (
    RunSpec("qmobilenet", "balanced", "proposed"),
    RunSpec("resnet18", "original", "baseline"),
    RunSpec("mobilenet_v2", "original", "baseline"),
    RunSpec("densenet121", "original", "baseline"),
    RunSpec("vgg16", "original", "baseline"),
    RunSpec("qmobilenet", "original", "ablation"),
    RunSpec("mobilenet_v2", "balanced", "ablation"),
)


@dataclass
class CompareResult:
    """What `compare` did and wrote."""

    report_dir: Path
    runs: list[RunSpec]
    reference: str  # label of the run the p-values compare against
    trained: list[str]  # labels trained by this call (the others were reused)
    skipped: list[str]  # default runs left out because no balanced data was given
    rows: list[dict]  # one per run, the columns of results.csv
    files: dict[str, Path] = field(default_factory=dict)  # results/figure name -> path
    seeds: list[int] | None = None  # with --seeds: every row is a seed ensemble
    seed_summary: list[dict] = field(default_factory=list)  # one per run, across seeds


def select_runs(models: Sequence[str] | None, *, has_augmented: bool) -> tuple[list[RunSpec],
                                                                               list[str]]:
    """The runs to make, in table order, and the default runs skipped for lack of AUG.

    Each entry of `models` is a model name (every default run of that model) or
    ``model@original`` / ``model@balanced`` (that run, default or not).

    Raises:
        ValueError: an unknown model or data setting, or a balanced run without AUG.
    """
    if models is None:
        wanted = list(DEFAULT_RUNS)
    else:
        wanted = []
        for entry in models:
            wanted += [spec for spec in _parse_entry(entry) if spec not in wanted]
    needs_aug = [spec.label for spec in wanted if spec.data == "balanced"]
    if has_augmented or not needs_aug:
        return wanted, []
    explicit = [entry.strip() for entry in models or () if entry.strip().endswith("@balanced")]
    if explicit:
        raise OptionError(
            f"{', '.join(explicit)} need(s) the diffaug-balanced copy of DATA: pass --augmented "
            "AUG (made by `diffaug balance DATA AUG`)"
        )
    kept = [spec for spec in wanted if spec.data == "original"]
    if not kept:
        raise OptionError(f"{', '.join(needs_aug)} need(s) --augmented AUG; no run left to make")
    return kept, needs_aug


def _parse_entry(entry: str) -> list[RunSpec]:
    model, _, data = entry.strip().partition("@")
    if model not in MODEL_NAMES:
        raise OptionError(f"names unknown model {model!r}; choose from {', '.join(MODEL_NAMES)}",
                          "models")
    if not data:
        return [spec for spec in DEFAULT_RUNS if spec.model == model]
    if data not in DATA_SETTINGS:
        raise OptionError(f"{entry!r} names no data setting; use {model}@original or "
                          f"{model}@balanced", "models")
    default = next((s for s in DEFAULT_RUNS if (s.model, s.data) == (model, data)), None)
    return [default or RunSpec(model, data, "extra")]


def compare(
    data_dir: str | Path,
    augmented_dir: str | Path | None,
    report_dir: str | Path,
    *,
    models: Sequence[str] | None = None,
    train_config: TrainConfig | None = None,
    n_bootstrap: int = 500,
    positive: str | None = None,
    progress: bool = True,
    seeds: Sequence[int] | None = None,
) -> CompareResult:
    """Train (or reuse) every selected run, evaluate all on DATA's test images, write the report.

    A run folder that holds a finished run with the same options and data is reused; any other
    is trained again. The p-values compare each run with the proposed run (qmobilenet@balanced)
    or, when it is not among the runs, with the first run.

    Args:
        data_dir: the original dataset (class folders or train/val/test folders).
        augmented_dir: its diffaug-balanced copy; without it only original-data runs are made
            (a warning names the skipped ones).
        report_dir: gets ``runs/``, ``results.csv``, ``results.md``, ``compare.json`` and the
            figures.
        models: a subset, see `select_runs`; None for the paper's seven runs.
        train_config: options of every run (its ``model`` is replaced per run), resolved
            once (`TrainConfig.resolved`); the paper's recipe by default. Its seed also seeds
            the bootstrap.
        positive: positive class of a two-class task; default the training minority.
        seeds: train every row as a seed ensemble (`qclassify.ensemble.fit_seeds`, split of
            the first seed, which also seeds the bootstrap) and add the across-seeds report
            (`qclassify.compare_seeds`); None: one run per row with ``train_config.seed``.

    Every option, folder and the data are checked before the first run is trained.

    Raises:
        ValueError: bad data or options, a report folder overlapping DATA or AUG, AUG whose
            originals differ from DATA's, runs that disagree on the test set or positive class.
    """
    config = train_config or TrainConfig()
    if seeds is not None:
        seeds = sorted(set(seeds))
        if not seeds:
            raise OptionError("must list one or more seeds", "seeds")
        config = dataclasses.replace(config, seed=seeds[0])
    config.validate()
    # Once for every run: the same recipe values for each model, recorded in compare.json.
    config = config.resolved()
    data_dir, report_dir = Path(data_dir), Path(report_dir)
    augmented_dir = None if augmented_dir is None else Path(augmented_dir)
    runs, skipped = select_runs(models, has_augmented=augmented_dir is not None)
    for source in (data_dir, augmented_dir):
        if source is not None:
            check_separate(report_dir, source)
    dataset = discover_dataset(data_dir, seed=config.seed, val_fraction=config.val_fraction,
                               test_fraction=config.test_fraction, frames=config.frames,
                               groups=config_group_source(config))
    check_positive(positive, dataset.class_names)
    if skipped:
        warnings.warn(
            f"no --augmented data given: running only the original-data runs; skipped "
            f"{', '.join(skipped)} (they need the diffaug-balanced copy of DATA)",
            UserWarning,
            stacklevel=2,
        )
    if any(spec.data == "balanced" for spec in runs):
        check_same_originals(data_dir, augmented_dir, config)
    sources = {"original": data_dir, "balanced": augmented_dir}
    # Under torchrun every rank trains each run (DDP); rank 0 alone decides what to reuse (it
    # reads the run folders), evaluates and reports.
    ranks = current_ranks()

    trained, outcomes, members = [], [], {}
    bar = tqdm(runs, desc="compare", unit="run", disable=not (progress and ranks.is_main))
    for spec in bar:
        bar.set_postfix_str(spec.label)
        run_dir = report_dir / RUNS_FOLDER / spec.label
        run_config = dataclasses.replace(config, model=spec.model)
        if seeds is not None:
            if fit_or_reuse_seeds(sources[spec.data], run_dir, run_config, seeds,
                                  progress=progress):
                trained.append(spec.label)
        elif not ranks.from_main(partial(run_is_complete, run_dir, run_config,
                                         sources[spec.data])):
            fit(sources[spec.data], run_dir, run_config, progress=progress, overwrite=True)
            trained.append(spec.label)
        if not ranks.is_main:
            continue
        evaluated = _evaluation(run_dir, data_dir, run_config, n_bootstrap, positive,
                                fresh=spec.label in trained)
        outcomes.append(RunOutcome(spec.label, spec.model, spec.data, spec.role, run_dir,
                                   *evaluated))
        if seeds is not None:  # evaluated with the ensemble: read back
            members[spec.label] = {
                seed: RunOutcome(spec.label, spec.model, spec.data, spec.role, member.path,
                                 *_evaluation(member.path, data_dir, run_config, n_bootstrap,
                                              positive, fresh=False))
                for seed, member in zip(seeds, RunFolder(run_dir).members(), strict=True)}
    if not ranks.is_main:
        return CompareResult(report_dir, runs, "", trained, skipped, [])
    reference = next((o.label for o in outcomes if o.role == "proposed"), outcomes[0].label)
    rows, files = write_report(
        report_dir, outcomes, reference=reference, n_bootstrap=n_bootstrap, seed=config.seed,
        summary={
            "data_dir": str(data_dir.resolve()),
            "augmented_dir": None if augmented_dir is None else str(augmented_dir.resolve()),
            "train_config": dataclasses.asdict(config),
            "trained_this_call": trained,
            "skipped_without_augmented": skipped,
        },
    )
    result = CompareResult(report_dir, runs, reference, trained, skipped, rows, files, seeds)
    if seeds is not None:
        result.seed_summary, seed_files = write_seed_report(
            report_dir, outcomes, members, reference=reference, ensemble_rows=rows)
        files.update(seed_files)
    return result


def check_same_originals(data_dir: Path, augmented_dir: Path, config: TrainConfig) -> None:
    """Raise ValueError unless AUG's original images are DATA's, at the same paths, in the same
    classes and splits, byte for byte.

    diffaug copies every original byte-identical, and the trainer splits DATA and AUG the same
    way (originals sorted by path, same seed); a difference means AUG is not a diffaug copy of
    this DATA (or either changed since), and its runs would be trained on other images than the
    test split assumes.
    """
    def originals(root: Path) -> dict[tuple[str, str], str]:
        dataset = discover_dataset(root, seed=config.seed, val_fraction=config.val_fraction,
                                   test_fraction=config.test_fraction, frames=config.frames,
                                   groups=config_group_source(config))
        return {(s.path, s.class_name): s.split for s in dataset.samples if not s.synthetic}

    def test_images(split_of: dict[tuple[str, str], str]) -> set[tuple[str, str]]:
        return {key for key, split in split_of.items() if split == "test"}

    original, augmented = originals(data_dir), originals(augmented_dir)
    _refuse_differences("test images", sorted(test_images(original) ^ test_images(augmented)),
                        data_dir, augmented_dir)
    _refuse_differences("original images", sorted(
        key for key in original.keys() | augmented.keys()
        if original.get(key) != augmented.get(key)), data_dir, augmented_dir)
    _refuse_differences("original images", [
        key for key in sorted(original)
        if not filecmp.cmp(data_dir / key[0], augmented_dir / key[0], shallow=False)],
        data_dir, augmented_dir)


def _refuse_differences(what: str, differing: list[tuple[str, str]], data_dir: Path,
                        augmented_dir: Path) -> None:
    if differing:
        raise ValueError(
            f"the {what} of {augmented_dir} differ from those of {data_dir} "
            f"({len(differing)} differ, first: {differing[0][0]}); --augmented must be the "
            "output of `diffaug balance DATA AUG` for this DATA"
        )


def _evaluation(run_dir: Path, data_dir: Path, config: TrainConfig, n_bootstrap: int,
                positive: str | None, *, fresh: bool
                ) -> tuple[dict, list[str], np.ndarray, np.ndarray]:
    """The run's test metrics and predictions (paths, true class indices, probabilities):
    read back from metrics.json and predictions.csv when an earlier call wrote them with these
    settings after the model, else evaluated (and written) now."""
    folder = RunFolder(run_dir)
    # A seed ensemble's config.json is written after its last member's model.pt.
    trained_file = folder.config_file if folder.is_ensemble() else folder.model_file
    if (not fresh and folder.metrics_file.is_file() and folder.predictions_file.is_file()
            and folder.metrics_file.stat().st_mtime >= trained_file.stat().st_mtime):
        metrics = folder.read_metrics()
        same = (metrics.get("n_bootstrap") == n_bootstrap
                and metrics.get("bootstrap_seed") == config.seed
                and (positive is None or metrics.get("positive_class") == positive))
        if same:
            return metrics, *_saved_predictions(folder, metrics["class_names"])
    evaluation = evaluate_any(run_dir, data_dir, n_bootstrap=n_bootstrap, positive=positive,
                              seed=config.seed, device=config.device)
    return evaluation.metrics, evaluation.paths, evaluation.labels, evaluation.proba


def _saved_predictions(folder: RunFolder, class_names: list[str]
                       ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Test image paths, true class indices and class probabilities from predictions.csv."""
    rows = folder.read_predictions()
    paths = [row["path"] for row in rows]
    y_true = np.array([class_names.index(row["true_class"]) for row in rows])
    proba = np.array([[float(row[f"p_{name}"]) for name in class_names] for row in rows])
    return paths, y_true, proba
