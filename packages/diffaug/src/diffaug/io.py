"""Files: image reading, PNG encoding, atomic writes, sha256 and the manifest.

Every write goes to a temporary file in the target's folder and is renamed into place with
``os.replace``, so an interrupted run never leaves a half-written file under its final name.
Temporary names are short (``.tmp-<16 hex>``, :data:`TEMPORARY_NAME`) so that any file name the
file system accepts can be written, and errors name the target, never the temporary file.

The manifest is UTF-8 CSV (RFC 4180: ``\r\n`` line ends, a field holding a comma, a double
quote, ``\r`` or ``\n`` is double-quoted with its quotes doubled), so every file name the
file system allows round-trips exactly. Cells are never altered: a name starting with ``=``,
``+``, ``-`` or ``@`` is written as it is, with a :class:`SpreadsheetFormulaWarning`, because
a spreadsheet opening the file directly may run it as a formula.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import secrets
import shutil
import threading
import warnings
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
from PIL import Image

from diffaug.modes import SIXTEEN_BIT_MODES, bit_depth

#: File extensions `diffaug balance` reads as images (compared case-insensitively): diffaug's
#: own table; `diffaug fid` takes pytorch-fid's (`diffaug.fid.images`).
BALANCE_IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
MANIFEST_NAME = "diffaug-manifest.csv"
RUN_RECORD_NAME = "diffaug-run.json"
MANIFEST_COLUMNS = ("path", "source", "class", "split", "t", "gamma", "seed", "sha256")
_PNG_SIXTEEN_BIT_MODE = "I;16"
#: Temporary files of :func:`atomic_write`; also the longer names earlier versions used
#: (``.<target>.<16 hex>.tmp``), so that reruns clean up folders they left interrupted.
TEMPORARY_NAME = re.compile(r"\.tmp-[0-9a-f]{16}|\..+\.[0-9a-f]{16}\.tmp", re.DOTALL)
#: EXIF tag of the orientation in which viewers show an image.
EXIF_ORIENTATION = 0x0112
_UPRIGHT = 1
#: First characters that make a spreadsheet read a CSV cell as a formula (OWASP's list).
SPREADSHEET_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

# What Pillow raises for a file it cannot decode (truncated, corrupt, not an image, too big);
# its DecompressionBombWarning (over Image.MAX_IMAGE_PIXELS) is raised as an error too.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError,
                  Image.DecompressionBombWarning)
# warnings.catch_warnings swaps the process-wide filter list: one image opens at a time (the
# header only; decoding runs in parallel), so threads reading images never undo each other.
_OPEN_LOCK = threading.Lock()


class UnreadableImageError(ValueError):
    """A file with an image extension that Pillow cannot decode."""


class SpreadsheetFormulaWarning(UserWarning):
    """A manifest cell a spreadsheet would run as a formula if the CSV were opened directly."""


class ManifestRow(NamedTuple):
    """One synthetic image: paths are POSIX and relative to the output folder."""

    path: str
    source: str
    class_name: str
    split: str
    t: int
    gamma: float
    seed: int
    sha256: str


def has_image_extension(path: Path) -> bool:
    """Whether ``path`` names an image by its extension."""
    return path.suffix.lower() in BALANCE_IMAGE_EXTENSIONS


def printable_path(path: str | os.PathLike) -> str:
    """``path`` on one printable line, for messages: bytes that are not UTF-8 as ``\\xNN``,
    control characters (``\\r``, ``\\n``, ...) escaped."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
                   for char in text)


def read_image(path: Path) -> Image.Image:
    """Decode the whole image (not just its header), keeping its mode and bit depth.

    An image larger than Pillow's ``Image.MAX_IMAGE_PIXELS`` (its decompression-bomb limit) is
    unreadable, like one more than twice as large, instead of a warning Pillow prints itself.
    """
    try:
        with _open_refusing_bombs(path) as image:
            image.load()
            return image
    except _DECODE_ERRORS as err:
        raise UnreadableImageError(f"cannot read image: {err}") from None


def _open_refusing_bombs(path: Path) -> Image.Image:
    """``Image.open`` with its DecompressionBombWarning raised as an error."""
    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(path)


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation (1..8) viewers apply to ``image``; 1 (upright) when it has none."""
    orientation = image.getexif().get(EXIF_ORIENTATION, _UPRIGHT)
    return orientation if orientation in range(1, 9) else _UPRIGHT


# zlib settings of the PNGs diffaug writes. Synthetic images carry diffusion noise, which
# string matching barely finds repeats in; run-length matching only (zlib's Z_RLE, "almost as
# fast as Z_HUFFMAN_ONLY, but better compression for PNG image data") at level 1 gave 224 px
# synthetic-like images (smooth structure plus noise at several t) 0-21 % smaller than
# Pillow's default strategy at level 1, in 70-80 % of the encoding time, and no larger than
# Pillow's default level 6. Encoding is the largest single cost of
# `diffaug balance`.
PNG_COMPRESS_LEVEL = 1
PNG_COMPRESS_TYPE = zlib.Z_RLE


def encode_png(image: Image.Image, *, orientation: int = _UPRIGHT) -> bytes:
    """PNG bytes of ``image`` (16-bit grayscale stays 16-bit); the same image gives the same bytes.

    The other 16-bit modes (I, I;16B, I;16L, I;16N: PNG stores only some of them as they are)
    are written as I;16, the mode Pillow reads 16-bit PNGs back as; mode I must fit 16 bits
    (:func:`diffaug.modes.bit_depth`). An ``orientation`` other than 1 is written as the
    file's only EXIF tag, so viewers turn the image as they turn the source it came from.
    """
    if image.mode in SIXTEEN_BIT_MODES and image.mode != _PNG_SIXTEEN_BIT_MODE:
        bit_depth(image)
        image = Image.fromarray(np.asarray(image).astype(np.uint16))
    exif = Image.Exif()
    if orientation != _UPRIGHT:
        exif[EXIF_ORIENTATION] = orientation
    buffer = io.BytesIO()
    # compress_type: Pillow's PNG encoder passes it to zlib as the deflate strategy.
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL,
               compress_type=PNG_COMPRESS_TYPE, exif=exif)
    return buffer.getvalue()


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through: a temporary file in the same folder, renamed to
    ``path`` when the block ends and deleted if it raises.

    The temporary file is created like ``open(path, "xb")`` (mode 0o666 less the umask), not
    with ``tempfile``'s private 0o600, so the renamed file gets the permissions any new file
    would get. An ``OSError`` of the temporary file (or one naming no file: a failed write) is
    raised naming ``path``.
    """
    path = Path(path)
    temporary = path.with_name(f".tmp-{secrets.token_hex(8)}")
    try:
        with open(temporary, "xb") as handle:
            yield handle
        os.replace(temporary, path)
    except OSError as err:
        temporary.unlink(missing_ok=True)
        if err.errno is None or err.filename not in (None, str(temporary)):
            raise  # about another file (the source of a copy): its own name is the right one
        raise type(err)(err.errno, err.strerror, str(path)) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`atomic_write`)."""
    with atomic_write(path) as handle:
        handle.write(data)


def atomic_copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copy ``source`` byte for byte to ``target`` atomically, with the source's permission bits
    (``shutil.copymode``, as ``shutil.copy`` does)."""
    with open(source, "rb") as original, atomic_write(target) as handle:
        shutil.copyfileobj(original, handle)
        shutil.copymode(source, handle.name)


def write_manifest(path: Path, rows: Iterable[ManifestRow]) -> None:
    """Write the manifest CSV (header ``path,source,class,split,t,gamma,seed,sha256``).

    RFC 4180 quoting (the csv module's default dialect) keeps every name exact; warns with
    :class:`SpreadsheetFormulaWarning` when a cell starts like a spreadsheet formula.
    """
    rows = list(rows)
    text = io.StringIO()
    writer = csv.writer(text)  # "\r\n" line ends: only then does csv quote a "\r" in a name
    writer.writerow(MANIFEST_COLUMNS)
    for row in rows:
        writer.writerow([row.path, row.source, row.class_name, row.split, row.t, repr(row.gamma),
                         row.seed, row.sha256])
    atomic_write_bytes(path, text.getvalue().encode("utf-8"))
    _warn_of_formula_cells(path, rows)


def _warn_of_formula_cells(path: Path, rows: list[ManifestRow]) -> None:
    """Names are kept exact (qclassify matches them), so formula-like cells are only named."""
    cells = [cell for row in rows for cell in (row.path, row.source, row.class_name)
             if cell.startswith(SPREADSHEET_FORMULA_PREFIXES)]
    if cells:
        warnings.warn(
            f"{printable_path(path)}: {len(cells)} cells start like a spreadsheet formula (=, +, "
            f"-, @, tab or CR; first: {printable_path(cells[0])}); a spreadsheet opening this CSV "
            "directly may run them: import it as text instead.", SpreadsheetFormulaWarning,
            stacklevel=2)


def read_manifest(path: Path) -> list[ManifestRow]:
    """The rows of a manifest written by :func:`write_manifest`."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != MANIFEST_COLUMNS:
            raise ValueError(f"{path} is not a diffaug manifest: columns {reader.fieldnames}.")
        return [ManifestRow(row["path"], row["source"], row["class"], row["split"], int(row["t"]),
                            float(row["gamma"]), int(row["seed"]), row["sha256"])
                for row in reader]
