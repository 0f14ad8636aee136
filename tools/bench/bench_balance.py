"""Throughput of ``diffaug balance`` against a plain PIL open-and-save loop over the same images.

    python tools/bench/bench_balance.py            # 2,000 224x224 grayscale PNGs, workers 1 and 2
    python tools/bench/bench_balance.py --quick    # smoke run: 100 64x64 PNGs, 1 run
    python tools/bench/bench_balance.py --json bench-out/bench_balance.json   # machine-readable

The dataset is two classes, 90 % / 10 %, balanced with ratio 1, so about 0.8 N synthetic images
are written (eq. 3: M = N_maj - N_min) besides the N copied originals. Reported rates:

- floor: images/s of ``Image.open(p).save(q)`` over all N inputs (decode + PNG encode + write);
- balance: synthetic images/s (M / wall time of the whole call, which also checks, and copies,
  the N originals and writes the manifest) and files/s ((N + M) / wall time).

Each figure is the median of ``--repeats`` runs, each into a fresh output folder. Goals: at
least 0.75x the floor's rate per worker, and near-linear scaling in workers.
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
from bench_report import Benchmark, Goal, markdown_table
from diffaug import balance_folder
from PIL import Image
from scipy.ndimage import gaussian_filter

MAJORITY_FRACTION = 0.9
QUICK = {"n_images": 100, "size": 64, "repeats": 1}
GOAL_PER_WORKER = 0.75  # diffaug balance rate per worker / PIL open-and-save rate
GOAL_SCALING_EFFICIENCY = 0.8  # "near-linear": rate(w) / rate(1) >= 0.8 w (our reading)


def make_dataset(root: Path, n: int, size: int, seed: int = 0) -> dict[str, int]:
    """N grayscale PNGs of smooth structure plus sensor noise, 90 % 'normal', 10 % 'lesion'."""
    rng = np.random.default_rng(seed)
    counts = {"normal": round(n * MAJORITY_FRACTION)}
    counts["lesion"] = n - counts["normal"]
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for index in range(count):
            field = gaussian_filter(rng.standard_normal((size, size)), sigma=size / 16)
            field = (field - field.min()) / (np.ptp(field) + 1e-12)
            pixels = np.clip(0.15 + 0.7 * field + 0.02 * rng.standard_normal(field.shape), 0, 1)
            Image.fromarray(np.rint(pixels * 255).astype(np.uint8)).save(
                root / name / f"img_{index:05d}.png")
    return counts


def time_plain_loop(in_dir: Path, out_dir: Path) -> float:
    """Seconds to open and re-save every input PNG with PIL (the floor for any per-image tool)."""
    paths = sorted(in_dir.rglob("*.png"))
    out_dir.mkdir()
    started = time.perf_counter()
    for index, path in enumerate(paths):
        with Image.open(path) as image:
            image.save(out_dir / f"{index:05d}.png")
    return time.perf_counter() - started


def time_balance(in_dir: Path, out_dir: Path, workers: int) -> tuple[float, int, int]:
    """Seconds for one balance_folder call, synthetic images written, originals copied."""
    started = time.perf_counter()
    report = balance_folder(in_dir, out_dir, ratio=1, seed=0, workers=workers)
    return time.perf_counter() - started, report.n_synthetic, report.n_copied


@click.command()
@click.option("--n", "n_images", default=2000, show_default=True, type=click.IntRange(min=20),
              help="Input images.")
@click.option("--size", default=224, show_default=True, type=click.IntRange(min=8),
              help="Image side in pixels.")
@click.option("--workers", "worker_counts", multiple=True, type=click.IntRange(min=1),
              default=(1, 2), show_default=True, help="Worker counts to time (repeatable).")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(min=1),
              help="Runs per measurement; the median is reported.")
@click.option("--quick", is_flag=True, help="Smoke run: --n 100 --size 64 --repeats 1.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the measurements as JSON here.")
def main(n_images: int, size: int, worker_counts: tuple[int, ...], repeats: int, quick: bool,
         json_path: Path | None) -> None:
    """Time `diffaug balance` (images/s) next to a plain PIL open-and-save loop."""
    if quick:
        n_images, size, repeats = QUICK["n_images"], QUICK["size"], QUICK["repeats"]
    results = {"n_images": n_images, "size": size, "repeats": repeats, "balance": []}
    with tempfile.TemporaryDirectory(prefix="bench-balance-") as scratch:
        root = Path(scratch)
        counts = make_dataset(root / "in", n_images, size)
        click.echo(f"{n_images} {size}x{size} grayscale PNGs {counts}; python "
                   f"{platform.python_version()}, {os.cpu_count()} CPUs; "
                   f"median of {repeats} run(s)")
        plain = statistics.median(time_plain_loop(root / "in", root / f"plain{r}")
                                  for r in range(repeats))
        floor_rate = n_images / plain
        click.echo(f"{'PIL open+save loop':<28} {plain:8.2f} s {floor_rate:9.1f} images/s")
        results |= {"counts": counts, "floor": {"seconds": plain, "images_per_second": floor_rate}}
        for workers in worker_counts:
            runs = [time_balance(root / "in", root / f"w{workers}-{r}", workers)
                    for r in range(repeats)]
            seconds = statistics.median(run[0] for run in runs)
            n_synthetic, n_copied = runs[0][1], runs[0][2]
            rate = n_synthetic / seconds
            click.echo(f"{f'balance --workers {workers}':<28} {seconds:8.2f} s {rate:9.1f} "
                       f"synthetic images/s ({n_synthetic} synthetic + {n_copied} copied: "
                       f"{(n_synthetic + n_copied) / seconds:.1f} files/s; "
                       f"{rate / floor_rate:.2f}x the PIL loop rate)")
            results["balance"].append({
                "workers": workers, "seconds": seconds, "n_synthetic": n_synthetic,
                "n_copied": n_copied, "synthetic_per_second": rate,
                "files_per_second": (n_synthetic + n_copied) / seconds})
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=2) + "\n")


def render(result: dict) -> str:
    """The report section: the floor, then one row per worker count."""
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


def goals(result: dict) -> list[Goal]:
    """The per-worker rate of every worker count, and the scaling from one worker."""
    floor = result["floor"]["images_per_second"]
    runs = {run["workers"]: run["synthetic_per_second"] for run in result["balance"]}
    checked = [Goal(f"diffaug balance, {workers} worker(s)",
                    f"≥ {GOAL_PER_WORKER:.2f}× the PIL floor per worker",
                    f"{rate / workers / floor:.2f}× ({rate:.1f} vs {floor:.1f} images/s)",
                    rate / workers / floor >= GOAL_PER_WORKER)
               for workers, rate in sorted(runs.items())]
    if 1 in runs:
        for workers, rate in sorted(runs.items()):
            if workers > 1:
                speedup = rate / runs[1]
                checked.append(Goal(
                    f"diffaug balance scaling, 1 → {workers} workers",
                    f"near-linear: ≥ {GOAL_SCALING_EFFICIENCY * workers:.1f}× "
                    f"({GOAL_SCALING_EFFICIENCY:.0%} efficiency)",
                    f"{speedup:.2f}× ({os.cpu_count()} CPUs)",
                    speedup >= GOAL_SCALING_EFFICIENCY * workers))
    return checked


BENCHMARK = Benchmark(
    script=Path(__file__).resolve(),
    title="diffaug balance throughput vs the PIL open-and-save floor",
    goal=f"≥ {GOAL_PER_WORKER:.2f}× the PIL floor per worker, near-linear in workers",
    render=render, goals=goals)


if __name__ == "__main__":
    main()
