"""The paper's experiment on a MedMNIST subset, next to MedMNIST v2's published baselines.

    python tools/medmnist/run_medmnist.py PATH.npz [--out medmnist-out] [--image-size 64
        --epochs N --weights none --seed 0 --ratio 0.7 --models qmobilenet,mobilenet_v2 ...]
    nox -s medmnist -- ../shared/data/breastmnist.npz

Runs, as a user would, echoing each command (tools/pipeline.py runs the steps):

1. ``python tools/medmnist/medmnist_to_folder.py PATH.npz OUT/<subset>/data`` (skipped when that
   folder already holds a conversion of the same file);
2. ``python -m diffaug balance OUT/<subset>/data OUT/<subset>/balanced --ratio 0.7 --seed 0``
   (a finished earlier run is recognised and left alone);
3. ``python -m qclassify compare OUT/<subset>/data --augmented OUT/<subset>/balanced
   --out OUT/<subset>/report ...`` (finished runs are reused, so a rerun resumes);

then writes ``OUT/<subset>/medmnist-results.md``: our test-split results (AUC and accuracy with
bootstrap 95% CIs, sensitivity, specificity) above the published MedMNIST v2 baselines of the
subset, the goal check and the exact commands. Options this script does not know are passed to
``qclassify compare`` (e.g. ``--patience 3 --device cpu --bootstrap 1000``).
"""

from __future__ import annotations

import csv
import json
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import click
from diffaug.io import atomic_write_bytes, sha256_file
from medmnist_to_folder import SOURCE_FILE, subset_of

# Run as `python tools/medmnist/run_medmnist.py`, Python puts only this folder on sys.path; the
# shared pipeline runner lives one level up, in tools/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import PipelineLayout, Step, as_typed, heading, run_steps

CONVERTER = Path(__file__).resolve().with_name("medmnist_to_folder.py")
RESULTS_FILE = "medmnist-results.md"
# The real-data goal for the proposed run (qmobilenet on the balanced data): AUC >= 0.90 with
# sensitivity and specificity >= 0.75 on the official test split.
GOAL_AUC = 0.90
GOAL_SENSITIVITY = 0.75
GOAL_SPECIFICITY = 0.75
PROPOSED_ROLE = "proposed"
STEP_TITLES = {
    "convert": "convert the MedMNIST file to split/class folders",
    "balance": "balance the classes with diffaug (eq. 3)",
    "compare": "train and compare the classifiers (section 3)",
}
STEPS = len(STEP_TITLES) + 1  # then the results file


@dataclass(frozen=True)
class Baseline:
    """One published result on a subset's official test split."""

    method: str
    auc: float
    acc: float


# MedMNIST v2 (Yang et al., Scientific Data 2023), table of 2D results: AUC / ACC on the
# official test split. Only numbers checked against the paper are recorded here.
PUBLISHED_BASELINES: dict[str, tuple[Baseline, ...]] = {
    "breastmnist": (
        Baseline("ResNet-18 (28)", 0.901, 0.863),
        Baseline("ResNet-18 (224)", 0.891, 0.833),
        Baseline("ResNet-50 (28)", 0.857, 0.812),
        Baseline("ResNet-50 (224)", 0.866, 0.842),
        Baseline("auto-sklearn", 0.836, 0.803),
        Baseline("AutoKeras", 0.871, 0.831),
        Baseline("Google AutoML Vision", 0.919, 0.861),
    ),
}
PUBLISHED_SOURCE = "MedMNIST v2 (Yang et al., Sci. Data 2023), 2D results table"


def published_baselines(subset: str | None) -> tuple[Baseline, ...] | None:
    """The recorded MedMNIST v2 baselines of `subset` (case-insensitive), None if none."""
    return None if subset is None else PUBLISHED_BASELINES.get(subset.lower())


@dataclass(frozen=True)
class Settings:
    """What the three steps are run with."""

    ratio: str = "0.7"
    seed: int = 0
    workers: int = 1
    image_size: int = 64
    epochs: int | None = None  # None: the recipe's (qclassify compare --recipe auto)
    weights: str = "none"
    models: tuple[str, ...] = ()
    quiet: bool = False


def subset_folder(npz: Path) -> str:
    """OUT's subfolder for `npz`: its file stem ('breastmnist', 'breastmnist_224')."""
    return npz.stem.lower()


def pipeline_commands(npz: Path, subset_dir: Path, settings: Settings,
                      compare_args: Sequence[str] = (), *,
                      python: str = sys.executable) -> dict[str, list[str]]:
    """The convert, balance and compare command lines, in order."""
    layout = PipelineLayout(subset_dir)
    data, balanced, report = layout.data, layout.balanced, layout.report
    quiet = ["--quiet"] if settings.quiet else []
    models = ["--models", ",".join(settings.models)] if settings.models else []
    epochs = [] if settings.epochs is None else ["--epochs", str(settings.epochs)]
    return {
        "convert": [python, str(CONVERTER), str(npz), str(data), *quiet],
        "balance": [python, "-m", "diffaug", "balance", str(data), str(balanced),
                    "--ratio", settings.ratio, "--seed", str(settings.seed),
                    "--workers", str(settings.workers), *quiet],
        "compare": [python, "-m", "qclassify", "compare", str(data), "--augmented",
                    str(balanced), "--out", str(report), "--image-size", str(settings.image_size),
                    *epochs, "--weights", settings.weights,
                    "--seed", str(settings.seed), *models, *compare_args, *quiet],
    }


def display(command: Sequence[str], python: str = sys.executable) -> str:
    """A command as a user types it: 'python' for the interpreter, the converter by its
    path relative to the current folder when it lies below it."""
    return shlex.join(as_typed(command, python=python))


def read_results(results_csv: Path) -> list[dict[str, str | float | None]]:
    """Rows of qclassify compare's results.csv, numbers as floats and empty cells as None."""
    with results_csv.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [{key: _number_or_text(value) for key, value in row.items()} for row in rows]


def _number_or_text(value: str) -> str | float | None:
    if value == "":
        return None
    try:
        return float(value)
    except ValueError:
        return value


def proposed_goal(rows: Sequence[dict]) -> tuple[str, list[tuple[str, float | None, float]]] | None:
    """The proposed run's label and its (metric, value, goal) triples for the real-data
    goal (AUC >= 0.90, sensitivity and specificity >= 0.75); None when there is no proposed run."""
    proposed = next((row for row in rows if row.get("role") == PROPOSED_ROLE), None)
    if proposed is None:
        return None
    return proposed["run"], [("AUC", proposed["auc"], GOAL_AUC),
                             ("sensitivity", proposed["recall"], GOAL_SENSITIVITY),
                             ("specificity", proposed["specificity"], GOAL_SPECIFICITY)]


def goal_met(checks: Sequence[tuple[str, float | None, float]]) -> bool:
    """Whether every value reaches its goal (a missing value does not)."""
    return all(value is not None and value >= goal for _, value, goal in checks)


def goal_check(rows: Sequence[dict]) -> str:
    """One line: PASS or MISS of the proposed run against the real-data goal, with its values."""
    found = proposed_goal(rows)
    if found is None:
        return (f"Goal (AUC ≥ {GOAL_AUC:.2f}, sensitivity and specificity ≥ "
                f"{GOAL_SENSITIVITY:.2f}): not measured, no proposed run "
                "(qmobilenet@balanced) among the runs.")
    run, checks = found
    details = ", ".join(f"{name} {_fixed(value)} (goal ≥ {goal:.2f})"
                        for name, value, goal in checks)
    return f"Goal for `{run}`: {'PASS' if goal_met(checks) else 'MISS'}: {details}."


def results_table(rows: Sequence[dict], subset: str | None, *, positive_class: str | None,
                  setting: str) -> str:
    """Our runs (value and 95% CI) and the published baselines of `subset`, one markdown table."""
    if positive_class is None:
        rate_names = ("Recall (macro)", "Specificity (macro)")
    else:
        rate_names = (f"Sensitivity ({positive_class})", "Specificity")
    lines = [f"| Model | Source | AUC | ACC | {rate_names[0]} | {rate_names[1]} |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        cells = [f"`{row['run']}`" + (" (proposed)" if row.get("role") == PROPOSED_ROLE else ""),
                 setting, *(_with_interval(row, metric) for metric in
                            ("auc", "accuracy", "recall", "specificity"))]
        lines.append("| " + " | ".join(cells) + " |")
    for baseline in published_baselines(subset) or ():
        lines.append(f"| {baseline.method} | {PUBLISHED_SOURCE} | {baseline.auc:.3f} | "
                     f"{baseline.acc:.3f} | n/r | n/r |")
    return "\n".join(lines)


def _with_interval(row: dict, metric: str) -> str:
    low, high = row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
    interval = "" if low is None or high is None else f" [{low:.3f}, {high:.3f}]"
    return _fixed(row.get(metric)) + interval


def _fixed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def results_markdown(rows: Sequence[dict], *, npz: Path, subset: str | None,
                     source: dict, compare_summary: dict, settings: Settings,
                     commands: Sequence[str], compare_args: Sequence[str] = ()) -> str:
    """The whole medmnist-results.md."""
    name = subset or npz.stem
    positive = compare_summary.get("positive_class")
    n_test = compare_summary.get("n_test")
    counts = source.get("counts", {})
    split_sizes = ", ".join(f"{split} {sum(per_class.values())}"
                            for split, per_class in counts.items())
    budget = "the recipe's epochs" if settings.epochs is None else f"epochs ≤ {settings.epochs}"
    setting = (f"this repo, {settings.image_size} px, weights {settings.weights}, {budget}"
               + "".join(f" {arg}" for arg in compare_args))
    task = (f"positive class `{positive}` (the training minority unless --positive named one)"
            if positive is not None else "multi-class: macro averages, one-vs-rest macro AUC")
    baselines = published_baselines(subset)
    lines = [
        f"# MedMNIST {name}: qclassify compare next to the published baselines",
        "",
        f"Data: `{npz.name}` (sha256 {source.get('sha256', 'unknown')[:12]}…), official splits "
        f"({split_sizes}); every row is on the same {n_test} test images; {task}.",
        "",
        results_table(rows, subset, positive_class=positive, setting=setting),
        "",
        "Our rows: value [percentile bootstrap 95% CI over the test set] from "
        "`report/results.csv`; the p-values and figures are in `report/results.md`. "
        + (f"Published rows: {PUBLISHED_SOURCE}, AUC and ACC on the same official test split "
           "(n/r: not reported)." if baselines else
           f"No published baselines recorded for {name}."),
        "",
        goal_check(rows) if positive is not None else
        "Goal (binary AUC, sensitivity, specificity): not applicable to a multi-class subset.",
        "",
        "Commands, as run:",
        "",
        "```",
        *commands,
        "```",
        "",
    ]
    return "\n".join(lines)


def conversion_reuse_note(npz: Path, data: Path) -> str | None:
    """Why the conversion step can be skipped (`data` holds a finished conversion of `npz`),
    or None when `data` does not exist yet.

    Raises:
        ValueError: `data` holds something else.
    """
    if not data.exists():
        return None
    try:
        source = json.loads((data / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        source = None
    if not isinstance(source, dict) or source.get("sha256") != sha256_file(npz):
        raise ValueError(f"{data} holds something other than a conversion of {npz}; "
                         "choose another --out or remove that folder")
    return f"reusing {data} (a conversion of {npz})"


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("npz", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("medmnist-out"), show_default=True,
              help="Everything goes to OUT/<subset>/ (data, balanced, report, results).")
@click.option("--ratio", default=Settings.ratio, show_default=True,
              help="diffaug balance --ratio.")
@click.option("--seed", type=click.IntRange(min=0), default=Settings.seed, show_default=True,
              help="Seed of balance and compare.")
@click.option("--workers", type=click.IntRange(min=1), default=Settings.workers,
              show_default=True, help="diffaug balance --workers.")
@click.option("--image-size", type=click.IntRange(min=1), default=Settings.image_size,
              show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=Settings.epochs,
              help="qclassify compare --epochs [default: the recipe's].")
@click.option("--weights", default=Settings.weights, show_default=True,
              help="imagenet, none or a state-dict PATH (qclassify compare --weights).")
@click.option("--models", multiple=True,
              help="qclassify compare --models (comma-separated or repeated) [default: all seven "
                   "runs].")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.argument("compare_args", nargs=-1, type=click.UNPROCESSED)
def main(npz: Path, out: Path, ratio: str, seed: int, workers: int, image_size: int,
         epochs: int, weights: str, models: tuple[str, ...], quiet: bool,
         compare_args: tuple[str, ...]) -> None:
    """Convert NPZ, balance it with diffaug, run qclassify compare and write the results table
    next to MedMNIST v2's published baselines. Unknown options go to `qclassify compare`."""
    subset = subset_of(npz)
    subset_dir = out / subset_folder(npz)
    settings = Settings(ratio=ratio, seed=seed, workers=workers, image_size=image_size,
                        epochs=epochs, weights=weights, quiet=quiet,
                        models=tuple(m.strip() for entry in models for m in entry.split(",")
                                     if m.strip()))
    layout = PipelineLayout(subset_dir)
    commands = pipeline_commands(npz, subset_dir, settings, compare_args)
    skips = {"convert": lambda: conversion_reuse_note(npz, layout.data)}
    run_steps([Step(name, STEP_TITLES[name], argv, as_typed(argv), skips.get(name))
               for name, argv in commands.items()], total=STEPS)
    report = layout.report
    text = results_markdown(
        read_results(report / "results.csv"), npz=npz, subset=subset,
        source=json.loads((layout.data / SOURCE_FILE).read_text()),
        compare_summary=json.loads((report / "compare.json").read_text()), settings=settings,
        commands=[display(command) for command in commands.values()],
        compare_args=compare_args)
    atomic_write_bytes(subset_dir / RESULTS_FILE, text.encode("utf-8"))
    click.echo(heading(STEPS, STEPS, "results"))
    click.echo(text + f"\nwrote {subset_dir / RESULTS_FILE}")


if __name__ == "__main__":
    main()
