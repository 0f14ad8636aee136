"""The across-seeds part of ``qclassify compare --seeds``: every row is a seed ensemble.

`write_report` (`qclassify.compare_report`) reports the ensembles (DeLong and McNemar against
the proposed ensemble); `write_seed_report` adds what the seeds show: ``results.csv`` gets one
row per run and seed beside the ensemble rows (column ``seed``: the seed, or ``ensemble``),
``seed_summary.csv`` the mean, sd and 95% t-interval of each metric across seeds with a paired
t-test of the per-seed AUCs against the proposed run, ``results.md`` a section with them, and
``per-seed-auc.png`` the per-seed AUCs.

Paired by seed: seed k of every row shares the split, the balancing and the test images, so
the differences of matched seeds remove what the seeds have in common. A t-interval, not a
bootstrap: with five values a bootstrap has too few distinct resamples to be trusted.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

from qclassify import figures
from qclassify.compare_report import RESULT_COLUMNS, RunOutcome, result_row
from qclassify.metrics import METRIC_NAMES, METRIC_RANGE
from qclassify.runfolder import atomic_write, read_json, write_csv, write_json
from qclassify.stats import paired_t_test, summarize_seeds

__all__ = ["ENSEMBLE_ROW", "SEED_COLUMN", "SEED_FILES", "SEED_SUMMARY_COLUMNS",
           "seed_summary_rows", "write_seed_report"]

SEED_COLUMN = "seed"
ENSEMBLE_ROW = "ensemble"  # the seed column of an ensemble's row
SEED_FILES = {"seed_summary_csv": "seed_summary.csv", "per_seed_auc": "per-seed-auc.png"}
SEED_SUMMARY_COLUMNS = (
    "run", "model", "data", "role", "n_seeds",
    *(f"{m}_{stat}" for m in METRIC_NAMES for stat in ("mean", "sd", "ci_low", "ci_high")),
    "auc_mean_difference", "auc_paired_t", "auc_paired_p",
)


def write_seed_report(
    report_dir: Path,
    ensembles: Sequence[RunOutcome],
    members: Mapping[str, Mapping[int, RunOutcome]],
    *,
    reference: str,
    ensemble_rows: Sequence[dict],
) -> tuple[list[dict], dict[str, Path]]:
    """Rewrite ``results.csv`` with the per-seed rows, write ``seed_summary.csv`` and
    ``per-seed-auc.png``, and add the across-seeds section to ``results.md`` and
    ``compare.json``. Returns the summary rows and the files written.

    Args:
        ensembles: the rows' ensemble outcomes; `members`: each row's member outcomes by seed.
        ensemble_rows: `write_report`'s rows of the ensembles.
    """
    first = ensembles[0].metrics
    positive = (None if first["positive_class"] is None
                else first["class_names"].index(first["positive_class"]))
    per_seed = _per_seed_rows(ensembles, members, reference, positive)
    results = []
    for row in ensemble_rows:
        results += [r for r in per_seed if r["run"] == row["run"]]
        results.append({**row, SEED_COLUMN: ENSEMBLE_ROW})
    summary = seed_summary_rows(ensembles, per_seed, reference)
    files = {
        "results_csv": write_csv(report_dir / "results.csv", (*RESULT_COLUMNS, SEED_COLUMN),
                                 ({k: _csv_value(v) for k, v in r.items()} for r in results)),
        "seed_summary_csv": write_csv(report_dir / SEED_FILES["seed_summary_csv"],
                                      SEED_SUMMARY_COLUMNS,
                                      ({k: _csv_value(v) for k, v in r.items()}
                                       for r in summary)),
    }
    try:
        files["per_seed_auc"] = figures.plot_per_seed_auc(
            {o.label: {r[SEED_COLUMN]: math.nan if r["auc"] is None else r["auc"] for r in per_seed
                       if r["run"] == o.label} for o in ensembles},
            {r["run"]: (r["auc_mean"], _interval(r, "auc")) for r in summary},
            report_dir / SEED_FILES["per_seed_auc"],
            colors=figures.run_colors([o.label for o in ensembles]))
    except ValueError as err:
        warnings.warn(f"no {SEED_FILES['per_seed_auc']}: {err}", stacklevel=2)
    markdown = (report_dir / "results.md").read_text(encoding="utf-8")
    section = _markdown(summary, reference, len(next(iter(members.values()))))
    atomic_write(report_dir / "results.md",
                 lambda file: file.write((markdown + section).encode("utf-8")))
    compare_json = report_dir / "compare.json"
    info = read_json(compare_json)
    info["seeds"] = sorted(next(iter(members.values())))
    info["seed_summary"] = summary
    info["files"].update({name: path.name for name, path in files.items()})
    write_json(compare_json, info)
    return summary, files


def _per_seed_rows(ensembles: Sequence[RunOutcome], members: Mapping[str, Mapping[int, RunOutcome]],
                   reference: str, positive: int | None) -> list[dict]:
    """`result_row` of every member, its p-values against the reference's member of the same
    seed."""
    return [{**result_row(member, members[reference][seed], positive), SEED_COLUMN: seed}
            for outcome in ensembles for seed, member in sorted(members[outcome.label].items())]


def seed_summary_rows(ensembles: Sequence[RunOutcome], per_seed: Sequence[dict],
                      reference: str) -> list[dict]:
    """Per run: mean, sd and 95% t-interval of each metric over its seeds, and the paired
    t-test of its per-seed AUCs against the reference's (matched by seed)."""
    def values(label: str, metric: str) -> dict[int, float | None]:
        return {r[SEED_COLUMN]: r[metric] for r in per_seed if r["run"] == label}

    rows = []
    for outcome in ensembles:
        row = {"run": outcome.label, "model": outcome.model, "data": outcome.data,
               "role": outcome.role, "n_seeds": len(values(outcome.label, "auc"))}
        for metric in METRIC_NAMES:
            summary = summarize_seeds(list(values(outcome.label, metric).values()),
                                      bounds=METRIC_RANGE)
            interval = summary.ci95 or [None, None]
            row.update({f"{metric}_mean": summary.mean, f"{metric}_sd": summary.sd,
                        f"{metric}_ci_low": interval[0], f"{metric}_ci_high": interval[1]})
        row.update(_paired_auc_test(values(outcome.label, "auc"), values(reference, "auc"),
                                    same=outcome.label == reference, label=outcome.label))
        rows.append(row)
    return rows


def _paired_auc_test(aucs: Mapping[int, float | None], reference: Mapping[int, float | None],
                     *, same: bool, label: str) -> dict:
    empty = {"auc_mean_difference": None, "auc_paired_t": None, "auc_paired_p": None}
    if same:
        return empty
    seeds = sorted(aucs)
    try:
        test = paired_t_test([aucs[s] for s in seeds], [reference[s] for s in seeds])
    except ValueError as err:
        warnings.warn(f"no paired t-test for {label}: {err}", stacklevel=3)
        return empty
    return {"auc_mean_difference": test.mean_difference, "auc_paired_t": test.t,
            "auc_paired_p": test.p_value}


def _markdown(summary: Sequence[dict], reference: str, n_seeds: int) -> str:
    header = ["Run", *(figures.METRIC_LABELS[m] for m in METRIC_NAMES), "AUC diff.", "t", "p"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary:
        cells = [f"`{row['run']}`"]
        cells += [_mean_sd_cell(row, m) for m in METRIC_NAMES]
        if row["run"] == reference:
            cells += ["reference", "", ""]
        else:
            cells += [_fixed(row["auc_mean_difference"], "+.3f"), _fixed(row["auc_paired_t"], ".2f"),
                      _fixed(row["auc_paired_p"], ".3f")]
        lines.append("| " + " | ".join(cells) + " |")
    notes = (
        f"Across {n_seeds} seeds: mean ± sd [95% t-interval of the mean, "
        "mean ± t(0.975, n-1)·sd/√n]; the table above is the seed ensemble (mean probability "
        f"of the members). AUC diff., t, p: paired t-test of per-seed AUCs against "
        f"`{reference}`, matched by seed (same split and balancing). Per-seed values: "
        f"results.csv (column `{SEED_COLUMN}`)."
    )
    return "\n".join(["", "## Across seeds", "", *lines, "", notes,
                      f"![per-seed AUC]({SEED_FILES['per_seed_auc']})", ""])


def _mean_sd_cell(row: dict, metric: str) -> str:
    mean, sd = row[f"{metric}_mean"], row[f"{metric}_sd"]
    if mean is None:
        return "n/a"
    cell = f"{mean:.3f}" + ("" if sd is None else f" ± {sd:.3f}")
    interval = _interval(row, metric)
    return cell + ("" if interval is None else f" [{interval[0]:.3f}, {interval[1]:.3f}]")


def _interval(row: dict, metric: str) -> list[float] | None:
    low, high = row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]
    return None if low is None else [low, high]


def _fixed(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _csv_value(value):
    return "" if value is None else value
