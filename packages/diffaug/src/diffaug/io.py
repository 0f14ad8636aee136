"""Files: image discovery and reading, PNG encoding, atomic writes, sha256 and the manifest.

Every write goes to a temporary file in the target's folder and is renamed into place with
``os.replace``, so an interrupted run never leaves a half-written file under its final name.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from PIL import Image

#: File extensions read as images (compared case-insensitively).
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
MANIFEST_NAME = "diffaug-manifest.csv"
MANIFEST_COLUMNS = ("path", "source", "class", "split", "t", "gamma", "seed", "sha256")

# What Pillow raises for a file it cannot decode (truncated, corrupt, not an image, too big).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class UnreadableImageError(ValueError):
    """A file with an image extension that Pillow cannot decode."""


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
    return path.suffix.lower() in IMAGE_EXTENSIONS


def read_image(path: Path) -> Image.Image:
    """Decode the whole image (not just its header), keeping its mode and bit depth."""
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except _DECODE_ERRORS as err:
        raise UnreadableImageError(f"cannot read image: {err}") from None


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes of ``image`` (16-bit grayscale stays 16-bit); the same image gives the same bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
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


def _temporary_beside(path: Path):
    return tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp",
                                       delete=False)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    with _temporary_beside(path) as handle:
        try:
            handle.write(data)
            handle.close()
            os.replace(handle.name, path)
        except BaseException:
            os.unlink(handle.name)
            raise


def atomic_copy(source: Path, target: Path) -> None:
    """Copy ``source`` byte for byte to ``target`` through a temporary file and a rename."""
    with _temporary_beside(target) as handle:
        try:
            with open(source, "rb") as original:
                shutil.copyfileobj(original, handle)
            handle.close()
            os.replace(handle.name, target)
        except BaseException:
            os.unlink(handle.name)
            raise


def write_manifest(path: Path, rows: Iterable[ManifestRow]) -> None:
    """Write the manifest CSV (header ``path,source,class,split,t,gamma,seed,sha256``)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for row in rows:
        writer.writerow([row.path, row.source, row.class_name, row.split, row.t, repr(row.gamma),
                         row.seed, row.sha256])
    atomic_write_bytes(path, text.getvalue().encode("utf-8"))


def read_manifest(path: Path) -> list[ManifestRow]:
    """The rows of a manifest written by :func:`write_manifest`."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != MANIFEST_COLUMNS:
            raise ValueError(f"{path} is not a diffaug manifest: columns {reader.fieldnames}.")
        return [ManifestRow(row["path"], row["source"], row["class"], row["split"], int(row["t"]),
                            float(row["gamma"]), int(row["seed"]), row["sha256"])
                for row in reader]
