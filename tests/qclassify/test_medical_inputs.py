"""qclassify on DICOM/NIfTI class folders: discovery, frames, windows, a tiny fit/evaluate/predict.

The reader is diffaug's (`diffaug.medical`); these tests check what qclassify adds: samples per
frame kept in one split, split.csv's frame column, options recorded and reused.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pydicom")  # the files are written with it
nibabel = pytest.importorskip("nibabel")

from click.testing import CliRunner  # noqa: E402
from dicom_files import CT_RESCALE, FULL_12_BIT_WINDOW, write_dicom  # noqa: E402
from qclassify import medical as qmedical  # noqa: E402
from qclassify.cli import main  # noqa: E402
from qclassify.data import discover_dataset, group_of  # noqa: E402
from qclassify.images import list_images, read_image  # noqa: E402
from qclassify.options import FRAME_CHOICES  # noqa: E402
from qclassify.runfolder import read_split_csv  # noqa: E402

TINY = ["--epochs", "1", "--batch-size", "4", "--image-size", "32", "--weights", "none",
        "--device", "cpu", "--quiet"]
ATOL = 1e-6


def dicom_folder(root: Path, *, frames: int = 1, counts=(("a", 6), ("b", 6))) -> Path:
    """Class folders of DICOM files whose brightness depends on the class (learnable)."""
    rng = np.random.default_rng(0)
    for class_index, (name, count) in enumerate(counts):
        (root / name).mkdir(parents=True)
        for index in range(count):
            shape = (frames, 32, 32) if frames > 1 else (32, 32)
            level = 1000 + 2000 * class_index
            pixels = np.clip(rng.normal(level, 200, shape), 0, 4095).astype(np.uint16)
            write_dicom(root / name / f"{name}{index}.dcm", pixels, window=FULL_12_BIT_WINDOW,
                        rescale=CT_RESCALE)
    return root


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_frame_choices_match_diffaug():
    """Contract: qclassify's torch-free option table is diffaug.medical's."""
    from diffaug.medical import DICOM_SUFFIXES, NIFTI_SUFFIXES
    from diffaug.medical import FRAME_CHOICES as DIFFAUG_FRAMES

    assert FRAME_CHOICES == DIFFAUG_FRAMES
    assert qmedical.MEDICAL_SUFFIXES == DICOM_SUFFIXES + NIFTI_SUFFIXES


def test_read_image_matches_diffaugs_reader(tmp_path):
    """Reference implementation: qclassify's tensor is diffaug.medical.read_unit's array, one
    channel, and the window override reaches it."""
    from diffaug.medical import read_unit

    pixels = np.random.default_rng(1).integers(0, 4096, (16, 16), dtype=np.uint16)
    path = write_dicom(tmp_path / "x.dcm", pixels, window=(40.0, 400.0), rescale=CT_RESCALE)
    tensor = read_image(path)
    assert tensor.shape == (1, 16, 16)
    np.testing.assert_allclose(tensor[0].numpy(), read_unit(path), atol=ATOL)
    np.testing.assert_allclose(read_image(path, window=(1000.0, 3000.0))[0].numpy(),
                               read_unit(path, window=(1000.0, 3000.0)), atol=ATOL)


def test_discovery_finds_extensionless_dicom_and_nifti(tmp_path):
    """DICOM without an extension (preamble) and NIfTI files are images for discovery."""
    folder = tmp_path / "c"
    folder.mkdir()
    write_dicom(folder / "IM0001", np.zeros((8, 8), np.uint16), window=FULL_12_BIT_WINDOW,
                rescale=CT_RESCALE)
    nibabel.save(nibabel.Nifti1Image(np.zeros((8, 8, 2), np.int16), np.eye(4)),
                 folder / "v.nii.gz")
    (folder / "notes").write_text("not an image")
    assert [p.name for p in list_images(folder)] == ["IM0001", "v.nii.gz"]


def test_frames_all_keeps_a_files_frames_in_one_split(tmp_path):
    """frames="all": one sample per frame, every frame of a file in its file's split
    (group_of), split.csv gains a frame column that reads back."""
    data = dicom_folder(tmp_path / "data", frames=3)
    dataset = discover_dataset(data, frames="all")
    assert len(dataset.samples) == 12 * 3
    split_of_group: dict[str, set[str]] = {}
    for sample in dataset.samples:
        split_of_group.setdefault(group_of(sample), set()).add(sample.split)
    assert all(len(splits) == 1 for splits in split_of_group.values())
    middle = discover_dataset(data)
    assert all(sample.frame is None for sample in middle.samples) and len(middle.samples) == 12
    # the same files go to the same splits either way
    assert {(s.path, s.split) for s in middle.samples} == {(s.path, s.split)
                                                           for s in dataset.samples}


def test_fit_evaluate_predict_on_dicom(tmp_path):
    """CLI: a tiny fit (1 epoch, 32 px) on a DICOM class folder with --frames all and
    --window; config.json records them; evaluate and predict reuse them (path#frame rows)."""
    data = dicom_folder(tmp_path / "data", frames=2)
    run = tmp_path / "run"
    result = invoke("fit", data, "--out", run, "--model", "mobilenet_v2", "--frames", "all",
                    "--window", "2048,4096", *TINY)
    assert result.exit_code == 0, result.output
    options = json.loads((run / "config.json").read_text())["options"]
    assert options["frames"] == "all" and options["window"] == [2048.0, 4096.0]
    samples = read_split_csv(run / "split.csv")
    assert {s.frame for s in samples} == {0, 1}
    result = invoke("evaluate", run, "--bootstrap", "10", "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    result = invoke("predict", run, data / "a", "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["path"] for row in rows[:2]] == [f"{data / 'a' / 'a0.dcm'}#0",
                                                 f"{data / 'a' / 'a0.dcm'}#1"]
    result = invoke("predict", run, data / "a" / "a0.dcm", "--frames", "middle", "--device",
                    "cpu", "--quiet")
    assert [row["path"] for row in csv.DictReader(io.StringIO(result.stdout))] == [
        str(data / "a" / "a0.dcm")]


def test_old_split_csv_without_frame_column_reads(tmp_path):
    """Compatibility: a split.csv written before frames existed reads with frame None."""
    path = tmp_path / "split.csv"
    path.write_text("path,class,split,synthetic\na/x.png,a,train,0\n")
    assert read_split_csv(path)[0].frame is None


def test_bad_window_is_a_usage_error(tmp_path):
    """--window that is not CENTER,WIDTH with a positive width: one line, exit 2."""
    data = dicom_folder(tmp_path / "data")
    result = invoke("fit", data, "--out", tmp_path / "run", "--window", "40,-1", *TINY)
    assert result.exit_code == 2 and "--window" in result.output
    assert not (tmp_path / "run").exists()
