"""tools/medmnist/medmnist_to_folder.py on small fake MedMNIST files built here (never the real
data)."""

from __future__ import annotations

import json
from pathlib import Path

import medmnist_to_folder as tool  # tools/medmnist/ is on pytest's pythonpath (pyproject.toml)
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

SPLIT_SIZES = {"train": 7, "val": 3, "test": 4}


def _fake_npz(path: Path, *, n_classes: int = 2, image_shape=(8, 8), flat_labels: bool = False,
              multi_label: int = 0, drop: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """A MedMNIST-shaped file: uint8 images, labels (N, 1) cycling through the classes
    ((N,) if `flat_labels`; multi-hot (N, multi_label) if `multi_label`, like chestmnist)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in SPLIT_SIZES.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, *image_shape), dtype=np.uint8)
        labels = np.arange(n) % n_classes
        if multi_label:
            labels = rng.integers(0, 2, (n, multi_label))
        arrays[f"{split}_labels"] = labels if flat_labels or multi_label else labels[:, None]
    np.savez(path, **{k: v for k, v in arrays.items() if k not in drop})
    return arrays


def _run(*args: str):
    return CliRunner().invoke(tool.main, [*args, "--quiet"])


def _assert_one_line_error(result, message: str) -> None:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], lines
    assert "Traceback" not in result.output


def test_grayscale_round_trip_with_medmnist_names(tmp_path):
    """Same-data rederivation: every PNG is the source row, in the folder of its label."""
    arrays = _fake_npz(tmp_path / "breastmnist.npz")
    counts = tool.convert_medmnist(tmp_path / "breastmnist.npz", tmp_path / "out")
    names = ["malignant", "normal_benign"]  # MedMNIST v2: 0 = malignant, 1 = normal, benign
    for split in SPLIT_SIZES:
        labels = arrays[f"{split}_labels"].ravel()
        assert counts[split] == dict(zip(names, np.bincount(labels, minlength=2).tolist(),
                                         strict=True))
        for index, label in enumerate(labels):
            with Image.open(tmp_path / "out" / split / names[label] / f"{split}_{index}.png") as im:
                assert im.mode == "L"
                np.testing.assert_array_equal(np.asarray(im), arrays[f"{split}_images"][index])
    source = json.loads((tmp_path / "out" / tool.SOURCE_FILE).read_text())
    assert source["class_names"] == names and source["counts"] == counts


def test_rgb_multiclass_with_size_suffix(tmp_path):
    """RGB arrays give RGB PNGs; 'bloodmnist_64.npz' is recognised as bloodmnist (8 classes)."""
    arrays = _fake_npz(tmp_path / "bloodmnist_64.npz", n_classes=8, image_shape=(6, 6, 3))
    counts = tool.convert_medmnist(tmp_path / "bloodmnist_64.npz", tmp_path / "out")
    assert list(counts["train"])[:2] == ["basophil", "eosinophil"]
    assert list(counts["train"])[-1] == "platelet"
    with Image.open(tmp_path / "out" / "train" / "neutrophil" / "train_6.png") as image:
        assert image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image), arrays["train_images"][6])


def test_flat_labels_and_unknown_subset_use_class_k(tmp_path):
    """Labels of shape (N,) work; an unrecognised file name gives class_0, class_1, ..."""
    _fake_npz(tmp_path / "scans.npz", n_classes=3, flat_labels=True)
    counts = tool.convert_medmnist(tmp_path / "scans.npz", tmp_path / "out")
    assert counts["train"] == {"class_0": 3, "class_1": 2, "class_2": 2}


def test_folder_names_from_medmnist_labels():
    """Analytic: labels become lower-case, underscore-separated folder names."""
    assert tool.folder_name("normal, benign") == "normal_benign"
    assert tool.folder_name("Collecting Duct, Connecting Tubule") == \
        "collecting_duct_connecting_tubule"
    assert tool.subset_of("data/PneumoniaMNIST_224.npz") == "pneumoniamnist"
    assert tool.subset_of("scans.npz") is None


def test_cli_class_names_and_counts(tmp_path):
    """CLI: --class-names overrides the table; per-split counts are printed."""
    _fake_npz(tmp_path / "pneumoniamnist.npz")
    result = CliRunner().invoke(tool.main, [str(tmp_path / "pneumoniamnist.npz"),
                                            str(tmp_path / "out"), "--class-names", "neg,pos",
                                            "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "train: neg 4, pos 3", "val: neg 2, pos 1", "test: neg 2, pos 2",
        f"wrote 14 images to {tmp_path / 'out'}"]
    assert sorted(p.name for p in (tmp_path / "out" / "test").iterdir()) == ["neg", "pos"]


@pytest.mark.parametrize("kwargs, name, message", [
    ({"drop": ("test_labels",)}, "breastmnist.npz", "missing arrays test_labels"),
    ({"multi_label": 14}, "scans.npz", "multi-label subsets"),
    ({}, "chestmnist.npz", "chestmnist is multi-label"),
    ({"image_shape": (4, 4, 4)}, "organmnist3d.npz", "3D subsets are not supported"),
    ({"n_classes": 3}, "breastmnist.npz", "has 2 names but the labels need 3"),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, kwargs, name, message):
    """CLI: each malformed input is one 'Error:' line, exit 1, and no output folder."""
    _fake_npz(tmp_path / name, **kwargs)
    _assert_one_line_error(_run(str(tmp_path / name), str(tmp_path / "out")), message)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_cli_missing_file(tmp_path):
    """CLI: a missing input file is named in one line."""
    _assert_one_line_error(_run(str(tmp_path / "nope.npz"), str(tmp_path / "out")),
                           "nope.npz: no such file")


def test_cli_not_an_npz(tmp_path):
    """CLI: a file that is not an .npz archive is reported, not a traceback."""
    (tmp_path / "breastmnist.npz").write_text("hello")
    _assert_one_line_error(_run(str(tmp_path / "breastmnist.npz"), str(tmp_path / "out")),
                           "breastmnist.npz: not a readable .npz archive")


def test_cli_plain_npy_array(tmp_path):
    """CLI: a single saved array (np.save) is not mistaken for a MedMNIST archive."""
    with open(tmp_path / "breastmnist.npz", "wb") as handle:
        np.save(handle, np.zeros((2, 2), dtype=np.uint8))
    _assert_one_line_error(_run(str(tmp_path / "breastmnist.npz"), str(tmp_path / "out")),
                           "not a readable .npz archive")


def test_cli_too_few_class_names(tmp_path):
    """CLI: --class-names must name every label."""
    _fake_npz(tmp_path / "breastmnist.npz")
    _assert_one_line_error(_run(str(tmp_path / "breastmnist.npz"), str(tmp_path / "out"),
                                "--class-names", "only"), "--class-names has 1 names")


def test_cli_refuses_non_empty_output_and_leaves_it(tmp_path):
    """CLI: an occupied OUT is refused; its content is untouched."""
    _fake_npz(tmp_path / "breastmnist.npz")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    _assert_one_line_error(_run(str(tmp_path / "breastmnist.npz"), str(tmp_path / "out")),
                           "must not exist or be empty")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


def test_cli_accepts_existing_empty_output(tmp_path):
    """CLI: an empty OUT (e.g. made by a caller) is filled."""
    _fake_npz(tmp_path / "breastmnist.npz")
    (tmp_path / "out").mkdir()
    result = _run(str(tmp_path / "breastmnist.npz"), str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "out").rglob("*.png"))) == sum(SPLIT_SIZES.values())


def test_cli_has_help():
    """CLI: --help names the arguments and options."""
    result = CliRunner().invoke(tool.main, ["--help"], catch_exceptions=False)
    assert result.exit_code == 0 and "--class-names" in result.output and "NPZ" in result.output
