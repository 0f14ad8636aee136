"""Adversarial tests of DICOM/NIfTI inputs to ``diffaug balance`` and ``diffaug fid``: a missing
extra, damaged files, transfer syntaxes without a decoder. Each test reproduces one failure and
checks the promise it broke: one line naming the file or the fix, nothing written, IN unchanged.

Kinds: CLI through click's CliRunner over tiny folders generated in tmp_path. Torch-free;
pydicom is needed only to write the test files (skipped without it).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from dicom_files import write_dicom
from diffaug.cli import main
from diffaug.io import UnreadableImageError

USAGE_ERROR, RUNTIME_ERROR = 2, 1


def _dicom_classes(root: Path, counts=(("a", 4), ("b", 2))) -> Path:
    for name, count in counts:
        (root / name).mkdir(parents=True)
        for index in range(count):
            pixels = np.full((8, 8), 100 * (index + 1), np.uint16)
            write_dicom(root / name / f"{name}{index}.dcm", pixels)
    return root


def _fake_dicom_classes(root: Path) -> Path:
    """Files that look like DICOM (preamble + DICM) without pydicom: enough to be detected."""
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for index in range(4):
            (root / name / f"{name}{index}.dcm").write_bytes(b"\0" * 128 + b"DICM")
    return root


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _one_line(result) -> str:
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


def test_balance_without_the_extra_names_it(tmp_path, monkeypatch):
    """Failure: without pydicom a DICOM folder was "no readable images". Now one line names
    `pip install 'diffaug[dicom]'`, exit 1, OUT not created, IN unchanged."""
    data = _fake_dicom_classes(tmp_path / "in")
    before = _tree_digest(data)
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom raises ImportError
    result = CliRunner().invoke(main, ["balance", str(data), str(tmp_path / "out"),
                                       "--ratio", "1", "--quiet"])
    line = _one_line(result)
    assert result.exit_code == RUNTIME_ERROR
    assert "pip install 'diffaug[dicom]'" in line and "a0.dcm" in line
    assert not (tmp_path / "out").exists() and _tree_digest(data) == before


def test_fid_without_the_extra_names_it(tmp_path, monkeypatch):
    """Failure: `diffaug fid` on DICOM folders said "no images". Now the missing reader is
    named before anything is computed."""
    from diffaug.fid.images import list_images

    data = _fake_dicom_classes(tmp_path / "in")
    assert [p.name for p in list_images(data / "a")] == ["a0.dcm", "a1.dcm", "a2.dcm", "a3.dcm"]
    monkeypatch.setitem(sys.modules, "pydicom", None)
    from diffaug.medical import MedicalExtraMissingError, read_unit

    with pytest.raises(MedicalExtraMissingError, match=r"pip install 'diffaug\[dicom\]'"):
        read_unit(data / "a" / "a0.dcm")


def test_damaged_dicom_is_skipped_by_name(tmp_path):
    """Failure mode: a truncated .dcm file. It is reported by name and skipped; the run
    succeeds on the readable files, IN unchanged."""
    data = _dicom_classes(tmp_path / "in", counts=(("a", 4), ("b", 3)))
    good = (data / "b" / "b2.dcm").read_bytes()
    (data / "b" / "b2.dcm").write_bytes(good[: len(good) // 2])
    (data / "b" / "junk.dcm").write_bytes(b"not a dicom file")
    before = _tree_digest(data)
    result = CliRunner().invoke(main, ["balance", str(data), str(tmp_path / "out"),
                                       "--ratio", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "skipped" in result.stderr and "junk.dcm" in result.stderr
    assert "b2.dcm" in result.stderr
    assert not (tmp_path / "out" / "b" / "junk.dcm").exists()
    assert _tree_digest(data) == before


def test_unsupported_transfer_syntax_names_the_plugin(tmp_path):
    """Failure mode: pixel data compressed with a syntax no installed handler decodes (or no
    handler exists for). One line; for a known syntax pydicom's plugin list is kept."""
    pytest.importorskip("pydicom")
    from diffaug.medical import read_unit

    pixels = np.zeros((8, 8), np.uint16)
    unknown = write_dicom(tmp_path / "u.dcm", pixels, transfer_syntax="1.2.3.4")
    with pytest.raises(UnreadableImageError) as caught:
        read_unit(unknown)
    assert "\n" not in str(caught.value) and "1.2.3.4" in str(caught.value)
    jpeg_ls = write_dicom(tmp_path / "ls.dcm", pixels,
                           transfer_syntax="1.2.840.10008.1.2.4.80")  # JPEG-LS lossless
    try:
        read_unit(jpeg_ls)
    except UnreadableImageError as err:
        assert "\n" not in str(err) and ("install one of" in str(err) or "JPEG" in str(err))
    else:  # a JPEG-LS decoder is installed and decoded the fake stream: nothing to check
        pytest.skip("a JPEG-LS pixel handler is installed")


def test_balance_refuses_a_class_of_only_undecodable_dicoms(tmp_path):
    """Failure mode: every file of a class has an unsupported transfer syntax: one line
    (exit 2) naming the class folder; nothing written."""
    data = _dicom_classes(tmp_path / "in", counts=(("a", 3),))
    (data / "b").mkdir()
    write_dicom(data / "b" / "x.dcm", np.zeros((8, 8), np.uint16), transfer_syntax="1.2.3.4")
    result = CliRunner().invoke(main, ["balance", str(data), str(tmp_path / "out"),
                                       "--ratio", "1", "--quiet"])
    assert result.exit_code == USAGE_ERROR
    assert "Traceback" not in result.output and "b" in result.stderr
    assert not (tmp_path / "out").exists()
