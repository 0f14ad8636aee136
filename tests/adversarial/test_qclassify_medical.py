"""Adversarial tests of DICOM/NIfTI inputs to ``qclassify``: a missing extra (with or without
diffaug installed), damaged files, a frames/split leak. Each test reproduces one failure and
checks the promise it broke: one line naming the fix or the file, no run folder written.

Kinds: CLI through click's CliRunner over tiny folders generated in tmp_path. The DICOM files
here are written without pydicom (a hand-made preamble), so the missing-extra tests also run
in the isolated qclassify session, where neither diffaug nor pydicom is installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402
from dicom_files import write_dicom  # noqa: E402
from qclassify.cli import main  # noqa: E402

TINY = ["--epochs", "1", "--batch-size", "4", "--image-size", "32", "--weights", "none",
        "--device", "cpu", "--quiet"]
RUNTIME_ERROR = 1


def _fake_dicom_folder(root: Path) -> Path:
    """Class folders of files that look like DICOM (preamble + DICM) but hold nothing more."""
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for index in range(4):
            (root / name / f"{name}{index}.dcm").write_bytes(b"\0" * 128 + b"DICM")
    return root


def _one_line(result) -> str:
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.mark.parametrize("blocked", ["diffaug", "pydicom"])
def test_fit_without_the_extra_names_it(tmp_path, monkeypatch, blocked):
    """Failure: a DICOM class folder gave "no images found". Now, whether diffaug's reader or
    pydicom is missing, one line names `pip install 'qclassify[dicom]'`, exit 1, no run."""
    monkeypatch.setitem(sys.modules, blocked, None)
    if blocked == "diffaug":
        monkeypatch.setitem(sys.modules, "diffaug.medical", None)
    data = _fake_dicom_folder(tmp_path / "data")
    result = CliRunner().invoke(main, ["fit", str(data), "--out", str(tmp_path / "run"), *TINY])
    line = _one_line(result)
    assert result.exit_code == RUNTIME_ERROR
    assert "pip install 'qclassify[dicom]'" in line and ".dcm" in line
    assert not (tmp_path / "run").exists()


def test_damaged_dicom_is_skipped_by_name(tmp_path):
    """Failure mode: files that only look like DICOM. Each is named as unreadable; with none
    left, the run is refused in one line and no run folder is written."""
    pytest.importorskip("pydicom")
    pytest.importorskip("diffaug.medical")
    data = _fake_dicom_folder(tmp_path / "data")
    result = CliRunner().invoke(main, ["fit", str(data), "--out", str(tmp_path / "run"), *TINY])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "a0.dcm" in result.stderr and "unreadable" in result.stderr
    assert not (tmp_path / "run").exists()


def test_predict_rejects_a_missing_frame(tmp_path):
    """Failure mode: a split.csv naming frame 7 of a 1-frame file: the error names the frame,
    not an IndexError traceback."""
    pytest.importorskip("diffaug.medical")
    import numpy as np
    from qclassify.images import read_image

    path = write_dicom(tmp_path / "x.dcm", np.zeros((2, 8, 8), np.uint16))
    with pytest.raises(ValueError, match=r"x\.dcm.*frame 7 does not exist"):
        read_image(path, frame=7)
