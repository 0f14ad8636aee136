"""Image reading (bit depth, modes), preprocessing, dataset discovery and leakage-free splits."""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from qclassify.data import (  # noqa: E402
    MANIFEST_NAME,
    Sample,
    discover_dataset,
    read_split_csv,
    split_csv_rows,
)
from qclassify.images import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    find_unreadable,
    list_images,
    make_preprocess,
    read_image,
)
from qclassify.runfolder import write_csv  # noqa: E402

EXACT = 1e-7  # float32 rounding of v / 255 or v / 65535
MANIFEST_COLUMNS = ("path", "source", "class", "split", "t", "gamma", "seed", "sha256")


def _ramp(size: int = 16) -> np.ndarray:
    return (np.arange(size * size).reshape(size, size) % 256).astype(np.uint8)


def test_sixteen_bit_png_reads_like_the_same_eight_bit_picture(tmp_path):
    """Analytic oracle: v * 257 / 65535 == v / 255 exactly, so a 16-bit copy of an 8-bit
    picture reads identically; full scale is 1.0, nothing is clipped at 255."""
    picture = _ramp()
    Image.fromarray(picture).save(tmp_path / "eight.png")
    Image.fromarray(picture.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
    assert Image.open(tmp_path / "sixteen.png").mode.startswith("I;16")
    eight, sixteen = read_image(tmp_path / "eight.png"), read_image(tmp_path / "sixteen.png")
    assert eight.shape == sixteen.shape == (1, 16, 16)
    torch.testing.assert_close(sixteen, eight, atol=EXACT, rtol=0)
    torch.testing.assert_close(eight[0], torch.from_numpy(picture / 255.0).float(),
                               atol=EXACT, rtol=0)


def test_sixteen_bit_values_keep_their_resolution(tmp_path):
    """Analytic oracle: 16-bit values map to v / 65535, including values above 255 that the
    default torchvision loader would clip."""
    values = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    Image.fromarray(values.astype(np.int32)).save(tmp_path / "deep_i.tif")  # PIL mode "I"
    for name in ("deep.png", "deep_i.tif"):
        expected = torch.from_numpy(values / 65535.0).float()
        torch.testing.assert_close(read_image(tmp_path / name)[0], expected, atol=EXACT, rtol=0)


def test_colour_modes(tmp_path):
    """Analytic oracle per PIL mode: alpha dropped, palette expanded, floats clipped."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    expected_rgb = torch.from_numpy(rgb / 255.0).float().permute(2, 0, 1)
    rgba = np.dstack([rgb, rng.integers(0, 256, (8, 8), dtype=np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    torch.testing.assert_close(read_image(tmp_path / "rgba.png"), expected_rgb, atol=EXACT, rtol=0)

    palette = Image.fromarray(rgb).quantize(colors=16)
    palette.save(tmp_path / "palette.png")
    expected_palette = np.asarray(palette.convert("RGB")) / 255.0
    torch.testing.assert_close(read_image(tmp_path / "palette.png"),
                               torch.from_numpy(expected_palette).float().permute(2, 0, 1),
                               atol=EXACT, rtol=0)

    gray = rgb[..., 0]
    Image.fromarray(np.dstack([gray, gray])).save(tmp_path / "la.png")  # mode LA
    assert Image.open(tmp_path / "la.png").mode == "LA"
    torch.testing.assert_close(read_image(tmp_path / "la.png")[0],
                               torch.from_numpy(gray / 255.0).float(), atol=EXACT, rtol=0)

    floats = np.array([[-0.5, 0.25, 1.5]], dtype=np.float32)
    Image.fromarray(floats).save(tmp_path / "float.tif")  # PIL mode "F"
    torch.testing.assert_close(read_image(tmp_path / "float.tif")[0],
                               torch.tensor([[0.0, 0.25, 1.0]]), atol=EXACT, rtol=0)


def test_preprocess_repeats_gray_and_applies_imagenet_statistics():
    """Analytic oracle: a constant gray image v becomes (v - mean_c) / std_c in each of three
    channels at the requested size."""
    value = 0.6
    out = make_preprocess(40)(torch.full((1, 24, 30), value))
    assert out.shape == (3, 40, 40)
    for channel, (mean, std) in enumerate(zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)):
        torch.testing.assert_close(out[channel], torch.full((40, 40), (value - mean) / std),
                                   atol=1e-5, rtol=0)


def test_list_images_and_find_unreadable(tmp_path):
    """Contract: image extensions in any case, sorted, dot-entries never listed; the folder's
    own files only, or every sub-folder with `recursive`; broken files named."""
    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / "a" / ".ipynb_checkpoints").mkdir()
    Image.fromarray(_ramp()).save(tmp_path / "a" / "deep" / "x.PNG")
    Image.fromarray(_ramp()).save(tmp_path / "a" / "y.jpg")
    Image.fromarray(_ramp()).save(tmp_path / "a" / ".ipynb_checkpoints" / "y-checkpoint.png")
    (tmp_path / "a" / "._y.png").write_bytes(b"AppleDouble metadata, not an image")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    found = list_images(tmp_path, recursive=True)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a/broken.png", "a/deep/x.PNG", "a/y.jpg"]
    assert [p.name for p in list_images(tmp_path / "a")] == ["broken.png", "y.jpg"]
    assert list_images(tmp_path) == []
    assert list(find_unreadable(found)) == [str(tmp_path / "a" / "broken.png")]


def test_decompression_bomb_is_an_unreadable_image(tmp_path, monkeypatch):
    """Contract: an image over PIL's pixel limit (DecompressionBombError, a plain Exception)
    is a ValueError naming the file, and discovery skips it like any unreadable image."""
    Image.fromarray(_ramp(16)).save(tmp_path / "big.png")  # 256 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL refuses above twice the limit
    with pytest.raises(ValueError, match=r"cannot read image .*big\.png.*decompression bomb"):
        read_image(tmp_path / "big.png")
    assert list(find_unreadable([tmp_path / "big.png"])) == [str(tmp_path / "big.png")]


@pytest.mark.parametrize("layout", ["flat", "split"])
def test_discovery_reads_class_folders_flat_and_ignores_dot_entries(make_images, tmp_path,
                                                                   layout):
    """Contract (diffaug's discovery rule): a class folder's images are its own files; a
    sub-folder is ignored with a warning naming it; dot-entries are ignored silently."""
    data = make_images(tmp_path / "data", counts={"normal": 6, "stenosis": 6}, layout=layout)
    expected = sorted(p.relative_to(data).as_posix() for p in list_images(data, recursive=True))
    class_dir = data / "normal" if layout == "flat" else data / "train" / "normal"
    image = next(iter(list_images(class_dir)))
    for extra in ("patient7/extra.png", ".ipynb_checkpoints/extra-checkpoint.png"):
        (class_dir / extra).parent.mkdir()
        shutil.copy(image, class_dir / extra)
    (class_dir / f"._{image.name}").write_bytes(b"AppleDouble metadata, not an image")
    for folder in (data, class_dir):
        (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (data / ".ipynb_checkpoints").mkdir()
    shutil.copy(image, data / ".ipynb_checkpoints" / "stray.png")
    with pytest.warns(UserWarning) as record:
        dataset = discover_dataset(data, seed=0)
    assert [str(w.message) for w in record] == [
        f"ignoring sub-folder {class_dir / 'patient7'}: class folders are read without their "
        "sub-folders"]
    assert sorted(s.path for s in dataset.samples) == expected
    assert dataset.class_names == ("normal", "stenosis")


def _splits(dataset) -> dict[str, str]:
    return {s.path: s.split for s in dataset.samples}


def test_flat_split_is_stratified_seeded_and_complete(make_images, tmp_path):
    """Contract: every original in exactly one split, class shares kept within one image per
    split, the same seed gives the same split, another seed another."""
    data = make_images(tmp_path / "data", counts={"a": 40, "b": 20, "c": 10})
    dataset = discover_dataset(data, seed=0)
    assert dataset.class_names == ("a", "b", "c") and dataset.layout == "classes"
    assert sorted(s.path for s in dataset.samples) == [
        p.relative_to(data).as_posix() for p in list_images(data, recursive=True)]
    counts = Counter((s.split, s.class_name) for s in dataset.samples)
    for split, share in (("train", 0.70), ("val", 0.15), ("test", 0.15)):
        for name, total in (("a", 40), ("b", 20), ("c", 10)):
            assert abs(counts[split, name] - share * total) <= 1.0 + 1e-9, (split, name)
    assert _splits(discover_dataset(data, seed=0)) == _splits(dataset)
    assert _splits(discover_dataset(data, seed=1)) != _splits(dataset)


def _add_synthetic(root: Path, sources: list[str], split_column: str = "") -> list[str]:
    """Write one synthetic copy beside each source and list it in a diffaug manifest."""
    rows, paths = [], []
    for source in sources:
        stem = Path(source)
        path = (stem.parent / f"syn_{stem.stem}_0.png").as_posix()
        shutil.copy(root / source, root / path)
        rows.append({"path": path, "source": source, "class": stem.parent.name,
                     "split": split_column, "t": 1, "gamma": 1.0, "seed": 0, "sha256": ""})
        paths.append(path)
    write_csv(root / MANIFEST_NAME, MANIFEST_COLUMNS, rows)
    return paths


def test_balanced_copy_gets_the_same_split_and_no_leakage(make_images, tmp_path):
    """Contract (DESIGN leakage rules), with a hand-written manifest: the originals of a
    balanced copy are split exactly like the original folder; a synthetic image is in train
    only when its source is, and is dropped when its source is in val or test."""
    original = make_images(tmp_path / "data", counts={"normal": 20, "stenosis": 10})
    reference = discover_dataset(original, seed=3)
    copy = Path(shutil.copytree(original, tmp_path / "balanced"))
    stenosis = [s for s in reference.samples if s.class_name == "stenosis"]
    by_split = {split: [s.path for s in stenosis if s.split == split] for split in
                ("train", "val", "test")}
    sources = by_split["train"][:3] + by_split["val"][:1] + by_split["test"][:1]
    synthetic = _add_synthetic(copy, sources)

    balanced = discover_dataset(copy, seed=3)
    originals = {s.path: s.split for s in balanced.samples if not s.synthetic}
    assert originals == _splits(reference)
    kept = {s.path: s.split for s in balanced.samples if s.synthetic}
    assert kept == dict.fromkeys(synthetic[:3], "train")
    assert all(not s.synthetic for s in balanced.samples if s.split in ("val", "test"))
    assert balanced.class_counts("train")["stenosis"] == len(by_split["train"]) + 3


def test_split_layout_is_used_as_given(make_images, tmp_path):
    """Contract: train/val/test folders decide the split; a manifest's synthetic image in
    train (source in train) is kept, one written into val is dropped."""
    data = make_images(tmp_path / "data", counts={"normal": 10, "stenosis": 5}, layout="split")
    given = {p.relative_to(data).as_posix(): p.relative_to(data).parts[0]
             for p in list_images(data, recursive=True)}
    synthetic = _add_synthetic(data, ["train/stenosis/stenosis_004.png",
                                      "val/stenosis/stenosis_001.png"], split_column="train")
    dataset = discover_dataset(data, seed=0)
    assert dataset.layout == "splits"
    assert {s.path: s.split for s in dataset.samples if not s.synthetic} == given
    assert [(s.path, s.split) for s in dataset.samples if s.synthetic] == [(synthetic[0], "train")]


def test_unreadable_images_are_skipped_by_name(image_folder):
    """Contract: a corrupt file is named in a warning and left out of every split."""
    broken = image_folder / "normal" / "zz_broken.png"
    broken.write_bytes(b"not a png")
    with pytest.warns(UserWarning, match="zz_broken.png"):
        dataset = discover_dataset(image_folder)
    assert "normal/zz_broken.png" not in {s.path for s in dataset.samples}
    assert len(dataset.samples) == 18


@pytest.mark.parametrize(
    ("arrange", "message"),
    [
        (lambda root, make: root.mkdir(), "no images"),
        (lambda root, make: (root / "only").mkdir(parents=True), "no images"),
        (lambda root, make: make(root, {"normal": 5}), "only one class"),
        (lambda root, make: make(root, {"normal": 5, "rare": 2}), "rare"),
        (lambda root, make: (make(root, {"normal": 5, "rare": 5}, layout="split"),
                             shutil.rmtree(root / "val")), "no val/ folder"),
        (lambda root, make: None, "does not exist"),
    ],
    ids=["empty", "empty-class", "one-class", "tiny-class", "missing-val", "missing"],
)
def test_bad_datasets_are_clear_errors(tmp_path, make_images, arrange, message):
    """Contract: each broken dataset is a ValueError that says what is wrong."""
    root = tmp_path / "data"
    arrange(root, make_images)
    with pytest.raises(ValueError, match=message):
        discover_dataset(root)


def test_split_csv_round_trip(image_folder, tmp_path):
    """Contract: split.csv has the DESIGN columns (+ synthetic) and reads back unchanged."""
    dataset = discover_dataset(image_folder)
    path = write_csv(tmp_path / "split.csv", ("path", "class", "split", "synthetic"),
                     split_csv_rows(dataset))
    with path.open() as handle:
        assert csv.DictReader(handle).fieldnames == ["path", "class", "split", "synthetic"]
    assert read_split_csv(path) == list(dataset.samples)
    assert all(isinstance(s, Sample) for s in read_split_csv(path))
