"""tools/demo/make_demo_data.py: layout, byte reproducibility, ground truth, CLI errors.

Tiny images (48 px) and a dozen files keep the file to a few seconds.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import make_demo_data as demo  # tools/demo/ is on pytest's pythonpath (root pyproject.toml)
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

SIZE = 48
COUNTS = {"train": (6, 3), "val": (2, 1), "test": (2, 2)}


def _tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _make(out: Path, seed: int = 0) -> dict:
    return demo.make_demo_dataset(out, size=SIZE, counts=COUNTS, seed=seed)


def test_layout_counts_mode_and_size(tmp_path):
    """Contract: split/class folders with the requested counts of 8-bit L PNGs of SIZE px."""
    record = _make(tmp_path / "demo")
    root = tmp_path / "demo"
    for split, pair in COUNTS.items():
        for label, count in zip(demo.CLASSES, pair, strict=True):
            files = sorted((root / split / label).glob("*.png"))
            assert len(files) == count
            for path in files:
                with Image.open(path) as image:
                    assert (image.mode, image.size) == ("L", (SIZE, SIZE))
    written = json.loads((root / demo.METADATA_FILE).read_text())
    assert written == record
    assert written["options"] == {"size": SIZE, "seed": 0, "counts": {
        s: dict(zip(demo.CLASSES, COUNTS[s], strict=True)) for s in demo.SPLITS}}
    assert len(record["images"]) == sum(sum(pair) for pair in COUNTS.values())
    hashes = _tree_hashes(root)
    for entry in record["images"]:
        assert hashes[entry["path"]] == entry["sha256"]


def test_same_seed_gives_identical_bytes(tmp_path):
    """Same-seed rederivation: two runs hash identically, file by file (metadata included)."""
    _make(tmp_path / "a")
    _make(tmp_path / "b")
    assert _tree_hashes(tmp_path / "a") == _tree_hashes(tmp_path / "b")


def test_different_seed_changes_every_image(tmp_path):
    """Another seed draws another dataset: no image repeats at the same path."""
    _make(tmp_path / "a")
    _make(tmp_path / "b", seed=1)
    first, second = _tree_hashes(tmp_path / "a"), _tree_hashes(tmp_path / "b")
    images = [path for path in first if path.endswith(".png")]
    assert images and all(first[path] != second[path] for path in images)


def test_files_hold_generate_image_pixels_whatever_the_order(tmp_path):
    """Same-seed rederivation: each file equals generate_image for its (split, class, index),
    computed here in reverse order, so images do not depend on generation order."""
    record = _make(tmp_path / "demo")
    for entry in reversed(record["images"]):
        image = demo.generate_image(0, entry["split"], entry["index"],
                                    stenosis=entry["class"] == "stenosis", size=SIZE)
        with Image.open(tmp_path / "demo" / entry["path"]) as stored:
            np.testing.assert_array_equal(np.asarray(stored), image.pixels)


def test_stenosis_narrows_a_vessel_beyond_natural_variation():
    """Analytic bound: normal vessels keep their relative radius above 1 - v; a lesion of depth
    d >= LESION_DEPTH[0] brings one below (1 + v) * (1 - LESION_DEPTH[0]) < 1 - v."""
    v = demo.NATURAL_WIDTH_VARIATION
    bound = (1 + v) * (1 - demo.LESION_DEPTH[0])
    assert bound < 1 - v  # the constants keep the two classes apart
    normal = [demo.generate_image(3, "train", i, stenosis=False, size=64) for i in range(8)]
    stenosis = [demo.generate_image(3, "train", i, stenosis=True, size=64) for i in range(8)]
    assert min(image.min_relative_radius for image in normal) > 1 - v
    assert max(image.min_relative_radius for image in stenosis) <= bound + 1e-12
    for image in stenosis:
        low, high = demo.LESION_DEPTH
        assert low <= image.lesion_depth <= high
        assert all(0.1 * 64 < c < 0.9 * 64 for c in image.lesion_xy)  # visible, inside the frame
    assert all(image.lesion_xy is None and image.lesion_depth is None for image in normal)


def test_failed_run_leaves_nothing(tmp_path, monkeypatch):
    """Atomic output: an error mid-run leaves no OUT and no temporary folder."""
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise OSError("disk full")
        return real(*args, **kwargs)

    real = demo.generate_image
    monkeypatch.setattr(demo, "generate_image", failing)
    with pytest.raises(OSError, match="disk full"):
        _make(tmp_path / "demo")
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_dataset_and_reports(tmp_path):
    """CLI: success path, checked through the files it wrote."""
    out = tmp_path / "demo"
    result = CliRunner().invoke(demo.main, [str(out), "--size", "40", "--train", "2", "1",
                                            "--val", "1", "1", "--test", "1", "1", "--seed", "5",
                                            "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "wrote 7 images" in result.output
    record = json.loads((out / demo.METADATA_FILE).read_text())
    assert record["options"]["seed"] == 5 and record["options"]["size"] == 40
    assert len(list(out.rglob("*.png"))) == 7


@pytest.mark.parametrize("args, message", [
    (["--size", "8"], "size must be at least"),
    (["--train", "0", "3"], "train counts must be two positive integers"),
    (["--seed", "-1"], "seed must be a non-negative integer"),
])
def test_cli_bad_options_fail_in_one_line(tmp_path, args, message):
    """CLI: a bad option is one 'Error:' line, exit 1, no traceback, nothing written."""
    result = CliRunner().invoke(demo.main, [str(tmp_path / "demo"), "--quiet", *args])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1
    assert lines[0].startswith("Error:") and message in lines[0]
    assert "Traceback" not in result.output and not (tmp_path / "demo").exists()


def test_cli_refuses_non_empty_output(tmp_path):
    """CLI: an occupied OUT is refused and left untouched."""
    (tmp_path / "keep.txt").write_text("mine")
    result = CliRunner().invoke(demo.main, [str(tmp_path), "--quiet"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "must not exist or be empty" in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_cli_has_help():
    """CLI: --help documents every option."""
    result = CliRunner().invoke(demo.main, ["--help"], catch_exceptions=False)
    assert result.exit_code == 0
    for option in ("--size", "--train", "--val", "--test", "--seed", "--quiet"):
        assert option in result.output


@pytest.mark.parametrize("model", ["small", "qmobilenet"])
def test_learnability_check_runs_on_tiny_data(tmp_path, model):
    """Smoke test of tools/demo/check_demo_learnability.py's quick mode (1 epoch, 32 px), with
    its small CNN and with a qclassify backbone: it trains, keeps one history row per epoch and
    scores val and test AUC in [0, 1]."""
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    check = pytest.importorskip("check_demo_learnability")
    _make(tmp_path / "demo")
    result = check.check_learnability(tmp_path / "demo", image_size=32, epochs=1, seed=0,
                                      model=model)
    assert [row["epoch"] for row in result["history"]] == [1]
    assert 0.0 <= result["val_auc"] <= 1.0 and 0.0 <= result["test_auc"] <= 1.0


def test_learnability_backbone_logit_is_the_two_class_softmax():
    """--model feeds a qclassify model as qclassify does and trains its logit difference with
    BCE: the sigmoid of that logit must be the model's own softmax probability of stenosis on
    qclassify's preprocessing of the same images (three channels, ImageNet normalisation)."""
    torch = pytest.importorskip("torch")
    check = pytest.importorskip("check_demo_learnability")
    from qclassify.images import normalise_batch

    torch.manual_seed(0)
    network = check.build_network("mobilenet_v2").eval()
    images = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        oracle = network.model(normalise_batch(list(images))).softmax(dim=1)[:, 1]
        got = torch.sigmoid(network(images)).squeeze(1)
    torch.testing.assert_close(got, oracle, atol=1e-6, rtol=0)
