"""The output folder of :func:`diffaug.balance_folder`: one run at a time, and what a rerun finds.

- **Lock**: a run holds ``fcntl.flock`` on the OUT folder itself (its directory descriptor)
  from its first look at OUT under the lock to its last write; a second run on the same OUT
  fails at once, naming OUT. Locking the folder rather than a lock file in it leaves OUT
  holding exactly the run's files, and no stale lock file can outlive a killed run (the
  kernel drops the lock with the process).
- **Which OUT is accepted**: a missing or empty folder, or one holding a run of the same
  command (same input, options and plan, :data:`IDENTITY_KEYS` of ``diffaug-run.json``); a run
  with other options is refused, never mixed in.
- **Links**: diffaug never writes a symbolic link and never writes through one: a link inside
  OUT (planted in an unfinished run, pointing anywhere) is refused.
- **Leftovers**: temporary files of our own pattern (an interrupted write) are removed; any
  other file or folder the run would not write is refused, never deleted (it may be someone's).
- **Verification**: a finished OUT is only "nothing to do" after every manifest row's file has
  its sha256 and every copy has its source's bytes. Otherwise the whole run is written again
  (the output is deterministic, so what was lost is regenerated exactly, and a changed input
  image is followed by its copy and every synthetic image drawn from it); the manifest is
  removed first, so an interrupted repair is never taken for a finished run.
"""

from __future__ import annotations

import fcntl
import filecmp
import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from diffaug.io import (
    MANIFEST_NAME,
    RUN_RECORD_NAME,
    TEMPORARY_NAME,
    ManifestRow,
    printable_path,
    read_manifest,
    sha256_file,
)
from diffaug.layout import BalanceInputError

__all__ = ["IDENTITY_KEYS", "OutputFolderBusyError", "changed_files", "check_output_folder",
           "clean_output_folder", "locked_output_folder", "mismatched_files", "planned_part",
           "run_record_bytes"]

IDENTITY_KEYS = ("command", "input", "options", "plan")  # what makes two runs "the same"


class OutputFolderBusyError(RuntimeError):
    """Another run holds the output folder's lock."""


@contextmanager
def locked_output_folder(out_dir: Path) -> Iterator[None]:
    """Create ``out_dir`` if needed and hold its lock for the block; raises
    :class:`OutputFolderBusyError` at once when another process holds it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY)  # flock needs no write access
    try:
        lock_or_refuse(descriptor, f"output folder {printable_path(out_dir)} is in use by "
                       "another diffaug balance run; wait for it to end or choose another folder.")
        yield
    finally:
        os.close(descriptor)  # releases the lock


def lock_or_refuse(descriptor: int, busy_message: str) -> None:
    """Take the exclusive lock of the open file `descriptor` (released when it is closed), or
    raise :class:`OutputFolderBusyError` with `busy_message` at once when another process
    holds it."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise OutputFolderBusyError(busy_message) from None


def check_output_folder(out_dir: Path, record: dict[str, Any]) -> bool:
    """Whether OUT holds this run finished (its manifest, written last, is there).

    Raises :class:`~diffaug.layout.BalanceInputError` for an OUT holding anything but this run.
    """
    if not out_dir.exists() or not any(not _is_temporary(entry.name)
                                       for entry in out_dir.iterdir()):
        return False
    try:
        previous = json.loads((out_dir / RUN_RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = None
    where = printable_path(out_dir)
    if not isinstance(previous, dict):
        raise BalanceInputError(f"output folder {where} is not empty; choose a new or empty "
                                "folder.")
    if any(previous.get(key) != record[key] for key in IDENTITY_KEYS):
        raise BalanceInputError(f"output folder {where} holds a diffaug run with other input "
                                "or options; choose a new or empty folder.")
    return (out_dir / MANIFEST_NAME).is_file()


def run_record_bytes(record: dict[str, Any]) -> bytes:
    """``diffaug-run.json`` as every run (and every shard of one) writes it."""
    return json.dumps(record, indent=2).encode()


def clean_output_folder(out_dir: Path, expected: set[Path], *,
                        remove_temporary: bool = True) -> None:
    """Remove our stale temporary files from OUT; refuse a symbolic link, or a file or folder
    the run would not write (``expected``: files and folders relative to OUT, their parent
    folders implied; dot-entries are ignored). Shards running in parallel pass
    ``remove_temporary=False``: a temporary file may be another shard's write in progress."""
    expected = expected | {parent for path in expected for parent in path.parents}
    for folder, subfolders, files in os.walk(out_dir):
        here = Path(folder)
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        for name in sorted(subfolders + files):
            entry = here / name
            if _is_temporary(name):
                if remove_temporary:
                    entry.unlink()
            elif name.startswith("."):
                continue
            elif entry.is_symlink():
                raise BalanceInputError(
                    f"output folder {printable_path(out_dir)} holds a symbolic link "
                    f"{printable_path(entry)}; diffaug never writes through links: remove it.")
            elif entry.relative_to(out_dir) not in expected:
                raise BalanceInputError(
                    f"output folder {printable_path(out_dir)} holds {printable_path(entry)}, "
                    "which this run does not write; remove it or choose a new folder.")


def mismatched_files(in_dir: Path, out_dir: Path, copies: list[Path], rows: list[ManifestRow],
                     parallel_map: Callable[..., Iterable[Any]]) -> list[Path]:
    """Files of a finished OUT (relative to it) that are missing or differ from what this run
    writes: manifest rows other than planned, synthetic files without their listed sha256,
    copies without their source's bytes."""
    try:
        listed = read_manifest(out_dir / MANIFEST_NAME)
    except (OSError, ValueError):  # UnicodeDecodeError and csv.Error included
        return [Path(MANIFEST_NAME)]
    if [planned_part(row) for row in listed] != [planned_part(row) for row in rows]:
        return [Path(MANIFEST_NAME)]
    return changed_files(in_dir, out_dir, copies, listed, parallel_map)


def changed_files(in_dir: Path, out_dir: Path, copies: list[Path], rows: list[ManifestRow],
                  parallel_map: Callable[..., Iterable[Any]]) -> list[Path]:
    """Files of OUT (relative to it) missing or changed: synthetic files of ``rows`` without
    their sha256, ``copies`` without their source's bytes."""
    synthetic = [Path(row.path) for row in rows]
    checks = parallel_map(_same_file, [in_dir / path for path in copies] + [None] * len(rows),
                          [out_dir / path for path in copies + synthetic],
                          [None] * len(copies) + [row.sha256 for row in rows])
    return [path for path, same in zip(copies + synthetic, checks, strict=True) if not same]


def _is_temporary(name: str) -> bool:
    """Temporary files of an interrupted run do not make an OUT "not empty"."""
    return TEMPORARY_NAME.fullmatch(name) is not None


def planned_part(row: ManifestRow) -> tuple[str, str, str, str, int]:
    """What the plan fixes before any image is drawn (t, gamma and sha256 come from writing)."""
    return row.path, row.source, row.class_name, row.split, row.seed


def _same_file(source: Path | None, target: Path, sha256: str | None) -> bool:
    """Whether ``target`` is a regular file with ``source``'s bytes, or with this sha256 (links
    in OUT were refused before: `clean_output_folder`)."""
    try:
        if not target.is_file():
            return False
        if source is None:
            return sha256_file(target) == sha256
        # Byte comparison, sizes first: no need to hash both files of a copy.
        return filecmp.cmp(source, target, shallow=False)
    except OSError:
        return False
