"""Reading an input folder for :func:`diffaug.balance_folder`: its layout, the images of each
class, the top-level files that travel with them, and what is left out and why.

Layouts: class folders (``IN/<class>/*``) or split folders (``IN/train/<class>/*``, ``IN/val``,
``IN/test``; only ``train`` is balanced). Entries whose names start with a dot
(``.DS_Store``, ``.ipynb_checkpoints/``) are ignored everywhere. Every readable image of a class
folder is an original (copied, counted for eq. 3); a sub-folder of a class folder is not
searched, and is named in a warning. Top-level regular files of IN that are not images (a
README, a dataset's source record) belong to the dataset and are copied as they are. Entries
that are not regular files or folders (FIFOs, sockets, devices) are skipped unread, with a
warning: opening a FIFO would wait forever.

Symbolic links are followed (see :func:`diffaug.balance_folder`). File and folder names must be
valid UTF-8 (the manifest and run record are UTF-8 text): a name that is not is refused, naming
it, before anything is written, rather than carried through as undecodable bytes.

Images whose mode cannot be augmented (P, 1, CMYK, F, I beyond 16 bits: see
:mod:`diffaug.modes`) are still originals, but are not drawn as synthesis sources: converting
them would give a class synthetic images of a mode its own files do not have.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffaug.io import (
    MANIFEST_NAME,
    RUN_RECORD_NAME,
    UnreadableImageError,
    has_image_extension,
    printable_path,
    read_image,
)
from diffaug.medical import is_medical, read_stored
from diffaug.modes import UnsupportedModeError, bit_depth

__all__ = ["BALANCED_SPLIT", "SPLITS", "BalanceInputError", "InputFolder", "SkippedFile",
           "read_input_folder"]

SPLITS = ("train", "val", "test")
BALANCED_SPLIT = "train"
_OWN_FILES = (RUN_RECORD_NAME, MANIFEST_NAME)  # an earlier run's, when IN is a diffaug OUT
_NOT_REGULAR = "not a regular file (a FIFO, socket or device is not read)"


class BalanceInputError(ValueError):
    """The input folder, output folder or options cannot be balanced as given."""


@dataclass(frozen=True)
class SkippedFile:
    """An input file left out (or, in ``BalanceReport.excluded_sources``, not used), and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class InputFolder:
    """What :func:`read_input_folder` found. Paths are relative to IN and sorted.

    ``images``: split -> class -> readable images (all copied); ``sources``: class -> the
    balanced split's images that can be augmented; ``dataset_files``: top-level files copied as
    they are; ``skipped``: entries not copied; ``excluded_sources``: images copied but not
    drawn as synthesis sources (both with their paths under IN and the reason).
    """

    layout: str  # "classes" or "splits"
    balanced_split: str
    images: dict[str, dict[str, list[Path]]]
    sources: dict[str, list[Path]]
    dataset_files: list[Path]
    skipped: list[SkippedFile]
    excluded_sources: list[SkippedFile]


def read_input_folder(in_dir: Path,
                      parallel_map: Callable[..., Iterable[Any]] = map) -> InputFolder:
    """Find the layout, every readable image and which of them can be synthesis sources.

    Each image is decoded in full through ``parallel_map`` (an order-keeping ``map``). Raises
    :class:`BalanceInputError` when the balanced split has fewer than 2 classes or a class
    without readable images.
    """
    layout, balanced_split, roots = _find_layout(in_dir)
    dataset_files, skipped = _top_level_files(in_dir, roots)
    images: dict[str, dict[str, list[Path]]] = {split: {} for split in roots}
    candidates: list[tuple[str, str, Path]] = []  # split, class, file with an image extension
    for split, root in roots.items():
        for folder in _visible_entries(root):
            if not folder.is_dir():
                if root != in_dir:  # top-level files of IN are sorted out above
                    skipped.append(SkippedFile(folder, "not inside a class folder"))
                continue
            images[split][folder.name] = []
            for path in _visible_entries(folder):
                if path.is_dir():
                    skipped.append(SkippedFile(path, "a sub-folder of a class folder is not an "
                                                     "image (not searched, not copied)"))
                elif not path.is_file():
                    skipped.append(SkippedFile(path, _NOT_REGULAR))
                elif not (has_image_extension(path) or is_medical(path)):
                    skipped.append(SkippedFile(path, "not an image file (by its extension)"))
                else:
                    candidates.append((split, folder.name, path))
    findings = parallel_map(_inspect, [path for _, _, path in candidates])
    sources: dict[str, list[Path]] = {name: [] for name in images[balanced_split]}
    excluded = []
    for (split, name, path), (unreadable, not_a_source) in zip(candidates, findings, strict=True):
        if unreadable:
            skipped.append(SkippedFile(path, unreadable))
            continue
        images[split][name].append(path.relative_to(in_dir))
        if split != balanced_split:
            continue
        if not_a_source:
            excluded.append(SkippedFile(path, not_a_source))
        else:
            sources[name].append(path.relative_to(in_dir))

    where = in_dir / balanced_split
    classes = images[balanced_split]
    if len(classes) < 2:
        names = ", ".join(printable_path(name) for name in classes) or "none"
        raise BalanceInputError(f"{printable_path(where)} needs at least 2 class folders to "
                                f"balance; found {len(classes)} ({names}).")
    for name, files in classes.items():
        if not files:
            raise BalanceInputError(f"class folder {printable_path(where / name)} holds no "
                                    "readable images.")
    return InputFolder(layout, balanced_split, images, sources, dataset_files,
                       sorted(skipped, key=lambda s: s.path),
                       sorted(excluded, key=lambda s: s.path))


def _visible_entries(folder: Path) -> list[Path]:
    """The sorted entries of ``folder`` without dot-entries (.DS_Store, .ipynb_checkpoints);
    raises :class:`BalanceInputError` for a name that is not valid UTF-8."""
    entries = sorted(entry for entry in folder.iterdir() if not entry.name.startswith("."))
    for entry in entries:
        try:
            entry.name.encode("utf-8")
        except UnicodeEncodeError:  # undecodable bytes, kept by Python as lone surrogates
            raise BalanceInputError(
                f"{printable_path(entry)}: the name is not valid UTF-8; rename it (the manifest "
                "and run record name every file in UTF-8).") from None
    return entries


def _find_layout(in_dir: Path) -> tuple[str, str, dict[str, Path]]:
    """Layout name, balanced split and the folder of each split."""
    split_names = [e.name for e in _visible_entries(in_dir) if e.is_dir() and e.name in SPLITS]
    if not split_names:
        return "classes", "", {"": in_dir}
    if BALANCED_SPLIT not in split_names:
        raise BalanceInputError(f"{printable_path(in_dir)} has {'/, '.join(split_names)}/ but "
                                f"no {BALANCED_SPLIT}/ folder to balance.")
    return "splits", BALANCED_SPLIT, {name: in_dir / name for name in SPLITS if name in split_names}


def _top_level_files(in_dir: Path, roots: dict[str, Path]) -> tuple[list[Path], list[SkippedFile]]:
    """Top-level files to copy as they are (relative to IN), and top-level entries skipped."""
    copied, skipped = [], []
    split_layout = in_dir not in roots.values()
    for entry in _visible_entries(in_dir):
        if entry.is_dir():  # a class folder, a split folder or a folder no layout has
            if split_layout and entry not in roots.values():
                skipped.append(SkippedFile(entry, f"not a {'/'.join(SPLITS)} folder"))
        elif not entry.is_file():
            skipped.append(SkippedFile(entry, _NOT_REGULAR))
        elif has_image_extension(entry) or is_medical(entry):
            skipped.append(SkippedFile(entry, "an image outside the class folders"))
        elif entry.name in _OWN_FILES:
            skipped.append(SkippedFile(entry, "an earlier diffaug run's file (OUT gets its own)"))
        else:
            copied.append(entry.relative_to(in_dir))
    return copied, skipped


def _inspect(path: Path) -> tuple[str | None, str | None]:
    """Why ``path`` cannot be read (decoded in full, so truncated files are caught), and why it
    cannot be a synthesis source; None where it can. DICOM/NIfTI files are read by
    :func:`diffaug.medical.read_stored` (without the ``dicom`` extra: its install hint is
    raised, never "not an image")."""
    try:
        if is_medical(path):
            read_stored(path)
            return None, None
        image = read_image(path)
    except UnreadableImageError as err:
        return str(err), None
    try:
        bit_depth(image)
    except UnsupportedModeError as err:
        return None, str(err)
    return None, None
