"""Forward+backward time of QuantumFeatureLayer: the torch backend vs PennyLane's TorchLayer.

    OMP_NUM_THREADS=1 python tools/bench/bench_quantum.py [--qubits 4 --qubits 8 --layers 2
        --batch-size 16 --batch-size 256 --repeats 20 --max-seconds 60 --threads 1
        --json bench-out/bench_quantum.json] [--quick]

For every (qubits, batch size) it times one training step of the layer alone — forward on a
float32 (batch, 2^n) input as after the ReLU of eq. 6, then backward of the summed outputs —
for the torch backend and for the PennyLane backend on ``default.qubit`` and, if installed,
``lightning.qubit``; it prints the median over ``--repeats`` steps (after one warm-up step;
fewer, but at least 3, once a configuration has run ``--max-seconds``: lightning takes seconds
per step at batch 256) and the torch backend's speed-up over each PennyLane device. Goal: the
torch backend at least 20× faster than every PennyLane device at n = 4, L = 2. ``--quick`` is a
smoke run: n = 4, batch 16, 3 repeats.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import click
import pennylane as qml
import torch
from bench_report import Benchmark, Goal, markdown_table
from qclassify.quantum import QuantumFeatureLayer

GOAL_SPEEDUP = 20.0  # torch backend vs PennyLane TorchLayer...
GOAL_SIZE = (4, 2)  # ...at (qubits, layers); other sizes are reported, not checked
TORCH = "torch"
MIN_REPEATS = 3


@dataclass(frozen=True)
class Timing:
    n_qubits: int
    n_layers: int
    batch_size: int
    implementation: str  # "torch" or the PennyLane device name
    median_ms: float
    steps: int


def implementations() -> dict[str, dict[str, str]]:
    """Label -> QuantumFeatureLayer keyword arguments, for what is installed."""
    found = {TORCH: {"backend": "torch"},
             "default.qubit": {"backend": "pennylane", "device_name": "default.qubit"}}
    if importlib.util.find_spec("pennylane_lightning") is not None:
        found["lightning.qubit"] = {"backend": "pennylane", "device_name": "lightning.qubit"}
    return found


def time_training_step(layer: QuantumFeatureLayer, batch_size: int, repeats: int,
                       max_seconds: float) -> tuple[float, int]:
    """(median seconds, steps timed) of forward + backward on a random non-negative float32
    batch: `repeats` steps, or at least MIN_REPEATS once `max_seconds` have passed."""
    features = torch.rand(batch_size, 2**layer.n_qubits).requires_grad_()
    seconds: list[float] = []
    began = time.perf_counter()
    for step in range(repeats + 1):
        if len(seconds) >= MIN_REPEATS and time.perf_counter() - began > max_seconds:
            break
        layer.zero_grad(set_to_none=True)
        features.grad = None
        start = time.perf_counter()
        layer(features).sum().backward()
        if step > 0:  # the first step is a warm-up (allocations, PennyLane's caches)
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), len(seconds)


def run_benchmark(qubits: tuple[int, ...], n_layers: int, batch_sizes: tuple[int, ...],
                  repeats: int, max_seconds: float) -> list[Timing]:
    timings = []
    for n_qubits in qubits:
        for label, kwargs in implementations().items():
            torch.manual_seed(0)
            layer = QuantumFeatureLayer(n_qubits=n_qubits, n_layers=n_layers, **kwargs)
            for batch_size in batch_sizes:
                median, steps = time_training_step(layer, batch_size, repeats, max_seconds)
                timings.append(Timing(n_qubits, n_layers, batch_size, label, median * 1e3,
                                      steps))
    return timings


def speedups(timings: list[Timing]) -> dict[tuple[int, int, str], float]:
    """(qubits, batch size, PennyLane device) -> PennyLane time / torch time."""
    torch_ms = {(t.n_qubits, t.batch_size): t.median_ms
                for t in timings if t.implementation == TORCH}
    return {(t.n_qubits, t.batch_size, t.implementation): t.median_ms
            / torch_ms[t.n_qubits, t.batch_size]
            for t in timings if t.implementation != TORCH}


@click.command()
@click.option("--qubits", type=click.IntRange(1, 12), multiple=True, default=(4, 8),
              show_default=True)
@click.option("--layers", "n_layers", type=click.IntRange(1), default=2, show_default=True)
@click.option("--batch-size", "batch_sizes", type=click.IntRange(1), multiple=True,
              default=(16, 256), show_default=True)
@click.option("--repeats", type=click.IntRange(1), default=20, show_default=True)
@click.option("--max-seconds", type=click.FloatRange(0), default=60.0, show_default=True,
              help="per configuration; past it, stop after at least 3 timed steps")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="torch.set_num_threads; default: torch's own choice")
@click.option("--quick", is_flag=True, help="smoke run: 4 qubits, batch 16, 3 repeats")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="also write the timings and speed-ups as JSON here")
def main(qubits, n_layers, batch_sizes, repeats, max_seconds, threads, quick, json_path):
    """Time the torch backend against PennyLane's TorchLayer and print the speed-ups."""
    if quick:
        qubits, batch_sizes, repeats = (4,), (16,), 3
    if threads is not None:
        torch.set_num_threads(threads)
    click.echo(f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
               f"pennylane {qml.__version__}; forward+backward, median over steps")
    timings = run_benchmark(tuple(qubits), n_layers, tuple(batch_sizes), repeats, max_seconds)
    ratios = speedups(timings)
    click.echo(f"{'qubits':>6} {'layers':>6} {'batch':>6}  {'implementation':<16}"
               f"{'median ms':>10} {'steps':>5}  {'torch speed-up':>14}")
    for t in timings:
        ratio = ratios.get((t.n_qubits, t.batch_size, t.implementation))
        shown = "" if ratio is None else f"{ratio:.1f}x"
        click.echo(f"{t.n_qubits:>6} {t.n_layers:>6} {t.batch_size:>6}  {t.implementation:<16}"
                   f"{t.median_ms:>10.3f} {t.steps:>5}  {shown:>14}")
    if GOAL_SIZE[0] in qubits and n_layers == GOAL_SIZE[1]:
        target = [r for (n, _, _), r in ratios.items() if n == GOAL_SIZE[0]]
        verdict = "met" if min(target) >= GOAL_SPEEDUP else "NOT met"
        click.echo(f"goal >= {GOAL_SPEEDUP:.0f}x at n={GOAL_SIZE[0]}, L={GOAL_SIZE[1]}: "
                   f"{verdict} (smallest {min(target):.1f}x)")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({
            "torch": torch.__version__, "pennylane": qml.__version__,
            "threads": torch.get_num_threads(), "repeats": repeats, "max_seconds": max_seconds,
            "timings": [dataclasses.asdict(t) for t in timings],
            "speedups": [{"n_qubits": n, "batch_size": b, "device": d, "speedup": r}
                         for (n, b, d), r in ratios.items()],
        }, indent=2) + "\n")


def render(result: dict) -> str:
    """The report section: one row per (qubits, batch, implementation)."""
    ratios = {(s["n_qubits"], s["batch_size"], s["device"]): s["speedup"]
              for s in result["speedups"]}
    rows = []
    for t in result["timings"]:
        ratio = ratios.get((t["n_qubits"], t["batch_size"], t["implementation"]))
        shown = "" if ratio is None else f"{ratio:.1f}×"
        rows.append((t["n_qubits"], t["n_layers"], t["batch_size"], t["implementation"],
                     f"{t['median_ms']:.3f}", t["steps"], shown))
    return (f"Forward + backward of the layer alone; torch {result['torch']}, pennylane "
            f"{result['pennylane']}, {result['threads']} torch thread(s); median over up to "
            f"{result['repeats']} steps.\n\n"
            + markdown_table(("Qubits", "Layers", "Batch", "Implementation", "Median ms",
                              "Steps", "torch speed-up"), rows))


def goals(result: dict) -> list[Goal]:
    """The smallest speed-up at the goal's size; nothing when that size was not run."""
    n_qubits, n_layers = GOAL_SIZE
    layers = {t["n_layers"] for t in result["timings"]}
    ratios = {(s["device"], s["batch_size"]): s["speedup"] for s in result["speedups"]
              if s["n_qubits"] == n_qubits}
    if layers != {n_layers} or not ratios:
        return []
    (device, batch), smallest = min(ratios.items(), key=lambda item: item[1])
    return [Goal(f"quantum layer, n = {n_qubits}, L = {n_layers}",
                 f"torch ≥ {GOAL_SPEEDUP:.0f}× every PennyLane device",
                 f"smallest {smallest:.1f}× ({device}, batch {batch})",
                 smallest >= GOAL_SPEEDUP)]


BENCHMARK = Benchmark(
    script=Path(__file__).resolve(),
    title="Quantum layer forward + backward: torch vs PennyLane TorchLayer",
    goal=f"torch ≥ {GOAL_SPEEDUP:.0f}× PennyLane", render=render, goals=goals,
    env={"OMP_NUM_THREADS": "1"})


if __name__ == "__main__":
    main()
