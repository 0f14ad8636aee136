"""diffaug balance's patient check on split folders (diffaug.groups), torch-free: a warning
names the patients found in more than one split; groups come from a CSV file or a DICOM
attribute (pydicom only where the test needs it)."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from dicom_files import write_dicom
from diffaug import balance_folder
from diffaug.cli import main
from diffaug.groups import NAMED_AT_MOST, DicomGroups, GroupsFile, dicom_attribute
from PIL import Image

COUNTS = {"train": {"normal": 6, "stenosis": 3}, "val": {"normal": 2, "stenosis": 1},
          "test": {"normal": 2, "stenosis": 1}}


def split_folders(root: Path) -> list[str]:
    """Tiny split-folder dataset; returns its image paths relative to `root`."""
    rng = np.random.default_rng(0)
    paths = []
    for split, classes in COUNTS.items():
        for name, count in classes.items():
            for i in range(count):
                path = root / split / name / f"{split}_{name}_{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(path)
                paths.append(path.relative_to(root).as_posix())
    return paths


def write_groups(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("path", "group"))
        writer.writerows(rows)
    return path


def leaking_rows(paths: list[str], patients: int = 1) -> list[tuple[str, str]]:
    """Every image its own patient, except that patient k has a train image and a held-out
    one (test images first, then val)."""
    train = [p for p in paths if p.startswith("train/")]
    held_out = sorted((p for p in paths if not p.startswith("train/")),
                      key=lambda p: not p.startswith("test/"))
    shared = {image: f"PAT-{k}" for k in range(patients) for image in (train[k], held_out[k])}
    return [(path, shared.get(path, path)) for path in paths]


def test_balance_warns_naming_the_patient_in_two_splits(tmp_path):
    """The CLI prints one warning naming the patient and its splits, and balances as usual."""
    data = tmp_path / "in"
    groups = write_groups(tmp_path / "groups.csv", leaking_rows(split_folders(data)))
    result = CliRunner().invoke(main, ["balance", str(data), str(tmp_path / "out"), "--ratio",
                                       "1", "--groups", str(groups), "--quiet"])
    assert result.exit_code == 0, result.output
    warning = [line for line in result.stderr.splitlines() if "more than one split" in line]
    assert len(warning) == 1 and "'PAT-0' (train/test)" in warning[0]
    assert (tmp_path / "out" / "diffaug-manifest.csv").is_file()


def test_warning_names_the_first_few_and_counts_the_rest(tmp_path):
    """More crossing patients than NAMED_AT_MOST: the first ones are named, the rest counted."""
    data = tmp_path / "in"
    rows = leaking_rows(split_folders(data), patients=NAMED_AT_MOST + 1)
    with pytest.warns(UserWarning, match=rf"{NAMED_AT_MOST + 1} patient group\(s\).* and 1 more"):
        balance_folder(data, tmp_path / "out", ratio=1, dry_run=True,
                       groups=GroupsFile.read(write_groups(tmp_path / "g.csv", rows)))


def test_no_warning_when_patients_stay_in_one_split(tmp_path):
    """Disjoint patients (or class folders, which have no splits) give no warning."""
    data = tmp_path / "in"
    paths = split_folders(data)
    groups = GroupsFile.read(write_groups(tmp_path / "g.csv", [(p, p) for p in paths]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        balance_folder(data, tmp_path / "out", ratio=1, dry_run=True, groups=groups)


def test_images_without_a_group_are_counted_in_a_warning(tmp_path):
    """The check is advisory: images the file does not list are left out, and said so."""
    data = tmp_path / "in"
    paths = split_folders(data)
    groups = GroupsFile.read(write_groups(tmp_path / "g.csv", [(p, p) for p in paths[1:]]))
    with pytest.warns(UserWarning, match=rf"1 image\(s\) have no group \(first: {paths[0]}"):
        balance_folder(data, tmp_path / "out", ratio=1, dry_run=True, groups=groups)


def test_group_by_reads_patient_id_and_the_check_names_it(tmp_path):
    """--group-by PatientID on DICOM files: the attribute is each image's group, and a patient
    in train and test is named (images as InputFolder.images lists them)."""
    images = {"train": {"a": [Path("train/a/1.dcm"), Path("train/a/2.dcm")]},
              "test": {"a": [Path("test/a/3.dcm")]}}
    for path, patient in zip(("train/a/1.dcm", "train/a/2.dcm", "test/a/3.dcm"),
                             ("P1", "P2", "P1"), strict=True):
        write_dicom(tmp_path / path, patient_id=patient)
    from diffaug.groups import warn_groups_crossing_splits

    with pytest.warns(UserWarning, match=r"'P1' \(train/test\)"):
        warn_groups_crossing_splits(tmp_path, images, DicomGroups("PatientID"))


def test_dicom_attribute_none_for_missing_value_or_non_dicom(tmp_path):
    """No PatientID, or not a DICOM file at all: no group (left out of the advisory check)."""
    assert dicom_attribute(write_dicom(tmp_path / "a.dcm", patient_id=None), "PatientID") is None
    png = tmp_path / "b.png"
    Image.new("L", (4, 4)).save(png)
    assert dicom_attribute(png, "PatientID") is None
    assert dicom_attribute(write_dicom(tmp_path / "c.dcm", patient_id="P9"), "PatientID") == "P9"
