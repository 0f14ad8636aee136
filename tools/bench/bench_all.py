"""Run every benchmark in one go and write one markdown report with the goals checked.

    python tools/bench/bench_all.py [--out bench-out/BENCHMARKS.md] [--quick] [--only quantum ...]
        [--medmnist-results medmnist-out/breastmnist/report/results.csv]
    TORCH_HOME=../shared/torch-home nox -s bench -- --quick

A loop over the benchmark scripts of this folder (bench_balance.py, bench_quantum.py,
bench_train.py, bench_epoch_floor.py, bench_predict.py, bench_fid.py and fid_quality.py): each owns its goals and its rendering (its
``BENCHMARK``, see bench_report.py), runs as a subprocess of this interpreter from the
repository root with its full-size defaults, or with `--quick` for a smoke run, and hands its
measurements back as JSON. The report holds the date, the machine, the exact command behind
every number (paths relative to the repository root), one section per script with its raw
output, and a goals section that compares every ratio measured in this run with its goal
(PASS / MISS). The FID benchmarks need the real FID Inception weights in $TORCH_HOME and are
skipped with a note without them. `--medmnist-results` adds the BreastMNIST goal from a
finished `tools/medmnist/run_medmnist.py` run (its report/results.csv). A failed script is
reported in its section and makes the exit status 1; the others still run.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import click
from bench_report import Benchmark, Goal, markdown_table, shown_path
from diffaug.io import atomic_write_bytes

# Run as `python tools/bench/bench_all.py`, Python puts only this folder on sys.path; the
# BreastMNIST goal is read with tools/medmnist/run_medmnist.py's own functions.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "medmnist"))

from run_medmnist import (
    GOAL_AUC,
    GOAL_SENSITIVITY,
    GOAL_SPECIFICITY,
    goal_met,
    proposed_goal,
    read_results,
)

ROOT = Path(__file__).resolve().parents[2]
# --only name -> the module of this folder that defines its BENCHMARK, in report order.
BENCHMARK_MODULES = {"balance": "bench_balance", "quantum": "bench_quantum",
                     "train": "bench_train", "epoch-floor": "bench_epoch_floor",
                     "predict": "bench_predict", "fid": "bench_fid",
                     "fid-quality": "fid_quality"}
VERSIONED = ("torch", "torchvision", "numpy", "scipy", "pillow", "pennylane",
             "pennylane-lightning", "onnxruntime", "pytorch-fid", "diffaug", "qclassify")
RECORDED_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCH_HOME", "CUDA_VISIBLE_DEVICES")
PATH_ENV = ("TORCH_HOME",)  # folders: resolved for the scripts, recorded relative to ROOT


@dataclass
class Outcome:
    """One script's run: the command shown, its output, exit status and JSON (if any)."""

    bench: Benchmark
    command: str
    output: str
    returncode: int
    seconds: float
    result: dict | None


def medmnist_goal(results_csv: Path | None) -> Goal:
    """The real-data goal of tools/medmnist/run_medmnist.py, from a finished run's results."""
    name = "BreastMNIST, proposed run (qmobilenet@balanced)"
    goal = (f"AUC ≥ {GOAL_AUC:.2f}, sensitivity ≥ {GOAL_SENSITIVITY:.2f}, specificity ≥ "
            f"{GOAL_SPECIFICITY:.2f}")
    if results_csv is None:
        return Goal(name, goal, "not part of this run: `nox -s medmnist -- PATH.npz`, then "
                                "--medmnist-results REPORT/results.csv", None)
    found = proposed_goal(read_results(results_csv))
    if found is None:
        return Goal(name, goal, f"{results_csv} has no proposed run", None)
    run, checks = found
    measured = ", ".join(f"{metric} {'n/a' if value is None else f'{value:.3f}'}"
                         for metric, value, _ in checks)
    return Goal(name, goal, f"{measured} ({results_csv})", goal_met(checks))


def load_benchmarks(keys: Sequence[str]) -> list[Benchmark]:
    """The BENCHMARK of each named script; one line naming the script when one cannot load
    (a missing dependency), before any benchmark runs."""
    benchmarks = []
    for key in keys:
        try:
            benchmarks.append(importlib.import_module(BENCHMARK_MODULES[key]).BENCHMARK)
        except ImportError as err:
            raise click.ClickException(
                f"benchmark {key} ({BENCHMARK_MODULES[key]}.py) cannot load: {err}; install "
                "every extra (`nox -s bench` does) or leave it out with --only") from None
    return benchmarks


# --- running --------------------------------------------------------------------------------

def script_environment(bench: Benchmark, environ: dict[str, str]) -> dict[str, str]:
    """The script's environment: its own settings over ours, folders made absolute (the
    script runs from ROOT, wherever this was started from)."""
    env = environ | bench.env
    return env | {key: os.path.abspath(env[key]) for key in PATH_ENV if key in env}


def recorded_settings(env: dict[str, str]) -> list[str]:
    """The RECORDED_ENV variables set in `env` as typed from the repository root, folders
    relative to it (never an absolute path of this machine)."""
    return [f"{key}={shown_path(env[key], ROOT) if key in PATH_ENV else env[key]}"
            for key in RECORDED_ENV if key in env]


def _quick(quick: bool) -> list[str]:
    return ["--quick"] if quick else []


def shown_command(bench: Benchmark, quick: bool, env: dict[str, str]) -> str:
    """The script's command as typed from the repository root, with the recorded settings."""
    return shlex.join([*recorded_settings(env), "python", shown_path(bench.script, ROOT),
                       *_quick(quick)])


def run_bench(bench: Benchmark, quick: bool, scratch: Path,
              echo: Callable[[str], None]) -> Outcome:
    """Run one script from ROOT, streaming its output through `echo`; read back its JSON."""
    json_path = scratch / f"{bench.script.stem}.json"
    env = script_environment(bench, dict(os.environ))
    command = shown_command(bench, quick, env)
    echo(f"$ {command}")
    started = time.perf_counter()
    argv = [sys.executable, str(bench.script), *_quick(quick), *bench.result_args(json_path)]
    process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:
        echo(line.rstrip("\n"))
        lines.append(line)
    returncode = process.wait()
    result = json.loads(json_path.read_text()) if json_path.is_file() else None
    return Outcome(bench, command, "".join(lines), returncode, time.perf_counter() - started,
                   result)


def machine_description() -> list[tuple[str, str]]:
    """CPU, cores, memory, OS, GPU and package versions of this machine."""
    described = [("CPU", _cpu_model()),
                 ("Cores", f"{os.cpu_count()} logical"
                  + (f", {len(os.sched_getaffinity(0))} usable by this process"
                     if hasattr(os, "sched_getaffinity") else "")),
                 ("Memory", _memory()),
                 ("OS", platform.platform()),
                 ("Python", platform.python_version()),
                 ("GPU", _gpu()),
                 ("Load average at start (1, 5, 15 min)",
                  ", ".join(f"{x:.2f}" for x in os.getloadavg())
                  if hasattr(os, "getloadavg") else "n/a"),
                 ("Packages", ", ".join(f"{name} {_version(name)}" for name in VERSIONED)),
                 ("Environment", ", ".join(recorded_settings(dict(os.environ)))
                  or "none of " + ", ".join(RECORDED_ENV) + " set")]
    return described


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory() -> str:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return "unknown"
    return f"{total / 2**30:.1f} GiB"


def _gpu() -> str:
    try:
        import torch
    except ImportError:
        return "unknown (torch not installed)"
    if not torch.cuda.is_available():
        return "none (CUDA not available to torch); every benchmark here runs on the CPU"
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return ", ".join(names) + " (present; the benchmarks run on the CPU by default)"


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git_revision() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" with uncommitted changes" if dirty.strip() else "")


# --- the report -----------------------------------------------------------------------------

def bench_section(outcome: Outcome) -> str:
    bench, result = outcome.bench, outcome.result
    lines = [f"## {bench.title}", "", f"Command: `{outcome.command}` "
             f"({outcome.seconds:.0f} s)", ""]
    if outcome.returncode != 0:
        lines += [f"**FAILED** with exit status {outcome.returncode}; last output:", "",
                  "```", _tail(outcome.output), "```"]
    elif result is None:
        lines += ["No results were written; output:", "", "```", _tail(outcome.output), "```"]
    elif "skipped" in result:
        lines += [f"Skipped: {result['skipped']}."]
    else:
        lines.append(bench.render(result))
        if bench.raw_output:
            lines += ["", "<details><summary>Raw output</summary>", "", "```",
                      outcome.output.rstrip(), "```", "", "</details>"]
    return "\n".join(lines)


def goals_for(outcome: Outcome) -> list[Goal]:
    result = outcome.result
    if outcome.returncode == 0 and result is not None and "skipped" not in result:
        return outcome.bench.goals(result)
    why = "failed" if outcome.returncode != 0 else (result or {}).get("skipped", "no results")
    return [Goal(outcome.bench.title, outcome.bench.goal, f"not measured: {why}", None)]


def report_markdown(outcomes: Sequence[Outcome], medmnist: Goal, *, started: datetime,
                    command: str, quick: bool) -> str:
    goals = [goal for outcome in outcomes for goal in goals_for(outcome)] + [medmnist]
    machine = "\n".join(f"- **{name}**: {value}" for name, value in machine_description())
    verdicts = [goal.passed for goal in goals]
    summary = (f"{verdicts.count(True)} PASS, {verdicts.count(False)} MISS, "
               f"{verdicts.count(None)} not measured")
    parts = [
        "# Benchmarks",
        "",
        *(["**QUICK SMOKE RUN** (`--quick`): tiny sizes, the numbers below say nothing about "
           "performance.", ""] if quick else []),
        f"Run on {started:%Y-%m-%d %H:%M %Z} from commit {_git_revision()} with "
        f"`{command}`. Every ratio below was measured in this same run; each section names "
        "the command behind its numbers (run from the repository root; bench_all.py also "
        "passes each script a --json/--out file to read the numbers back).",
        "",
        "## Machine",
        "",
        machine,
        "",
        f"## Goals ({summary})",
        "",
        markdown_table(("What", "Goal", "Measured", "Verdict"),
                       [(g.name, g.goal, g.measured, f"**{g.verdict}**") for g in goals]),
        "",
        *(part for outcome in outcomes for part in (bench_section(outcome), "")),
    ]
    return "\n".join(parts)


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


@click.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("bench-out") / "BENCHMARKS.md", show_default=True,
              help="The markdown report (written whole, at the end).")
@click.option("--quick", is_flag=True, help="Pass --quick to every script: a smoke run.")
@click.option("--only", multiple=True, type=click.Choice(list(BENCHMARK_MODULES)),
              help="Run only these benchmarks (repeatable) [default: all].")
@click.option("--medmnist-results", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="results.csv of a finished tools/medmnist/run_medmnist.py run, "
                                 "for the BreastMNIST goal.")
def main(out: Path, quick: bool, only: tuple[str, ...],
         medmnist_results: Path | None) -> None:
    """Run the benchmarks and write one markdown report with every goal checked."""
    started = datetime.now().astimezone()
    command = shlex.join(["python", shown_path(Path(__file__).resolve(), ROOT), *sys.argv[1:]])
    keys = only or tuple(BENCHMARK_MODULES)
    # Both first: a bad file or a missing dependency fails before hours of work.
    medmnist = medmnist_goal(medmnist_results)
    benchmarks = load_benchmarks(keys)
    with tempfile.TemporaryDirectory(prefix="bench-all-") as scratch:
        outcomes = [run_bench(bench, quick, Path(scratch), click.echo) for bench in benchmarks]
    text = report_markdown(outcomes, medmnist, started=started, command=command, quick=quick)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, text.encode("utf-8"))
    failed = [key for key, o in zip(keys, outcomes, strict=True) if o.returncode != 0]
    click.echo(f"wrote {out}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
