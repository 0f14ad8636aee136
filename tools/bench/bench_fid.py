"""Time `python -m pytorch_fid A B` against `diffaug fid A B` on the same folders.

    TORCH_HOME=../shared/torch-home python tools/bench/bench_fid.py         # BreastMNIST test split
    TORCH_HOME=../shared/torch-home python tools/bench/bench_fid.py --quick # 8 + 8 images, dims 64
    TORCH_HOME=... python tools/bench/bench_fid.py REAL_DIR OTHER_DIR [--json PATH]

Without folders, the BreastMNIST test split (`../shared/data/breastmnist.npz`: label 0 =
malignant, 1 = benign) is written as PNGs into a temporary folder, never into the repository.
Both tools run as subprocesses in the same environment, diffaug three times: its first run
(an empty $DIFFAUG_CACHE, so it exports the network to ONNX once), a second run (cached export:
what every later call costs) and `--engine torch` (no ONNX Runtime). The speed-up is
pytorch-fid's time over the second run's (goal: at least 3x); the script prints seconds and FID
of each. It needs TORCH_HOME to hold the real FID Inception weights (pytorch-fid's cache layout);
without them (or without the default data file) it prints a note and exits 0, so it never
downloads anything. `--json PATH` also writes the measurements, or the reason for skipping.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_report import Benchmark, Goal, markdown_table, shown_path
from PIL import Image

WEIGHTS = Path("hub") / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth"
# tools/bench/ -> the repository -> the workspace beside it, where ../shared/data lives.
DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "breastmnist.npz"
GOAL_SPEEDUP = 3.0  # diffaug fid (cached ONNX export) vs python -m pytorch_fid
CLASS_FOLDERS = {0: "malignant", 1: "benign"}
QUICK_IMAGES = 8
QUICK_DIMS = 64
FIRST_RUN = "diffaug fid (first run, exports ONNX)"
CACHED_RUN = "diffaug fid"
TORCH_ENGINE = "diffaug fid --engine torch"


def write_breastmnist_test_split(data: Path, root: Path, limit: int | None) -> tuple[Path, Path]:
    """The test split's malignant and benign images as PNG folders under `root`."""
    with np.load(data) as arrays:
        images, labels = arrays["test_images"], arrays["test_labels"].reshape(-1)
    folders = []
    for label, name in CLASS_FOLDERS.items():
        folder = root / name
        folder.mkdir()
        for index in np.flatnonzero(labels == label)[:limit]:
            Image.fromarray(images[index]).save(folder / f"test_{index:04d}.png")
        folders.append(folder)
    return folders[0], folders[1]


def run_timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Seconds and the FID printed by `command` (both tools print "FID: <value>")."""
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if finished.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{finished.stderr.strip()}")
    return seconds, float(finished.stdout.split("FID:")[1].split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, help="REAL OTHER (default: BreastMNIST)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="breastmnist.npz")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dims", type=int, default=2048)
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_IMAGES} images per class and --dims {QUICK_DIMS}: a smoke run")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    if len(args.folders) not in (0, 2):
        parser.error("give two folders, or none for the BreastMNIST test split")
    torch_home = os.environ.get("TORCH_HOME")
    skipped = None
    if not torch_home or not (Path(torch_home) / WEIGHTS).is_file():
        skipped = f"set TORCH_HOME to a folder holding {WEIGHTS} (the real FID weights)"
    elif not args.folders and not args.data.is_file():
        skipped = f"{args.data} not found: give --data or two folders"
    if skipped is not None:
        print(f"skipped: {skipped}")
        write_json(args.json, {"skipped": skipped})
        return
    dims = QUICK_DIMS if args.quick else args.dims
    with tempfile.TemporaryDirectory(prefix="bench-fid-") as temporary:
        if args.folders:
            real, other = args.folders
        else:
            limit = QUICK_IMAGES if args.quick else None
            real, other = write_breastmnist_test_split(args.data, Path(temporary), limit)
        common = [str(real), str(other), "--device", args.device, "--dims", str(dims)]
        diffaug = [sys.executable, "-m", "diffaug", "fid", *common, "--quiet"]
        tools = {
            "pytorch-fid": [sys.executable, "-m", "pytorch_fid", *common],
            FIRST_RUN: diffaug,
            CACHED_RUN: diffaug,
            TORCH_ENGINE: [*diffaug, "--engine", "torch"],
        }
        env = {**os.environ, "DIFFAUG_CACHE": str(Path(temporary) / "diffaug-cache")}
        counts = [sum(1 for p in Path(f).iterdir() if p.is_file()) for f in (real, other)]
        print(f"{real} ({counts[0]} files) vs {other} ({counts[1]} files), dims {dims}, "
              f"device {args.device}, TORCH_HOME={shown_path(torch_home)}, "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
        results = {name: run_timed(command, env) for name, command in tools.items()}
    for name, (seconds, fid) in results.items():
        print(f"{name:<40} {seconds:8.1f} s   FID {fid:.6f}")
    slow, reference = results["pytorch-fid"]
    difference = max(abs(fid - reference) for _, fid in results.values()) / abs(reference)
    speedups = {name: slow / seconds for name, (seconds, _) in results.items()}
    print(f"speed-up {speedups[CACHED_RUN]:.2f}x (first run {speedups[FIRST_RUN]:.2f}x, "
          f"torch engine {speedups[TORCH_ENGINE]:.2f}x), largest relative FID difference "
          f"{difference:.2e}")
    write_json(args.json, {
        "real": str(real), "other": str(other), "n_real": counts[0], "n_other": counts[1],
        "dims": dims, "device": args.device,
        "results": {name: {"seconds": seconds, "fid": fid}
                    for name, (seconds, fid) in results.items()},
        "speedup": speedups[CACHED_RUN], "speedups": speedups,
        "relative_fid_difference": difference,
    })


def write_json(path: Path | None, data: dict) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n")


def render(result: dict) -> str:
    """The report section: seconds, FID and speed-up of every run."""
    rows = [(name, f"{r['seconds']:.1f}", f"{r['fid']:.6f}", f"{result['speedups'][name]:.2f}×")
            for name, r in result["results"].items()]
    return (f"{result['n_real']} vs {result['n_other']} images, dims {result['dims']}, device "
            f"{result['device']}; each run a subprocess, wall time including start-up. The "
            f"first diffaug run exports the network to ONNX once (an empty $DIFFAUG_CACHE); "
            f"the next runs load that export.\n\n"
            + markdown_table(("Tool", "Seconds", "FID", "Speed-up"), rows)
            + f"\n\nSpeed-up {result['speedup']:.2f}× (cached export); largest relative FID "
              f"difference {result['relative_fid_difference']:.1e}.")


def goals(result: dict) -> list[Goal]:
    """The cached run's speed-up over pytorch-fid."""
    return [Goal("diffaug fid vs python -m pytorch_fid", f"≥ {GOAL_SPEEDUP:.0f}× faster",
                 f"{result['speedup']:.2f}× (same FID within "
                 f"{result['relative_fid_difference']:.1e})",
                 result["speedup"] >= GOAL_SPEEDUP)]


BENCHMARK = Benchmark(
    script=Path(__file__).resolve(), title="diffaug fid vs python -m pytorch_fid",
    goal=f"≥ {GOAL_SPEEDUP:.0f}× faster", render=render, goals=goals)


if __name__ == "__main__":
    main()
