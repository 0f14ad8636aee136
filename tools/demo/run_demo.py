"""The whole pipeline in one command, on procedural data, with no download: what a fresh clone runs.

    python tools/demo/run_demo.py [OUT=demo-out] [--size 224 --image-size 64 --epochs 6 --lr 1e-3
        --train 280 102 --val 60 22 --test 60 60 --models M --bootstrap N --seed 0
        --format png|dicom --quiet]

``--format dicom`` (``nox -s demo -- --format dicom``) makes the data as XA-like DICOM files
with several images per PatientID, and runs balance and compare with ``--group-by PatientID``
(patients are kept within one split); it needs the ``dicom`` extras.

Each step is printed as the command a user would type and run as that command (the real
``diffaug`` / ``qclassify`` command lines, through this Python), so the demo exercises exactly
what the README documents (tools/pipeline.py runs the steps):

1. ``tools/demo/make_demo_data.py`` writes the angiography-like dataset to ``OUT/data``;
2. ``diffaug balance`` oversamples the stenosis class to ratio 0.7 (eq. 3: ceil(0.7 * 280) -
   102 = 94 synthetic images at the default counts) into ``OUT/balanced``;
3. FID/KID of those synthetic images against the original train stenosis images
   (``diffaug balance ... --fid``), skipped with a note when pytorch-fid's Inception weights
   are not already cached, since the demo must not download anything;
4. ``qclassify compare`` trains the paper's runs but VGG-16 (``--models all`` adds it) from
   scratch (``--weights none``) at a reduced size and epoch budget, with the paper's recipe
   (``--recipe paper``) but Adam at 1e-3 rather than 1e-4 (which fine-tunes ImageNet weights),
   on the GPU when there is one, into ``OUT/report``;
5. the results table and where the report and its figures are.

Rerunning continues where it stopped: the data is kept when ``OUT/data/demo-data.json``
records the same options, ``diffaug balance`` does nothing for a finished run and
``qclassify compare`` reuses finished runs.

Default budget: 64 px and 6 epochs keep the six runs near 7 minutes on 2 CPU cores
(per-step costs, batch 16, 2 threads: MobileNetV2 ~0.15 s, ResNet-18 and DenseNet-121 ~0.3 s,
VGG-16 1.2-3 s, which is why it is left out; 24 steps per epoch on the original train split, 30
on the balanced one), plus about a minute and a half for data, balancing and evaluation.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

# Run as `python tools/demo/run_demo.py`, Python puts only this folder on sys.path; the shared
# pipeline runner lives one level up, in tools/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import (
    PipelineLayout,
    Step,
    heading,
    module_step,
    run_steps,
    script_step,
    typed_path,
)

DEMO_TOOLS = Path(__file__).resolve().parent
GENERATOR = DEMO_TOOLS / "make_demo_data.py"
FIGURE_SCRIPT = DEMO_TOOLS / "demo_figure.py"
DATA_RECORD = "demo-data.json"  # written by make_demo_data.py beside the images
CLASSES = ("normal", "stenosis")
SPLITS = ("train", "val", "test")
DEFAULT_COUNTS = {"train": (280, 102), "val": (60, 22), "test": (60, 60)}
RATIO = "0.7"
DEMO_IMAGE_SIZE = 64
DEMO_EPOCHS = 6
# The paper's Adam 1e-4 (section 2.5) fine-tunes ImageNet weights; from scratch (the demo
# cannot download weights) 1e-3 learns in a few epochs, as in MedMNIST's baseline recipe.
DEMO_LR = "1e-3"
# The paper's seven runs (qclassify compare's default) but VGG-16: on 2 CPU cores its training
# (134 M parameters) cost 495 of the seven runs' 903 s on 2026-12-03 and put the demo over its
# 15-minute budget. `--models all` runs all seven.
DEMO_RUNS = ("qmobilenet@balanced", "resnet18@original", "mobilenet_v2@original",
             "densenet121@original", "qmobilenet@original", "mobilenet_v2@balanced")
ALL_RUNS = "all"
STEPS = 5  # data, balance, FID, compare, then the results
FORMATS = ("png", "dicom")  # make_demo_data.py --format
DICOM_GROUP_BY = ["--group-by", "PatientID"]  # the patient of a DICOM demo image


@dataclass(frozen=True)
class DemoOptions:
    """What a demo run does; the defaults are the real demo."""

    out: Path = Path("demo-out")
    size: int = 224
    counts: dict[str, tuple[int, int]] = field(default_factory=lambda: dict(DEFAULT_COUNTS))
    image_size: int = DEMO_IMAGE_SIZE
    epochs: int = DEMO_EPOCHS
    lr: str = DEMO_LR
    models: tuple[str, ...] = DEMO_RUNS  # ("all",): the paper's seven runs
    bootstrap: int | None = None  # None: qclassify's default
    seed: int = 0
    quiet: bool = False
    image_format: str = "png"

    @property
    def layout(self) -> PipelineLayout:
        """OUT/data, OUT/balanced, OUT/report."""
        return PipelineLayout(self.out)


def _quiet(options: DemoOptions) -> list[str]:
    return ["--quiet"] if options.quiet else []


def _groups(options: DemoOptions) -> list[str]:
    """DICOM demo data: balance and compare check / split by patient."""
    return DICOM_GROUP_BY if options.image_format == "dicom" else []


def generate_step(options: DemoOptions) -> Step:
    """Step 1: the demo data into OUT/data, unless it already holds the same."""
    args = [str(options.layout.data), "--size", str(options.size)]
    for split in SPLITS:
        args += [f"--{split}", *(str(n) for n in options.counts[split])]
    if options.image_format != "png":  # the PNG command stays as the README shows it
        args += ["--format", options.image_format]
    args += ["--seed", str(options.seed), *_quiet(options)]
    return script_step("data", "generate the demo data", GENERATOR, args,
                       skip=lambda: _data_reuse_note(options))


def balance_step(options: DemoOptions, *, fid: bool = False) -> Step:
    """Step 2, or with `fid` step 3 (skipped with a note when FID cannot run offline)."""
    layout = options.layout
    args = ["balance", str(layout.data), str(layout.balanced), "--ratio", RATIO,
            "--seed", str(options.seed), *_groups(options)]
    if fid:
        return module_step("fid", "FID/KID of the synthetic stenosis images vs the originals",
                           "diffaug", [*args, "--fid", *_quiet(options)], console_script=True,
                           skip=fid_skip_note)
    return module_step("balance", f"balance the classes to ratio {RATIO} (eq. 3)", "diffaug",
                       [*args, *_quiet(options)], console_script=True)


def compare_step(options: DemoOptions) -> Step:
    """Step 4: the paper's runs, from scratch, into OUT/report."""
    layout = options.layout
    args = ["compare", str(layout.data), "--augmented", str(layout.balanced),
            "--out", str(layout.report), "--image-size", str(options.image_size),
            "--epochs", str(options.epochs), "--lr", options.lr, "--weights", "none",
            # The recipe the README's demo table was measured with; the scratch recipe (the
            # default from scratch) needs ~40 epochs, beyond this demo's 15-minute budget.
            "--recipe", "paper",
            "--device", "auto",
            "--seed", str(options.seed), *_groups(options)]
    if options.models != (ALL_RUNS,):
        args += ["--models", ",".join(options.models)]
    if options.bootstrap is not None:
        args += ["--bootstrap", str(options.bootstrap)]
    return module_step("compare", "train and compare the classifiers (section 3)",
                       "qclassify", [*args, *_quiet(options)], console_script=True)


def data_already_generated(options: DemoOptions) -> bool:
    """True when OUT/data holds demo data made with these options (its demo-data.json says so).

    Raises:
        ValueError: OUT/data holds demo data made with other options.
    """
    data = options.layout.data
    record = data / DATA_RECORD
    if not record.is_file():
        return False
    recorded = json.loads(record.read_text(encoding="utf-8")).get("options")
    wanted = {"size": options.size, "seed": options.seed,
              "counts": {split: dict(zip(CLASSES, pair, strict=True))
                         for split, pair in options.counts.items()},
              # make_demo_data.py names the format only when it is not PNG
              **({} if options.image_format == "png" else {"format": options.image_format})}
    if recorded != wanted:
        raise ValueError(f"{data} holds demo data made with other options ({record}); "
                         f"remove {options.out} or choose another OUT")
    return True


def fid_skip_note() -> str | None:
    """None when FID can run offline, else the one-line reason it is skipped.

    Looks for pytorch-fid's Inception weights where its loader caches them, never downloads.
    """
    try:
        from diffaug.fid import inception_weights_path, require_fid_extra

        require_fid_extra()
    except ImportError as err:
        return f"FID skipped: {err}"
    path = inception_weights_path()
    if path.is_file():
        return None
    return (f"FID skipped: pytorch-fid's Inception weights are not in "
            f"$TORCH_HOME/hub/checkpoints/ ({path}); they download once with network access "
            "(the first `diffaug fid` run online), then rerun the demo to add FID/KID.")


def _data_reuse_note(options: DemoOptions) -> str | None:
    if not data_already_generated(options):
        return None
    return (f"{options.layout.data} already holds this demo data ({DATA_RECORD} records the "
            "same options); not regenerated.")


def run_demo(options: DemoOptions) -> dict[str, float]:
    """Run steps 1-4; returns the wall time in seconds of each step that ran, by step name."""
    steps = [generate_step(options), balance_step(options), balance_step(options, fid=True),
             compare_step(options)]
    return run_steps(steps, total=STEPS)


def summary(options: DemoOptions, seconds: dict[str, float], total_seconds: float) -> str:
    """Step 5: the results table, where the report is, and the timings."""
    report = options.layout.report
    figures = sorted(path.name for path in report.glob("*.png"))
    table = (report / "results.md").read_text(encoding="utf-8").splitlines()
    steps = ", ".join(f"{name} {s:.0f} s" for name, s in seconds.items())
    lines = [
        heading(STEPS, STEPS, "results"),
        # The figure links of results.md mean nothing in a terminal; the figures are listed below.
        *(line for line in table if not line.startswith("![")),
        "",
        f"report:  {report / 'results.md'} (table, notes, figures), {report / 'results.csv'}",
        f"figures: {report}/ {', '.join(figures)}",
        f"runs:    {report / 'runs'}/<model>@<data>/ (config, split, model, history, metrics)",
        f"README figure: python {typed_path(FIGURE_SCRIPT)} {options.out} docs/demo.png",
        f"demo finished in {total_seconds / 60:.1f} min ({steps})",
    ]
    return "\n".join(lines)


def _positive_number(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """Check --lr before any step runs; kept as typed, so the echoed command shows it so."""
    try:
        positive = float(value) > 0
    except ValueError:
        positive = False
    if not positive:
        raise click.BadParameter(f"must be a positive number; got {value!r}")
    return value


def _pair(split: str) -> click.Option:
    return click.option(f"--{split}", split, nargs=2, type=click.IntRange(min=1),
                        default=DEFAULT_COUNTS[split], show_default=True,
                        help=f"Normal and stenosis images in {split}.")


@click.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path), default="demo-out")
@click.option("--size", type=click.IntRange(min=32), default=224, show_default=True,
              help="Side of the generated images in pixels.")
@click.option("--image-size", type=click.IntRange(min=1), default=DEMO_IMAGE_SIZE,
              show_default=True, help="Training image size (qclassify --image-size).")
@click.option("--epochs", type=click.IntRange(min=1), default=DEMO_EPOCHS, show_default=True,
              help="Training epochs per run (qclassify --epochs).")
@click.option("--lr", default=DEMO_LR, show_default=True, callback=_positive_number,
              help="Adam learning rate (qclassify --lr); from scratch, so above the paper's.")
@_pair("train")
@_pair("val")
@_pair("test")
@click.option("--models", multiple=True, default=DEMO_RUNS, show_default=True,
              help="Runs to make (qclassify compare --models), or 'all' for the paper's seven "
                   "(adds VGG-16, about 8 more minutes on 2 CPU cores).")
@click.option("--bootstrap", type=click.IntRange(min=0), default=None,
              help="Bootstrap resamples of the CIs [default: qclassify's].")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the data, the synthetic images and the training.")
@click.option("--format", "image_format", type=click.Choice(FORMATS), default="png",
              show_default=True,
              help="Demo images as PNG, or as XA-like DICOM grouped by PatientID.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def main(out: Path, size: int, image_size: int, epochs: int, lr: str, train: tuple[int, int],
         val: tuple[int, int], test: tuple[int, int], models: tuple[str, ...],
         bootstrap: int | None, seed: int, image_format: str, quiet: bool) -> None:
    """Generate demo data, balance it with diffaug, compare the classifiers; report in OUT."""
    options = DemoOptions(out=out, size=size, counts={"train": train, "val": val, "test": test},
                          image_size=image_size, epochs=epochs, lr=lr, models=models,
                          bootstrap=bootstrap, seed=seed, quiet=quiet,
                          image_format=image_format)
    started = time.perf_counter()
    seconds = run_demo(options)
    click.echo(summary(options, seconds, time.perf_counter() - started))


if __name__ == "__main__":
    main()
