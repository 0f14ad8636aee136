"""Adversarial checks of seed ensembles (`fit --seeds`, evaluate/predict on an ensemble folder,
`compare --seeds`): malformed seed lists, conflicting options, folders that are not what the
command expects, and damaged or unfinished ensembles.

Each test reproduces one attack or failure and checks for one clear line naming the option or
file, the documented exit status (2: an option or input to change, 1: a failure while running),
no traceback and nothing written. No test trains a model: every refusal comes before training.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("torch")
from qclassify.cli import main  # noqa: E402
from qclassify.config import TrainConfig  # noqa: E402
from qclassify.options import MAX_SEEDS, OptionError, parse_seeds  # noqa: E402

TINY_OPTIONS = ["--epochs", "1", "--batch-size", "4", "--image-size", "32", "--weights", "none",
                "--device", "cpu", "--quiet"]


def make_dataset(root: Path, per_class: int = 6) -> Path:
    """Class folders of small noisy grayscale PNGs."""
    rng = np.random.default_rng(0)
    for name in ("normal", "stenosis"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (32, 32), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{name}_{i:02d}.png")
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def one_line_error(result, exit_code: int, *needles: str) -> str:
    """The single ``Error:`` line of a refused command, after checking its exit status."""
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("spec", ["", ",", "0-", "-1", "4-0", "a", "1.5", "0-2-4", "0,,1",
                                  "1e3", "0x3", "²"])
def test_cli_bad_seeds_spec_is_usage_error(tmp_path, spec):
    """A malformed --seeds (empty, negative, descending, not an integer) used to be unparsed:
    now one line naming --seeds, exit 2, and no run folder is created."""
    data = make_dataset(tmp_path / "data")
    result = CliRunner().invoke(main, ["fit", str(data), "--out", str(tmp_path / "run"),
                                       "--seeds", spec, *TINY_OPTIONS])
    one_line_error(result, 2, "Invalid value for '--seeds'")
    assert not (tmp_path / "run").exists()


def test_huge_seed_range_is_refused_before_it_is_expanded():
    """--seeds 0-999999999999 would allocate a trillion seeds (and train for ever): refused at
    once, naming the limit."""
    start = time.perf_counter()
    with pytest.raises(OptionError, match=f"more than {MAX_SEEDS} seeds"):
        parse_seeds("0-999999999999")
    with pytest.raises(OptionError, match=f"more than {MAX_SEEDS} seeds"):
        parse_seeds(",".join(str(k) for k in range(MAX_SEEDS + 1)))
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("command", ["fit", "compare"])
def test_cli_seed_and_seeds_together_is_usage_error(tmp_path, command):
    """--seed 3 --seeds 0-4 is ambiguous (which seeds the split?): exit 2 naming both options,
    nothing written."""
    data = make_dataset(tmp_path / "data")
    result = CliRunner().invoke(main, [command, str(data), "--out", str(tmp_path / "out"),
                                       "--seed", "3", "--seeds", "0-4", *TINY_OPTIONS])
    one_line_error(result, 2, "--seed and --seeds are mutually exclusive")
    assert not (tmp_path / "out").exists()


def test_cli_seeds_over_a_plain_run_without_overwrite_is_refused(tmp_path):
    """fit --seeds into a folder holding a finished single run must not mix members into it:
    exit 2 naming --overwrite, the folder unchanged."""
    data = make_dataset(tmp_path / "data")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"options": {}}))
    (run / "model.pt").write_bytes(b"not really a model")
    before = snapshot(run)
    result = CliRunner().invoke(main, ["fit", str(data), "--out", str(run), "--seeds", "0-1",
                                       *TINY_OPTIONS])
    one_line_error(result, 2, "finished run", "--overwrite")
    assert snapshot(run) == before


def test_cli_resume_seeds_on_a_plain_run_is_refused(tmp_path):
    """fit --seeds --resume on a folder that holds no ensemble: exit 2, folder unchanged."""
    data = make_dataset(tmp_path / "data")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"options": {}}))
    before = snapshot(run)
    result = CliRunner().invoke(main, ["fit", str(data), "--out", str(run), "--seeds", "0-1",
                                       "--resume", *TINY_OPTIONS])
    one_line_error(result, 2, "no seed ensemble to resume")
    assert snapshot(run) == before


def test_resume_with_other_seeds_is_refused(tmp_path):
    """Resuming an ensemble of seeds 0-1 with --seeds 0-2 would silently add a member trained
    after the threshold was tuned: refused as other options, folder unchanged."""
    data = make_dataset(tmp_path / "data")
    run = tmp_path / "run"
    config = TrainConfig(epochs=1, batch_size=4, image_size=32, weights="none", device="cpu")
    run.mkdir()
    (run / "config.json").write_text(json.dumps({  # what fit_seeds writes before training
        "options": dataclasses.asdict(config), "data_dir": str(data.resolve()),
        "ensemble": {"seeds": [0, 1], "members": ["seed-0", "seed-1"], "complete": False}}))
    before = snapshot(run)
    result = CliRunner().invoke(main, ["fit", str(data), "--out", str(run), "--seeds", "0-2",
                                       "--resume", *TINY_OPTIONS])
    one_line_error(result, 2, "other options, seeds or data")
    assert snapshot(run) == before


def test_cli_evaluate_unfinished_ensemble_is_one_line(tmp_path):
    """An ensemble whose config.json is not marked complete (killed mid-training) is refused
    by evaluate and predict with one line naming it (exit 1), never a missing-file traceback."""
    data = make_dataset(tmp_path / "data")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({
        "options": {}, "data_dir": str(data),
        "ensemble": {"seeds": [0, 1], "members": ["seed-0", "seed-1"], "complete": False}}))
    before = snapshot(run)
    for args in (["evaluate", str(run)], ["predict", str(run), str(data)]):
        result = CliRunner().invoke(main, [*args, "--quiet"])
        one_line_error(result, 1, str(run), "no finished seed ensemble")
    assert snapshot(run) == before


@pytest.mark.parametrize("record", [{"complete": True}, "seed-0", {"seeds": [None]},
                                    {"seeds": ["../../elsewhere"], "complete": True},
                                    {"seeds": [], "complete": True}])
def test_cli_ensemble_with_damaged_record_is_one_line(tmp_path, record):
    """A crafted config.json whose "ensemble" record is not a list of seeds (or names a path
    outside the folder): evaluate and predict answer one line naming the file (exit 1), fit
    --resume refuses it as another run (exit 2), never a traceback."""
    data = make_dataset(tmp_path / "data")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"data_dir": str(data), "ensemble": record}))
    for args, code in ((["evaluate", str(run)], 1), (["predict", str(run), str(data)], 1),
                       (["fit", str(data), "--out", str(run), "--seeds", "0", "--resume",
                         *TINY_OPTIONS], 2)):
        result = CliRunner().invoke(main, [*args, "--quiet"])
        one_line_error(result, code, "config.json")


def test_cli_seeds_youden_on_three_classes_leaves_no_folder(tmp_path):
    """fit --seeds --threshold youden on a three-class dataset used to write the ensemble's
    config.json and split.csv before the first member refused the option, leaving a folder
    that only --overwrite could reuse: now refused first (exit 2), no folder created."""
    data = make_dataset(tmp_path / "data")
    third = data / "third"
    third.mkdir()
    for png in sorted((data / "normal").glob("*.png")):
        (third / png.name).write_bytes(png.read_bytes())
    result = CliRunner().invoke(main, ["fit", str(data), "--out", str(tmp_path / "run"),
                                       "--seeds", "0-1", "--threshold", "youden",
                                       *TINY_OPTIONS])
    one_line_error(result, 2, "--threshold", "two-class")
    assert not (tmp_path / "run").exists()
