"""Sharded ``diffaug balance``: the K-th of N disjoint parts of a run, on machines sharing OUT.

- **Split**: shard K (1 <= K <= N) copies the originals ``i`` and synthesises the jobs ``j``
  (one job: every synthetic image of one source) with ``i, j ≡ K − 1 (mod N)``, in the plan's
  fixed order. Round robin needs no file sizes and spreads every class (and so every image
  size) over all shards; a job holds one to a few images, so shards differ by a few images.
- **Correctness without locks**: shards write disjoint files, each through a temporary file
  and a rename, and every shard writes the same run record (identical bytes). A shard ends by
  writing its record ``OUT/.diffaug-shards/K-of-N.json`` (the run record, a fingerprint of IN,
  its copies and its manifest rows), last, so a record means "this part is complete".
- **Locks** only make mistakes fail early: each shard holds ``flock`` on its own lock file
  ``.diffaug-shards/K-of-N.lock`` (the same shard started twice fails at once; shards never wait
  for each other), and ``--finish`` holds every shard's lock. ``flock`` is unreliable on some
  NFS setups; nothing above depends on it.
- **Finish** checks every part (all N records, one run record and fingerprint, every listed
  file with its sha256, every copy with its source's bytes), writes the run record and the
  manifest exactly as a one-machine run does, then removes ``.diffaug-shards``: OUT is then
  byte for byte the OUT of ``diffaug balance`` without ``--shard``. From then on OUT is an
  ordinary finished run: a shard or finish started again verifies it (and repairs it) as a
  rerun without shards does, under that run's lock (:mod:`diffaug.outfolder`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from diffaug.io import (
    MANIFEST_NAME,
    RUN_RECORD_NAME,
    ManifestRow,
    atomic_write_bytes,
    printable_path,
    write_manifest,
)
from diffaug.layout import BalanceInputError
from diffaug.outfolder import (
    changed_files,
    clean_output_folder,
    lock_or_refuse,
    planned_part,
    run_record_bytes,
)
from diffaug.schedule import NoiseSchedule

__all__ = ["SHARDS_FOLDER", "ShardPart", "ShardedRun", "ShardsIncompleteError", "check_shard",
           "finish_run", "parse_shard", "recorded_options", "shard_items", "write_shard"]

SHARDS_FOLDER = ".diffaug-shards"  # a dot-folder: readers of OUT and the run's checks skip it
_RECORD_NAME = re.compile(r"([1-9][0-9]*)-of-([1-9][0-9]*)\.json")

Item = TypeVar("Item")


class ShardsIncompleteError(RuntimeError):
    """``--finish`` found shards not (or not correctly) finished."""


@dataclass(frozen=True)
class ShardPart:
    """The part of a run one shard writes: paths relative to OUT, ``rows`` as manifest indices."""

    index: int  # K, from 1
    count: int  # N
    copies: tuple[Path, ...]
    rows: tuple[int, ...]
    n_sources: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class ShardedRun:
    """What the shards of a planned run check and write: the run record, every planned
    manifest row (t, gamma, sha256 still to fill), every copy and every file and folder of the
    finished run (paths relative to IN and OUT), and the run's parallel ``map``."""

    in_dir: Path
    out_dir: Path
    record: dict[str, Any]
    rows: list[ManifestRow]
    copies: list[Path]
    expected: set[Path]
    parallel_map: Callable[..., Iterable[Any]]


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` as ``(K, N)``; raises ValueError unless 1 <= K <= N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None or not 1 <= int(match[1]) <= int(match[2]):
        raise ValueError(f"{text!r} is not K/N with 1 <= K <= N (e.g. 2/8: the second of "
                         "eight parts).")
    return int(match[1]), int(match[2])


def check_shard(shard: Any) -> tuple[int, int]:
    """``shard`` as ``(K, N)`` with 1 <= K <= N, else a ValueError."""
    pair = tuple(shard) if isinstance(shard, (tuple, list)) else ()
    if len(pair) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) for n in pair) \
            or not 1 <= pair[0] <= pair[1]:
        raise ValueError(f"shard must be (K, N) with 1 <= K <= N, as in --shard 2/8; "
                         f"got {shard!r}.")
    return pair[0], pair[1]


def shard_items(items: Sequence[Item], shard: tuple[int, int]) -> list[Item]:
    """Shard K's items of N: those at indices K − 1, K − 1 + N, K − 1 + 2N, ..."""
    return list(items[shard[0] - 1::shard[1]])


def write_shard(run: ShardedRun, part: ShardPart,
                write_part: Callable[[], list[ManifestRow]]) -> bool:
    """Write shard ``part`` with ``write_part`` (its files; returns the manifest rows, its
    own filled in), then its record; or return True, writing nothing, when its record is
    there and every file of the part is still as written (a rerun of a finished shard).

    The run record goes first (every shard writes the same bytes): OUT is then recognised as
    this run's by the other shards, whatever the order they start in. A rerun after a kill
    removes the shard's record and writes its part again (the output is deterministic).
    """
    fingerprint = _input_fingerprint(run)
    run.out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run.out_dir / RUN_RECORD_NAME, run_record_bytes(run.record))
    with _locked_shards(run.out_dir, [(part.index, part.count)]):
        records = _read_records(run.out_dir)
        _check_records(run, records, part.count, fingerprint)
        clean_output_folder(run.out_dir, run.expected, remove_temporary=False)
        own = records.get((part.index, part.count))
        if own is not None and _part_verified(run, part, own):
            return True
        _record_path(run.out_dir, part.index, part.count).unlink(missing_ok=True)
        rows = write_part()
        record = {"shard": [part.index, part.count], "run": run.record,
                  "fingerprint": fingerprint, "copies": [path.as_posix() for path in part.copies],
                  "rows": [[index, *rows[index]] for index in part.rows]}
        atomic_write_bytes(_record_path(run.out_dir, part.index, part.count),
                           json.dumps(record, indent=1).encode())
    return False


def finish_run(run: ShardedRun) -> int:
    """Check every shard's part and write the run record and manifest as one run does, then
    remove the shard records; returns N.

    Every shard's lock is held meanwhile, so no shard of the run starts writing. Raises
    :class:`ShardsIncompleteError` naming missing shards or a missing or changed file (and
    the shard to run again), :class:`~diffaug.layout.BalanceInputError` for shards of another
    run; nothing is written then.
    """
    fingerprint = _input_fingerprint(run)
    count, _, _ = _finished_parts(run, fingerprint)  # before any lock file is created
    with _locked_shards(run.out_dir, [(index, count) for index in range(1, count + 1)]):
        count, rows, owners = _finished_parts(run, fingerprint)  # again, under the locks
        clean_output_folder(run.out_dir, run.expected)  # no shard runs: temporaries are stale
        changed = changed_files(run.in_dir, run.out_dir, run.copies, rows, run.parallel_map)
        if changed:
            owner = owners.get(changed[0].as_posix(), "that wrote it")
            raise ShardsIncompleteError(
                f"{printable_path(run.out_dir / changed[0])} is missing or changed "
                f"({len(changed)} files in all); run shard {owner} again, then finish.")
        atomic_write_bytes(run.out_dir / RUN_RECORD_NAME, run_record_bytes(run.record))
        write_manifest(run.out_dir / MANIFEST_NAME, rows)
        shutil.rmtree(run.out_dir / SHARDS_FOLDER)  # the manifest now holds what they recorded
    return count


def recorded_options(out_dir: Path) -> dict[str, Any]:
    """The options of the run whose shards wrote OUT (its run record), as
    :func:`diffaug.balance_folder` keyword arguments."""
    try:
        run = json.loads((out_dir / RUN_RECORD_NAME).read_text(encoding="utf-8"))
        options = run["options"]
        return {"ratio": Decimal(options["ratio"]),
                "schedule": NoiseSchedule(options["betas"]),
                "blur_sigma": options["blur_sigma"],
                "brightness": tuple(options["brightness"]), "seed": options["seed"]}
    except (OSError, ValueError, TypeError, KeyError, ArithmeticError):
        raise ShardsIncompleteError(
            f"{printable_path(out_dir)} holds no diffaug run to finish (no readable "
            f"{RUN_RECORD_NAME}); run diffaug balance with --shard K/N first.") from None


def _input_fingerprint(run: ShardedRun) -> str:
    """sha256 of what the plan rests on: every copied file with its size, every planned row.

    Shards may run hours apart: a file added, removed or resized in IN between them changes
    it. Contents are not hashed (every shard would read all of IN); finishing compares each
    copy with its source instead.
    """
    listing = [[path.as_posix(), (run.in_dir / path).stat().st_size] for path in run.copies]
    planned = [planned_part(row) for row in run.rows]
    return hashlib.sha256(json.dumps([listing, planned]).encode()).hexdigest()


@contextmanager
def _locked_shards(out_dir: Path, shards: Iterable[tuple[int, int]]) -> Iterator[None]:
    """Hold the lock file of each shard for the block; raises :class:`OutputFolderBusyError`
    at once, naming the shard, when another process holds one."""
    folder = out_dir / SHARDS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        for index, count in shards:
            descriptor = os.open(folder / f"{index}-of-{count}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            stack.callback(os.close, descriptor)  # closing releases the lock
            lock_or_refuse(descriptor, f"shard {index}/{count} of {printable_path(out_dir)} is "
                           "running in another process; wait for it to end.")
        yield


def _record_path(out_dir: Path, index: int, count: int) -> Path:
    """Where shard K of N records its completion."""
    return out_dir / SHARDS_FOLDER / f"{index}-of-{count}.json"


def _read_records(out_dir: Path) -> dict[tuple[int, int], dict[str, Any]]:
    """Every shard record in OUT by ``(K, N)``, its ``rows`` as ``{index: ManifestRow}``; one
    that is not a shard record is refused, naming it."""
    folder = out_dir / SHARDS_FOLDER
    records = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else ():
        match = _RECORD_NAME.fullmatch(path.name)
        if match is not None:
            shard = int(match[1]), int(match[2])
            records[shard] = _read_record(path, shard)
    return records


def _read_record(path: Path, shard: tuple[int, int]) -> dict[str, Any]:
    """One shard record, checked: its shard, copies and rows."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record["shard"] != list(shard) or not all(isinstance(copy, str)
                                                     for copy in record["copies"]):
            raise ValueError(path)
        rows = {entry[0]: ManifestRow(*entry[1:]) for entry in record["rows"]}
        if len(rows) != len(record["rows"]):
            raise ValueError(path)  # a row listed twice
        record["rows"] = rows
        return record
    except (OSError, ValueError, TypeError, KeyError, IndexError):
        raise BalanceInputError(f"{printable_path(path)} is not a diffaug shard record; remove "
                                "it and run that shard again.") from None


def _check_records(run: ShardedRun, records: dict[tuple[int, int], dict[str, Any]],
                   count: int, fingerprint: str) -> None:
    """Refuse records of another split of the work, or of another run (options, input,
    versions) or state of IN: parts of different runs never make one OUT."""
    for (index, other_count), record in records.items():
        name = printable_path(_record_path(run.out_dir, index, other_count))
        if other_count != count:
            raise BalanceInputError(f"{name}: OUT holds shards of a split into {other_count}; "
                                    f"use --shard K/{other_count}, or a new output folder.")
        if record.get("run") != run.record:
            raise BalanceInputError(f"{name}: shard {index}/{count} ran with other options, "
                                    "input or package versions; run every shard with the same "
                                    "command and environment, or use a new output folder.")
        if record.get("fingerprint") != fingerprint:
            raise BalanceInputError(f"{name}: the input folder changed after shard "
                                    f"{index}/{count} ran (files added, removed or resized); "
                                    "run that shard again.")


def _part_verified(run: ShardedRun, part: ShardPart, record: dict[str, Any]) -> bool:
    """Whether a shard's record lists exactly its part, every file still as written."""
    listed = record["rows"]
    return sorted(listed) == sorted(part.rows) \
        and record["copies"] == [path.as_posix() for path in part.copies] \
        and not changed_files(run.in_dir, run.out_dir, list(part.copies), list(listed.values()),
                              run.parallel_map)


def _finished_parts(run: ShardedRun,
                    fingerprint: str) -> tuple[int, list[ManifestRow], dict[str, str]]:
    """N, the manifest rows and each file's shard (:func:`_merged_rows`), once every shard's
    record is there and of this run."""
    records = _read_records(run.out_dir)
    count = _shard_count(run.out_dir, records)
    _check_records(run, records, count, fingerprint)
    _require_every_shard(run.out_dir, records, count)
    return count, *_merged_rows(run.out_dir, records, run.rows)


def _shard_count(out_dir: Path, records: dict[tuple[int, int], dict[str, Any]]) -> int:
    """N of the shard records (another N is refused by :func:`_check_records`)."""
    if not records:
        raise ShardsIncompleteError(
            f"no shard has finished in {printable_path(out_dir)} (no records in "
            f"{SHARDS_FOLDER}/); run diffaug balance with --shard K/N first.")
    return next(iter(records))[1]


def _require_every_shard(out_dir: Path, records: dict[tuple[int, int], dict[str, Any]],
                         count: int) -> None:
    """Raise :class:`ShardsIncompleteError` naming the shards 1 … N without a record."""
    missing = [f"{index}/{count}" for index in range(1, count + 1) if (index, count) not in records]
    if missing:
        raise ShardsIncompleteError(
            f"shards {', '.join(missing)} have not finished in {printable_path(out_dir)}; run "
            "them (the same command with --shard), then finish again.")


def _merged_rows(out_dir: Path, records: dict[tuple[int, int], dict[str, Any]],
                 rows: list[ManifestRow]) -> tuple[list[ManifestRow], dict[str, str]]:
    """The manifest (``rows`` as the records fill them in) and which shard wrote each file
    (path relative to OUT -> ``"K/N"``); refuses records that do not list each planned row
    exactly once."""
    done: dict[int, ManifestRow] = {}
    owners = {}
    for (index, count), record in records.items():
        listed = record["rows"]
        if any(row in done or not 0 <= row < len(rows)
               or planned_part(listed[row]) != planned_part(rows[row]) for row in listed):
            raise BalanceInputError(
                f"{printable_path(_record_path(out_dir, index, count))} lists synthetic images "
                "other than its part of the plan; remove it and run that shard again.")
        done |= listed
        owners |= dict.fromkeys([*record["copies"], *(row.path for row in listed.values())],
                                f"{index}/{count}")
    if len(done) != len(rows):
        raise ShardsIncompleteError(f"the shard records in {printable_path(out_dir)} list "
                                    f"{len(done)} of the {len(rows)} synthetic images planned; "
                                    "run the shards again.")
    return [done[index] for index in range(len(rows))], owners
