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
test metrics are computed on originals only. Because a synthetic image taken for an original
leaks into val/test, a manifest that does not parse or names missing files is refused, and so
is a file named like a diffaug synthetic image (``syn_<stem>_<k>.png``) that the manifest does
not list. Paths are compared in one form on both sides: POSIX, relative to DATA, exactly as
written (a backslash is a legal character of a POSIX file name, not a separator).
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from sklearn.model_selection import train_test_split

from qclassify.groups import GroupSource, check_groups_within_splits, split_by_groups
from qclassify.images import IMAGE_EXTENSIONS, ImageRef, find_unreadable, list_images
from qclassify.medical import MEDICAL_SUFFIXES, frame_indices, is_medical
from qclassify.options import OptionError
from qclassify.runfolder import SPLIT_COLUMNS, Sample, read_split_csv, split_row

__all__ = [
    "MANIFEST_NAME",
    "SPLITS",
    "SPLIT_COLUMNS",
    "DatasetSplit",
    "Sample",
    "default_positive_class",
    "discover_dataset",
    "frame_samples",
    "group_of",
    "read_manifest",
    "read_split_csv",
    "split_csv_rows",
    "train_original_counts",
]

SPLITS = ("train", "val", "test")
MANIFEST_NAME = "diffaug-manifest.csv"
# diffaug's run record, written before any image: with it but without a manifest, DATA is an
# unfinished diffaug output whose synthetic images are listed nowhere yet.
RUN_RECORD_NAME = "diffaug-run.json"
# How diffaug names a synthetic image: syn_<source-stem>_<k>.png (a DICOM/NIfTI source's own
# extension for its synthetic files).
_SYNTHETIC_NAME = re.compile(r"syn_.+_\d+\.(png|dcm|dicom|nii|nii\.gz)", re.IGNORECASE)


@dataclass(frozen=True)
class DatasetSplit:
    """Every usable image of a dataset with its class and split."""

    root: Path
    layout: str  # "classes" (class folders) or "splits" (split folders), as diffaug names them
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

    def image_refs(self, samples: list[Sample]) -> list[ImageRef]:
        """What `qclassify.images.ImageDataset` reads for `samples`: file and frame."""
        return [ImageRef(self.root / s.path, s.frame) for s in samples]


def group_of(sample: Sample) -> str:
    """The group a sample is split with: its file, so that the frames of one file
    (``frames="all"``) never land in different splits."""
    return sample.path


def read_manifest(root: str | Path) -> dict[str, str]:
    """Synthetic image -> source image (POSIX paths relative to `root`) from its diffaug manifest.

    Returns an empty dict when there is no manifest. Any CSV dialect detail Python's csv module
    writes is read back: quoted fields with commas, quotes, ``\\r`` or ``\\n``, and ``\\n`` or
    ``\\r\\n`` line ends.

    Raises:
        ValueError: the manifest is not UTF-8 CSV with ``path`` and ``source`` columns, has a
            row of the wrong length or a path outside `root`, or names a file `root` lacks.
    """
    root = Path(root)
    manifest = root / MANIFEST_NAME
    if not manifest.is_file():
        return {}
    sources = dict(_manifest_pairs(manifest))
    missing = [path for pair in sources.items() for path in pair if not (root / path).is_file()]
    if missing:
        raise ValueError(
            f"{manifest} names {len(missing)} file(s) that are not in {root} (first: "
            f"{missing[0]}): it does not describe this folder; restore the files or rerun "
            "`diffaug balance`"
        )
    return sources


def _manifest_pairs(manifest: Path) -> list[tuple[str, str]]:
    """(path, source) of every row, checked: whole rows, relative paths inside the folder."""
    pairs = []
    try:
        with manifest.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = {"path", "source"} - set(reader.fieldnames or ())
            if missing:
                raise ValueError(f"{manifest}: missing column(s) {', '.join(sorted(missing))}")
            for row in reader:
                # DictReader files surplus fields under None and fills short rows with None.
                if None in row or None in row.values():
                    raise ValueError(
                        f"{manifest} line {reader.line_num}: the row does not have the "
                        f"{len(reader.fieldnames)} fields of the header; the manifest is damaged"
                    )
                pairs.append((_manifest_path(manifest, reader.line_num, row["path"]),
                              _manifest_path(manifest, reader.line_num, row["source"])))
    except (csv.Error, UnicodeDecodeError) as err:
        raise ValueError(f"{manifest} does not parse as UTF-8 CSV ({err})") from err
    return pairs


def _manifest_path(manifest: Path, line: int, value: str) -> str:
    """A manifest path in the canonical form of discovered paths (`_class_folder_images`)."""
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{manifest} line {line}: {value!r} is not a path inside its folder")
    return path.as_posix()


def discover_dataset(
    root: str | Path, *, seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15,
    frames: str = "middle",
    groups: GroupSource | None = None,
) -> DatasetSplit:
    """Find the classes and images of `root` and assign every image to a split.

    Unreadable images are skipped with a warning naming them. The fractions apply to class
    folders only (split folders are used as given). With `groups` (`qclassify.groups`), each
    sample records its group, class folders are split whole groups at a time, and split
    folders whose groups cross splits are refused. Files are split first; with
    ``frames="all"`` each frame of a multi-frame DICOM file or NIfTI volume then becomes a
    sample in its file's split and group (`group_of`).

    Raises:
        OptionError: no images, a single class, a class too small to split, or a broken layout.
        ValueError: a damaged manifest, or file names that are not UTF-8.
    """
    root = Path(root)
    if not root.is_dir():
        raise OptionError(f"data folder {root} does not exist or is not a folder")
    if (root / "train").is_dir():
        layout, candidates = "splits", _split_folders(root)
    else:
        layout, candidates = "classes", _class_folders(root)
    _check_utf8_names(root, candidates)
    synthetic_sources = read_manifest(root)
    _check_no_unlisted_synthetic(root, candidates, synthetic_sources)
    found = {path for path, _, _ in candidates}
    candidates = _drop_unreadable(root, candidates)
    class_names = tuple(sorted({class_name for _, class_name, _ in candidates}))
    if not class_names:
        raise OptionError(
            f"no images ({' '.join(IMAGE_EXTENSIONS + MEDICAL_SUFFIXES)}) found in {root}: expected "
            f"{root}/<class>/* or {root}/train|val|test/<class>/*"
        )
    if len(class_names) == 1:
        raise OptionError(
            f"only one class ({class_names[0]!r}) found in {root}: classification needs "
            "at least two class folders"
        )
    originals = [(p, c, s) for p, c, s in candidates if p not in synthetic_sources]
    group_of = ({} if groups is None
                else groups.groups_of(root, [path for path, _, _ in originals], found))
    if layout == "classes" and groups is not None:
        originals = _group_split(originals, group_of, seed, val_fraction, test_fraction)
    elif layout == "classes":
        originals = _stratified_split(root, originals, seed, val_fraction, test_fraction)
    split_of = {path: split for path, _, split in originals}
    if layout == "splits" and groups is not None:
        check_groups_within_splits(root, split_of, group_of)
    samples = [Sample(path, class_name, split, group=group_of.get(path, ""))
               for path, class_name, split in originals]
    # Leakage rule: a synthetic image follows its source into train, and goes nowhere else,
    # and belongs to its source's group.
    samples += [
        Sample(path, class_name, "train", synthetic=True,
               group=group_of.get(synthetic_sources[path], ""))
        for path, class_name, _ in candidates
        if path in synthetic_sources and split_of.get(synthetic_sources[path]) == "train"
    ]
    samples = frame_samples(root, samples, frames)
    samples.sort(key=lambda s: (s.path, s.frame or 0))
    _check_splits(root, samples, class_names)
    return DatasetSplit(root, layout, class_names, tuple(samples))


def frame_samples(root: str | Path, samples: list[Sample], frames: str) -> list[Sample]:
    """`samples` (of files under `root`) as ``frames`` asks: one sample per frame of each
    DICOM/NIfTI file (``"all"``), or one per file, its middle frame (``"middle"``; frame
    samples of one file are merged back into one)."""
    if frames == "middle":
        files = {group_of(sample): replace(sample, frame=None) for sample in samples}
        return list(files.values())
    return [replace(sample, frame=frame)
            for sample in frame_samples(root, samples, "middle")
            for frame in (frame_indices(Path(root) / sample.path, frames)
                          if is_medical(Path(root) / sample.path) else [None])]


def split_csv_rows(dataset: DatasetSplit) -> list[dict[str, str]]:
    """Rows of the run folder's ``split.csv`` for every sample of `dataset`."""
    return [split_row(sample) for sample in dataset.samples]


# (relative POSIX path, class name, split or "") for every image file found.
_Candidate = tuple[str, str, str]


def _check_utf8_names(root: Path, candidates: list[_Candidate]) -> None:
    """Refuse, before anything is written, a file name that is not UTF-8: the run folder's
    CSV files record paths as UTF-8 text."""
    for path, _, _ in candidates:
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            # os.fsencode gives back the name's bytes; the undecodable ones print as \xNN.
            shown = os.fsencode(root / path).decode("utf-8", "backslashreplace")
            raise ValueError(f"file name {shown} is not valid UTF-8; rename it") from None


def _check_no_unlisted_synthetic(
    root: Path, candidates: list[_Candidate], synthetic_sources: dict[str, str]
) -> None:
    """A file named like a diffaug synthetic image but listed in no manifest would be taken for
    an original and could land in val or test: refused when DATA is a diffaug output (it has a
    manifest or a run record), a warning otherwise (the name alone proves nothing)."""
    unlisted = [path for path, _, _ in candidates
                if path not in synthetic_sources
                and _SYNTHETIC_NAME.fullmatch(PurePosixPath(path).name)]
    if not unlisted:
        return
    manifest = root / MANIFEST_NAME
    if manifest.is_file():
        raise ValueError(
            f"{root / unlisted[0]} is named like a diffaug synthetic image but {manifest} does "
            f"not list it ({len(unlisted)} such file(s)); remove them or rerun `diffaug balance`, "
            "so that no synthetic image is taken for an original"
        )
    if (root / RUN_RECORD_NAME).is_file():
        raise ValueError(
            f"{root} holds {RUN_RECORD_NAME} but no {MANIFEST_NAME}: an unfinished `diffaug "
            "balance` output; finish it (rerun the same command) before training on it"
        )
    warnings.warn(
        f"{len(unlisted)} file(s) named like diffaug synthetic images (first: "
        f"{root / unlisted[0]}) but {root} has no {MANIFEST_NAME}: they are used as originals",
        stacklevel=3,
    )


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


def _class_folders(root: Path) -> list[_Candidate]:
    return _class_folder_images(root, root, "")


def _split_folders(root: Path) -> list[_Candidate]:
    missing = [split for split in SPLITS if not (root / split).is_dir()]
    if missing:
        raise OptionError(
            f"{root} has a train/ folder but no {'/, '.join(missing)}/ folder: the split layout "
            "needs train/, val/ and test/ (or use class folders and let qclassify split them)"
        )
    return [c for split in SPLITS for c in _class_folder_images(root, root / split, split)]


def _drop_unreadable(root: Path, candidates: list[_Candidate]) -> list[_Candidate]:
    problems = find_unreadable([root / path for path, _, _ in candidates])
    for path, reason in problems.items():
        warnings.warn(f"skipping unreadable image {path}: {reason}", stacklevel=3)
    return [c for c in candidates if str(root / c[0]) not in problems]


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise OptionError(
            f"val and test fractions must be in (0, 1) with a sum below 1; "
            f"got {val_fraction} and {test_fraction}"
        )


def _group_split(
    originals: list[_Candidate], group_of: dict[str, str], seed: int, val_fraction: float,
    test_fraction: float,
) -> list[_Candidate]:
    """`split_by_groups` over the originals sorted by path (so DATA and its diffaug copy, with
    the same originals and groups, are split alike)."""
    _check_fractions(val_fraction, test_fraction)
    originals = sorted(originals)
    splits = split_by_groups([c for _, c, _ in originals], [group_of[p] for p, _, _ in originals],
                             seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    return [(path, c, split) for (path, c, _), split in zip(originals, splits, strict=True)]


def _stratified_split(
    root: Path, originals: list[_Candidate], seed: int, val_fraction: float, test_fraction: float
) -> list[_Candidate]:
    _check_fractions(val_fraction, test_fraction)
    originals = sorted(originals)
    counts = Counter(class_name for _, class_name, _ in originals)
    too_small = sorted(name for name, n in counts.items() if n < len(SPLITS))
    if too_small:
        raise OptionError(
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
            raise OptionError(f"the {split} split of {root} holds no images")
        if split == "train" and len(present) < len(class_names):
            absent = ", ".join(sorted(set(class_names) - present))
            raise OptionError(f"class(es) {absent} of {root} have no training images")


def train_original_counts(dataset: DatasetSplit) -> dict[str, int]:
    """Images per class among the ORIGINAL training images (synthetic ones left out)."""
    counts = {name: 0 for name in dataset.class_names}
    for sample in dataset.subset("train", originals_only=True):
        counts[sample.class_name] += 1
    return counts


def default_positive_class(dataset: DatasetSplit) -> str | None:
    """The positive class of a binary task (DESIGN): the minority of the original training
    images, so that a balanced copy of the same data keeps it; ties go to the first class
    name. None for more than two classes."""
    if len(dataset.class_names) != 2:
        return None
    counts = train_original_counts(dataset)
    return min(dataset.class_names, key=lambda name: counts[name])
