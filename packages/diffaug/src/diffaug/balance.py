"""Balancing an image folder: the synthesis plan, parallel writing, run record and manifest.

IN is read by :func:`diffaug.layout.read_input_folder` (layouts, what is copied, skipped or
not used as a synthesis source). OUT mirrors IN with byte-identical originals; synthetic images
``syn_<source-stem>_<k>.png`` (DICOM/NIfTI sources: their own format and extension) sit
beside them. Each synthetic image has its own seed (see
:func:`diffaug.augment.plan_samples`), so the output, run record included, does not depend on
the number of workers. ``diffaug-run.json`` is written first and the manifest last: a finished
OUT is recognised, verified and left alone when the same command runs again (the lock, what a
rerun accepts, verifies and repairs: :mod:`diffaug.outfolder`). A run can also be split into
shards written on several machines, then finished (:mod:`diffaug.shards`).

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
    run_record_bytes,
)
from diffaug.schedule import NoiseSchedule
from diffaug.shards import (
    ShardedRun,
    ShardPart,
    ShardsIncompleteError,
    check_shard,
    finish_run,
    recorded_options,
    shard_items,
    write_shard,
)
from diffaug.workers import process_map

__all__ = ["RUN_RECORD_NAME", "BalanceInputError", "BalanceReport", "OutputFolderBusyError",
           "ShardsIncompleteError", "SkippedFile", "balance_folder", "finish_shards"]

_NAME_MAX = 255  # bytes in a file name on common file systems (ext4, XFS, APFS, NTFS)


@dataclass(frozen=True)
class BalanceReport:
    """What :func:`balance_folder` found and did.

    Counts are ``{split: {class: n}}`` with split ``""`` for the class-folder layout;
    ``synthesis`` is M per class (eq. 3) for the balanced split. ``n_copied`` counts the files
    copied from IN (images and top-level dataset files); ``skipped`` are files not copied,
    ``excluded_sources`` copied images of the balanced split never drawn as synthesis sources.
    ``repaired``: files of a finished OUT found missing or changed, for which the run was
    written again (paths relative to OUT). ``shard``: the part a ``shard=(K, N)`` run writes
    (``n_copied`` and ``n_synthetic`` then count that part); ``shards_merged``: N after
    :func:`finish_shards` merged N shards.
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
    shard: ShardPart | None = None
    shards_merged: int = 0

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


@dataclass(frozen=True)
class _Plan:
    """What a run writes, fixed before any file is written."""

    inputs: InputFolder
    counts: dict[str, dict[str, int]]
    synthesis: dict[str, int]
    record: dict[str, Any]
    rows: list[ManifestRow]
    jobs: list[_Job]


def balance_folder(in_dir: str | Path, out_dir: str | Path, *, ratio: float | str | Decimal,
                   schedule: NoiseSchedule | None = None, blur_sigma: float = 0.5,
                   brightness: tuple[float, float] = (0.9, 1.1), seed: int = 0, workers: int = 1,
                   dry_run: bool = False,
                   progress: Callable[[int, int], None] | None = None,
                   groups: GroupSource | None = None,
                   shard: tuple[int, int] | None = None, finish: bool = False) -> BalanceReport:
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

    ``shard=(K, N)`` writes only the K-th of N disjoint parts of the run (1 <= K <= N), safely
    in parallel with the other shards on any machine sharing ``out_dir``; ``finish=True`` (or
    :func:`finish_shards`) then checks every part and writes the manifest and run record: OUT
    is then byte for byte the OUT of one run without shards (:mod:`diffaug.shards`). A shard
    or finish on a finished OUT verifies (and repairs) it like a rerun.
    """
    ratio = as_ratio(ratio)
    schedule = check_schedule(schedule)
    settings = {"schedule": schedule, "blur_sigma": blur_sigma, "brightness": tuple(brightness)}
    DiffusionAugmentor(**settings, random_state=seed).validate_params()  # before any file work
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise BalanceInputError(f"workers must be an integer >= 1; got {workers!r}.")
    if shard is not None and finish:
        raise BalanceInputError("shard and finish exclude each other: run the shards, then "
                                "finish once.")
    shard = None if shard is None else check_shard(shard)
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    _check_folders(in_dir, out_dir)
    progress = progress or _no_progress
    with process_map(workers) as parallel_map:
        plan = _plan(in_dir, out_dir, ratio, settings, seed, parallel_map)
        part = None if shard is None else _shard_part(plan, shard)
        already_done = check_output_folder(out_dir, plan.record)  # refused before OUT is created
        if groups is not None and plan.inputs.layout == "splits":
            warn_groups_crossing_splits(in_dir, plan.inputs.images, groups)
        repaired: list[Path] = []
        n_copied = n_synthetic = merged = 0
        if dry_run:
            pass
        elif part is not None and not already_done:
            write_part = partial(_write_files, in_dir, out_dir, plan, list(part.copies),
                                 partial(_synthesize, settings, seed), shard_items(plan.jobs, shard),
                                 parallel_map, progress)
            already_done = write_shard(_sharded_run(in_dir, out_dir, plan, parallel_map), part,
                                       write_part)
            n_copied, n_synthetic = (0, 0) if already_done else (len(part.copies), len(part.rows))
        elif finish and not already_done:
            merged = finish_run(_sharded_run(in_dir, out_dir, plan, parallel_map))
        else:
            with locked_output_folder(out_dir):
                already_done, repaired = _prepare_rerun(in_dir, out_dir, plan, parallel_map)
                if not already_done:
                    n_copied, n_synthetic = _write_output(
                        in_dir, out_dir, plan, partial(_synthesize, settings, seed), parallel_map,
                        progress)

    after = {split: dict(classes) for split, classes in plan.counts.items()}
    for name, added in plan.synthesis.items():
        after[plan.inputs.balanced_split][name] += added
    return BalanceReport(
        in_dir=in_dir, out_dir=out_dir, layout=plan.inputs.layout,
        balanced_split=plan.inputs.balanced_split, counts_before=plan.counts, counts_after=after,
        synthesis=plan.synthesis, n_copied=n_copied, n_synthetic=n_synthetic,
        skipped=tuple(plan.inputs.skipped), excluded_sources=tuple(plan.inputs.excluded_sources),
        manifest=None if dry_run else out_dir / MANIFEST_NAME,
        dry_run=dry_run, already_done=already_done, repaired=tuple(repaired), shard=part,
        shards_merged=merged)


def finish_shards(in_dir: str | Path, out_dir: str | Path, *, workers: int = 1,
                  dry_run: bool = False,
                  progress: Callable[[int, int], None] | None = None) -> BalanceReport:
    """Finish a run written by ``balance_folder(..., shard=(K, N))`` for K = 1 … N, with the
    options the shards recorded in ``out_dir``: :func:`balance_folder` with ``finish=True``.

    Raises :class:`ShardsIncompleteError` (a ``RuntimeError``), naming them, while shards are
    missing or a file they wrote is missing or changed; nothing is written then.
    """
    return balance_folder(in_dir, out_dir, **recorded_options(Path(out_dir)), workers=workers,
                          dry_run=dry_run, progress=progress, finish=True)


def _plan(in_dir: Path, out_dir: Path, ratio: Decimal, settings: dict[str, Any], seed: int,
          parallel_map: Callable[..., Iterable[Any]]) -> _Plan:
    """Read IN and fix what the run writes: eq. 3's counts, run record, manifest rows, jobs."""
    inputs = read_input_folder(in_dir, parallel_map)
    counts = {split: {name: len(files) for name, files in classes.items()}
              for split, classes in inputs.images.items()}
    synthesis = plan_synthesis(counts[inputs.balanced_split], ratio=ratio)
    record = _run_record(in_dir, inputs, counts, synthesis, ratio, settings, seed)
    rows, jobs = _plan_rows(in_dir, out_dir, inputs, synthesis, seed)
    return _Plan(inputs, counts, synthesis, record, rows, jobs)


def _shard_part(plan: _Plan, shard: tuple[int, int]) -> ShardPart:
    """Shard K's copies and synthetic images of N (round robin, :mod:`diffaug.shards`)."""
    jobs = shard_items(plan.jobs, shard)
    return ShardPart(*shard, copies=tuple(shard_items(_copied_files(plan.inputs), shard)),
                     rows=tuple(variant.row for job in jobs for variant in job.variants),
                     n_sources=len(jobs))


def _sharded_run(in_dir: Path, out_dir: Path, plan: _Plan,
                 parallel_map: Callable[..., Iterable[Any]]) -> ShardedRun:
    """What :mod:`diffaug.shards` checks and writes of this plan."""
    return ShardedRun(in_dir, out_dir, plan.record, plan.rows, _copied_files(plan.inputs),
                      _expected_files(plan), parallel_map)


def _no_progress(done_increment: int, total: int) -> None:
    """The default progress callback."""


def _prepare_rerun(in_dir: Path, out_dir: Path, plan: _Plan,
                   parallel_map: Callable[..., Iterable[Any]]) -> tuple[bool, list[Path]]:
    """Under the lock: whether OUT holds this run finished and verified, and the files found
    missing or changed in a finished OUT (its manifest is then removed: it is rewritten)."""
    finished = check_output_folder(out_dir, plan.record)  # again: another run may have written OUT
    clean_output_folder(out_dir, _expected_files(plan))
    if not finished:
        return False, []
    mismatched = mismatched_files(in_dir, out_dir, _copied_files(plan.inputs), plan.rows,
                                  parallel_map)
    if mismatched:
        (out_dir / MANIFEST_NAME).unlink()
    return not mismatched, mismatched


def _expected_files(plan: _Plan) -> set[Path]:
    """Every file and folder the run writes, relative to OUT."""
    return {Path(RUN_RECORD_NAME), Path(MANIFEST_NAME), *_copied_files(plan.inputs),
            *(Path(row.path) for row in plan.rows),
            *(Path(split, name) for split, classes in plan.inputs.images.items()
              for name in classes)}


def _copied_files(inputs: InputFolder) -> list[Path]:
    """Every file copied from IN as it is (relative to IN and OUT)."""
    return inputs.dataset_files + [path for classes in inputs.images.values()
                                   for files in classes.values() for path in files]


def _write_output(in_dir: Path, out_dir: Path, plan: _Plan,
                  synthesize: Callable[[_Job], list[tuple[int, float, str]]],
                  parallel_map: Callable[..., Iterable[Any]],
                  progress: Callable[[int, int], None]) -> tuple[int, int]:
    """The whole run: its files, then the manifest (last)."""
    originals = _copied_files(plan.inputs)
    done_rows = _write_files(in_dir, out_dir, plan, originals, synthesize, plan.jobs,
                             parallel_map, progress)
    write_manifest(out_dir / MANIFEST_NAME, done_rows)
    return len(originals), len(done_rows)


def _write_files(in_dir: Path, out_dir: Path, plan: _Plan, originals: list[Path],
                 synthesize: Callable[[_Job], list[tuple[int, float, str]]],
                 jobs: list[_Job], parallel_map: Callable[..., Iterable[Any]],
                 progress: Callable[[int, int], None]) -> list[ManifestRow]:
    """Run record first (OUT is then recognised as this run's), then ``originals`` and the
    synthetic images of ``jobs``; returns the plan's rows, those of ``jobs`` filled in."""
    total = len(originals) + sum(len(job.variants) for job in jobs)
    progress(0, total)
    atomic_write_bytes(out_dir / RUN_RECORD_NAME, run_record_bytes(plan.record))
    for split, classes in plan.inputs.images.items():
        for name in classes:  # empty val/test class folders are mirrored too
            (out_dir / split / name).mkdir(parents=True, exist_ok=True)
    for _ in parallel_map(atomic_copy, [in_dir / path for path in originals],
                          [out_dir / path for path in originals]):
        progress(1, total)
    rows = plan.rows
    done_rows = list(rows)
    for job, outcomes in zip(jobs, parallel_map(synthesize, jobs), strict=True):
        for variant, (t, gamma, digest) in zip(job.variants, outcomes, strict=True):
            done_rows[variant.row] = rows[variant.row]._replace(t=t, gamma=gamma, sha256=digest)
        progress(len(outcomes), total)
    return done_rows


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

