"""Training and inference cost of qmobilenet vs plain mobilenet_v2.

    OMP_NUM_THREADS=2 python tools/bench/bench_train.py [--size 64 --size 224 --batch-size 16
        --steps 20 --repeats 3 --epoch-images 546 --latency-runs 50 --threads 2
        --device cpu --out bench-out/bench_train.json] [--quick]

Training: one step is forward + cross-entropy + backward + Adam step on a fixed random batch
(no image decoding), timed for each model in turn, `--repeats` rounds interleaved so both
models see the same machine load; the median step gives seconds per epoch of `--epoch-images`
training images (546 = BreastMNIST's train split). Goal: the quantum head adds under 5% to a
training step (checked at every size; on CPU at 64 px it matters most). Inference: median
latency of one image (batch 1) in eager PyTorch, as a traced TorchScript module and in ONNX
Runtime (legacy exporter; skipped when onnx/onnxruntime are missing). `--quick` is a smoke run
(32 px, 2 steps, 1 round, 3 latency runs).
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
import torch
import torch.nn.functional as F
from bench_report import Benchmark, Goal, markdown_table
from qclassify.models import build_model, resolve_device
from torch import nn

MODELS = ("qmobilenet", "mobilenet_v2")
GOAL_OVERHEAD = 0.05  # the quantum head's largest share of a training step
NUM_CLASSES = 2


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(call: Callable[[], object], runs: int, device: torch.device) -> float:
    call()  # warm-up: allocations, lazy initialisation, autotuning
    _synchronize(device)
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        _synchronize(device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def _fresh_model(name: str, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, NUM_CLASSES, weights="none").to(device)


def training_step_seconds(size: int, batch_size: int, steps: int, repeats: int,
                          device: torch.device) -> dict[str, float]:
    """Median seconds of one training step per model, rounds interleaved between models."""
    images = torch.rand(batch_size, 3, size, size, device=device)
    labels = torch.arange(batch_size, device=device) % NUM_CLASSES
    setups = {}
    for name in MODELS:
        model = _fresh_model(name, device).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-4)
        setups[name] = (model, optimizer)

    def step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    rounds: dict[str, list[float]] = {name: [] for name in MODELS}
    for _ in range(repeats):
        for name, (model, optimizer) in setups.items():
            rounds[name].append(_median_seconds(lambda m=model, o=optimizer: step(m, o), steps,
                                                device))
    return {name: statistics.median(values) for name, values in rounds.items()}


@torch.no_grad()
def latency_seconds(name: str, size: int, runs: int, device: torch.device) -> dict[str, float]:
    """Median seconds per single image: eager, TorchScript (traced) and ONNX Runtime."""
    model = _fresh_model(name, device).eval()
    image = torch.rand(1, 3, size, size, device=device)
    result = {"eager": _median_seconds(lambda: model(image), runs, device)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation notices of torch.jit
        traced = torch.jit.trace(model, image)
    result["torchscript"] = _median_seconds(lambda: traced(image), runs, device)
    onnx_seconds = _onnx_latency(model, image, runs)
    if onnx_seconds is not None:
        result["onnxruntime"] = onnx_seconds
    return result


def _onnx_latency(model: nn.Module, image: torch.Tensor, runs: int) -> float | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = str(Path(folder) / "model.onnx")
        # The legacy exporter: the dynamo one needs onnxscript, which is not a dependency.
        torch.onnx.export(model, (image,), path, dynamo=False, input_names=["images"])
        providers = (["CUDAExecutionProvider"] if image.is_cuda else []) + [
            "CPUExecutionProvider"]
        available = set(onnxruntime.get_available_providers())
        session = onnxruntime.InferenceSession(
            path, providers=[p for p in providers if p in available])
    feed = {"images": image.cpu().numpy().astype(np.float32)}
    return _median_seconds(lambda: session.run(None, feed), runs, torch.device("cpu"))


@click.command()
@click.option("--size", "sizes", type=int, multiple=True, default=(64, 224), show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--steps", type=int, default=20, show_default=True,
              help="Timed training steps per round and model.")
@click.option("--repeats", type=int, default=3, show_default=True,
              help="Interleaved rounds; the median round counts.")
@click.option("--epoch-images", type=int, default=546, show_default=True)
@click.option("--latency-runs", type=int, default=50, show_default=True)
@click.option("--threads", type=int, default=None, help="torch.set_num_threads")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu",
              show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the results as JSON here.")
@click.option("--quick", is_flag=True, help="Smoke run: 32 px, 2 steps, 1 round.")
def main(sizes, batch_size, steps, repeats, epoch_images, latency_runs, threads, device, out,
         quick):
    """Seconds per training step / epoch and per-image latency, qmobilenet vs mobilenet_v2."""
    if quick:
        sizes, batch_size, steps, repeats, latency_runs = (32,), 4, 2, 1, 3
    if threads:
        torch.set_num_threads(threads)
    resolved = resolve_device(device)
    steps_per_epoch = math.ceil(epoch_images / batch_size)
    report = {"device": str(resolved), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "python": platform.python_version(),
              "batch_size": batch_size, "epoch_images": epoch_images, "sizes": {}}
    for size in sizes:
        step = training_step_seconds(size, batch_size, steps, repeats, resolved)
        overhead = step["qmobilenet"] / step["mobilenet_v2"] - 1
        latency = {name: latency_seconds(name, size, latency_runs, resolved) for name in MODELS}
        report["sizes"][size] = {"step_seconds": step,
                                 "epoch_seconds": {k: v * steps_per_epoch for k, v in step.items()},
                                 "quantum_overhead": overhead, "latency_seconds": latency}
        click.echo(f"{size} px, batch {batch_size}, {resolved}, {torch.get_num_threads()} threads")
        for name in MODELS:
            runtimes = "  ".join(f"{k} {1e3 * v:.2f} ms" for k, v in latency[name].items())
            click.echo(f"  {name:<13} step {1e3 * step[name]:8.1f} ms  epoch "
                       f"{step[name] * steps_per_epoch:7.1f} s   latency/image: {runtimes}")
        verdict = "meets" if overhead < GOAL_OVERHEAD else "misses"
        click.echo(f"  quantum head overhead per training step: {100 * overhead:+.1f}% "
                   f"({verdict} the <{100 * GOAL_OVERHEAD:.0f}% goal)")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        click.echo(f"wrote {out}")


def render(result: dict) -> str:
    """The report section: one table per image size."""
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


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{1e3 * seconds:.2f}"


def goals(result: dict) -> list[Goal]:
    """The quantum head's overhead at every image size."""
    return [Goal(f"quantum head overhead, {size} px",
                 f"< {100 * GOAL_OVERHEAD:.0f}% of a training step",
                 f"{100 * numbers['quantum_overhead']:+.1f}%",
                 numbers["quantum_overhead"] < GOAL_OVERHEAD)
            for size, numbers in result["sizes"].items()]


BENCHMARK = Benchmark(
    script=Path(__file__).resolve(),
    title="Training step and inference latency: qmobilenet vs mobilenet_v2",
    goal=f"quantum head < {100 * GOAL_OVERHEAD:.0f}% of a training step", render=render,
    goals=goals, result_args=lambda path: ["--out", str(path)])


if __name__ == "__main__":
    main()
