"""Convert a MedMNIST ``.npz`` (any 2D single-label subset) into split/class PNG folders.

    python tools/medmnist/medmnist_to_folder.py breastmnist.npz OUT [--class-names a,b] [--quiet]

writes ``OUT/{train,val,test}/<class>/<split>_<index>.png`` (8-bit L for (N, H, W) images, RGB
for (N, H, W, 3)), where ``<index>`` is the image's row in the ``<split>_images`` array, and
``OUT/medmnist-source.json`` (source file, its sha256, class names, counts). Class folders are
named by ``--class-names``, else by MedMNIST v2's label table for a subset recognised from the
file name (``breastmnist.npz``, ``pneumoniamnist_224.npz``), else ``class_0``, ``class_1``...

OUT is required and must not exist or be empty; it appears complete or not at all. Multi-label
(chestmnist) and 3D subsets are refused. Standalone on purpose (numpy, pillow, click): users can
copy this one file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import click
import numpy as np
from PIL import Image

SPLITS = ("train", "val", "test")
SOURCE_FILE = "medmnist-source.json"

_ORGAN = ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
          "lung-left", "lung-right", "pancreas", "spleen")
# Label names of the 2D single-label subsets, as in MedMNIST v2's INFO (medmnist/info.py 2.1.0).
MEDMNIST_LABELS: dict[str, tuple[str, ...]] = {
    "pathmnist": ("adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                  "normal colon mucosa", "cancer-associated stroma",
                  "colorectal adenocarcinoma epithelium"),
    "dermamnist": ("actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                   "benign keratosis-like lesions", "dermatofibroma", "melanoma",
                   "melanocytic nevi", "vascular lesions"),
    "octmnist": ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
    "pneumoniamnist": ("normal", "pneumonia"),
    "retinamnist": ("0", "1", "2", "3", "4"),
    "breastmnist": ("malignant", "normal, benign"),
    "bloodmnist": ("basophil", "eosinophil", "erythroblast",
                   "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
                   "lymphocyte", "monocyte", "neutrophil", "platelet"),
    "tissuemnist": ("Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
                    "Glomerular endothelial cells", "Interstitial endothelial cells",
                    "Leukocytes", "Podocytes", "Proximal Tubule Segments", "Thick Ascending Limb"),
    "organamnist": _ORGAN,
    "organcmnist": _ORGAN,
    "organsmnist": _ORGAN,
}
MULTI_LABEL_SUBSETS = ("chestmnist",)


def folder_name(label: str) -> str:
    """A MedMNIST label as a portable folder name: 'normal, benign' -> 'normal_benign'."""
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def subset_of(npz_path: str | os.PathLike) -> str | None:
    """The MedMNIST subset a file name denotes ('pneumoniamnist_224.npz' -> 'pneumoniamnist')."""
    match = re.fullmatch(r"([a-z]+mnist(?:3d)?)(?:_\d+)?", Path(npz_path).stem.lower())
    return match.group(1) if match else None


def _check_class_names(names: Sequence[str], n_classes: int, origin: str) -> None:
    if len(names) < n_classes:
        raise ValueError(f"{origin} has {len(names)} names but the labels need {n_classes}")
    for name in names:
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            raise ValueError(f"{origin}: {name!r} is not a usable folder name")
    if len(set(names)) != len(names):
        raise ValueError(f"{origin}: class names must be distinct; got {', '.join(names)}")


def _validated(images: np.ndarray, labels: np.ndarray, split: str, where: Path):
    """(images as uint8, labels as a flat int array) of one split, or a ValueError."""
    if labels.ndim == 2 and labels.shape[1] > 1:
        raise ValueError(f"{where}: {split}_labels has shape {labels.shape}: multi-label subsets "
                         "(such as chestmnist) are not supported")
    if (labels.ndim not in (1, 2) or not np.issubdtype(labels.dtype, np.integer)
            or labels.min(initial=0) < 0):
        raise ValueError(f"{where}: {split}_labels must be non-negative integers of shape (N,) or "
                         f"(N, 1); got {labels.dtype} {labels.shape}")
    labels = labels.reshape(-1)
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[3] == 3)):
        raise ValueError(f"{where}: {split}_images must be (N, H, W) grayscale or (N, H, W, 3) "
                         f"RGB; got shape {images.shape} (3D subsets are not supported)")
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.integer) or images.min() < 0 or images.max() > 255:
            raise ValueError(f"{where}: {split}_images must be 8-bit (0..255 integers); got "
                             f"{images.dtype}")
        images = images.astype(np.uint8)
    if len(images) != len(labels):
        raise ValueError(f"{where}: {split}_images has {len(images)} images but {split}_labels "
                         f"has {len(labels)} labels")
    return images, labels


def _read_npz(npz_path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (images, labels)} of a MedMNIST file, validated."""
    if not npz_path.is_file():
        raise ValueError(f"{npz_path}: no such file")
    required = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")]
    try:
        data = np.load(npz_path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not named arrays")
        with data:
            missing = [key for key in required if key not in data.files]
            arrays = {key: data[key] for key in required if key not in missing}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"{npz_path}: not a readable .npz archive ({err})") from err
    if missing:
        raise ValueError(f"{npz_path}: missing arrays {', '.join(missing)} (a MedMNIST file "
                         f"holds {', '.join(required)})")
    return {split: _validated(arrays[f"{split}_images"], arrays[f"{split}_labels"], split,
                              npz_path) for split in SPLITS}


def convert_medmnist(
    npz_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    class_names: Sequence[str] | None = None,
    on_image: Callable[[int, int], None] | None = None,
) -> dict[str, dict[str, int]]:
    """Write the PNG split folders of a MedMNIST file; return {split: {class: count}}.

    Class names: `class_names` if given, else MedMNIST's names for a recognised file name,
    else ``class_<k>``. `on_image(done, total)` is called after each image written.
    """
    npz_path, out_dir = Path(npz_path), Path(out_dir)
    subset = subset_of(npz_path)
    if subset in MULTI_LABEL_SUBSETS:
        raise ValueError(f"{npz_path}: {subset} is multi-label; only single-label subsets are "
                         "supported")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"{out_dir}: output folder must not exist or be empty")
    splits = _read_npz(npz_path)
    n_classes = 1 + max(int(labels.max(initial=0)) for _, labels in splits.values())
    if class_names is not None:
        names, origin = list(class_names), "--class-names"
    elif subset in MEDMNIST_LABELS:
        names = [folder_name(label) for label in MEDMNIST_LABELS[subset]]
        origin = f"MedMNIST's {subset} label table"
    else:
        names, origin = [f"class_{k}" for k in range(n_classes)], "default names"
    _check_class_names(names, n_classes, origin)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    counts = {split: dict.fromkeys(names, 0) for split in SPLITS}
    total, done = sum(len(labels) for _, labels in splits.values()), 0
    try:
        for split, (images, labels) in splits.items():
            for index, (pixels, label) in enumerate(zip(images, labels, strict=True)):
                folder = staging / split / names[label]
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(folder / f"{split}_{index}.png", format="PNG")
                counts[split][names[label]] += 1
                done += 1
                if on_image is not None:
                    on_image(done, total)
        source = {"source": npz_path.name,
                  "sha256": hashlib.sha256(npz_path.read_bytes()).hexdigest(),
                  "subset": subset, "class_names": names, "counts": counts}
        (staging / SOURCE_FILE).write_text(json.dumps(source, indent=1) + "\n", encoding="utf-8")
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return counts


def _split_names(ctx, param, value: str | None) -> list[str] | None:
    return None if value is None else [name.strip() for name in value.split(",")]


@click.command()
@click.argument("npz", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--class-names", callback=_split_names,
              help="Comma-separated folder names for labels 0, 1, ... (default: MedMNIST's).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def main(npz: Path, out: Path, class_names: list[str] | None, quiet: bool) -> None:
    """Convert the MedMNIST file NPZ into OUT/{train,val,test}/<class>/*.png."""
    with contextlib.ExitStack() as stack:
        bar = None

        def advance(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:  # the total is known once the file is read
                bar = stack.enter_context(click.progressbar(length=total, label="images",
                                                            hidden=quiet))
            bar.update(1)

        try:
            counts = convert_medmnist(npz, out, class_names=class_names, on_image=advance)
        except ValueError as err:
            raise click.ClickException(str(err)) from err
    for split, per_class in counts.items():
        click.echo(f"{split}: " + ", ".join(f"{name} {n}" for name, n in per_class.items()))
    click.echo(f"wrote {sum(sum(c.values()) for c in counts.values())} images to {out}")


if __name__ == "__main__":
    main()
