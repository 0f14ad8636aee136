"""File helpers: atomic writes, image reading with real bit depth, manifest format.

Contract tests; the failure of a rename is simulated with monkeypatch.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat

import numpy as np
import pytest
from diffaug.io import (
    MANIFEST_COLUMNS,
    ManifestRow,
    UnreadableImageError,
    atomic_copy,
    atomic_write,
    atomic_write_bytes,
    encode_png,
    has_image_extension,
    read_image,
    read_manifest,
    sha256_file,
    sha256_hex,
    write_manifest,
)
from PIL import Image


def test_atomic_write_leaves_nothing_when_interrupted(tmp_path, monkeypatch):
    """Contract: if the final rename fails, neither the target nor a temporary file remains."""
    def failing_replace(source, target):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(tmp_path / "out.png", b"data")
    with pytest.raises(KeyboardInterrupt):
        atomic_copy(__file__, tmp_path / "copy.py")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_and_copy(tmp_path):
    """Contract: the bytes arrive whole, copies are byte-identical, digests agree with hashlib."""
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01" * 1000)
    atomic_copy(tmp_path / "a.bin", tmp_path / "b.bin")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01" * 1000
    assert sha256_file(tmp_path / "b.bin") == sha256_hex(b"\x00\x01" * 1000) == \
        hashlib.sha256(b"\x00\x01" * 1000).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin"]


def test_failure_while_writing_leaves_nothing(tmp_path):
    """Contract: an error inside the `atomic_write` block removes the temporary file and
    leaves an existing target as it was."""
    (tmp_path / "kept.bin").write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(tmp_path / "kept.bin") as handle:
        handle.write(b"half")
        raise RuntimeError("disk full")
    assert [p.name for p in tmp_path.iterdir()] == ["kept.bin"]
    assert (tmp_path / "kept.bin").read_bytes() == b"old"


@pytest.fixture
def umask_027():
    """Run under umask 027 (new files 0640), whatever the test runner's umask is."""
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def _permissions(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_respect_the_umask(tmp_path, umask_027):
    """Contract: a file written atomically gets the permissions `open(path, "xb")` gives a new
    file (0o666 less the umask), not the temporary file's private 0o600."""
    with open(tmp_path / "reference", "xb"):
        pass
    atomic_write_bytes(tmp_path / "a.bin", b"data")
    write_manifest(tmp_path / "m.csv", [])
    assert _permissions(tmp_path / "reference") == 0o640
    assert _permissions(tmp_path / "a.bin") == _permissions(tmp_path / "m.csv") == 0o640


@pytest.mark.parametrize("mode", [0o644, 0o600, 0o755, 0o444])
def test_copies_keep_the_source_permissions(tmp_path, umask_027, mode):
    """Contract: like `shutil.copy` (reference implementation), a copy keeps its source's
    permission bits, whatever the umask."""
    (tmp_path / "source").write_bytes(b"pixels")
    (tmp_path / "source").chmod(mode)
    atomic_copy(tmp_path / "source", tmp_path / "copy")
    shutil.copy(tmp_path / "source", tmp_path / "shutil-copy")
    assert _permissions(tmp_path / "copy") == _permissions(tmp_path / "shutil-copy") == mode
    assert (tmp_path / "copy").read_bytes() == b"pixels"


def test_sixteen_bit_png_round_trip(tmp_path):
    """Contract: a 16-bit grayscale PNG reads as I;16 and is written back as 16-bit."""
    values = np.arange(0, 65536, 257, dtype=np.uint16).reshape(16, 16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    image = read_image(tmp_path / "deep.png")
    assert image.mode == "I;16"
    (tmp_path / "again.png").write_bytes(encode_png(image))
    again = read_image(tmp_path / "again.png")
    assert again.mode == "I;16"
    np.testing.assert_array_equal(np.asarray(again), values)
    assert encode_png(image) == encode_png(again)  # same pixels, same bytes


@pytest.mark.parametrize("mode", ["I", "I;16B", "I;16L", "I;16N"])
def test_other_sixteen_bit_modes_are_written_as_sixteen_bit_png(mode):
    """Contract: 16-bit modes PNG cannot store as they are become 16-bit PNGs with the same
    values, read back as I;16 (the I;16 encoding is the reference)."""
    values = np.arange(0, 65536, 257, dtype=np.uint16).reshape(16, 16)
    dtype = np.asarray(Image.new(mode, (1, 1))).dtype
    image = Image.frombytes(mode, (16, 16), values.astype(dtype).tobytes())
    data = encode_png(image)
    assert data == encode_png(Image.fromarray(values))
    again = Image.open(io.BytesIO(data))
    assert again.mode == "I;16"
    np.testing.assert_array_equal(np.asarray(again), values)


def test_mode_i_beyond_sixteen_bits_is_not_encoded():
    """Contract: mode I values that do not fit 16 bits are an error, never wrapped around."""
    with pytest.raises(ValueError, match="do not fit 16 bits"):
        encode_png(Image.new("I", (2, 2), 70_000))


def test_truncated_png_is_unreadable(tmp_path):
    """Contract: a PNG cut in half fails at read time (decoded in full), not later."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableImageError, match="cannot read image"):
        read_image(tmp_path / "cut.png")


@pytest.mark.parametrize(("name", "is_image"), [("a.PNG", True), ("b.jpeg", True),
                                                ("c.TIFF", True), ("d.bmp", True),
                                                ("e.txt", False), ("f", False),
                                                ("g.png.bak", False)])
def test_image_extensions(tmp_path, name, is_image):
    """Contract: images are recognised by extension, case-insensitively."""
    assert has_image_extension(tmp_path / name) is is_image


def test_manifest_round_trip(tmp_path):
    """Contract: exact header, values read back equal (gamma to the last bit)."""
    rows = [ManifestRow("train/b/syn_x_0.png", "train/b/x.png", "b", "train", 3,
                        0.1 + 0.2, 4294967295, "ab" * 32),
            ManifestRow("b/syn_y,1_1.png", "b/y,1.png", "b", "", 0, 1.0, 0, "cd" * 32)]
    write_manifest(tmp_path / "m.csv", rows)
    assert (tmp_path / "m.csv").read_text().splitlines()[0] == ",".join(MANIFEST_COLUMNS)
    assert read_manifest(tmp_path / "m.csv") == rows


def test_read_manifest_rejects_other_csv(tmp_path):
    """Contract: a CSV with other columns is not taken for a manifest."""
    (tmp_path / "m.csv").write_text("path,class\na.png,b\n")
    with pytest.raises(ValueError, match="not a diffaug manifest"):
        read_manifest(tmp_path / "m.csv")
