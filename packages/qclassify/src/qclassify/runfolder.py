"""The run folder (DESIGN.md): `RunFolder` owns its file names and every reader and writer
of its files, and every file is written atomically.

Every file is written to a temporary name in the same folder and renamed into place, so a run
folder never holds a half-written file, whatever happens during training. `atomic_write` is
the package's one way of writing a file (the figures of `qclassify.figures` use it too), so
this module imports torch (and `qclassify.data`) only inside the methods that need them.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = [
    "CACHE_FOLDER",
    "CONFIG_FILE",
    "CONFUSION_MATRIX_FILE",
    "GROUP_COLUMN",
    "ENSEMBLE_KEY",
    "HISTORY_FILE",
    "MEMBER_PREFIX",
    "METRICS_FILE",
    "MODEL_FILE",
    "PREDICTIONS_FILE",
    "ROC_FILE",
    "RUN_FILES",
    "SPLIT_FILE",
    "TRAINING_STATE_FILE",
    "RunFolder",
    "SPLIT_COLUMNS",
    "Sample",
    "atomic_write",
    "check_separate",
    "checkpoint_settings",
    "member_name",
    "read_csv_rows",
    "read_json",
    "read_split_csv",
    "split_row",
    "read_torch",
    "sha256_of_file",
    "write_csv",
    "write_json",
    "write_torch",
]

CONFIG_FILE = "config.json"
# What can be derived again from the run's files (exports, checkpoint settings), keyed by the
# sha256 of what it was derived from; a dot-folder: never listed as data, never a run file.
CACHE_FOLDER = ".cache"
# model.pt's entries but its weights, kept in CACHE_FOLDER as this file per model.pt hash.
_SETTINGS_NAME = "checkpoint-{digest}.json"
SPLIT_FILE = "split.csv"
MODEL_FILE = "model.pt"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"
ROC_FILE = "roc.png"
# Everything `fit --resume` needs to continue after the last finished epoch (torchvision's
# reference-script layout); removed once model.pt is written.
TRAINING_STATE_FILE = "training-state.pt"
# A seed ensemble (`fit --seeds`) keeps one complete run folder per seed, ``seed-<k>/``, and
# records its seeds under this key of its own config.json.
MEMBER_PREFIX = "seed-"
ENSEMBLE_KEY = "ensemble"
# split.csv: every image of the dataset with its class, split and whether it is synthetic;
# GROUP_COLUMN follows when the split was made by patient groups (older files lack it).
SPLIT_COLUMNS = ("path", "class", "split", "synthetic")
# ...and, only when some sample is one frame of a multi-frame file (``--frames all``), which.
FRAME_COLUMN = "frame"
GROUP_COLUMN = "group"
_HASH_CHUNK = 2**20
# Hex digits of a sha256 that name a cached file: 64 bits, no collision among one run's models.
_KEY_CHARS = 16
RUN_FILES = (
    CONFIG_FILE,
    SPLIT_FILE,
    MODEL_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    CONFUSION_MATRIX_FILE,
    ROC_FILE,
    TRAINING_STATE_FILE,
)


@dataclass(frozen=True)
class Sample:
    """One image: `path` is POSIX and relative to the dataset root; `frame` is the frame of a
    multi-frame DICOM/NIfTI file that is this sample (None: the whole file, or its middle
    frame); `group` is its patient group ("" when the split was not made by groups)."""

    path: str
    class_name: str
    split: str
    synthetic: bool = False
    frame: int | None = None
    group: str = ""


def member_name(seed: int) -> str:
    """The folder name of an ensemble's member trained with `seed` (``seed-<k>``)."""
    return f"{MEMBER_PREFIX}{seed}"


def split_row(sample: Sample) -> dict[str, str]:
    """One ``split.csv`` row (`SPLIT_COLUMNS`, then `FRAME_COLUMN` and `GROUP_COLUMN` when the
    sample has them)."""
    row = {"path": sample.path, "class": sample.class_name, "split": sample.split,
           "synthetic": str(int(sample.synthetic))}
    if sample.frame is not None:
        row[FRAME_COLUMN] = str(sample.frame)
    if sample.group:
        row[GROUP_COLUMN] = sample.group
    return row


def read_split_csv(path: str | Path) -> list[Sample]:
    """The samples of a ``split.csv`` (``synthetic`` defaults to 0 when absent, ``frame`` to
    None when absent or empty, ``group`` to "" when absent).

    Raises:
        ValueError: unreadable, or a required column missing, naming the file.
    """
    rows = read_csv_rows(path)
    missing = {"path", "class", "split"} - set(rows[0] if rows else SPLIT_COLUMNS)
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    try:
        return [Sample(row["path"], row["class"], row["split"], row.get("synthetic", "0") == "1",
                       frame=int(row[FRAME_COLUMN]) if row.get(FRAME_COLUMN) else None,
                       group=row.get(GROUP_COLUMN) or "")
                for row in rows]
    except ValueError as err:
        raise ValueError(f"{path}: a {FRAME_COLUMN} is not a frame number ({err})") from None


@dataclass(frozen=True)
class RunFolder:
    """A run folder of `qclassify fit`: where each of its files is, and how each is read and
    written (atomically). Readers raise ValueError naming the file."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def split_file(self) -> Path:
        return self.path / SPLIT_FILE

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def history_file(self) -> Path:
        return self.path / HISTORY_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def predictions_file(self) -> Path:
        return self.path / PREDICTIONS_FILE

    @property
    def confusion_matrix_file(self) -> Path:
        return self.path / CONFUSION_MATRIX_FILE

    @property
    def roc_file(self) -> Path:
        return self.path / ROC_FILE

    @property
    def training_state_file(self) -> Path:
        return self.path / TRAINING_STATE_FILE

    def is_trained(self) -> bool:
        """Whether `fit` finished here: config, history and model (written last) exist."""
        return all(path.is_file() for path in (self.config_file, self.history_file,
                                               self.model_file))

    def is_ensemble(self) -> bool:
        """Whether ``config.json`` describes a seed ensemble (`fit --seeds`); False without a
        readable one."""
        try:
            return ENSEMBLE_KEY in self.read_config()
        except ValueError:
            return False

    def member(self, seed: int) -> RunFolder:
        """The run folder of the ensemble member trained with `seed`."""
        return RunFolder(self.path / member_name(seed))

    def ensemble_seeds(self) -> list[int]:
        """The seeds that ``config.json`` records for the ensemble.

        Raises:
            ValueError: the folder is not an ensemble or its record is damaged, naming the file.
        """
        ensemble = self.read_config().get(ENSEMBLE_KEY)
        seeds = ensemble.get("seeds") if isinstance(ensemble, dict) else None
        if not (isinstance(seeds, list) and seeds
                and all(type(seed) is int and seed >= 0 for seed in seeds)):
            raise ValueError(f"{self.config_file} describes no seed ensemble (no list of seeds "
                             "under \"ensemble\")")
        return seeds

    def members(self) -> list[RunFolder]:
        """The members that ``config.json`` lists, in its order (`ensemble_seeds`)."""
        return [self.member(seed) for seed in self.ensemble_seeds()]

    def is_finished_ensemble(self) -> bool:
        """Whether a seed ensemble is finished: its final config.json (marked complete, written
        after the last member) and every member's `is_trained`.

        Raises:
            ValueError: a damaged ensemble record (`ensemble_seeds`).
        """
        if not self.is_ensemble():
            return False
        members = self.members()
        return (self.read_config()[ENSEMBLE_KEY].get("complete") is True
                and all(member.is_trained() for member in members))

    def member_folders(self) -> list[Path]:
        """Every ``seed-<k>`` folder present, listed in config.json or not."""
        return sorted(path for path in self.path.glob(f"{MEMBER_PREFIX}*") if path.is_dir())

    def existing_files(self) -> list[str]:
        """The names of `RUN_FILES` present in the folder."""
        return [name for name in RUN_FILES if (self.path / name).exists()]

    def read_config(self) -> dict[str, Any]:
        """``config.json``; an empty dict when the folder has none (older or foreign folders)."""
        return read_json(self.config_file) if self.config_file.is_file() else {}

    def write_config(self, info: Mapping[str, Any]) -> Path:
        return write_json(self.config_file, info)

    def read_split(self) -> list[Sample]:
        """The samples of ``split.csv``."""
        return read_split_csv(self.split_file)

    def write_split(self, samples: Iterable[Sample]) -> Path:
        samples = list(samples)
        framed = any(sample.frame is not None for sample in samples)
        grouped = any(sample.group for sample in samples)
        columns = (*SPLIT_COLUMNS, *((FRAME_COLUMN,) if framed else ()),
                   *((GROUP_COLUMN,) if grouped else ()))
        return write_csv(self.split_file, columns, map(split_row, samples))

    def read_history(self) -> list[dict[str, float]]:
        """``history.csv``: one dict of floats per epoch; empty when there is no file."""
        if not self.history_file.is_file():
            return []
        return [{key: float(value) for key, value in row.items()}
                for row in read_csv_rows(self.history_file)]

    def write_history(self, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> Path:
        return write_csv(self.history_file, columns, rows)

    def read_checkpoint(self) -> Any:
        return read_torch(self.model_file)

    def model_key(self) -> str:
        """What ``.cache/`` files derived from this run's model are named by: the first hex
        digits of model.pt's sha256 or, for a seed ensemble, of the sha256 of its members'
        (in seed order). A retrained model.pt gets a new key, so nothing stale is ever read."""
        if self.model_file.is_file():
            digest = sha256_of_file(self.model_file)
        else:
            members = "".join(sha256_of_file(member.model_file) for member in self.members())
            digest = hashlib.sha256(members.encode("ascii")).hexdigest()
        return digest[:_KEY_CHARS]

    def read_checkpoint_settings(self) -> dict[str, Any]:
        """model.pt's entries but its ``state_dict`` (`checkpoint_settings`; empty when
        model.pt holds no dict): what describes the model without building it.

        Unpickling the whole checkpoint costs tens of milliseconds (a MobileNetV2's 300
        tensors), more than decoding a hundred small images, so the entries are kept in
        ``.cache/`` as JSON, named by `model_key`, and read from there while model.pt is
        unchanged. A folder that cannot be written just reads model.pt every time.

        Raises:
            ValueError: model.pt is unreadable or not a torch file, naming it.
        """
        memo = self.path / CACHE_FOLDER / _SETTINGS_NAME.format(digest=self.model_key())
        if memo.is_file():
            with contextlib.suppress(ValueError):  # a damaged memo: read model.pt again
                return read_json(memo)
        checkpoint = self.read_checkpoint()
        if not isinstance(checkpoint, dict):
            return {}
        settings = checkpoint_settings(checkpoint)
        # OSError: a read-only folder; TypeError/ValueError: an entry JSON cannot hold.
        with contextlib.suppress(OSError, TypeError, ValueError):
            memo.parent.mkdir(exist_ok=True)
            write_json(memo, settings)
        return settings

    def write_checkpoint(self, checkpoint: Mapping[str, Any]) -> Path:
        return write_torch(self.model_file, checkpoint)

    def read_training_state(self) -> Any:
        return read_torch(self.training_state_file)

    def write_training_state(self, state: Mapping[str, Any]) -> Path:
        return write_torch(self.training_state_file, state)

    def read_metrics(self) -> dict[str, Any]:
        return read_json(self.metrics_file)

    def write_metrics(self, metrics: Mapping[str, Any]) -> Path:
        return write_json(self.metrics_file, metrics)

    def read_predictions(self) -> list[dict[str, str]]:
        """``predictions.csv`` rows (``path,true_class,predicted_class,p_<class>...``)."""
        return read_csv_rows(self.predictions_file)

    def write_predictions(self, columns: Sequence[str],
                          rows: Iterable[Mapping[str, Any]]) -> Path:
        return write_csv(self.predictions_file, columns, rows)


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


def checkpoint_settings(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a model.pt checkpoint's entries but its weights (``state_dict``)."""
    return {key: value for key, value in checkpoint.items() if key != "state_dict"}


def sha256_of_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks.

    Raises:
        ValueError: the file cannot be read, naming it.
    """
    digest = hashlib.sha256()
    try:
        with Path(path).open("rb") as file:
            for chunk in iter(lambda: file.read(_HASH_CHUNK), b""):
                digest.update(chunk)
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror}") from err
    return digest.hexdigest()


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


def read_csv_rows(path: str | Path) -> list[dict[str, str]]:
    """The rows of a CSV file written by `write_csv`, as dicts of strings.

    Raises:
        ValueError: the file is unreadable or not UTF-8, naming it.
    """
    try:
        with Path(path).open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {path}: {' '.join(str(err).split())}") from err


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
