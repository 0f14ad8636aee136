"""Throughput of ``qclassify predict --engine onnxruntime`` against a bare ONNX Runtime loop.

    OMP_NUM_THREADS=2 python tools/bench/bench_predict.py   # 1,000 PNGs at 64 and 224 px
    python tools/bench/bench_predict.py --quick              # smoke run: 64 PNGs at 32 px
    python tools/bench/bench_predict.py --json bench-out/bench_predict.json

For each size a qmobilenet run is trained for one epoch on 8 generated images (``--weights
none``, so nothing is downloaded), then ``--n-images`` generated grayscale PNGs are predicted
by `qclassify.inference.predict_paths` (the library function behind ``qclassify predict``,
engine onnxruntime, its export already cached: what every call after the first costs), timed
over the whole call. The floor is a bare ``session.run`` loop of the same exported model over
the same images, decoded and preprocessed beforehand (untimed), in batches of the same size.
Goal: predict reaches at least 0.8x the floor's images/s on the CPU. Each figure is the median
of ``--repeats`` runs.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch
from bench_report import Benchmark, Goal, markdown_table
from PIL import Image
from qclassify.config import TrainConfig
from qclassify.images import ImageDataset, list_images
from qclassify.inference import load_run, predict_paths
from qclassify.onnx_engine import OnnxRunner
from qclassify.train import fit

GOAL_RATIO = 0.8  # predict images/s / bare ONNX Runtime loop images/s
QUICK = {"n_images": 64, "sizes": (32,), "repeats": 1}
TRAIN_IMAGES_PER_CLASS = 4


def write_pngs(folder: Path, n_images: int, size: int, seed: int = 0) -> None:
    """`n_images` noisy grayscale PNGs of `size` px in `folder`."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n_images):
        pixels = rng.integers(0, 256, (size, size), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"image_{i:05d}.png")


def train_tiny_run(root: Path, size: int) -> Path:
    """A qmobilenet run of one epoch on two generated classes."""
    for k, name in enumerate(("normal", "lesion")):
        write_pngs(root / "train-data" / name, TRAIN_IMAGES_PER_CLASS, size, seed=k + 1)
    config = TrainConfig(epochs=1, batch_size=4, image_size=size, weights="none", device="cpu",
                         val_fraction=0.25, test_fraction=0.25)
    fit(root / "train-data", root / "run", config, progress=False)
    return root / "run"


def time_predict(run: Path, images: Path, batch_size: int) -> float:
    """Seconds of one `predict_paths` call over the folder, engine onnxruntime."""
    start = time.perf_counter()
    predict_paths(run, [images], batch_size=batch_size, device="cpu", engine="onnxruntime")
    return time.perf_counter() - start


def time_floor(run: Path, images: Path, batch_size: int) -> float:
    """Seconds of a bare `session.run` loop over the images decoded and preprocessed
    beforehand, in batches of `batch_size`."""
    loaded = load_run(run, device="cpu", q_backend="torch")
    runner = OnnxRunner.for_run(loaded)
    paths = list_images(images)
    dataset = ImageDataset(paths, None, runner.image_size)
    tensors = torch.stack([dataset[i][0] for i in range(len(paths))]).numpy()
    batches = [tensors[i:i + batch_size] for i in range(0, len(tensors), batch_size)]
    start = time.perf_counter()
    for batch in batches:
        runner.session.run(None, {"images": batch})
    return time.perf_counter() - start


@click.command()
@click.option("--n-images", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--size", "sizes", type=click.IntRange(min=32), multiple=True,
              default=(64, 224), show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--quick", is_flag=True, help="Smoke run: 64 PNGs at 32 px, 1 run.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the measurements as JSON here.")
def main(n_images: int, sizes: tuple[int, ...], batch_size: int, repeats: int, quick: bool,
         json_path: Path | None) -> None:
    """Images/s of `qclassify predict --engine onnxruntime` next to a bare session loop."""
    if quick:
        n_images, sizes, repeats = QUICK["n_images"], QUICK["sizes"], QUICK["repeats"]
    results = {"n_images": n_images, "batch_size": batch_size, "repeats": repeats,
               "threads": torch.get_num_threads(), "sizes": {}}
    click.echo(f"{n_images} grayscale PNGs, batch {batch_size}; python "
               f"{platform.python_version()}, {os.cpu_count()} CPUs; median of {repeats} run(s)")
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-predict-") as scratch:
            root = Path(scratch)
            run = train_tiny_run(root, size)
            write_pngs(root / "images", n_images, size)
            time_predict(run, root / "images", batch_size)  # exports once into RUN/.cache
            predict = statistics.median(time_predict(run, root / "images", batch_size)
                                        for _ in range(repeats))
            floor = statistics.median(time_floor(run, root / "images", batch_size)
                                      for _ in range(repeats))
        rates = {"predict": n_images / predict, "floor": n_images / floor}
        results["sizes"][str(size)] = {"predict_seconds": predict, "floor_seconds": floor,
                                       "images_per_second": rates}
        click.echo(f"{size} px: predict {rates['predict']:.1f} images/s, bare ONNX Runtime "
                   f"loop {rates['floor']:.1f} images/s: "
                   f"{rates['predict'] / rates['floor']:.2f}x the floor")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=2) + "\n")


def render(result: dict) -> str:
    """The report section: one row per image size."""
    rows = []
    for size, numbers in result["sizes"].items():
        rates = numbers["images_per_second"]
        rows.append((f"{size} px", f"{numbers['predict_seconds']:.2f}",
                     f"{rates['predict']:.1f}", f"{numbers['floor_seconds']:.2f}",
                     f"{rates['floor']:.1f}", f"{rates['predict'] / rates['floor']:.2f}"))
    return (f"{result['n_images']} grayscale PNGs, batch {result['batch_size']}, "
            f"{result['threads']} torch thread(s); median of {result['repeats']} run(s). "
            "predict = the whole `predict_paths` call (decode, preprocess, cached ONNX session); "
            "floor = `session.run` over the same tensors decoded beforehand.\n\n"
            + markdown_table(("Size", "predict s", "predict images/s", "floor s",
                              "floor images/s", "× floor"), rows))


def goals(result: dict) -> list[Goal]:
    """predict's rate against the floor at every size."""
    checked = []
    for size, numbers in result["sizes"].items():
        rates = numbers["images_per_second"]
        ratio = rates["predict"] / rates["floor"]
        checked.append(Goal(f"qclassify predict --engine onnxruntime, {size} px",
                            f"≥ {GOAL_RATIO:.1f}× the bare ONNX Runtime loop",
                            f"{ratio:.2f}× ({rates['predict']:.1f} vs {rates['floor']:.1f} "
                            "images/s)", ratio >= GOAL_RATIO))
    return checked


BENCHMARK = Benchmark(
    script=Path(__file__).resolve(),
    title="qclassify predict (ONNX Runtime) vs a bare ONNX Runtime loop",
    goal=f"≥ {GOAL_RATIO:.1f}× the bare ONNX Runtime loop", render=render, goals=goals)


if __name__ == "__main__":
    main()
