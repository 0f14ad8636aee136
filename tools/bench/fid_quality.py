"""Are diffaug's synthetic minority images closer to real ones than classic augmentation?

    TORCH_HOME=../shared/torch-home OMP_NUM_THREADS=1 python tools/bench/fid_quality.py \
        [../shared/data/breastmnist.npz] [--minority-label 0] [--out bench-out/fid-quality.md]
    TORCH_HOME=... python tools/bench/fid_quality.py --quick   # smoke run: 16 images a set, dims 64

The paper's section 2.2.3 claims that forward-diffusion samples (T = 5) are closer to real
minority images than traditional geometric augmentation (FID 28.3 against 45.7). On a MedMNIST
file (label `--minority-label` is the minority class; 0 = malignant for BreastMNIST) this script
measures FID and KID against the HELD-OUT real minority images (val + test splits) of:

(a) the synthetic images of `diffaug balance --ratio 0.7 --seed 0` of the train split;
(b) as many classic augmentations of the SAME source images (the manifest's ``source``
    column): horizontal flip with p = 0.5, rotation by an angle uniform in ±15° and brightness
    by a factor uniform in 0.9–1.1 (torchvision transforms, seeded);
(c) the real train minority images: the floor, what un-augmented real images score.

Everything is built in a temporary folder; only the markdown table (`--out`, and `--json` with
the same table under "markdown") is written. It needs the real FID Inception weights in
$TORCH_HOME (pytorch-fid's cache layout): without them, or without NPZ's default file, it prints
a note and exits 0, never downloading anything.
"""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import torch
from bench_report import Benchmark, Goal, shown_path
from diffaug import balance_folder
from diffaug.fid import FID_DIMS, FewImagesWarning, compute_fid, inception_weights_path
from diffaug.io import MANIFEST_NAME, atomic_write_bytes, read_manifest
from PIL import Image
from torchvision.transforms import v2

# Run as `python tools/bench/fid_quality.py`, Python puts only this folder on sys.path; the
# MedMNIST converter lives in tools/medmnist/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "medmnist"))

from medmnist_to_folder import SOURCE_FILE, convert_medmnist

# tools/bench/ -> the repository -> the workspace beside it, where ../shared/data lives.
DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "breastmnist.npz"
ROTATION_DEGREES = 15
BRIGHTNESS = (0.9, 1.1)
QUICK = {"dims": 64, "limit": 16}
SET_TITLES = {
    "diffaug": "(a) diffaug synthetic (forward diffusion, eqs. 1–4)",
    "classic": "(b) classic flip / rotate ±15° / brightness 0.9–1.1, same sources",
    "real_train": "(c) real train minority images (floor)",
}


@dataclass(frozen=True)
class SetDistance:
    """FID and KID of one image set against the held-out real minority images."""

    name: str
    n_images: int
    fid: float
    kid_mean: float
    kid_std: float


def classic_augmentation(seed: int) -> v2.Compose:
    """The geometric/photometric augmentation the paper compares with, as users write it."""
    torch.manual_seed(seed)  # v2 transforms draw from torch's global generator
    return v2.Compose([
        v2.RandomHorizontalFlip(p=0.5),
        v2.RandomRotation(degrees=ROTATION_DEGREES, interpolation=v2.InterpolationMode.BILINEAR),
        v2.ColorJitter(brightness=BRIGHTNESS),
    ])


def write_classic_augmentations(sources: list[Path], out_dir: Path, seed: int) -> list[Path]:
    """One augmented PNG per entry of `sources` (repeats included), in order, seeded."""
    out_dir.mkdir(parents=True)
    written = []
    with torch.random.fork_rng():
        transform = classic_augmentation(seed)
        for k, source in enumerate(sources):
            target = out_dir / f"classic_{source.stem}_{k}.png"
            with Image.open(source) as image:
                transform(image).save(target)
            written.append(target)
    return written


def build_image_sets(npz: Path, work: Path, *, minority_label: int, ratio: str,
                     seed: int) -> tuple[str, list[Path], dict[str, list[Path]]]:
    """Minority class name, held-out real minority images and the three sets to compare."""
    data, balanced = work / "data", work / "balanced"
    convert_medmnist(npz, data)
    class_names = json.loads((data / SOURCE_FILE).read_text())["class_names"]
    if not 0 <= minority_label < len(class_names):
        raise ValueError(f"--minority-label {minority_label}: {npz} has labels "
                         f"0..{len(class_names) - 1}")
    minority = class_names[minority_label]
    held_out = sorted((data / "val" / minority).glob("*.png")) + sorted(
        (data / "test" / minority).glob("*.png"))
    balance_folder(data, balanced, ratio=ratio, seed=seed)
    rows = [row for row in read_manifest(balanced / MANIFEST_NAME) if row.class_name == minority]
    if not rows:
        raise ValueError(f"{minority} is not a minority class at ratio {ratio}: nothing synthesised")
    sets = {
        "diffaug": [balanced / row.path for row in rows],
        "classic": write_classic_augmentations([data / row.source for row in rows],
                                               work / "classic", seed),
        "real_train": sorted((data / "train" / minority).glob("*.png")),
    }
    return minority, held_out, sets


def measure(held_out: list[Path], sets: dict[str, list[Path]], *, dims: int, device: str,
            batch_size: int, quiet: bool) -> list[SetDistance]:
    """FID and KID of every set against `held_out`, with one progress bar per set."""
    distances = []
    for name, files in sets.items():
        with click.progressbar(length=len(held_out) + len(files), label=name, hidden=quiet,
                               file=sys.stderr) as bar, \
                warnings.catch_warnings():
            # The small-sample bias is stated in the report's notes instead.
            warnings.simplefilter("ignore", FewImagesWarning)
            report = compute_fid(held_out, files, dims=dims, device=device,
                                 batch_size=batch_size, kid=True,
                                 progress=lambda done, total: bar.update(done))
        distances.append(SetDistance(name, len(files), report.fid, report.kid.mean,
                                     report.kid.std))
    return distances


def markdown(distances: list[SetDistance], *, source: str, minority: str, n_held_out: int,
             dims: int, command: str) -> str:
    """The results table with the verdict on the paper's claim and the caveats."""
    by_name = {d.name: d for d in distances}
    lines = [
        f"FID / KID against the {n_held_out} held-out real `{minority}` images (val + test "
        f"splits) of `{source}`; Inception pool features, {dims} dims.",
        "",
        "| Set | Images | FID ↓ | KID ↓ (mean ± std over subsets) |",
        "|---|---:|---:|---:|",
        *(f"| {SET_TITLES[d.name]} | {d.n_images} | {d.fid:.2f} | "
          f"{d.kid_mean:.4f} ± {d.kid_std:.4f} |" for d in distances),
        "",
        f"Command: `{command}`",
        "",
    ]
    if "diffaug" in by_name and "classic" in by_name:
        lines += [_verdict(by_name["diffaug"], by_name["classic"]), ""]
    singular = min(n_held_out, *(d.n_images for d in distances)) <= dims
    lines.append(
        "Caveat: FID is biased upwards on small sets, the more the smaller the set"
        + (f"; here sets have no more images than the {dims} feature dimensions, so the "
           "covariances are singular and the bias is large" if singular else "")
        + ". Compare FIDs only between rows of this table (same held-out set, similar set "
        "sizes), not with the paper's 28.3 / 45.7. KID is unbiased; its ± is the spread over "
        "100 random subsets (1000 images, or half the smaller set when a set is smaller; "
        "see diffaug.fid.kid.kid_subset_size), not a confidence interval.")
    return "\n".join(lines) + "\n"


def _verdict(diffaug: SetDistance, classic: SetDistance) -> str:
    closer = {"FID": diffaug.fid < classic.fid, "KID": diffaug.kid_mean < classic.kid_mean}
    held = "holds" if all(closer.values()) else (
        "does not hold" if not any(closer.values()) else "is not settled")
    kid_gap = abs(diffaug.kid_mean - classic.kid_mean)
    spread = "larger" if kid_gap > max(diffaug.kid_std, classic.kid_std) else "not larger"
    return (f"The paper's claim (section 2.2.3: diffusion samples are closer to real minority "
            f"images than geometric augmentation) {held} here: diffaug is "
            f"{'closer' if closer['FID'] else 'farther'} by FID ({diffaug.fid:.2f} vs "
            f"{classic.fid:.2f}) and {'closer' if closer['KID'] else 'farther'} by KID "
            f"({diffaug.kid_mean:.4f} vs {classic.kid_mean:.4f}; the gap is {spread} than the "
            f"spread over KID subsets). Rotation leaves black corners (torchvision's default "
            f"fill, as commonly used), which is part of what (b) is measured on.")


@click.command()
@click.argument("npz", required=False, default=DEFAULT_DATA,
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("--minority-label", default=0, show_default=True, type=click.IntRange(min=0),
              help="Label of the minority class (BreastMNIST: 0 = malignant).")
@click.option("--ratio", default="0.7", show_default=True, help="diffaug balance --ratio.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of diffaug balance and of the classic augmentation.")
@click.option("--dims", default=str(FID_DIMS[-1]), show_default=True,
              type=click.Choice([str(d) for d in FID_DIMS]), help="Inception feature block.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:0, ...")
@click.option("--batch-size", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--limit", type=click.IntRange(min=2), default=None,
              help="Use only the first N images of every set (smoke runs).")
@click.option("--quick", is_flag=True, help="Smoke run: --dims 64 --limit 16.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("bench-out") / "fid-quality.md", show_default=True,
              help="Markdown file for the table.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the measurements as JSON here.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def main(npz: Path, minority_label: int, ratio: str, seed: int, dims: str, device: str,
         batch_size: int, limit: int | None, quick: bool, out: Path, json_path: Path | None,
         quiet: bool) -> None:
    """FID and KID of diffaug synthetic, classically augmented and real train minority images
    against the held-out real minority images of the MedMNIST file NPZ."""
    skipped = None
    if not inception_weights_path().is_file():
        skipped = (f"no FID Inception weights at {inception_weights_path()} (set TORCH_HOME to "
                   "a folder holding hub/checkpoints/pt_inception-2015-12-05-6726825d.pth)")
    elif npz == DEFAULT_DATA and not npz.is_file():
        skipped = f"{npz} not found: give the MedMNIST file as NPZ"
    if skipped is not None:
        click.echo(f"skipped: {skipped}")
        _write_json(json_path, {"skipped": skipped})
        return
    if quick:
        dims, limit = str(QUICK["dims"]), QUICK["limit"]
    command = shlex.join([
        "python", shown_path(Path(__file__)), shown_path(npz), "--minority-label",
        str(minority_label), "--ratio", ratio, "--seed", str(seed), "--dims", dims, "--device",
        device, *([] if limit is None else ["--limit", str(limit)])])
    with tempfile.TemporaryDirectory(prefix="fid-quality-") as scratch:
        try:
            minority, held_out, sets = build_image_sets(npz, Path(scratch),
                                                        minority_label=minority_label,
                                                        ratio=ratio, seed=seed)
        except ValueError as err:
            raise click.ClickException(str(err)) from None
        held_out = held_out[:limit]
        sets = {name: files[:limit] for name, files in sets.items()}
        distances = measure(held_out, sets, dims=int(dims), device=device,
                            batch_size=batch_size, quiet=quiet)
    text = markdown(distances, source=npz.name, minority=minority, n_held_out=len(held_out),
                    dims=int(dims), command=command)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, text.encode("utf-8"))
    _write_json(json_path, {"source": str(npz), "minority": minority, "dims": int(dims),
                            "n_held_out": len(held_out), "command": command,
                            "sets": [asdict(d) for d in distances], "markdown": text})
    click.echo(text + f"\nwrote {out}")


def _write_json(path: Path | None, data: dict) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def goals(result: dict) -> list[Goal]:
    """The paper's claim: diffaug's images closer than classic augmentation, by FID and KID."""
    sets = {s["name"]: s for s in result["sets"]}
    diffaug, classic = sets["diffaug"], sets["classic"]
    return [Goal("FID quality (paper 2.2.3; a claim of the paper, not a speed goal)",
                 "diffaug closer than classic augmentation to held-out real minority images",
                 f"FID {diffaug['fid']:.2f} vs {classic['fid']:.2f}; KID "
                 f"{diffaug['kid_mean']:.4f} vs {classic['kid_mean']:.4f}",
                 diffaug["fid"] < classic["fid"] and diffaug["kid_mean"] < classic["kid_mean"])]


BENCHMARK = Benchmark(
    script=Path(__file__).resolve(),
    title="FID quality: diffaug vs classic augmentation (BreastMNIST)",
    goal="diffaug closer than classic augmentation (paper 2.2.3)",
    render=lambda result: result["markdown"], goals=goals,
    # The table goes to bench_all.py's scratch folder beside the JSON, not to bench-out/.
    result_args=lambda path: ["--json", str(path), "--out", str(path.with_suffix(".md")),
                              "--quiet"],
    env={"OMP_NUM_THREADS": "1"}, raw_output=False)


if __name__ == "__main__":
    main()
