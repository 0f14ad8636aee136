"""The files of a run folder (DESIGN.md) and writing them atomically.

Every file is written to a temporary name in the same folder and renamed into place, so a run
folder never holds a half-written file, whatever happens during training. `atomic_write` is
the package's one way of writing a file (the figures of `qclassify.report` use it too), so
this module imports torch only inside the functions that need it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = [
    "CONFIG_FILE",
    "CONFUSION_MATRIX_FILE",
    "HISTORY_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "PREDICTIONS_FILE",
    "ROC_FILE",
    "RUN_FILES",
    "SPLIT_FILE",
    "atomic_write",
    "check_separate",
    "read_json",
    "read_torch",
    "write_csv",
    "write_json",
    "write_torch",
]

CONFIG_FILE = "config.json"
SPLIT_FILE = "split.csv"
MODEL_FILE = "model.pt"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"
ROC_FILE = "roc.png"
RUN_FILES = (
    CONFIG_FILE,
    SPLIT_FILE,
    MODEL_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    CONFUSION_MATRIX_FILE,
    ROC_FILE,
)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(binary_file)`` on a temporary file beside `path`, then rename it to `path`."""
    path = Path(path)
    # Not tempfile.mkstemp: its files are private (0600); this one gets the usual permissions.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with temporary.open("xb") as file:
            write(file)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, data: Mapping[str, Any]) -> Path:
    """Pretty, key-ordered-as-given JSON with a final newline."""
    text = json.dumps(data, indent=2, allow_nan=True) + "\n"
    return atomic_write(path, lambda file: file.write(text.encode("utf-8")))


def read_json(path: str | Path) -> dict[str, Any]:
    """Parse a JSON object file written by `write_json`.

    Raises:
        ValueError: the file is unreadable, not UTF-8 JSON, or not an object, naming it.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError: ValueErrors
        raise ValueError(f"cannot read {path}: {' '.join(str(err).split())}") from err
    if not isinstance(data, dict):
        raise ValueError(f"cannot read {path}: it holds no JSON object")
    return data


def check_separate(out_dir: str | Path, data_dir: str | Path, *, option: str = "--out") -> None:
    """Refuse an output folder inside a data folder, or a data folder inside it.

    Symlinks are resolved first, so a link cannot smuggle one into the other: the data is only
    ever read, and files written among the images would be trained and tested on next time.

    Raises:
        ValueError: the two folders overlap, naming both.
    """
    out_real, data_real = Path(out_dir).resolve(), Path(data_dir).resolve()
    if out_real == data_real or data_real in out_real.parents:
        raise ValueError(f"{option} {out_dir} is inside the data folder {data_dir}; choose a "
                         "folder outside it (the data is never written to)")
    if out_real in data_real.parents:
        raise ValueError(f"the data folder {data_dir} is inside {option} {out_dir}; choose a "
                         "folder that does not contain the data")


def write_csv(
    path: str | Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]
) -> Path:
    """A CSV file with a header row and one line per row (``\\n`` line endings)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write(path, lambda file: file.write(buffer.getvalue().encode("utf-8")))


def write_torch(path: str | Path, obj: Any) -> Path:
    """`torch.save` of `obj`, atomically."""
    import torch

    return atomic_write(path, lambda file: torch.save(obj, file))


def read_torch(path: str | Path) -> Any:
    """`torch.load` (tensors and plain containers only) onto the CPU.

    Raises:
        ValueError: the file is unreadable or not a torch file, naming it.
    """
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged file surfaces as any of a dozen unpickling errors
        raise ValueError(f"cannot read {path}: {' '.join(str(err).split())}") from err
