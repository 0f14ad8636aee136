"""Adversarial checks of qclassify's patient groups (--groups / --group-by): groups files that
would silently leak a patient across splits, split folders that already leak, and groups that
change under a reused or resumed run.

Each test reproduces one way a patient could end up in train and test (or a traceback instead
of one line) and fails without the group logic. Every file is generated in tmp_path; nothing
trains longer than one epoch at 32 px.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

torch = pytest.importorskip("torch")
from qclassify.cli import main  # noqa: E402
from qclassify.config import TrainConfig  # noqa: E402
from qclassify.options import OptionError  # noqa: E402
from qclassify.train import fit  # noqa: E402

TINY = {"epochs": 2, "batch_size": 4, "image_size": 32, "weights": "none", "device": "cpu"}
TINY_OPTIONS = ["--epochs", "1", "--batch-size", "4", "--image-size", "32", "--weights", "none",
                "--device", "cpu", "--quiet"]
COUNTS = {"normal": 16, "stenosis": 12}


def make_dataset(root: Path, layout: str = "classes") -> tuple[Path, list[str]]:
    """Tiny PNGs in class folders (or split folders: index 0-1 test, 2-3 val, rest train);
    returns the folder and the image paths relative to it."""
    rng = np.random.default_rng(0)
    paths = []
    for label, count in COUNTS.items():
        for i in range(count):
            split = "test" if i < 2 else "val" if i < 4 else "train"
            relative = f"{label}/{label}_{i:02d}.png"
            if layout == "splits":
                relative = f"{split}/{relative}"
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(root / relative)
            paths.append(relative)
    return root, paths


def write_groups(path: Path, rows: list[tuple[str, ...]],
                 header: tuple[str, ...] = ("path", "group")) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def two_per_patient(paths: list[str]) -> list[tuple[str, str]]:
    return [(path, f"p{i // 2}") for i, path in enumerate(paths)]


def assert_one_line_error(result, exit_code: int, *needles: str) -> None:
    """The CLI failed with `exit_code`, one ``Error:`` line naming `needles`, no traceback."""
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.mark.parametrize(("rows", "header", "needles"), [
    pytest.param(None, ("path", "patient"), ("missing column(s) group",), id="missing-column"),
    pytest.param([("normal/ghost.png", "p0")], None, ("'normal/ghost.png' is not an image",),
                 id="path-not-in-dataset"),
    pytest.param("drop-first", None, ("gives no group to", "normal_00.png"),
                 id="image-without-group"),
    pytest.param([("normal/normal_00.png", "p0"), ("normal/normal_00.png", "p1")], None,
                 ("two groups", "'p0' and 'p1'"), id="duplicate-path-two-groups"),
    pytest.param([("normal/normal_00.png", "")], None, ("gives no group to",),
                 id="empty-group"),
])
def test_bad_groups_file_is_one_line_and_writes_nothing(tmp_path, rows, header, needles):
    """Each broken groups file (that would otherwise leave a patient unassigned or assigned
    twice) stops `fit` with one usage-error line naming the file, before --out exists."""
    data, paths = make_dataset(tmp_path / "data")
    good = two_per_patient(paths)
    if rows is None:
        rows = good
    elif rows == "drop-first":
        rows = good[1:]
    else:
        rows = rows + [row for row in good if row[0] != rows[0][0]]
    groups = write_groups(tmp_path / "groups.csv", rows, header or ("path", "group"))
    result = CliRunner().invoke(main, ["fit", str(data), "--out", str(tmp_path / "run"),
                                       "--groups", str(groups), *TINY_OPTIONS])
    assert_one_line_error(result, 2, str(groups), *needles)
    assert not (tmp_path / "run").exists()


def test_groups_and_group_by_together_are_refused(tmp_path):
    """--groups and --group-by give two answers to one question: refused, nothing written."""
    data, paths = make_dataset(tmp_path / "data")
    groups = write_groups(tmp_path / "groups.csv", two_per_patient(paths))
    result = CliRunner().invoke(main, ["fit", str(data), "--out", str(tmp_path / "run"),
                                       "--groups", str(groups), "--group-by", "PatientID",
                                       *TINY_OPTIONS])
    assert_one_line_error(result, 2, "--groups", "--group-by")
    assert not (tmp_path / "run").exists()


def test_group_by_on_non_dicom_images_is_one_line(tmp_path):
    """--group-by PatientID on PNGs (which have no DICOM attributes) fails with one line
    naming the first image, not a pydicom traceback; nothing is written."""
    pytest.importorskip("pydicom")
    data, _ = make_dataset(tmp_path / "data")
    result = CliRunner().invoke(main, ["fit", str(data), "--out", str(tmp_path / "run"),
                                       "--group-by", "PatientID", *TINY_OPTIONS])
    assert_one_line_error(result, 1, "PatientID", "normal_00.png")
    assert not (tmp_path / "run").exists()


def test_split_folders_leaking_a_patient_are_refused_by_compare(tmp_path):
    """Split folders given with a patient in both train and test: `compare` refuses before
    training, naming the patient and the splits."""
    data, paths = make_dataset(tmp_path / "data", layout="splits")
    rows = [(path, "leaky" if path in ("test/normal/normal_00.png",
                                       "train/normal/normal_10.png") else path)
            for path in paths]
    groups = write_groups(tmp_path / "groups.csv", rows)
    result = CliRunner().invoke(main, ["compare", str(data), "--models", "mobilenet_v2",
                                       "--out", str(tmp_path / "report"), "--groups",
                                       str(groups), *TINY_OPTIONS])
    assert_one_line_error(result, 2, "group 'leaky'", "train and test")
    assert not (tmp_path / "report").exists()


def test_resume_refuses_a_changed_groups_file(tmp_path):
    """A groups file edited between the interruption and --resume would train the rest of the
    run on another split: refused as other options or data."""
    data, paths = make_dataset(tmp_path / "data")
    groups = write_groups(tmp_path / "groups.csv", two_per_patient(paths))
    config = TrainConfig(**TINY, groups=str(groups))

    class Interrupt(Exception):
        pass

    def stop(record):
        raise Interrupt

    with pytest.raises(Interrupt):
        fit(data, tmp_path / "run", config, progress=False, on_epoch=stop)
    write_groups(groups, [(path, f"q{i // 3}") for i, path in enumerate(paths)])
    with pytest.raises(OptionError, match="other options or data"):
        fit(data, tmp_path / "run", config, progress=False, resume=True)


def test_fit_with_groups_keeps_each_patient_in_one_split(tmp_path):
    """End to end: `fit --groups` writes a split.csv whose group column puts each patient in
    one split, and config.json records the groups file."""
    data, paths = make_dataset(tmp_path / "data")
    groups = write_groups(tmp_path / "groups.csv", two_per_patient(paths))
    result = CliRunner().invoke(main, ["fit", str(data), "--out", str(tmp_path / "run"),
                                       "--groups", str(groups), "--model", "mobilenet_v2",
                                       *TINY_OPTIONS])
    assert result.exit_code == 0, result.output
    with (tmp_path / "run" / "split.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    splits_of = {}
    for row in rows:
        splits_of.setdefault(row["group"], set()).add(row["split"])
    assert len(splits_of) == len(paths) // 2
    assert all(len(splits) == 1 for splits in splits_of.values())
    assert str(groups.resolve()) in (tmp_path / "run" / "config.json").read_text("utf-8")
