"""Balancing an image folder: layout discovery, the synthesis plan, parallel writing, manifest.

Layouts: class folders (``IN/<class>/*``) or split folders (``IN/train/<class>/*``, ``IN/val``,
``IN/test``; only ``train`` is balanced, the others are copied). OUT mirrors IN with
byte-identical originals; synthetic images ``syn_<source-stem>_<k>.png`` sit beside them. Each
synthetic image has its own seed (see :func:`diffaug.augment.plan_samples`), so the output does
not depend on the number of workers. ``diffaug-run.json`` is written first and the manifest
last: a finished OUT is recognised and left alone when the same command runs again.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

from diffaug.augment import (
    BIT_DEPTH_BY_MODE,
    DiffusionAugmentor,
    as_ratio,
    plan_samples,
    plan_synthesis,
)
from diffaug.io import (
    MANIFEST_NAME,
    ManifestRow,
    UnreadableImageError,
    atomic_copy,
    atomic_write_bytes,
    encode_png,
    has_image_extension,
    read_image,
    sha256_hex,
    write_manifest,
)
from diffaug.schedule import NoiseSchedule

__all__ = ["RUN_RECORD_NAME", "BalanceInputError", "BalanceReport", "SkippedFile",
           "balance_folder"]

RUN_RECORD_NAME = "diffaug-run.json"
SPLITS = ("train", "val", "test")
BALANCED_SPLIT = "train"
_IDENTITY_KEYS = ("command", "input", "options", "plan")  # what makes two runs "the same"


class BalanceInputError(ValueError):
    """The input folder, output folder or options cannot be balanced as given."""


@dataclass(frozen=True)
class SkippedFile:
    """An input file left out, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class BalanceReport:
    """What :func:`balance_folder` found and did.

    Counts are ``{split: {class: n}}`` with split ``""`` for the class-folder layout;
    ``synthesis`` is M per class (eq. 3) for the balanced split.
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
    manifest: Path | None
    dry_run: bool
    already_done: bool

    @property
    def n_synthetic_planned(self) -> int:
        """Synthetic images the plan asks for (written now or by the earlier run)."""
        return sum(self.synthesis.values())


@dataclass(frozen=True)
class _Job:
    """One synthetic image to write."""

    source: Path
    target: Path
    seed: int


@dataclass(frozen=True)
class _Inputs:
    layout: str
    balanced_split: str
    images: dict[str, dict[str, list[Path]]]  # split -> class -> files relative to IN, sorted
    skipped: list[SkippedFile]


def balance_folder(in_dir: str | Path, out_dir: str | Path, *, ratio: float | str | Decimal,
                   schedule: NoiseSchedule | None = None, blur_sigma: float = 0.5,
                   brightness: tuple[float, float] = (0.9, 1.1), seed: int = 0, workers: int = 1,
                   dry_run: bool = False,
                   progress: Callable[[int, int], None] | None = None) -> BalanceReport:
    """Copy ``in_dir`` to ``out_dir`` and add synthetic minority images up to ``ratio`` (eq. 3).

    ``workers`` processes check, copy and synthesise images; the output does not depend on
    their number. ``progress(done_increment, total)`` is called once with 0 when the total is
    known, then after every file written. Raises :class:`BalanceInputError` (a ``ValueError``)
    for unusable folders or options; ``in_dir`` is only read.
    """
    ratio = as_ratio(ratio)
    schedule = NoiseSchedule.linear() if schedule is None else schedule
    settings = {"schedule": schedule, "blur_sigma": blur_sigma, "brightness": tuple(brightness)}
    DiffusionAugmentor(**settings, seed=seed)  # validates the options before any file work
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise BalanceInputError(f"workers must be an integer >= 1; got {workers!r}.")
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    _check_folders(in_dir, out_dir)
    with _process_map(workers) as parallel_map:
        inputs = _discover(in_dir, parallel_map)
        counts = {split: {name: len(files) for name, files in classes.items()}
                  for split, classes in inputs.images.items()}
        synthesis = plan_synthesis(counts[inputs.balanced_split], ratio=ratio)
        record = _run_record(in_dir, inputs, counts, synthesis, ratio, settings, seed, workers)
        already_done = _check_out_dir(out_dir, record)
        rows, jobs = _plan_rows(in_dir, out_dir, inputs, synthesis, seed)
        n_copied = n_synthetic = 0
        if not (dry_run or already_done):
            n_copied, n_synthetic = _write_output(
                in_dir, out_dir, inputs, record, rows, partial(_synthesize, settings), jobs,
                parallel_map, progress or _no_progress)

    after = {split: dict(classes) for split, classes in counts.items()}
    for name, added in synthesis.items():
        after[inputs.balanced_split][name] += added
    return BalanceReport(
        in_dir=in_dir, out_dir=out_dir, layout=inputs.layout,
        balanced_split=inputs.balanced_split, counts_before=counts, counts_after=after,
        synthesis=synthesis, n_copied=n_copied, n_synthetic=n_synthetic,
        skipped=tuple(inputs.skipped), manifest=None if dry_run else out_dir / MANIFEST_NAME,
        dry_run=dry_run, already_done=already_done)


def _no_progress(done_increment: int, total: int) -> None:
    """The default progress callback."""


@contextmanager
def _process_map(workers: int) -> Iterator[Callable[..., Iterable[Any]]]:
    """An order-keeping ``map`` over ``workers`` processes (the builtin ``map`` for one)."""
    if workers == 1:
        yield map
        return
    pool = ProcessPoolExecutor(max_workers=workers)

    def parallel_map(function: Callable[..., Any], *iterables: Iterable[Any]) -> Iterable[Any]:
        columns = [list(iterable) for iterable in iterables]
        chunksize = max(1, len(columns[0]) // (workers * 8))
        return pool.map(function, *columns, chunksize=chunksize)

    try:
        yield parallel_map
    finally:
        pool.shutdown(cancel_futures=True)


def _write_output(in_dir: Path, out_dir: Path, inputs: _Inputs, record: dict[str, Any],
                  rows: list[ManifestRow], synthesize: Callable[[_Job], tuple[int, float, str]],
                  jobs: list[_Job], parallel_map: Callable[..., Iterable[Any]],
                  progress: Callable[[int, int], None]) -> tuple[int, int]:
    """Run record first, then originals, synthetic images and the manifest (last)."""
    originals = [path for classes in inputs.images.values() for files in classes.values()
                 for path in files]
    total = len(originals) + len(jobs)
    progress(0, total)
    for split, classes in inputs.images.items():
        for name in classes:  # empty val/test class folders are mirrored too
            (out_dir / split / name).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / RUN_RECORD_NAME, json.dumps(record, indent=2).encode())
    for _ in parallel_map(atomic_copy, [in_dir / path for path in originals],
                          [out_dir / path for path in originals]):
        progress(1, total)
    done_rows = []
    for row, (t, gamma, digest) in zip(rows, parallel_map(synthesize, jobs), strict=True):
        done_rows.append(row._replace(t=t, gamma=gamma, sha256=digest))
        progress(1, total)
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


def _discover(in_dir: Path, parallel_map: Callable[..., Iterable[Any]]) -> _Inputs:
    """Find the layout and every usable image; files that cannot be used are skipped."""
    layout, balanced_split, roots, skipped = _find_layout(in_dir)
    images: dict[str, dict[str, list[Path]]] = {split: {} for split in roots}
    candidates: list[tuple[str, str, Path]] = []  # split, class, file with an image extension
    for split, root in roots.items():
        for folder in sorted(root.iterdir()):
            if not folder.is_dir():
                skipped.append(SkippedFile(folder, "not inside a class folder"))
                continue
            images[split][folder.name] = []
            for path in sorted(folder.iterdir()):
                if path.is_dir():
                    skipped.append(SkippedFile(path, "sub-folder of a class folder (not searched)"))
                elif not has_image_extension(path):
                    skipped.append(SkippedFile(path, "not an image file (by its extension)"))
                else:
                    candidates.append((split, folder.name, path))
    reasons = parallel_map(_unusable_reason, [path for _, _, path in candidates],
                           [split == balanced_split for split, _, _ in candidates])
    for (split, name, path), reason in zip(candidates, reasons, strict=True):
        if reason:
            skipped.append(SkippedFile(path, reason))
        else:
            images[split][name].append(path.relative_to(in_dir))

    where = in_dir / balanced_split
    classes = images[balanced_split]
    if len(classes) < 2:
        raise BalanceInputError(f"{where} needs at least 2 class folders to balance; found "
                                f"{len(classes)} ({', '.join(classes) or 'none'}).")
    for name, files in classes.items():
        if not files:
            raise BalanceInputError(f"class folder {where / name} holds no readable images.")
    return _Inputs(layout, balanced_split, images, sorted(skipped, key=lambda s: s.path))


def _find_layout(in_dir: Path) -> tuple[str, str, dict[str, Path], list[SkippedFile]]:
    """Layout name, balanced split, split roots and skipped top-level entries."""
    entries = sorted(in_dir.iterdir())
    split_names = [e.name for e in entries if e.is_dir() and e.name in SPLITS]
    if not split_names:
        return "classes", "", {"": in_dir}, []
    if BALANCED_SPLIT not in split_names:
        raise BalanceInputError(f"{in_dir} has {'/, '.join(split_names)}/ but no "
                                f"{BALANCED_SPLIT}/ folder to balance.")
    skipped = [SkippedFile(e, f"not a {'/'.join(SPLITS)} folder") for e in entries
               if e.name not in split_names]
    roots = {name: in_dir / name for name in SPLITS if name in split_names}
    return "splits", BALANCED_SPLIT, roots, skipped


def _unusable_reason(path: Path, need_augmentable: bool) -> str | None:
    """Why ``path`` cannot be used (decoded in full, so truncated files are caught), or None."""
    try:
        mode = read_image(path).mode
    except UnreadableImageError as err:
        return str(err)
    if need_augmentable and mode not in BIT_DEPTH_BY_MODE:
        return (f"unsupported image mode {mode!r} (convert to "
                f"{', '.join(BIT_DEPTH_BY_MODE)} to augment it)")
    return None


def _plan_rows(in_dir: Path, out_dir: Path, inputs: _Inputs, synthesis: dict[str, int],
               seed: int) -> tuple[list[ManifestRow], list[_Job]]:
    """Manifest rows (t, gamma, sha256 still to fill) and jobs, in a fixed order."""
    rows, jobs = [], []
    split = inputs.balanced_split
    for class_index, (name, files) in enumerate(sorted(inputs.images[split].items())):
        names_taken = {path.name for path in files}
        for sample in plan_samples(seed, class_index, len(files), synthesis[name]):
            source = files[sample.source_index]
            target = source.with_name(f"syn_{source.stem}_{sample.k}.png")
            if target.name in names_taken:
                raise BalanceInputError(f"{in_dir / target} would be overwritten by a synthetic "
                                        "image of the same name; rename it.")
            rows.append(ManifestRow(target.as_posix(), source.as_posix(), name, split, -1, 0.0,
                                    sample.seed, ""))
            jobs.append(_Job(in_dir / source, out_dir / target, sample.seed))
    return rows, jobs


def _synthesize(settings: dict[str, Any], job: _Job) -> tuple[int, float, str]:
    """Write one synthetic image (eqs. 1 and 4) from its own seed; returns t, gamma, sha256."""
    augmentor = DiffusionAugmentor(**settings, seed=job.seed)
    image = read_image(job.source)
    draw = augmentor.sample_parameters(image)
    data = encode_png(augmentor.transform(image, **draw._asdict()))
    atomic_write_bytes(job.target, data)
    return draw.t, draw.gamma, sha256_hex(data)


def _run_record(in_dir: Path, inputs: _Inputs, counts: dict[str, dict[str, int]],
                synthesis: dict[str, int], ratio: Decimal, settings: dict[str, Any], seed: int,
                workers: int) -> dict[str, Any]:
    """Everything this run did and with what; JSON-normalised so it compares with a re-read."""
    record = {
        "command": "balance",
        "input": str(in_dir.resolve()),
        "options": {"ratio": str(ratio.normalize()), "betas": settings["schedule"].betas.tolist(),
                    "blur_sigma": settings["blur_sigma"], "brightness": settings["brightness"],
                    "seed": seed},
        "plan": {"layout": inputs.layout, "counts_before": counts, "synthesis": synthesis},
        "workers": workers,
        "versions": {name: version(name) for name in ("diffaug", "numpy", "scipy", "pillow")}
        | {"python": platform.python_version()},
    }
    return json.loads(json.dumps(record))


def _check_out_dir(out_dir: Path, record: dict[str, Any]) -> bool:
    """Whether OUT already holds this finished run; refuses an OUT holding anything else."""
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return False
    try:
        previous = json.loads((out_dir / RUN_RECORD_NAME).read_text())
    except (OSError, ValueError):
        previous = None
    if not isinstance(previous, dict):
        raise BalanceInputError(f"output folder {out_dir} is not empty; choose a new or empty "
                                "folder.")
    if any(previous.get(key) != record[key] for key in _IDENTITY_KEYS):
        raise BalanceInputError(f"output folder {out_dir} holds a diffaug run with other input "
                                "or options; choose a new or empty folder.")
    # Same run: finished if the manifest (written last) is there, else it is redone in place.
    return (out_dir / MANIFEST_NAME).is_file()
