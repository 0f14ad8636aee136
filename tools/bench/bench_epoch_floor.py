"""Seconds per epoch of `qclassify.train.fit` against the compute floor of the same epoch.

    OMP_NUM_THREADS=2 python tools/bench/bench_epoch_floor.py [--images 400 --size 64
        --epochs 2 --model mobilenet_v2 --model qmobilenet --threads 2
        --out bench-out/bench_epoch_floor.json] [--quick]

A generated two-class folder of `--images` PNGs (`--size` px) is trained from scratch
(``--weights none``, the scratch recipe: AdamW, batch 32, on CPU) for `--epochs` epochs; the
fit's epoch time is the median ``seconds`` of its history.csv (training pass plus validation
pass). The floor is what such an epoch must compute: the same model, optimizer and batch size
stepping over the run's own training images, already decoded and stacked in memory as
tensors, then one forward pass over its validation images; its median over as many epochs.
The ratio fit / floor is the data pipeline's and the loop's overhead. Goal: at most 1.15 at
64 px on CPU. `--quick` is a smoke run (32 px, 48 images, one model), not a measurement.
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch
import torch.nn.functional as F
from bench_report import Benchmark, Goal, markdown_table
from PIL import Image
from qclassify.batches import EVAL_BATCH_SIZE
from qclassify.images import ImageDataset
from qclassify.models import build_model
from qclassify.optim import make_optimizer
from qclassify.options import TrainConfig
from qclassify.runfolder import RunFolder
from qclassify.train import TRAINING_MEMORY_FORMAT, fit

GOAL_RATIO = 1.15  # fit's epoch / the compute floor's epoch, at 64 px on CPU
CLASSES = ("normal", "lesion")


def write_image_folder(root: Path, n_images: int, size: int) -> Path:
    """`n_images` noisy grayscale PNGs in two class folders; the second class has a brighter
    centre, so training has something to learn."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    centre = np.hypot(yy, xx) < size / 4
    for i in range(n_images):
        class_index = i % len(CLASSES)
        folder = root / CLASSES[class_index]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = 80 + 60 * class_index * centre + 30 * rng.standard_normal((size, size))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:05d}.png")
    return root


def fit_epoch_seconds(data: Path, run_dir: Path, config: TrainConfig) -> float:
    """Median epoch seconds of a fit, as its history.csv records them."""
    fit(data, run_dir, config, progress=False)
    return statistics.median(row["seconds"] for row in RunFolder(run_dir).read_history())


def _stacked(data: Path, run_dir: Path, split: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The run's images of one split, decoded as fit decodes them, and their labels."""
    samples = [s for s in RunFolder(run_dir).read_split() if s.split == split]
    paths = [data / s.path for s in samples]
    labels = [CLASSES.index(s.class_name) for s in samples]
    dataset = ImageDataset(paths, labels, size, cache=True)
    images, targets = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return torch.stack(images), torch.as_tensor(targets)


def floor_epoch_seconds(data: Path, run_dir: Path, config: TrainConfig) -> float:
    """Median seconds of the floor epoch (see the module docstring) over `config.epochs`."""
    train_images, train_labels = _stacked(data, run_dir, "train", config.image_size)
    train_images = train_images.contiguous(memory_format=TRAINING_MEMORY_FORMAT)
    val_images, _ = _stacked(data, run_dir, "val", config.image_size)
    torch.manual_seed(config.seed)
    model = build_model(config.model, len(CLASSES), weights="none", stem=config.stem)
    model.to(memory_format=TRAINING_MEMORY_FORMAT)  # as fit trains it
    optimizer = make_optimizer(model.parameters(), config)
    train_batches = list(zip(train_images.split(config.batch_size),
                             train_labels.split(config.batch_size), strict=True))
    seconds = []
    for _ in range(config.epochs):
        start = time.perf_counter()
        model.train()
        for images, labels in train_batches:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            for images in val_images.split(EVAL_BATCH_SIZE):
                model(images)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


@click.command()
@click.option("--images", "n_images", type=click.IntRange(min=12), default=400,
              show_default=True)
@click.option("--size", type=click.IntRange(min=32), default=64, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--model", "models", multiple=True, default=("mobilenet_v2", "qmobilenet"),
              show_default=True)
@click.option("--threads", type=int, default=None, help="torch.set_num_threads")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the results as JSON here.")
@click.option("--quick", is_flag=True, help="Smoke run: 32 px, 48 images, one model.")
def main(n_images, size, epochs, models, threads, out, quick):
    """fit's seconds per epoch against the in-memory compute floor of the same epoch."""
    if quick:
        n_images, size, epochs, models = 48, 32, 2, ("mobilenet_v2",)
    if threads:
        torch.set_num_threads(threads)
    report = {"device": "cpu", "threads": torch.get_num_threads(),
              "torch": torch.__version__, "python": platform.python_version(),
              "images": n_images, "size": size, "epochs": epochs, "models": {}}
    with tempfile.TemporaryDirectory() as scratch:
        data = write_image_folder(Path(scratch) / "data", n_images, size)
        for name in models:
            config = TrainConfig(model=name, weights="none", image_size=size, epochs=epochs,
                                 device="cpu").resolved()
            run_dir = Path(scratch) / f"run-{name}"
            fit_seconds = fit_epoch_seconds(data, run_dir, config)
            floor_seconds = floor_epoch_seconds(data, run_dir, config)
            ratio = fit_seconds / floor_seconds
            report["models"][name] = {"fit_epoch_seconds": fit_seconds,
                                      "floor_epoch_seconds": floor_seconds, "ratio": ratio,
                                      "batch_size": config.batch_size,
                                      "optimizer": config.optimizer}
            verdict = "meets" if ratio <= GOAL_RATIO else "misses"
            click.echo(f"{name:<13} fit {fit_seconds:7.2f} s/epoch  floor {floor_seconds:7.2f} "
                       f"s/epoch  ratio {ratio:.3f} ({verdict} the <= {GOAL_RATIO} goal)")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        click.echo(f"wrote {out}")


def render(result: dict) -> str:
    """The report section: one row per model."""
    rows = [(name, f"{m['fit_epoch_seconds']:.2f}", f"{m['floor_epoch_seconds']:.2f}",
             f"{m['ratio']:.3f}") for name, m in result["models"].items()]
    return (f"CPU, {result['threads']} torch thread(s); {result['images']} images of "
            f"{result['size']} px, scratch recipe, median of {result['epochs']} epochs.\n\n"
            + markdown_table(("Model", "fit s/epoch", "floor s/epoch", "ratio"), rows))


def goals(result: dict) -> list[Goal]:
    """fit's overhead over the floor, per model."""
    return [Goal(f"fit epoch / compute floor, {name}, {result['size']} px",
                 f"<= {GOAL_RATIO}", f"{m['ratio']:.3f}", m["ratio"] <= GOAL_RATIO)
            for name, m in result["models"].items()]


BENCHMARK = Benchmark(
    script=Path(__file__).resolve(),
    title="Epoch time of fit against the in-memory compute floor",
    goal=f"fit epoch <= {GOAL_RATIO}x the compute floor at 64 px on CPU", render=render,
    goals=goals, result_args=lambda path: ["--out", str(path)])


if __name__ == "__main__":
    main()
