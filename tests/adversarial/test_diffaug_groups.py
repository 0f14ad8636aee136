"""Adversarial checks of `diffaug balance --groups/--group-by` (torch-free): a groups file that
cannot say who each patient is, contradicting options and a missing pydicom must stop the run
with one line before OUT exists, and IN must stay untouched.

Each test reproduces one failure that would otherwise give a traceback, a silent pass over a
leaking split, or a half-made OUT. Every file is generated in tmp_path.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from diffaug.cli import main
from PIL import Image


def split_folders(root: Path) -> list[str]:
    """Three images per class in train, one in val and test; returns their paths."""
    rng = np.random.default_rng(1)
    paths = []
    for split, count in (("train", 3), ("val", 1), ("test", 1)):
        for name in ("normal", "stenosis"):
            for i in range(count):
                path = root / split / name / f"{name}_{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(path)
                paths.append(path.relative_to(root).as_posix())
    return paths


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def write_csv(path: Path, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def balance(tmp_path: Path, *options: str):
    """Run `diffaug balance IN OUT --ratio 1 OPTIONS`; asserts IN is left as it was."""
    data = tmp_path / "in"
    before = tree(data)
    result = CliRunner().invoke(main, ["balance", str(data), str(tmp_path / "out"), "--ratio",
                                       "1", "--quiet", *options])
    assert tree(data) == before
    return result


def assert_one_line_error(result, exit_code: int, *fragments: str) -> None:
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.mark.parametrize(("header", "rows", "fragments"), [
    pytest.param(("path", "patient"), [], ("missing column(s) group",), id="missing-column"),
    pytest.param(("path", "group"), [("train/normal/normal_0.png", "A"),
                                     ("train/normal/normal_0.png", "B")],
                 ("two groups", "'A' and 'B'"), id="duplicate-path-two-groups"),
])
def test_broken_groups_file_is_one_line_and_writes_nothing(tmp_path, header, rows, fragments):
    """A groups file without its columns, or giving one image two patients, cannot back a
    patient check: one usage-error line naming the file, OUT never created."""
    split_folders(tmp_path / "in")
    groups = write_csv(tmp_path / "groups.csv", header, rows)
    result = balance(tmp_path, "--groups", str(groups))
    assert_one_line_error(result, 2, "groups.csv", *fragments)
    assert not (tmp_path / "out").exists()


def test_groups_with_group_by_is_refused(tmp_path):
    """--groups and --group-by together: refused before any work."""
    paths = split_folders(tmp_path / "in")
    groups = write_csv(tmp_path / "groups.csv", ("path", "group"), [(p, p) for p in paths])
    result = balance(tmp_path, "--groups", str(groups), "--group-by", "PatientID")
    assert_one_line_error(result, 2, "--groups", "--group-by")
    assert not (tmp_path / "out").exists()


def test_group_by_without_pydicom_names_the_extra(tmp_path, monkeypatch):
    """--group-by without pydicom installed: one line naming diffaug[dicom], no traceback."""
    split_folders(tmp_path / "in")
    monkeypatch.setitem(sys.modules, "pydicom", None)
    result = balance(tmp_path, "--group-by", "PatientID")
    assert_one_line_error(result, 1, "pip install 'diffaug[dicom]'")
    assert not (tmp_path / "out").exists()


def test_group_by_unknown_keyword_is_a_usage_error(tmp_path):
    """A misspelt keyword would make every image ungrouped and the check pass silently."""
    pytest.importorskip("pydicom")
    split_folders(tmp_path / "in")
    result = balance(tmp_path, "--group-by", "PatientIdentifier")
    assert_one_line_error(result, 2, "'PatientIdentifier' is not a DICOM attribute keyword")
    assert not (tmp_path / "out").exists()
