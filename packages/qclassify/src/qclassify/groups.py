"""Patient-level (group) splits: images of one patient never reach two of train / val / test.

Groups come from a CSV file (`GroupsFile`, columns ``path,group``, paths relative to DATA as in
``split.csv``) or from a DICOM attribute of every image (`DicomGroups`, e.g. ``PatientID``;
pydicom comes with the ``qclassify[dicom]`` extra and is imported only then). Every ORIGINAL
image needs a group; a synthetic image (diffaug manifest) takes its source's group.

Class folders are split by `split_by_groups`, with scikit-learn's ``StratifiedGroupKFold``
(``shuffle=True``, seeded): the test groups are the first of k = round(1 / test_fraction)
folds, the validation groups the first of k' = round((1 - test_fraction) / val_fraction) folds
of the rest (each at least 2). So a whole number of groups goes to each split, class
proportions are kept as far as the group sizes allow, and the shares are 1/k and
(1 - 1/k)/k' of the GROUPS' images: 14.3 % and 14.3 % for the default 0.15 / 0.15, closer to
the fractions the more and the smaller the groups. Split folders are used as given, but a group
found in two of them is refused (`check_groups_within_splits`).
"""

from __future__ import annotations

import csv
import hashlib
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from qclassify.options import OptionError

__all__ = [
    "GROUPS_COLUMNS",
    "DicomGroups",
    "GroupSource",
    "GroupsFile",
    "check_groups_within_splits",
    "crossing_groups",
    "dicom_attribute",
    "group_source",
    "split_by_groups",
]

GROUPS_COLUMNS = ("path", "group")
DICOM_EXTRA = "qclassify[dicom]"
_SPLIT_ORDER = ("train", "val", "test")


class GroupSource(Protocol):
    """Where the groups of a dataset's images come from."""

    def groups_of(self, root: Path, originals: Sequence[str],
                  found: Collection[str]) -> dict[str, str]:
        """The group of every path of `originals` (POSIX, relative to `root`); `found` are all
        the image files of the dataset (synthetic and unreadable ones included)."""
        ...

    def record(self) -> dict[str, str]:
        """What ``config.json`` records, so that a reused or resumed run is checked against it."""
        ...


@dataclass(frozen=True)
class GroupsFile:
    """Groups from a ``path,group`` CSV file (paths relative to the data folder).

    Rows naming synthetic images are ignored (they take their source's group).
    """

    path: Path

    def groups_of(self, root: Path, originals: Sequence[str],
                  found: Collection[str]) -> dict[str, str]:
        """See `GroupSource.groups_of`.

        Raises:
            OptionError: missing columns, a path that is not an image of `root`, one path with
                two groups, or an original image the file gives no group.
        """
        groups = self._read()
        stray = next((path for path in groups if path not in found), None)
        if stray is not None:
            raise OptionError(f"{self.path}: {stray!r} is not an image of {root} (paths are "
                              "relative to the data folder, as in split.csv)", "groups")
        unlisted = next((path for path in originals if not groups.get(path)), None)
        if unlisted is not None:
            raise OptionError(f"{self.path} gives no group to {root / unlisted}: every image "
                              "needs its patient's group", "groups")
        return {path: groups[path] for path in originals}

    def record(self) -> dict[str, str]:
        return {"groups": str(self.path.resolve()), "sha256": _sha256(self.path)}

    def _read(self) -> dict[str, str]:
        """path -> group of every row; a path may repeat only with the same group."""
        groups: dict[str, str] = {}
        try:
            with self.path.open(newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                missing = [c for c in GROUPS_COLUMNS if c not in (reader.fieldnames or ())]
                if missing:
                    raise OptionError(f"{self.path}: missing column(s) {', '.join(missing)}; "
                                      f"expected a header {','.join(GROUPS_COLUMNS)}", "groups")
                for row in reader:
                    path = PurePosixPath(row["path"] or "").as_posix()
                    group = (row["group"] or "").strip()
                    if groups.setdefault(path, group) != group:
                        raise OptionError(f"{self.path} line {reader.line_num}: {path!r} is "
                                          f"given two groups ({groups[path]!r} and {group!r})",
                                          "groups")
        except (OSError, csv.Error, UnicodeDecodeError) as err:
            raise OptionError(f"cannot read {self.path} as UTF-8 CSV "
                              f"({' '.join(str(err).split())})", "groups") from err
        return groups


@dataclass(frozen=True)
class DicomGroups:
    """Groups from one DICOM attribute of every original image, e.g. ``PatientID``."""

    keyword: str

    def groups_of(self, root: Path, originals: Sequence[str],
                  found: Collection[str]) -> dict[str, str]:
        """See `GroupSource.groups_of`.

        Raises:
            OptionError: an unknown keyword, or an image without a value for it.
            ValueError: an image that is not a DICOM file.
            ImportError: pydicom (the ``qclassify[dicom]`` extra) is not installed.
        """
        return {path: dicom_attribute(root / path, self.keyword) for path in originals}

    def record(self) -> dict[str, str]:
        return {"group_by": self.keyword}


def dicom_attribute(path: Path, keyword: str) -> str:
    """The value of DICOM attribute `keyword` in `path` as text, read without the pixel data.

    Raises:
        OptionError: `keyword` is no DICOM keyword, or `path` has no value for it.
        ValueError: `path` is not a readable DICOM file.
        ImportError: pydicom is not installed (names the extra to install).
    """
    try:
        import pydicom
        from pydicom.datadict import tag_for_keyword
        from pydicom.errors import InvalidDicomError
    except ImportError as err:
        raise ImportError(f"--group-by reads DICOM attributes with pydicom: pip install "
                          f"'{DICOM_EXTRA}'") from err
    if tag_for_keyword(keyword) is None:
        raise OptionError(f"{keyword!r} is not a DICOM attribute keyword (e.g. PatientID)",
                          "group_by")
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[keyword])
    except (OSError, InvalidDicomError) as err:
        raise ValueError(f"cannot read {keyword} from {path}: "
                         f"{' '.join(str(err).split())}") from err
    value = str(dataset.get(keyword, "") or "").strip()
    if not value:
        raise OptionError(f"{path} has no {keyword}: every image needs its patient's group",
                          "group_by")
    return value


def group_source(groups: str | Path | None, group_by: str | None) -> GroupSource | None:
    """The source of `TrainConfig`'s ``groups`` / ``group_by`` options; None for neither.

    Raises:
        OptionError: both are given.
    """
    if groups is not None and group_by is not None:
        raise OptionError("and --group-by both give groups: choose one", "groups")
    if groups is not None:
        return GroupsFile(Path(groups))
    return None if group_by is None else DicomGroups(group_by)


def split_by_groups(
    classes: Sequence[str], groups: Sequence[str], *, seed: int, val_fraction: float,
    test_fraction: float,
) -> list[str]:
    """The split ("train", "val" or "test") of each image, whole groups at a time, stratified
    by class (see the module docstring for the procedure and the shares it gives).

    Raises:
        OptionError: too few groups for the folds the fractions ask for.
    """
    classes, groups = np.asarray(classes), np.asarray(groups)
    split = np.full(len(classes), "train", dtype=object)
    test = _first_fold(classes, groups, _folds(test_fraction), seed, "test")
    split[test] = "test"
    rest = np.flatnonzero(split == "train")
    val = _first_fold(classes[rest], groups[rest], _folds(val_fraction / (1 - test_fraction)),
                      seed, "val")
    split[rest[val]] = "val"
    return split.tolist()


def _folds(fraction: float) -> int:
    return max(2, round(1 / fraction))


def _first_fold(classes: np.ndarray, groups: np.ndarray, folds: int, seed: int,
                split: str) -> np.ndarray:
    """Indices of the first of `folds` stratified group folds."""
    n_groups = len(set(groups.tolist()))
    if n_groups < folds:
        raise OptionError(f"the {split} split needs whole groups from {folds} folds, but only "
                          f"{n_groups} group(s) are left; give more groups or a larger "
                          f"--{split}-fraction")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    _, held_out = next(splitter.split(np.zeros(len(classes)), classes, groups))
    return held_out


def check_groups_within_splits(root: Path, split_of: Mapping[str, str],
                               group_of: Mapping[str, str]) -> None:
    """Refuse split folders that put one group's images in two splits.

    Raises:
        OptionError: naming a crossing group, its splits, and how many groups cross.
    """
    crossing = crossing_groups(split_of, group_of)
    if crossing:
        group, splits = next(iter(crossing.items()))
        raise OptionError(f"group {group!r} has images in {' and '.join(splits)} of {root} "
                          f"({len(crossing)} group(s) cross splits): move each group's images "
                          "into one split, or use class folders and let qclassify split them")


def crossing_groups(split_of: Mapping[str, str],
                    group_of: Mapping[str, str]) -> dict[str, list[str]]:
    """Each group found in more than one split, with its splits (sorted)."""
    splits_of_group: dict[str, set[str]] = defaultdict(set)
    for path, group in group_of.items():
        splits_of_group[group].add(split_of[path])
    return {group: sorted(splits, key=_SPLIT_ORDER.index)
            for group, splits in sorted(splits_of_group.items()) if len(splits) > 1}


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
