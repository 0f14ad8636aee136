"""Patient-group splits (qclassify.groups): no patient in two splits, class proportions kept,
split.csv's group column, synthetic images in their source's group, groups from DICOM
attributes, and runs that record (and are compared on) their groups."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from dicom_files import write_dicom
from PIL import Image
from qclassify.data import discover_dataset
from qclassify.groups import (
    DicomGroups,
    GroupsFile,
    check_groups_within_splits,
    dicom_attribute,
    split_by_groups,
)
from qclassify.options import OptionError
from qclassify.runfolder import RunFolder, read_split_csv

# Proportion tolerance: the minority share of each split may differ from the whole data's by
# this much (groups of up to 5 images make exact stratification impossible).
PROPORTION_TOLERANCE = 0.12
N_SEEDS = 50
TINY_SIZE = 32


def write_groups(path: Path, rows: list[tuple[str, str]],
                 header: tuple[str, ...] = ("path", "group")) -> Path:
    """A groups CSV file with `header` and `rows`."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def patient_groups(root: Path, per_patient: int = 2) -> list[tuple[str, str]]:
    """(path, group) for every image of a class-folder dataset: `per_patient` consecutive
    images of a class share one patient."""
    rows = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for i, image in enumerate(sorted(class_dir.glob("*.png"))):
            rows.append((image.relative_to(root).as_posix(), f"{class_dir.name}-p{i // per_patient}"))
    return rows


def random_dataset(rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Classes and groups of 40-80 patients with 1-5 images each, 30 % of them minority."""
    classes, groups = [], []
    for patient in range(rng.integers(40, 81)):
        label = "stenosis" if rng.random() < 0.3 else "normal"
        n = int(rng.integers(1, 6))
        classes += [label] * n
        groups += [f"p{patient}"] * n
    return classes, groups


def test_no_group_in_two_splits_and_class_proportions_kept():
    """Property over 50 seeds and random group sizes: every group lands in exactly one split,
    each split's share is near its fraction and its minority share near the whole data's."""
    rng = np.random.default_rng(2024)
    for seed in range(N_SEEDS):
        classes, groups = random_dataset(rng)
        splits = split_by_groups(classes, groups, seed=seed, val_fraction=0.15,
                                 test_fraction=0.15)
        splits_of_group: dict[str, set[str]] = {}
        for group, split in zip(groups, splits, strict=True):
            splits_of_group.setdefault(group, set()).add(split)
        assert all(len(s) == 1 for s in splits_of_group.values()), seed
        overall = classes.count("stenosis") / len(classes)
        for split in ("train", "val", "test"):
            members = [c for c, s in zip(classes, splits, strict=True) if s == split]
            assert 0.08 <= len(members) / len(classes) <= 0.8, (seed, split)
            minority = members.count("stenosis") / len(members)
            assert abs(minority - overall) <= PROPORTION_TOLERANCE, (seed, split, minority)


def test_group_split_is_seeded():
    """Same seed, same split; another seed, another split."""
    classes, groups = random_dataset(np.random.default_rng(0))
    first = split_by_groups(classes, groups, seed=3, val_fraction=0.15, test_fraction=0.15)
    again = split_by_groups(classes, groups, seed=3, val_fraction=0.15, test_fraction=0.15)
    other = split_by_groups(classes, groups, seed=4, val_fraction=0.15, test_fraction=0.15)
    assert first == again
    assert first != other


def test_too_few_groups_is_a_usage_error():
    """Four patients cannot fill the 7 folds of a 0.15 test fraction: one clear error."""
    with pytest.raises(OptionError, match="only 4 group"):
        split_by_groups(["a", "b"] * 4, ["p0", "p1", "p2", "p3"] * 2, seed=0,
                        val_fraction=0.15, test_fraction=0.15)


def test_discovered_samples_carry_their_group_and_split_csv_column(make_images, tmp_path):
    """Class folders with a groups file: whole patients per split, each sample's group; the
    run folder's split.csv gains a group column that reads back, and an old split.csv without
    it still reads (group "")."""
    data = make_images(tmp_path / "data", {"normal": 24, "stenosis": 16})
    groups = write_groups(tmp_path / "groups.csv", patient_groups(data))
    dataset = discover_dataset(data, groups=GroupsFile(groups))
    assert all(sample.group for sample in dataset.samples)
    assert len({(s.group, s.split) for s in dataset.samples}) == len(
        {s.group for s in dataset.samples})
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    folder.write_split(dataset.samples)
    with folder.split_file.open(encoding="utf-8") as handle:
        assert next(csv.reader(handle)) == ["path", "class", "split", "synthetic", "group"]
    assert folder.read_split() == list(dataset.samples)
    old = tmp_path / "old-split.csv"
    old.write_text("path,class,split\nnormal/a.png,normal,train\n", encoding="utf-8")
    assert read_split_csv(old)[0].group == ""
    plain = discover_dataset(data)
    folder.write_split(plain.samples)
    with folder.split_file.open(encoding="utf-8") as handle:
        assert "group" not in next(csv.reader(handle))


def test_synthetic_images_inherit_their_source_group(make_images, tmp_path):
    """A diffaug synthetic image gets its source's group (the groups file need not list it)
    and follows it into train."""
    data = make_images(tmp_path / "data", {"normal": 24, "stenosis": 16})
    rows = patient_groups(data)
    groups = write_groups(tmp_path / "groups.csv", rows)
    sources = [path for path, _ in rows if path.startswith("stenosis/")]
    manifest_rows = []
    for k, source in enumerate(sources):
        synthetic = f"stenosis/syn_{Path(source).stem}_{k}.png"
        (data / synthetic).write_bytes((data / source).read_bytes())
        manifest_rows.append((synthetic, source))
    write_groups(data / "diffaug-manifest.csv", manifest_rows, header=("path", "source"))
    dataset = discover_dataset(data, groups=GroupsFile(groups))
    by_path = {s.path: s for s in dataset.samples}
    synthetic = [s for s in dataset.samples if s.synthetic]
    assert synthetic
    for synthetic_path, source in manifest_rows:
        if synthetic_path in by_path:
            assert by_path[synthetic_path].group == by_path[source].group
            assert by_path[source].split == "train"


def test_split_folders_whose_groups_cross_are_refused(make_images, tmp_path):
    """Split folders holding one patient in train and test are refused, naming the patient
    and both splits; the same folders with disjoint patients are accepted as given."""
    data = make_images(tmp_path / "data", layout="split")
    images = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.png"))
    shared = {"test/normal/normal_000.png", "train/normal/normal_011.png"}
    leaking = [(path, "shared" if path in shared else path) for path in images]
    with pytest.raises(OptionError, match=r"group 'shared' has images in .*train.*test"):
        discover_dataset(data, groups=GroupsFile(write_groups(tmp_path / "g.csv", leaking)))
    disjoint = [(path, path.split("/")[0] + "-patient") for path in images]
    dataset = discover_dataset(data, groups=GroupsFile(write_groups(tmp_path / "ok.csv",
                                                                    disjoint)))
    assert Counter(s.split for s in dataset.samples) == Counter(p.split("/")[0] for p in images)


def test_check_groups_within_splits_names_the_count():
    """Several crossing groups: the first is named, the count given."""
    split_of = {"a": "train", "b": "test", "c": "val", "d": "test"}
    with pytest.raises(OptionError, match=r"'p1' has images in train and test .*2 group"):
        check_groups_within_splits(Path("data"), split_of,
                                   {"a": "p1", "b": "p1", "c": "p2", "d": "p2"})


def test_group_by_reads_the_dicom_attribute(tmp_path):
    """--group-by PatientID: each DICOM's PatientID is its group, read without pixel data."""
    paths = {f"normal/{i}.dcm": f"PAT{i // 2}" for i in range(4)}
    for relative, patient in paths.items():
        write_dicom(tmp_path / relative, patient_id=patient)
    assert DicomGroups("PatientID").groups_of(tmp_path, list(paths), set(paths)) == paths
    assert DicomGroups("PatientID").record() == {"group_by": "PatientID"}


def test_group_by_refuses_missing_attribute_unknown_keyword_and_non_dicom(tmp_path):
    """An image without PatientID, a keyword DICOM does not define and a PNG each give one
    error naming the file or the keyword."""
    no_patient = write_dicom(tmp_path / "a.dcm", patient_id=None)
    with pytest.raises(OptionError, match=r"a\.dcm has no PatientID"):
        dicom_attribute(no_patient, "PatientID")
    with pytest.raises(OptionError, match="'PatientName2' is not a DICOM attribute keyword"):
        dicom_attribute(no_patient, "PatientName2")
    png = tmp_path / "normal_000.png"
    Image.new("L", (4, 4)).save(png)
    with pytest.raises(ValueError, match=r"cannot read PatientID from .*normal_000\.png"):
        dicom_attribute(png, "PatientID")


def test_group_by_without_pydicom_names_the_extra(tmp_path, monkeypatch):
    """Without pydicom, --group-by fails with one line naming qclassify[dicom]."""
    monkeypatch.setitem(__import__("sys").modules, "pydicom", None)
    with pytest.raises(ImportError, match=r"pip install 'qclassify\[dicom\]'"):
        dicom_attribute(tmp_path / "a.dcm", "PatientID")


@pytest.fixture
def grouped_run(make_images, tmp_path):
    """(run folder, data, groups file, config) of a 1-epoch fit with --groups at 32 px."""
    pytest.importorskip("torch")
    from qclassify.config import TrainConfig
    from qclassify.train import fit

    base = tmp_path
    data = make_images(base / "data", {"normal": 24, "stenosis": 16})
    groups = write_groups(base / "groups.csv", patient_groups(data))
    config = TrainConfig(model="mobilenet_v2", epochs=1, batch_size=8, image_size=TINY_SIZE,
                         weights="none", device="cpu", groups=str(groups))
    fit(data, base / "run", config, progress=False)
    return base / "run", data, groups, config


def test_fit_records_groups_and_reuse_compares_them(grouped_run):
    """config.json records the groups file and its sha256; split.csv has the groups; a run is
    reused only with the same groups: not without them, not after the file's content changed."""
    from dataclasses import replace

    from qclassify.config import run_is_complete

    run, data, groups, config = grouped_run
    info = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert info["options"]["groups"] == str(groups)
    assert info["groups"]["groups"] == str(groups.resolve()) and info["groups"]["sha256"]
    split = read_split_csv(run / "split.csv")
    assert all(sample.group for sample in split)
    assert run_is_complete(run, config, data)
    assert not run_is_complete(run, replace(config, groups=None), data)
    write_groups(groups, patient_groups(data, per_patient=3))  # same file, other content
    assert not run_is_complete(run, config, data)
