"""Finding a dataset's images and splitting them into train / val / test without leakage.

Two layouts (DESIGN.md "Splits"):

* split folders ``DATA/train|val|test/<class>/*``: used as given;
* class folders ``DATA/<class>/*``: the ORIGINAL images are split stratified and seeded
  (scikit-learn ``train_test_split``), ordered by relative path first, so a folder and its
  diffaug-balanced copy (same originals at the same paths) get the same split.

In both, a class folder's images are the files directly inside it (diffaug's rule, so both
tools see the same files): sub-folders are not searched (a warning names them) and
dot-entries (``.DS_Store``, ``.ipynb_checkpoints/``) are ignored.

A ``diffaug-manifest.csv`` in DATA lists synthetic images and their sources. A synthetic image
goes to train only, and only when its source is in train; it never reaches val or test, so the
test metrics are computed on originals only.
"""

from __future__ import annotations

import csv
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sklearn.model_selection import train_test_split

from qclassify.images import IMAGE_EXTENSIONS, find_unreadable, list_images

__all__ = [
    "MANIFEST_NAME",
    "SPLITS",
    "SPLIT_COLUMNS",
    "DatasetSplit",
    "Sample",
    "discover_dataset",
    "read_manifest",
    "read_split_csv",
    "split_csv_rows",
]

SPLITS = ("train", "val", "test")
MANIFEST_NAME = "diffaug-manifest.csv"
SPLIT_COLUMNS = ("path", "class", "split", "synthetic")


@dataclass(frozen=True)
class Sample:
    """One image: `path` is POSIX and relative to the dataset root."""

    path: str
    class_name: str
    split: str
    synthetic: bool = False


@dataclass(frozen=True)
class DatasetSplit:
    """Every usable image of a dataset with its class and split."""

    root: Path
    layout: str  # "split" or "flat"
    class_names: tuple[str, ...]
    samples: tuple[Sample, ...]

    def subset(self, split: str, *, originals_only: bool = False) -> list[Sample]:
        """The samples of one split, in path order."""
        return [
            s
            for s in self.samples
            if s.split == split and not (originals_only and s.synthetic)
        ]

    def class_counts(self, split: str) -> dict[str, int]:
        """Images per class in one split (synthetic included), every class listed."""
        counts = Counter(s.class_name for s in self.subset(split))
        return {name: counts[name] for name in self.class_names}

    def labels(self, samples: list[Sample]) -> list[int]:
        """Class indices (position in `class_names`) of `samples`."""
        index = {name: i for i, name in enumerate(self.class_names)}
        return [index[s.class_name] for s in samples]

    def paths(self, samples: list[Sample]) -> list[Path]:
        """Absolute paths of `samples`."""
        return [self.root / s.path for s in samples]


def read_manifest(root: str | Path) -> dict[str, str]:
    """Synthetic image -> source image (POSIX paths relative to `root`) from its diffaug manifest.

    Returns an empty dict when there is no manifest.
    """
    manifest = Path(root) / MANIFEST_NAME
    if not manifest.is_file():
        return {}
    with manifest.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "source"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{manifest}: missing column(s) {', '.join(sorted(missing))}")
        return {_posix(row["path"]): _posix(row["source"]) for row in reader}


def discover_dataset(
    root: str | Path, *, seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15
) -> DatasetSplit:
    """Find the classes and images of `root` and assign every image to a split.

    Unreadable images are skipped with a warning naming them. The fractions apply to class
    folders only (split folders are used as given).

    Raises:
        ValueError: no images, a single class, a class too small to split, or a broken layout.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"data folder {root} does not exist or is not a folder")
    synthetic_sources = read_manifest(root)
    if (root / "train").is_dir():
        layout, candidates = "split", _split_layout(root)
    else:
        layout, candidates = "flat", _flat_layout(root)
    candidates = _drop_unreadable(root, candidates)
    class_names = tuple(sorted({class_name for _, class_name, _ in candidates}))
    if not class_names:
        raise ValueError(
            f"no images ({' '.join(IMAGE_EXTENSIONS)}) found in {root}: expected "
            f"{root}/<class>/* or {root}/train|val|test/<class>/*"
        )
    if len(class_names) == 1:
        raise ValueError(
            f"only one class ({class_names[0]!r}) found in {root}: classification needs "
            "at least two class folders"
        )
    originals = [(p, c, s) for p, c, s in candidates if p not in synthetic_sources]
    if layout == "flat":
        originals = _stratified_split(root, originals, seed, val_fraction, test_fraction)
    split_of = {path: split for path, _, split in originals}
    samples = [Sample(path, class_name, split) for path, class_name, split in originals]
    # Leakage rule: a synthetic image follows its source into train, and goes nowhere else.
    samples += [
        Sample(path, class_name, "train", synthetic=True)
        for path, class_name, _ in candidates
        if path in synthetic_sources and split_of.get(synthetic_sources[path]) == "train"
    ]
    samples.sort(key=lambda s: s.path)
    _check_splits(root, samples, class_names)
    return DatasetSplit(root, layout, class_names, tuple(samples))


def split_csv_rows(dataset: DatasetSplit) -> list[dict[str, str]]:
    """Rows of the run folder's ``split.csv`` (``path,class,split,synthetic``)."""
    return [
        {"path": s.path, "class": s.class_name, "split": s.split, "synthetic": str(int(s.synthetic))}
        for s in dataset.samples
    ]


def read_split_csv(path: str | Path) -> list[Sample]:
    """The samples written by `split_csv_rows` (``synthetic`` defaults to 0 when absent)."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "class", "split"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        return [
            Sample(row["path"], row["class"], row["split"], row.get("synthetic", "0") == "1")
            for row in reader
        ]


# (relative POSIX path, class name, split or "") for every image file found.
_Candidate = tuple[str, str, str]


def _posix(path: str) -> str:
    return PurePosixPath(path.replace("\\", "/")).as_posix()


def _class_folder_images(root: Path, folder: Path, split: str) -> list[_Candidate]:
    """The images directly inside each class folder of `folder` (diffaug's rule: class folders
    are not searched recursively, dot-entries are ignored)."""
    candidates = []
    for class_dir in _visible_folders(folder):
        for nested in _visible_folders(class_dir):
            warnings.warn(f"ignoring sub-folder {nested}: class folders are read without "
                          "their sub-folders", stacklevel=4)
        candidates += [(path.relative_to(root).as_posix(), class_dir.name, split)
                       for path in list_images(class_dir)]
    return candidates


def _visible_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _flat_layout(root: Path) -> list[_Candidate]:
    return _class_folder_images(root, root, "")


def _split_layout(root: Path) -> list[_Candidate]:
    missing = [split for split in SPLITS if not (root / split).is_dir()]
    if missing:
        raise ValueError(
            f"{root} has a train/ folder but no {'/, '.join(missing)}/ folder: the split layout "
            "needs train/, val/ and test/ (or use class folders and let qclassify split them)"
        )
    return [c for split in SPLITS for c in _class_folder_images(root, root / split, split)]


def _drop_unreadable(root: Path, candidates: list[_Candidate]) -> list[_Candidate]:
    problems = find_unreadable([root / path for path, _, _ in candidates])
    for path, reason in problems.items():
        warnings.warn(f"skipping unreadable image {path}: {reason}", stacklevel=3)
    return [c for c in candidates if str(root / c[0]) not in problems]


def _stratified_split(
    root: Path, originals: list[_Candidate], seed: int, val_fraction: float, test_fraction: float
) -> list[_Candidate]:
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val and test fractions must be in (0, 1) with a sum below 1; "
            f"got {val_fraction} and {test_fraction}"
        )
    originals = sorted(originals)
    counts = Counter(class_name for _, class_name, _ in originals)
    too_small = sorted(name for name, n in counts.items() if n < len(SPLITS))
    if too_small:
        raise ValueError(
            f"class(es) {', '.join(too_small)} in {root} have fewer than {len(SPLITS)} original "
            "images: a stratified train/val/test split needs at least one per split"
        )
    paths = [path for path, _, _ in originals]
    classes = [class_name for _, class_name, _ in originals]
    try:
        rest, test, rest_classes, _ = train_test_split(
            paths, classes, test_size=test_fraction, stratify=classes, random_state=seed
        )
        train, val = train_test_split(
            rest,
            test_size=val_fraction / (1 - test_fraction),
            stratify=rest_classes,
            random_state=seed,
        )
    except ValueError as err:
        raise ValueError(f"cannot split {root} into train/val/test ({err})") from err
    split_of = {**dict.fromkeys(train, "train"), **dict.fromkeys(val, "val")}
    split_of.update(dict.fromkeys(test, "test"))
    return [(path, class_name, split_of[path]) for path, class_name, _ in originals]


def _check_splits(root: Path, samples: list[Sample], class_names: tuple[str, ...]) -> None:
    for split in SPLITS:
        present = {s.class_name for s in samples if s.split == split}
        if not present:
            raise ValueError(f"the {split} split of {root} holds no images")
        if split == "train" and len(present) < len(class_names):
            absent = ", ".join(sorted(set(class_names) - present))
            raise ValueError(f"class(es) {absent} of {root} have no training images")
