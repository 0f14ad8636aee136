"""balance_folder: layouts, byte-identical originals, manifest integrity, determinism, OUT rules.

Kinds: contract tests over folders built in tmp_path; manifest rows are checked against the files
(sha256 recomputed with hashlib) and each synthetic image is regenerated from its row's seed
(same-seed rederivation).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest
from diffaug import DiffusionAugmentor, balance_folder, plan_synthesis
from diffaug.augment import plan_samples
from diffaug.balance import RUN_RECORD_NAME, BalanceInputError
from diffaug.io import MANIFEST_COLUMNS, MANIFEST_NAME, read_manifest
from PIL import Image

SYNTHETIC_NAME = re.compile(r"syn_(?P<stem>.+)_(?P<k>\d+)\.png")


def _files(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob("*")) if path.is_file()}


def _check_manifest(out: Path, split: str) -> list:
    """Manifest integrity: exact header, one row per synthetic file, sha256 of the bytes."""
    with open(out / MANIFEST_NAME, encoding="utf-8") as handle:
        assert handle.readline().strip() == ",".join(MANIFEST_COLUMNS)
    rows = read_manifest(out / MANIFEST_NAME)
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("syn_*.png")}
    assert {row.path for row in rows} == on_disk
    for row in rows:
        assert row.split == split
        assert hashlib.sha256((out / row.path).read_bytes()).hexdigest() == row.sha256
        match = SYNTHETIC_NAME.fullmatch(Path(row.path).name)
        assert match and Path(row.source).stem == match["stem"]
        assert Path(row.path).parent == Path(row.source).parent  # beside its source
        assert (out / row.source).is_file() and not Path(row.source).name.startswith("syn_")
        assert Path(row.path).parent.name == row.class_name
    return rows


def test_class_layout(class_folders, tmp_path, snapshot):
    """Contract: originals byte-identical, counts follow eq. 3, manifest matches the files,
    IN untouched (bytes and modification times), no temporary file left behind."""
    in_dir = class_folders({"normal": 7, "stenosis": 2, "rare": 1})
    in_before = snapshot(in_dir)
    report = balance_folder(in_dir, tmp_path / "out", ratio=0.6, seed=0)
    out = tmp_path / "out"
    expected = plan_synthesis({"normal": 7, "stenosis": 2, "rare": 1}, ratio=0.6)
    assert report.synthesis == expected == {"normal": 0, "stenosis": 3, "rare": 4}
    assert report.counts_before == {"": {"normal": 7, "rare": 1, "stenosis": 2}}
    assert report.counts_after == {"": {"normal": 7, "rare": 5, "stenosis": 5}}
    assert (report.n_copied, report.n_synthetic, report.layout) == (10, 7, "classes")
    originals = _files(in_dir)
    written = _files(out)
    assert {k: v for k, v in written.items() if k in originals} == originals
    rows = _check_manifest(out, split="")
    for name, count in expected.items():
        ks = sorted(int(SYNTHETIC_NAME.fullmatch(Path(r.path).name)["k"])
                    for r in rows if r.class_name == name)
        assert ks == list(range(count))  # k runs 0..M-1 per class, names unique
    assert set(written) == set(originals) | {r.path for r in rows} | {MANIFEST_NAME,
                                                                      RUN_RECORD_NAME}
    assert snapshot(in_dir) == in_before


def test_split_layout_balances_train_only(split_folders, tmp_path):
    """Contract: only train is balanced; val/test copied byte-identical; split column 'train'."""
    out = tmp_path / "out"
    report = balance_folder(split_folders, out, ratio=1, seed=0)
    assert report.layout == "splits" and report.balanced_split == "train"
    assert report.synthesis == {"normal": 0, "stenosis": 5}
    assert report.counts_after["val"] == report.counts_before["val"] == {"normal": 2,
                                                                         "stenosis": 1}
    for split in ("val", "test"):
        assert _files(out / split) == _files(split_folders / split)
    rows = _check_manifest(out, split="train")
    assert len(rows) == 5 and all(r.path.startswith("train/stenosis/") for r in rows)


def test_manifest_rows_regenerate_their_images(split_folders, tmp_path):
    """Same-seed rederivation: DiffusionAugmentor(seed=row.seed) on the source gives the file,
    and its draws are the recorded t and gamma."""
    out = tmp_path / "out"
    balance_folder(split_folders, out, ratio=1, seed=4, blur_sigma=0.7, brightness=(0.8, 1.0))
    for row in read_manifest(out / MANIFEST_NAME):
        source = Image.open(out / row.source)
        augmentor = DiffusionAugmentor(seed=row.seed, blur_sigma=0.7, brightness=(0.8, 1.0))
        draw = augmentor.sample_parameters(source)
        assert (draw.t, draw.gamma) == (row.t, row.gamma)
        regenerated = DiffusionAugmentor(seed=row.seed, blur_sigma=0.7, brightness=(0.8, 1.0))
        np.testing.assert_array_equal(np.asarray(regenerated(source)),
                                      np.asarray(Image.open(out / row.path)))


def test_sources_and_seeds_follow_the_documented_draw(class_folders, tmp_path):
    """Same-seed rederivation: sources over the class's files sorted by name, seeds per k."""
    in_dir = class_folders({"a": 5, "b": 3})
    balance_folder(in_dir, tmp_path / "out", ratio=1, seed=9)
    files = sorted(p.name for p in (in_dir / "b").iterdir())
    rows = read_manifest(tmp_path / "out" / MANIFEST_NAME)
    expected = plan_samples(9, 1, 3, 2)  # class "b" has index 1 in sorted order
    assert [Path(r.source).name for r in rows] == [files[s.source_index] for s in expected]
    assert [r.seed for r in rows] == [s.seed for s in expected]


def test_same_output_whatever_the_number_of_workers(class_folders, tmp_path):
    """Contract (DESIGN: byte-identical output whatever the number of workers): workers=1 and
    workers=2 write the same files, the run record and the manifest included."""
    in_dir = class_folders({"normal": 9, "stenosis": 2})
    balance_folder(in_dir, tmp_path / "one", ratio=0.9, seed=3, workers=1)
    balance_folder(in_dir, tmp_path / "two", ratio=0.9, seed=3, workers=2)
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert one == two and len(one) == 11 + 7 + 2
    assert RUN_RECORD_NAME in one and MANIFEST_NAME in one
    balance_folder(in_dir, tmp_path / "other-seed", ratio=0.9, seed=4)
    other = _files(tmp_path / "other-seed")
    assert other[MANIFEST_NAME] != one[MANIFEST_NAME]


@pytest.mark.parametrize(("mode", "suffix"), [("I;16", ".png"), ("RGB", ".jpg"),
                                              ("L", ".tif"), ("RGBA", ".png")])
def test_modes_are_kept_in_the_files(class_folders, tmp_path, mode, suffix):
    """Contract: synthetic PNGs keep their source's mode (16-bit stays 16-bit)."""
    in_dir = class_folders({"a": 3, "b": 1}, mode=mode, suffix=suffix)
    balance_folder(in_dir, tmp_path / "out", ratio=1, seed=0)
    rows = read_manifest(tmp_path / "out" / MANIFEST_NAME)
    assert len(rows) == 2
    for row in rows:
        with Image.open(tmp_path / "out" / row.path) as image:
            assert image.format == "PNG" and image.mode == mode


def test_run_record_and_rerun(class_folders, tmp_path, snapshot):
    """Contract: the run record holds every option; re-running a finished run does nothing;
    an interrupted run (no manifest yet) is finished by the same command."""
    in_dir = class_folders({"a": 4, "b": 1})
    out = tmp_path / "out"
    balance_folder(in_dir, out, ratio=1, seed=2, workers=1)
    record = json.loads((out / RUN_RECORD_NAME).read_text())
    assert record["options"] == {"ratio": "1", "betas": np.linspace(1e-4, 0.02, 5).tolist(),
                                 "blur_sigma": 0.5, "brightness": [0.9, 1.1], "seed": 2}
    assert {"diffaug", "numpy", "scipy", "pillow", "python"} <= set(record["versions"])
    finished = snapshot(out)

    again = balance_folder(in_dir, out, ratio=1, seed=2, workers=2)
    assert again.already_done and again.n_synthetic == again.n_copied == 0
    assert snapshot(out) == finished  # not even rewritten

    (out / MANIFEST_NAME).unlink()
    (out / "b" / "syn_img_000_2.png").unlink()
    resumed = balance_folder(in_dir, out, ratio=1, seed=2)
    assert not resumed.already_done and resumed.n_synthetic == 3
    assert _files(out) == {k: v for k, (v, _) in finished.items()}


def test_dry_run_writes_nothing(class_folders, tmp_path):
    """Contract: a dry run plans (counts, M) without creating OUT."""
    in_dir = class_folders({"a": 5, "b": 2})
    report = balance_folder(in_dir, tmp_path / "out", ratio=0.8, dry_run=True)
    assert report.dry_run and report.synthesis == {"a": 0, "b": 2}
    assert report.n_synthetic_planned == 2 and report.n_synthetic == 0
    assert not (tmp_path / "out").exists()


def test_progress_reports_every_file(class_folders, tmp_path):
    """Contract: progress(0, total) first, then increments that add up to the total."""
    in_dir = class_folders({"a": 4, "b": 1})
    calls = []
    balance_folder(in_dir, tmp_path / "out", ratio=1, progress=lambda n, total: calls.append(
        (n, total)))
    assert calls[0] == (0, 8)
    assert sum(n for n, _ in calls) == 8 and {total for _, total in calls} == {8}


def test_bad_files_are_named_and_skipped(class_folders, tmp_path):
    """Contract: non-image and unreadable files in class folders are reported and not copied."""
    in_dir = class_folders({"a": 4, "b": 2})
    (in_dir / "a" / "notes.txt").write_text("not an image")
    (in_dir / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    report = balance_folder(in_dir, tmp_path / "out", ratio=1)
    reasons = {s.path.relative_to(in_dir).as_posix(): s.reason for s in report.skipped}
    assert set(reasons) == {"a/notes.txt", "b/broken.png"}
    assert "not an image" in reasons["a/notes.txt"]
    assert "cannot read" in reasons["b/broken.png"]
    assert report.counts_before == {"": {"a": 4, "b": 2}}
    assert not any((tmp_path / "out" / name).exists() for name in reasons)


def _save_unsupported(folder: Path) -> dict[str, str]:
    """Readable images of every mode diffaug cannot augment; returns name -> mode."""
    folder.mkdir(parents=True, exist_ok=True)
    ramp = np.arange(48).reshape(6, 8)
    Image.fromarray(ramp.astype(np.uint8)).convert("P").save(folder / "palette.png")
    Image.fromarray((ramp % 2 * 255).astype(np.uint8)).convert("1").save(folder / "bilevel.png")
    Image.fromarray(np.dstack([ramp] * 3).astype(np.uint8)).convert("CMYK").save(
        folder / "print.jpg")
    Image.fromarray(ramp.astype(np.float32) / 47).save(folder / "float.tif")
    Image.fromarray((ramp * 10_000).astype(np.int32)).save(folder / "wide.tif")  # > 16 bits
    return {"palette.png": "P", "bilevel.png": "1", "print.jpg": "CMYK", "float.tif": "F",
            "wide.tif": "I"}


def test_unsupported_modes_are_copied_but_never_sources(class_folders, tmp_path):
    """Contract: every readable original is copied byte-identical and counts for eq. 3; images
    of modes the augmenter cannot take are named and never drawn as synthesis sources."""
    in_dir = class_folders({"a": 12, "b": 2})
    modes = _save_unsupported(in_dir / "b")
    for name, mode in modes.items():
        assert Image.open(in_dir / "b" / name).mode == mode
    out = tmp_path / "out"
    report = balance_folder(in_dir, out, ratio=1, seed=0)
    assert report.counts_before == {"": {"a": 12, "b": 7}} and report.synthesis["b"] == 5
    assert report.skipped == ()
    assert {k: v for k, v in _files(out).items() if k in _files(in_dir)} == _files(in_dir)
    excluded = {s.path.name: s.reason for s in report.excluded_sources}
    assert set(excluded) == set(modes)
    assert "unsupported image mode 'P'" in excluded["palette.png"]
    assert "do not fit 16 bits" in excluded["wide.tif"]
    rows = _check_manifest(out, split="")
    assert len(rows) == 5 and {Path(r.source).name for r in rows} <= {"img_000.png",
                                                                      "img_001.png"}


def test_class_without_augmentable_images_is_one_error(class_folders, tmp_path):
    """Contract: a class that needs synthetic images but holds only unsupported modes is one
    clear error naming the folder, before anything is written."""
    in_dir = class_folders({"a": 6})
    _save_unsupported(in_dir / "b")
    with pytest.raises(BalanceInputError, match=r"class folder .*b needs 1 synthetic images "
                                                r"but none of its 5 images can be augmented"):
        balance_folder(in_dir, tmp_path / "out", ratio=1)
    assert not (tmp_path / "out").exists()
    report = balance_folder(in_dir, tmp_path / "out", ratio=0.5)  # b needs none: fine
    assert report.synthesis == {"a": 0, "b": 0} and report.n_copied == 11


def test_wide_mode_i_images_within_16_bits_are_sources(class_folders, tmp_path):
    """Same-seed rederivation: a 32-bit integer TIFF (mode I, as older Pillow also opens
    16-bit PNGs) whose values fit 16 bits is augmented as 16-bit, written as a 16-bit PNG
    holding exactly the augmenter's pixels."""
    in_dir = class_folders({"a": 3})
    (in_dir / "b").mkdir()
    values = np.random.default_rng(0).integers(0, 65536, (12, 12)).astype(np.int32)
    Image.fromarray(values).save(in_dir / "b" / "wide.tif")
    out = tmp_path / "out"
    report = balance_folder(in_dir, out, ratio=1, seed=0)
    assert report.excluded_sources == ()
    for row in read_manifest(out / MANIFEST_NAME):
        with Image.open(out / row.source) as source, Image.open(out / row.path) as synthetic:
            assert source.mode == "I" and synthetic.mode == "I;16"
            expected = DiffusionAugmentor(seed=row.seed)(source)
            np.testing.assert_array_equal(np.asarray(synthetic), np.asarray(expected))


def test_dot_entries_are_ignored_and_sub_folders_named(class_folders, tmp_path, save_image):
    """Contract: .ipynb_checkpoints/ and .DS_Store are no class, no image and no warning, at
    any level; a sub-folder of a class folder is named in a warning and the run goes on."""
    in_dir = class_folders({"a": 3, "b": 1})
    (in_dir / ".ipynb_checkpoints").mkdir()
    for folder in (in_dir, in_dir / "a"):
        (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    save_image(in_dir / "a" / ".ipynb_checkpoints" / "img_000-checkpoint.png")
    (in_dir / "b" / "._img_000.png").write_bytes(b"AppleDouble")
    save_image(in_dir / "b" / "nested" / "img_000.png")
    report = balance_folder(in_dir, tmp_path / "out", ratio=1)
    assert report.counts_before == {"": {"a": 3, "b": 1}}
    assert [(s.path.relative_to(in_dir).as_posix(), "sub-folder" in s.reason)
            for s in report.skipped] == [("b/nested", True)]
    assert not [p for p in (tmp_path / "out").rglob(".*")]


def test_top_level_dataset_files_are_copied(split_folders, tmp_path):
    """Contract: top-level regular files that are not images (a converter's source record, a
    README) are copied unchanged; a stray image or an earlier run's record is named instead."""
    (split_folders / "medmnist-source.json").write_text('{"source": "breastmnist.npz"}')
    (split_folders / "README").write_text("BreastMNIST as folders")
    (split_folders / "preview.png").write_bytes((split_folders / "val/normal/img_000.png")
                                                .read_bytes())
    (split_folders / RUN_RECORD_NAME).write_text("{}")
    (split_folders / "extra").mkdir()
    out = tmp_path / "out"
    report = balance_folder(split_folders, out, ratio=1, seed=0)
    for name in ("medmnist-source.json", "README"):
        assert (out / name).read_bytes() == (split_folders / name).read_bytes()
    assert report.n_copied == 11 + 3 + 3 + 2
    assert {s.path.name for s in report.skipped} == {"preview.png", RUN_RECORD_NAME, "extra"}
    assert not (out / "preview.png").exists() and not (out / "extra").exists()
    assert json.loads((out / RUN_RECORD_NAME).read_text())["command"] == "balance"


def _new_file_mode(folder: Path) -> int:
    """The permission bits `open(path, "xb")` gives a new file under the current umask."""
    with open(folder / "reference", "xb"):
        pass
    mode = stat.S_IMODE((folder / "reference").stat().st_mode)
    (folder / "reference").unlink()
    return mode


def test_output_files_get_normal_permissions(class_folders, tmp_path):
    """Contract: written files get what a new file gets under the umask (not tempfile's 0600);
    copied originals keep their own permission bits, as `shutil.copy` does."""
    previous = os.umask(0o022)
    try:
        in_dir = class_folders({"a": 3, "b": 1})
        (in_dir / "a" / "img_001.png").chmod(0o640)
        (in_dir / "a" / "img_002.png").chmod(0o755)
        out = tmp_path / "out"
        balance_folder(in_dir, out, ratio=1, seed=0)
        expected = _new_file_mode(tmp_path)
    finally:
        os.umask(previous)
    assert expected == 0o644
    modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in out.rglob("*") if p.is_file()}
    assert modes.pop("a/img_001.png") == 0o640 and modes.pop("a/img_002.png") == 0o755
    assert {MANIFEST_NAME, RUN_RECORD_NAME, "b/syn_img_000_0.png"} <= set(modes)
    assert set(modes.values()) == {expected}


def _empty_class(root: Path, save_image) -> None:
    (root / "b").mkdir(parents=True)
    save_image(root / "a" / "x.png")


def _unreadable_class(root: Path, save_image) -> None:
    _empty_class(root, save_image)
    (root / "b" / "bad.jpg").write_bytes(b"nope")


def _single_class(root: Path, save_image) -> None:
    save_image(root / "a" / "x.png")


def _splits_without_train(root: Path, save_image) -> None:
    _empty_class(root / "val", save_image)
    _empty_class(root / "test", save_image)


def _two_classes(root: Path, save_image) -> None:
    save_image(root / "a" / "x.png")
    save_image(root / "b" / "x.png")


@pytest.mark.parametrize(("build", "out_name", "message"), [
    (_empty_class, "out", r"class folder .*b holds no readable images"),
    (_unreadable_class, "out", r"class folder .*b holds no readable images"),
    (_single_class, "out", "at least 2 class folders"),
    (_splits_without_train, "out", "no train/ folder"),
    (_two_classes, "in/a/out", "inside input folder"),
    (_two_classes, "in", "inside input folder"),
    (_two_classes, "missing-in", "does not exist"),
])
def test_bad_input_folders(tmp_path, snapshot, save_image, build, out_name, message):
    """Contract: each unusable layout raises BalanceInputError naming the folder; IN untouched."""
    in_dir = tmp_path / "in"
    build(in_dir, save_image)
    before = snapshot(in_dir)
    target = tmp_path / "missing-in" if out_name == "missing-in" else in_dir
    out = tmp_path / "out" if out_name in ("out", "missing-in") else tmp_path / out_name
    with pytest.raises(BalanceInputError, match=message):
        balance_folder(target, out, ratio=0.5)
    assert snapshot(in_dir) == before
    assert not (tmp_path / "out").exists()


def test_out_rules(class_folders, tmp_path):
    """Contract: OUT must be new, empty or this same finished run; a file is refused."""
    in_dir = class_folders({"a": 3, "b": 1})
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("someone else's")
    with pytest.raises(BalanceInputError, match="is not empty"):
        balance_folder(in_dir, tmp_path / "busy", ratio=1)
    (tmp_path / "file").write_text("x")
    with pytest.raises(BalanceInputError, match="not a folder"):
        balance_folder(in_dir, tmp_path / "file", ratio=1)
    (tmp_path / "empty").mkdir()
    assert balance_folder(in_dir, tmp_path / "empty", ratio=1).n_synthetic == 2
    with pytest.raises(BalanceInputError, match="other input or options"):
        balance_folder(in_dir, tmp_path / "empty", ratio=1, seed=1)


def test_synthetic_name_clash_is_refused(tmp_path, save_image):
    """Contract: an original named like a planned synthetic file is never overwritten."""
    root = tmp_path / "in"
    _two_classes(root, save_image)
    save_image(root / "a" / "y.png", seed=1)
    save_image(root / "a" / "z.png", seed=2)
    save_image(root / "b" / "syn_x_0.png", seed=3)
    # b holds [syn_x_0.png, x.png] sorted: find a seed whose first draw is x.png (index 1)
    seed = next(s for s in range(100) if plan_samples(s, 1, 2, 1)[0].source_index == 1)
    with pytest.raises(BalanceInputError, match="syn_x_0.png would be overwritten"):
        balance_folder(root, tmp_path / "out", ratio=1, seed=seed)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"ratio": 0}, r"\(0, 1\]"), ({"ratio": 1.5}, r"\(0, 1\]"),
    ({"ratio": 1, "workers": 0}, "workers"),
    ({"ratio": 1, "brightness": (2, 1)}, "brightness"),
    ({"ratio": 1, "seed": -1}, "seed"),
])
def test_bad_options_fail_before_any_file_work(class_folders, tmp_path, kwargs, message):
    """Contract: bad options raise ValueError and nothing is written."""
    in_dir = class_folders({"a": 2, "b": 1})
    with pytest.raises(ValueError, match=message):
        balance_folder(in_dir, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()
