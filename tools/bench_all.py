"""Run every benchmark of issue 7 in one go and write one markdown report with the goals checked.

    python tools/bench_all.py [--out bench-out/BENCHMARKS.md] [--quick] [--only quantum ...]
        [--medmnist-results medmnist-out/breastmnist/report/results.csv]
    TORCH_HOME=../shared/torch-home nox -s bench -- --quick

Each script (tools/bench_balance.py, bench_quantum.py, bench_train.py, bench_fid.py and
fid_quality.py) runs as a subprocess of this interpreter with its full-size defaults, or with
`--quick` for a smoke run, and hands its measurements back as JSON. The report holds the date,
the machine, the exact command behind every number, one table per script, its raw output, and
a goals section that compares every ratio measured in this run with its goal (PASS / MISS).
The FID benchmarks need the real FID Inception weights in $TORCH_HOME and are skipped with a
note without them. `--medmnist-results` adds the BreastMNIST goal from a finished
`tools/run_medmnist.py` run (its report/results.csv). A failed script is reported in its
section and makes the exit status 1; the others still run.
"""

from __future__ import annotations

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
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import click
from diffaug.io import atomic_write_bytes
from run_medmnist import (
    GOAL_AUC,
    GOAL_SENSITIVITY,
    GOAL_SPECIFICITY,
    goal_met,
    proposed_goal,
    read_results,
)

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
GOAL_QUANTUM_SPEEDUP = 20.0  # torch backend vs PennyLane TorchLayer...
GOAL_QUANTUM_SIZE = (4, 2)  # ...at n = 4 qubits, L = 2 layers (issue 4); other sizes: reported
GOAL_QUANTUM_OVERHEAD = 0.05  # quantum head's share of a training step
GOAL_BALANCE_PER_WORKER = 0.75  # diffaug balance rate per worker / PIL open-and-save rate
GOAL_SCALING_EFFICIENCY = 0.8  # "near-linear": rate(w) / rate(1) >= 0.8 w (our reading)
GOAL_FID_SPEEDUP = 3.0  # diffaug fid vs python -m pytorch_fid
VERSIONED = ("torch", "torchvision", "numpy", "scipy", "pillow", "pennylane",
             "pennylane-lightning", "onnxruntime", "pytorch-fid", "diffaug", "qclassify")
RECORDED_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCH_HOME", "CUDA_VISIBLE_DEVICES")


@dataclass(frozen=True)
class Goal:
    """One goal of issue 7 checked against a number measured in this run."""

    name: str
    goal: str
    measured: str
    passed: bool | None  # None: not measured in this run

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "MISS", None: "not measured"}[self.passed]


@dataclass(frozen=True)
class Bench:
    """A benchmark script: how to call it and how to read its JSON."""

    key: str
    title: str
    goal: str  # in words, for the goals table when nothing was measured
    script: str
    json_option: str
    render: Callable[[dict], str]
    goals: Callable[[dict], list[Goal]]
    env: dict[str, str] = field(default_factory=dict)  # what its docstring runs it with
    raw_output: bool = True  # False when the rendered table is already the script's output


@dataclass
class Outcome:
    """One script's run: the command shown, its output, exit status and JSON (if any)."""

    bench: Bench
    command: str
    output: str
    returncode: int
    seconds: float
    result: dict | None


# --- tables ---------------------------------------------------------------------------------

def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def render_balance(result: dict) -> str:
    floor = result["floor"]["images_per_second"]
    rows = [("PIL open + save loop (floor)", f"{result['floor']['seconds']:.2f}",
             f"{floor:.1f}", "", "1.00", "")]
    for run in result["balance"]:
        rate = run["synthetic_per_second"]
        rows.append((f"diffaug balance --workers {run['workers']}", f"{run['seconds']:.2f}",
                     f"{rate:.1f}", f"{run['files_per_second']:.1f}", f"{rate / floor:.2f}",
                     f"{rate / run['workers'] / floor:.2f}"))
    counts = ", ".join(f"{name} {n}" for name, n in result["counts"].items())
    return (f"{result['n_images']} grayscale {result['size']}×{result['size']} PNGs ({counts}), "
            f"balanced with ratio 1; median of {result['repeats']} run(s). images/s counts "
            "synthetic images over the whole call (which also copies the originals); files/s "
            "counts synthetic + copied.\n\n"
            + markdown_table(("Method", "Seconds", "images/s", "files/s", "× floor",
                              "× floor per worker"), rows))


def render_quantum(result: dict) -> str:
    speedups = {(s["n_qubits"], s["batch_size"], s["device"]): s["speedup"]
                for s in result["speedups"]}
    rows = [(t["n_qubits"], t["n_layers"], t["batch_size"], t["implementation"],
             f"{t['median_ms']:.3f}", t["steps"],
             _times(speedups.get((t["n_qubits"], t["batch_size"], t["implementation"]))))
            for t in result["timings"]]
    return (f"Forward + backward of the layer alone; torch {result['torch']}, pennylane "
            f"{result['pennylane']}, {result['threads']} torch thread(s); median over up to "
            f"{result['repeats']} steps.\n\n"
            + markdown_table(("Qubits", "Layers", "Batch", "Implementation", "Median ms",
                              "Steps", "torch speed-up"), rows))


def render_train(result: dict) -> str:
    blocks = [f"Device {result['device']}, {result['threads']} torch thread(s), batch "
              f"{result['batch_size']}; epoch = {result['epoch_images']} images; latency is "
              "batch 1."]
    for size, numbers in result["sizes"].items():
        rows = []
        for model, step in numbers["step_seconds"].items():
            latency = numbers["latency_seconds"][model]
            rows.append((model, f"{1e3 * step:.1f}", f"{numbers['epoch_seconds'][model]:.1f}",
                         *(_ms(latency.get(k)) for k in ("eager", "torchscript", "onnxruntime"))))
        blocks.append(f"**{size} px** — quantum head overhead per training step: "
                      f"{100 * numbers['quantum_overhead']:+.1f}%\n\n"
                      + markdown_table(("Model", "Step ms", "Epoch s", "Eager ms/image",
                                        "TorchScript ms/image", "ONNX Runtime ms/image"), rows))
    return "\n\n".join(blocks)


def render_fid(result: dict) -> str:
    rows = [(name, f"{r['seconds']:.1f}", f"{r['fid']:.6f}") for name, r in
            result["results"].items()]
    return (f"{result['n_real']} vs {result['n_other']} images, dims {result['dims']}, device "
            f"{result['device']}; each run a subprocess, wall time including start-up. The "
            f"first diffaug run exports the network to ONNX once (an empty $DIFFAUG_CACHE); "
            f"the next runs load that export.\n\n"
            + markdown_table(("Tool", "Seconds", "FID", "Speed-up"),
                             [(*row, f"{result['speedups'][row[0]]:.2f}×") for row in rows])
            + f"\n\nSpeed-up {result['speedup']:.2f}× (cached export); largest relative FID "
              f"difference {result['relative_fid_difference']:.1e}.")


def render_fid_quality(result: dict) -> str:
    return result["markdown"]


def _times(ratio: float | None) -> str:
    return "" if ratio is None else f"{ratio:.1f}×"


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{1e3 * seconds:.2f}"


# --- goals ----------------------------------------------------------------------------------

def quantum_goals(result: dict) -> list[Goal]:
    n_qubits, n_layers = GOAL_QUANTUM_SIZE
    layers = {t["n_layers"] for t in result["timings"]}
    ratios = {(s["device"], s["batch_size"]): s["speedup"] for s in result["speedups"]
              if s["n_qubits"] == n_qubits}
    if layers != {n_layers} or not ratios:
        return []  # the goal's size was not run
    (device, batch), smallest = min(ratios.items(), key=lambda item: item[1])
    return [Goal(f"quantum layer, n = {n_qubits}, L = {n_layers}",
                 f"torch ≥ {GOAL_QUANTUM_SPEEDUP:.0f}× every PennyLane device",
                 f"smallest {smallest:.1f}× ({device}, batch {batch})",
                 smallest >= GOAL_QUANTUM_SPEEDUP)]


def train_goals(result: dict) -> list[Goal]:
    return [Goal(f"quantum head overhead, {size} px",
                 f"< {100 * GOAL_QUANTUM_OVERHEAD:.0f}% of a training step",
                 f"{100 * numbers['quantum_overhead']:+.1f}%",
                 numbers["quantum_overhead"] < GOAL_QUANTUM_OVERHEAD)
            for size, numbers in result["sizes"].items()]


def balance_goals(result: dict) -> list[Goal]:
    floor = result["floor"]["images_per_second"]
    runs = {run["workers"]: run["synthetic_per_second"] for run in result["balance"]}
    goals = [Goal(f"diffaug balance, {workers} worker(s)",
                  f"≥ {GOAL_BALANCE_PER_WORKER:.2f}× the PIL floor per worker",
                  f"{rate / workers / floor:.2f}× ({rate:.1f} vs {floor:.1f} images/s)",
                  rate / workers / floor >= GOAL_BALANCE_PER_WORKER)
             for workers, rate in sorted(runs.items())]
    if 1 in runs:
        for workers, rate in sorted(runs.items()):
            if workers > 1:
                speedup = rate / runs[1]
                goals.append(Goal(
                    f"diffaug balance scaling, 1 → {workers} workers",
                    f"near-linear: ≥ {GOAL_SCALING_EFFICIENCY * workers:.1f}× "
                    f"({GOAL_SCALING_EFFICIENCY:.0%} efficiency)",
                    f"{speedup:.2f}× ({os.cpu_count()} CPUs)",
                    speedup >= GOAL_SCALING_EFFICIENCY * workers))
    return goals


def fid_goals(result: dict) -> list[Goal]:
    return [Goal("diffaug fid vs python -m pytorch_fid", f"≥ {GOAL_FID_SPEEDUP:.0f}× faster",
                 f"{result['speedup']:.2f}× (same FID within "
                 f"{result['relative_fid_difference']:.1e})",
                 result["speedup"] >= GOAL_FID_SPEEDUP)]


def fid_quality_goals(result: dict) -> list[Goal]:
    sets = {s["name"]: s for s in result["sets"]}
    diffaug, classic = sets["diffaug"], sets["classic"]
    return [Goal("FID quality (paper 2.2.3; a claim, no issue goal)",
                 "diffaug closer than classic augmentation to held-out real minority images",
                 f"FID {diffaug['fid']:.2f} vs {classic['fid']:.2f}; KID "
                 f"{diffaug['kid_mean']:.4f} vs {classic['kid_mean']:.4f}",
                 diffaug["fid"] < classic["fid"] and diffaug["kid_mean"] < classic["kid_mean"])]


def medmnist_goal(results_csv: Path | None) -> Goal:
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


BENCHES = {
    bench.key: bench for bench in (
        Bench("balance", "diffaug balance throughput vs the PIL open-and-save floor",
              f"≥ {GOAL_BALANCE_PER_WORKER:.2f}× the PIL floor per worker, near-linear in "
              "workers", "bench_balance.py", "--json", render_balance, balance_goals),
        Bench("quantum", "Quantum layer forward + backward: torch vs PennyLane TorchLayer",
              f"torch ≥ {GOAL_QUANTUM_SPEEDUP:.0f}× PennyLane", "bench_quantum.py", "--json",
              render_quantum, quantum_goals, env={"OMP_NUM_THREADS": "1"}),
        Bench("train", "Training step and inference latency: qmobilenet vs mobilenet_v2",
              f"quantum head < {100 * GOAL_QUANTUM_OVERHEAD:.0f}% of a training step",
              "bench_train.py", "--out", render_train, train_goals),
        Bench("fid", "diffaug fid vs python -m pytorch_fid", f"≥ {GOAL_FID_SPEEDUP:.0f}× faster",
              "bench_fid.py", "--json", render_fid, fid_goals),
        Bench("fid-quality", "FID quality: diffaug vs classic augmentation (BreastMNIST)",
              "diffaug closer than classic augmentation (paper 2.2.3)", "fid_quality.py",
              "--json", render_fid_quality, fid_quality_goals, env={"OMP_NUM_THREADS": "1"},
              raw_output=False),
    )
}


# --- running --------------------------------------------------------------------------------

def run_bench(bench: Bench, quick: bool, scratch: Path, echo: Callable[[str], None]) -> Outcome:
    """Run one script, streaming its output through `echo`; read back its JSON."""
    json_path = scratch / f"{bench.key}.json"
    arguments = [str(TOOLS / bench.script), *(["--quick"] if quick else [])]
    extra = [bench.json_option, str(json_path)]
    if bench.key == "fid-quality":  # its markdown goes to the scratch folder, not bench-out/
        extra += ["--out", str(scratch / "fid-quality.md"), "--quiet"]
    env = os.environ | bench.env
    shown_env = {k: env[k] for k in RECORDED_ENV if k in env}
    command = shlex.join([*(f"{k}={v}" for k, v in shown_env.items()), "python",
                          f"tools/{bench.script}", *arguments[1:]])
    echo(f"$ {command}")
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, *arguments, *extra], env=env, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:
        echo(line.rstrip("\n"))
        lines.append(line)
    returncode = process.wait()
    result = json.loads(json_path.read_text()) if json_path.is_file() else None
    if result is not None and bench.key == "fid-quality" and "skipped" not in result:
        result["markdown"] = (scratch / "fid-quality.md").read_text()
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
                 ("Environment", ", ".join(f"{k}={os.environ[k]}" for k in RECORDED_ENV
                                           if k in os.environ) or "none of "
                  + ", ".join(RECORDED_ENV) + " set")]
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
@click.option("--only", multiple=True, type=click.Choice(list(BENCHES)),
              help="Run only these benchmarks (repeatable) [default: all].")
@click.option("--medmnist-results", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="results.csv of a finished tools/run_medmnist.py run, for the "
                                 "BreastMNIST goal.")
def main(out: Path, quick: bool, only: tuple[str, ...],
         medmnist_results: Path | None) -> None:
    """Run the benchmarks and write one markdown report with every goal checked."""
    started = datetime.now().astimezone()
    command = shlex.join(["python", "tools/bench_all.py", *sys.argv[1:]])
    medmnist = medmnist_goal(medmnist_results)  # read first: a bad file fails before hours of work
    with tempfile.TemporaryDirectory(prefix="bench-all-") as scratch:
        outcomes = [run_bench(BENCHES[key], quick, Path(scratch), click.echo)
                    for key in (only or BENCHES)]
    text = report_markdown(outcomes, medmnist, started=started, command=command, quick=quick)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, text.encode("utf-8"))
    failed = [o.bench.key for o in outcomes if o.returncode != 0]
    click.echo(f"wrote {out}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
