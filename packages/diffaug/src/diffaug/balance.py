"""Balancing an image folder: the synthesis plan, parallel writing, run record and manifest.

IN is read by :func:`diffaug.layout.read_input_folder` (layouts, what is copied, skipped or
not used as a synthesis source). OUT mirrors IN with byte-identical originals; synthetic images
``syn_<source-stem>_<k>.png`` (DICOM/NIfTI sources: their own format and extension) sit
beside them. Each synthetic image has its own seed (see
:func:`diffaug.augment.plan_samples`), so the output, run record included, does not depend on
the number of workers. ``diffaug-run.json`` is written first and the manifest last: a finished
OUT is recognised, verified and left alone when the same command runs again (the lock, what a
rerun accepts, verifies and repairs: :mod:`diffaug.outfolder`).

The worker processes end with the parent (:mod:`diffaug.workers`).
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

from diffaug.augment import DiffusionAugmentor, as_ratio, plan_samples, plan_synthesis
from diffaug.derived import synthesize_medical, synthetic_name
from diffaug.groups import GroupSource, warn_groups_crossing_splits
from diffaug.io import (
    MANIFEST_NAME,
    RUN_RECORD_NAME,
    ManifestRow,
    atomic_copy,
    atomic_write_bytes,
    encode_png,
    exif_orientation,
    printable_path,
    read_image,
    sha256_hex,
    write_manifest,
)
from diffaug.layout import BalanceInputError, InputFolder, SkippedFile, read_input_folder
from diffaug.medical import is_medical
from diffaug.options import check_schedule
from diffaug.outfolder import (
    OutputFolderBusyError,
    check_output_folder,
    clean_output_folder,
    locked_output_folder,
    mismatched_files,
)
from diffaug.schedule import NoiseSchedule
from diffaug.workers import process_map

__all__ = ["RUN_RECORD_NAME", "BalanceInputError", "BalanceReport", "OutputFolderBusyError",
           "SkippedFile", "balance_folder"]

_NAME_MAX = 255  # bytes in a file name on common file systems (ext4, XFS, APFS, NTFS)


@dataclass(frozen=True)
class BalanceReport:
    """What :func:`balance_folder` found and did.

    Counts are ``{split: {class: n}}`` with split ``""`` for the class-folder layout;
    ``synthesis`` is M per class (eq. 3) for the balanced split. ``n_copied`` counts the files
    copied from IN (images and top-level dataset files); ``skipped`` are files not copied,
    ``excluded_sources`` copied images of the balanced split never drawn as synthesis sources.
    ``repaired``: files of a finished OUT found missing or changed, for which the run was
    written again (paths relative to OUT).
    """

    in_dir: Path
    out_dir: Path
    layout: str  # "classes" or "splits"
    balanced_split: str
    counts_before: dict[str, dict[str, int]]
    counts_after: dict[str, dict[str, int]]
    synthesis: dict[str, int]
    n_copied: int
    n_synthetic: int
    skipped: tuple[SkippedFile, ...]
    excluded_sources: tuple[SkippedFile, ...]
    manifest: Path | None
    dry_run: bool
    already_done: bool
    repaired: tuple[Path, ...] = ()

    @property
    def n_synthetic_planned(self) -> int:
        """Synthetic images the plan asks for (written now or by the earlier run)."""
        return sum(self.synthesis.values())


@dataclass(frozen=True)
class _Variant:
    """One synthetic image to write: its manifest row's index, its path and its seed."""

    row: int
    target: Path
    seed: int


@dataclass(frozen=True)
class _Job:
    """Every synthetic image of one source: the source is decoded once for all of them."""

    source: Path
    variants: tuple[_Variant, ...]


def balance_folder(in_dir: str | Path, out_dir: str | Path, *, ratio: float | str | Decimal,
                   schedule: NoiseSchedule | None = None, blur_sigma: float = 0.5,
                   brightness: tuple[float, float] = (0.9, 1.1), seed: int = 0, workers: int = 1,
                   dry_run: bool = False,
                   progress: Callable[[int, int], None] | None = None,
                   groups: GroupSource | None = None) -> BalanceReport:
    """Copy ``in_dir`` to ``out_dir`` and add synthetic minority images up to ``ratio`` (eq. 3).

    ``workers`` processes check, copy and synthesise images; the output does not depend on
    their number. ``progress(done_increment, total)`` is called once with 0 when the total is
    known, then after every file written. Raises :class:`BalanceInputError` (a ``ValueError``)
    for unusable folders or options and :class:`OutputFolderBusyError` while another run
    writes ``out_dir``; ``in_dir`` is only read.

    Symbolic links inside ``in_dir`` are followed, wherever they point: a linked image or class
    folder is part of the dataset (datasets are often assembled from links into a central
    store), and OUT receives a regular file with its bytes, never a link.

    With ``groups`` (:mod:`diffaug.groups`), split folders whose patient groups cross splits
    are named in a warning.
    """
    ratio = as_ratio(ratio)
    schedule = check_schedule(schedule)
    settings = {"schedule": schedule, "blur_sigma": blur_sigma, "brightness": tuple(brightness)}
    DiffusionAugmentor(**settings, random_state=seed).validate_params()  # before any file work
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise BalanceInputError(f"workers must be an integer >= 1; got {workers!r}.")
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    _check_folders(in_dir, out_dir)
    with process_map(workers) as parallel_map:
        inputs = read_input_folder(in_dir, parallel_map)
        if groups is not None and inputs.layout == "splits":
            warn_groups_crossing_splits(in_dir, inputs.images, groups)
        counts = {split: {name: len(files) for name, files in classes.items()}
                  for split, classes in inputs.images.items()}
        synthesis = plan_synthesis(counts[inputs.balanced_split], ratio=ratio)
        record = _run_record(in_dir, inputs, counts, synthesis, ratio, settings, seed)
        rows, jobs = _plan_rows(in_dir, out_dir, inputs, synthesis, seed)
        already_done = check_output_folder(out_dir, record)  # refused before OUT is created
        repaired: list[Path] = []
        n_copied = n_synthetic = 0
        if not dry_run:
            with locked_output_folder(out_dir):
                already_done, repaired = _prepare_rerun(in_dir, out_dir, inputs, record, rows,
                                                        parallel_map)
                if not already_done:
                    n_copied, n_synthetic = _write_output(
                        in_dir, out_dir, inputs, record, rows, partial(_synthesize, settings, seed),
                        jobs, parallel_map, progress or _no_progress)

    after = {split: dict(classes) for split, classes in counts.items()}
    for name, added in synthesis.items():
        after[inputs.balanced_split][name] += added
    return BalanceReport(
        in_dir=in_dir, out_dir=out_dir, layout=inputs.layout,
        balanced_split=inputs.balanced_split, counts_before=counts, counts_after=after,
        synthesis=synthesis, n_copied=n_copied, n_synthetic=n_synthetic,
        skipped=tuple(inputs.skipped), excluded_sources=tuple(inputs.excluded_sources),
        manifest=None if dry_run else out_dir / MANIFEST_NAME,
        dry_run=dry_run, already_done=already_done, repaired=tuple(repaired))


def _no_progress(done_increment: int, total: int) -> None:
    """The default progress callback."""


def _prepare_rerun(in_dir: Path, out_dir: Path, inputs: InputFolder, record: dict[str, Any],
                   rows: list[ManifestRow],
                   parallel_map: Callable[..., Iterable[Any]]) -> tuple[bool, list[Path]]:
    """Under the lock: whether OUT holds this run finished and verified, and the files found
    missing or changed in a finished OUT (its manifest is then removed: it is rewritten)."""
    finished = check_output_folder(out_dir, record)  # again: another run may have written OUT
    copies = _copied_files(inputs)
    expected = {Path(RUN_RECORD_NAME), Path(MANIFEST_NAME), *copies,
                *(Path(row.path) for row in rows),
                *(Path(split, name) for split, classes in inputs.images.items() for name in classes)}
    clean_output_folder(out_dir, expected)
    if not finished:
        return False, []
    mismatched = mismatched_files(in_dir, out_dir, copies, rows, parallel_map)
    if mismatched:
        (out_dir / MANIFEST_NAME).unlink()
    return not mismatched, mismatched


def _copied_files(inputs: InputFolder) -> list[Path]:
    """Every file copied from IN as it is (relative to IN and OUT)."""
    return inputs.dataset_files + [path for classes in inputs.images.values()
                                   for files in classes.values() for path in files]


def _write_output(in_dir: Path, out_dir: Path, inputs: InputFolder, record: dict[str, Any],
                  rows: list[ManifestRow],
                  synthesize: Callable[[_Job], list[tuple[int, float, str]]],
                  jobs: list[_Job], parallel_map: Callable[..., Iterable[Any]],
                  progress: Callable[[int, int], None]) -> tuple[int, int]:
    """Run record first (OUT is then recognised as this run's), then originals, synthetic
    images and the manifest (last)."""
    originals = _copied_files(inputs)
    total = len(originals) + len(rows)
    progress(0, total)
    atomic_write_bytes(out_dir / RUN_RECORD_NAME, json.dumps(record, indent=2).encode())
    for split, classes in inputs.images.items():
        for name in classes:  # empty val/test class folders are mirrored too
            (out_dir / split / name).mkdir(parents=True, exist_ok=True)
    for _ in parallel_map(atomic_copy, [in_dir / path for path in originals],
                          [out_dir / path for path in originals]):
        progress(1, total)
    done_rows = list(rows)
    for job, outcomes in zip(jobs, parallel_map(synthesize, jobs), strict=True):
        for variant, (t, gamma, digest) in zip(job.variants, outcomes, strict=True):
            done_rows[variant.row] = rows[variant.row]._replace(t=t, gamma=gamma, sha256=digest)
        progress(len(outcomes), total)
    write_manifest(out_dir / MANIFEST_NAME, done_rows)
    return len(originals), len(done_rows)


def _check_folders(in_dir: Path, out_dir: Path) -> None:
    if not in_dir.is_dir():
        raise BalanceInputError(f"input folder {in_dir} does not exist or is not a folder.")
    in_real, out_real = in_dir.resolve(), out_dir.resolve()
    if out_real == in_real or in_real in out_real.parents:
        raise BalanceInputError(f"output folder {out_dir} is inside input folder {in_dir}; "
                                "choose an output folder outside it (the input is never written).")
    if out_dir.exists() and not out_dir.is_dir():
        raise BalanceInputError(f"output folder {out_dir} exists and is not a folder.")


def _plan_rows(in_dir: Path, out_dir: Path, inputs: InputFolder, synthesis: dict[str, int],
               seed: int) -> tuple[list[ManifestRow], list[_Job]]:
    """Manifest rows (t, gamma, sha256 still to fill) and jobs, in a fixed order: one job per
    source (sources are drawn with replacement, so most are used several times)."""
    rows: list[ManifestRow] = []
    variants: dict[Path, list[_Variant]] = {}
    split = inputs.balanced_split
    for class_index, (name, files) in enumerate(sorted(inputs.images[split].items())):
        sources = inputs.sources[name]
        if synthesis[name] and not sources:
            _refuse_class_without_sources(in_dir / split / name, synthesis[name], files, inputs)
        names_taken = {path.name for path in files}
        for sample in plan_samples(seed, class_index, len(sources), synthesis[name]):
            source = sources[sample.source_index]
            target = source.with_name(synthetic_name(source, sample.k))
            if target.name in names_taken:
                raise BalanceInputError(f"{printable_path(in_dir / target)} would be overwritten "
                                        "by a synthetic image of the same name; rename it.")
            if len(os.fsencode(target.name)) > _NAME_MAX:
                raise BalanceInputError(
                    f"{printable_path(in_dir / source)}: the name of its synthetic images "
                    f"({printable_path(target.name)}) would exceed {_NAME_MAX} bytes; give it a "
                    "shorter name.")
            variants.setdefault(in_dir / source, []).append(
                _Variant(len(rows), out_dir / target, sample.seed))
            rows.append(ManifestRow(target.as_posix(), source.as_posix(), name, split, -1, 0.0,
                                    sample.seed, ""))
    return rows, [_Job(source, tuple(group)) for source, group in variants.items()]


def _refuse_class_without_sources(folder: Path, needed: int, files: list[Path],
                                  inputs: InputFolder) -> None:
    """The error for a class that needs synthetic images but has no usable source; it names one
    image and why, since the caller only prints warnings for a run that succeeds."""
    reasons = [excluded for excluded in inputs.excluded_sources if excluded.path.parent == folder]
    example = f" ({printable_path(reasons[0].path.name)}: {reasons[0].reason})" if reasons else ""
    raise BalanceInputError(
        f"class folder {printable_path(folder)} needs {needed} synthetic images but none of its "
        f"{len(files)} images can be augmented{example}; convert them to 8- or 16-bit "
        "grayscale or RGB.")


def _synthesize(settings: dict[str, Any], run_seed: int, job: _Job) -> list[tuple[int, float, str]]:
    """Write the synthetic images (eqs. 1 and 4) of one source, each from its own seed;
    returns (t, gamma, sha256) of each. DICOM/NIfTI sources give DICOM/NIfTI files
    (:mod:`diffaug.derived`; ``run_seed`` keys their new UIDs).

    The pixels are augmented as stored and the source's EXIF orientation is carried over, so
    viewers turn a synthetic image as they turn its source, and readers that ignore EXIF
    (torchvision, pytorch-fid, qclassify) see both in the same orientation.
    """
    if is_medical(job.source):
        return synthesize_medical(settings, run_seed, job.source,
                                  [(variant.target, variant.seed) for variant in job.variants])
    image = read_image(job.source)
    orientation = exif_orientation(image)
    outcomes = []
    synthesized = DiffusionAugmentor(**settings).variants(image, (v.seed for v in job.variants))
    for variant, (synthetic, draw) in zip(job.variants, synthesized, strict=True):
        data = encode_png(synthetic, orientation=orientation)
        atomic_write_bytes(variant.target, data)
        outcomes.append((draw.t, draw.gamma, sha256_hex(data)))
    return outcomes


def _run_record(in_dir: Path, inputs: InputFolder, counts: dict[str, dict[str, int]],
                synthesis: dict[str, int], ratio: Decimal,
                settings: dict[str, Any], seed: int) -> dict[str, Any]:
    """Everything this run did and with what; JSON-normalised so it compares with a re-read.

    The number of workers is left out: it does not change OUT, the record included."""
    record = {
        "command": "balance",
        "input": str(in_dir.resolve()),
        "options": {"ratio": str(ratio.normalize()), "betas": settings["schedule"].betas.tolist(),
                    "blur_sigma": settings["blur_sigma"], "brightness": settings["brightness"],
                    "seed": seed},
        "plan": {"layout": inputs.layout, "counts_before": counts, "synthesis": synthesis},
        "versions": {name: version(name) for name in ("diffaug", "numpy", "scipy", "pillow")}
        | {"python": platform.python_version()},
    }
    return json.loads(json.dumps(record))

