"""Patient groups of a split-folder input (``IN/train|val|test/<class>/*``): a warning when one
patient's images sit in two splits, since a classifier tested on such a split has already seen
the patient in training. :func:`diffaug.balance_folder` only warns (the split is the user's);
``qclassify fit`` refuses such folders.

Groups come from a CSV file (:class:`GroupsFile`, columns ``path,group``, paths relative to
IN) or from a DICOM attribute of every image (:class:`DicomGroups`, e.g. ``PatientID``, read
with pydicom from the ``diffaug[dicom]`` extra, imported only then). The check is advisory:
an image without a group (not in the file, not DICOM, or without the attribute) is left out
of it, and one warning says how many were.
"""

from __future__ import annotations

import csv
import warnings
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from diffaug.io import printable_path
from diffaug.layout import SPLITS, BalanceInputError

__all__ = ["GROUPS_COLUMNS", "DicomGroups", "GroupSource", "GroupsFile", "dicom_attribute",
           "group_source", "warn_groups_crossing_splits"]

GROUPS_COLUMNS = ("path", "group")
DICOM_EXTRA = "diffaug[dicom]"
# Crossing groups a warning names before it gives only their number.
NAMED_AT_MOST = 3


class GroupSource(Protocol):
    """Where the groups of the input's images come from."""

    def group_of(self, in_dir: Path, image: Path) -> str | None:
        """The group of `image` (relative to `in_dir`); None when it has none."""
        ...


@dataclass(frozen=True)
class GroupsFile:
    """Groups from a ``path,group`` CSV file, paths relative to IN."""

    path: Path
    groups: Mapping[str, str]  # POSIX path relative to IN -> group

    @classmethod
    def read(cls, path: str | Path) -> GroupsFile:
        """Read `path`; raises :class:`BalanceInputError` for missing columns or a path given
        two groups."""
        return cls(Path(path), _read_groups_file(Path(path)))

    def group_of(self, in_dir: Path, image: Path) -> str | None:
        return self.groups.get(image.as_posix()) or None


@dataclass(frozen=True)
class DicomGroups:
    """Groups from one DICOM attribute of every image, e.g. ``PatientID``."""

    keyword: str

    def group_of(self, in_dir: Path, image: Path) -> str | None:
        return dicom_attribute(in_dir / image, self.keyword)


def group_source(groups: str | Path | None, group_by: str | None) -> GroupSource | None:
    """The source of ``--groups FILE`` or ``--group-by KEYWORD``; None for neither.

    Raises:
        BalanceInputError: both given, or a groups file without its columns or with one path
            given two groups.
    """
    if groups is not None and group_by is not None:
        raise BalanceInputError("--groups and --group-by both give groups: choose one.")
    if groups is not None:
        return GroupsFile.read(groups)
    return None if group_by is None else DicomGroups(group_by)


def _read_groups_file(path: Path) -> dict[str, str]:
    """path -> group of every row; a path may repeat only with the same group."""
    groups: dict[str, str] = {}
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in GROUPS_COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise BalanceInputError(f"{printable_path(path)}: missing column(s) "
                                        f"{', '.join(missing)}; expected a header "
                                        f"{','.join(GROUPS_COLUMNS)}.")
            for row in reader:
                image = PurePosixPath(row["path"] or "").as_posix()
                group = (row["group"] or "").strip()
                if groups.setdefault(image, group) != group:
                    raise BalanceInputError(
                        f"{printable_path(path)} line {reader.line_num}: {image!r} is given two "
                        f"groups ({groups[image]!r} and {group!r}).")
    except (OSError, csv.Error, UnicodeDecodeError) as err:
        raise BalanceInputError(f"cannot read {printable_path(path)} as UTF-8 CSV "
                                f"({' '.join(str(err).split())}).") from err
    return groups


def dicom_attribute(path: Path, keyword: str) -> str | None:
    """The value of DICOM attribute `keyword` in `path` as text, read without the pixel data;
    None when `path` is not DICOM or has no value for it.

    Raises:
        ImportError: pydicom is not installed (names the extra to install).
        BalanceInputError: `keyword` is not a DICOM attribute keyword.
    """
    try:
        import pydicom
        from pydicom.datadict import tag_for_keyword
        from pydicom.errors import InvalidDicomError
    except ImportError as err:
        raise ImportError(f"--group-by reads DICOM attributes with pydicom: pip install "
                          f"'{DICOM_EXTRA}'") from err
    if tag_for_keyword(keyword) is None:
        raise BalanceInputError(f"--group-by: {keyword!r} is not a DICOM attribute keyword "
                                "(e.g. PatientID).")
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[keyword])
    except (OSError, InvalidDicomError):
        return None
    return str(dataset.get(keyword, "") or "").strip() or None


def warn_groups_crossing_splits(in_dir: Path, images: Mapping[str, Mapping[str, list[Path]]],
                                source: GroupSource) -> None:
    """Warn naming the groups whose images are in more than one split (the first
    `NAMED_AT_MOST`, and their number), and how many images had no group.

    `images`: split -> class -> image paths relative to `in_dir` (``InputFolder.images``).
    """
    splits_of: dict[str, set[str]] = defaultdict(set)
    ungrouped: list[Path] = []
    for split, classes in images.items():
        for paths in classes.values():
            for path in paths:
                group = source.group_of(in_dir, path)
                if group is None:
                    ungrouped.append(path)
                else:
                    splits_of[group].add(split)
    if ungrouped:
        warnings.warn(f"{len(ungrouped)} image(s) have no group (first: "
                      f"{printable_path(ungrouped[0])}); they are left out of the patient check",
                      stacklevel=2)
    crossing = sorted((group, sorted(splits, key=SPLITS.index))
                      for group, splits in splits_of.items() if len(splits) > 1)
    if crossing:
        named = ", ".join(f"{group!r} ({'/'.join(splits)})"
                          for group, splits in crossing[:NAMED_AT_MOST])
        more = f" and {len(crossing) - NAMED_AT_MOST} more" if len(crossing) > NAMED_AT_MOST else ""
        warnings.warn(f"{len(crossing)} patient group(s) have images in more than one split: "
                      f"{named}{more}; a model tested on them has seen them in training "
                      "(move each patient's images into one split)", stacklevel=2)
