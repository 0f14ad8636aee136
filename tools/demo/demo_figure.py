"""The README figure: demo images with their lesions marked, beside the demo's ROC comparison.

    python tools/demo/demo_figure.py [DEMO=demo-out] [FIGURE=docs/demo.png] [--per-class 4]

DEMO is the output folder of ``tools/demo/run_demo.py``. The left panel shows the first test
images of each class from ``DEMO/data`` (normal on top, stenosis below), each lesion circled where
``demo-data.json`` (the generator's ground truth) puts it, with its depth (the fraction of the
vessel radius removed). The right panel is ``DEMO/report/roc_curves.png`` from
``qclassify compare`` when the report exists; without it the figure is the montage alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
import numpy as np
from matplotlib.figure import Figure
from matplotlib.image import imread
from matplotlib.patches import Circle
from PIL import Image

DATA_RECORD = "demo-data.json"
ROC_FIGURE = Path("report") / "roc_curves.png"
CLASSES = ("normal", "stenosis")
SPLIT = "test"
TILE_INCHES = 1.45
DPI = 110
LESION_CIRCLE_RADIUS = 0.09  # fraction of the image side: a vessel segment, not a pixel


def montage_entries(record: dict, per_class: int) -> dict[str, list[dict]]:
    """The first `per_class` test images of each class (by index), from demo-data.json."""
    entries = {}
    for name in CLASSES:
        images = sorted((e for e in record["images"] if e["split"] == SPLIT and e["class"] == name),
                        key=lambda e: e["index"])
        if len(images) < per_class:
            raise ValueError(f"{DATA_RECORD}: {len(images)} {SPLIT} images of class {name}, "
                             f"fewer than --per-class {per_class}")
        entries[name] = images[:per_class]
    return entries


def draw_demo_figure(demo_dir: Path, figure_path: Path, *, per_class: int = 4) -> Path:
    """Write the README figure of the demo in `demo_dir` to `figure_path`; returns the path.

    Raises:
        ValueError: `demo_dir` holds no demo data, or too few test images.
    """
    data_dir = demo_dir / "data"
    try:
        record = json.loads((data_dir / DATA_RECORD).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{data_dir / DATA_RECORD}: not found; run tools/demo/run_demo.py "
                         f"{demo_dir} first") from None
    entries = montage_entries(record, per_class)
    size = record["options"]["size"]
    roc_path = demo_dir / ROC_FIGURE
    roc = imread(roc_path) if roc_path.is_file() else None

    montage_width = per_class * TILE_INCHES
    height = len(CLASSES) * TILE_INCHES + 0.3
    roc_width = 0.0 if roc is None else height * roc.shape[1] / roc.shape[0]
    fig = Figure(figsize=(montage_width + roc_width, height), layout="constrained")
    left, right = (fig, None) if roc is None else fig.subfigures(
        1, 2, width_ratios=[montage_width, roc_width])
    axes = left.subplots(len(CLASSES), per_class, squeeze=False)
    for row, name in enumerate(CLASSES):
        for column, entry in enumerate(entries[name]):
            _draw_tile(axes[row, column], data_dir / entry["path"], entry, size)
    left.suptitle("Demo data (test split): stenosis circled from the generator's ground truth",
                  fontsize=8)
    if right is not None:
        axis = right.subplots()
        axis.imshow(roc)
        axis.set_axis_off()
    figure_path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target, then renamed: never a half-written figure. Not mkstemp: its
    # 0600 mode would survive the rename, and the figure is meant to be committed and served.
    temporary = figure_path.with_name(f".{figure_path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(temporary, dpi=DPI, format="png")
        os.replace(temporary, figure_path)
    finally:
        temporary.unlink(missing_ok=True)
    return figure_path


def _draw_tile(axis, path: Path, entry: dict, size: int) -> None:
    with Image.open(path) as image:
        axis.imshow(np.asarray(image.convert("L")), cmap="gray", vmin=0, vmax=255)
    axis.set_xticks([])
    axis.set_yticks([])
    if entry["lesion_xy"] is None:
        axis.set_title("normal", fontsize=7)
        return
    axis.add_patch(Circle(entry["lesion_xy"], LESION_CIRCLE_RADIUS * size, fill=False,
                          edgecolor="tab:red", linewidth=1.2))
    axis.set_title(f"stenosis, depth {entry['lesion_depth']:.0%}", fontsize=7)


@click.command()
@click.argument("demo", type=click.Path(file_okay=False, path_type=Path), default="demo-out")
@click.argument("figure", type=click.Path(dir_okay=False, path_type=Path),
                default="docs/demo.png")
@click.option("--per-class", type=click.IntRange(min=1), default=4, show_default=True,
              help="Test images shown per class.")
def main(demo: Path, figure: Path, per_class: int) -> None:
    """Draw the README figure of the demo in DEMO (tools/demo/run_demo.py's OUT) to FIGURE."""
    try:
        written = draw_demo_figure(demo, figure, per_class=per_class)
    except (ValueError, OSError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"wrote {written} ({written.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
