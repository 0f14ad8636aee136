"""Adversarial checks of training recipes (--recipe and its levers): impossible values, a
checkpoint with a crafted stem, runs that must not be resumed or reused under another recipe,
explicit values that equal a default, and a warmup longer than the training.

Each test reproduces one attack or failure and fails without its fix. Every file is generated
in tmp_path; models are a two-parameter stand-in except where the real network matters.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

torch = pytest.importorskip("torch")
from qclassify import train  # noqa: E402
from qclassify.cli import main  # noqa: E402
from qclassify.config import run_is_complete  # noqa: E402
from qclassify.inference import load_run  # noqa: E402
from qclassify.options import RECIPES, OptionError, TrainConfig  # noqa: E402

TINY = {"epochs": 2, "batch_size": 4, "image_size": 32, "weights": "none", "device": "cpu"}
RATE_RTOL = 1e-12


def plain_dataset(root: Path, per_class: int = 6) -> Path:
    """Class folders of small noisy grayscale PNGs."""
    for k, class_name in enumerate(("normal", "stenosis")):
        (root / class_name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.random.default_rng(100 * k + i).integers(0, 256, (32, 32), np.uint8)
            Image.fromarray(pixels).save(root / class_name / f"{class_name}_{i}.png")
    return root


class TinyModel(torch.nn.Module):
    """A two-parameter stand-in classifier built by fit instead of the real network."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor([-1.0, 1.0]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(1, 2, 3))[:, None] * self.scale


@pytest.fixture
def data(tmp_path) -> Path:
    return plain_dataset(tmp_path / "data")


@pytest.fixture
def tiny_model(monkeypatch):
    monkeypatch.setattr(train, "build_model", TinyModel)


@pytest.mark.parametrize(("args", "flag"), [
    (["--recipe", "fast"], "--recipe"),
    (["--warmup-epochs", "-1"], "--warmup-epochs"),
    (["--label-smoothing", "1"], "--label-smoothing"),
    (["--label-smoothing", "nan"], "--label-smoothing"),
    (["--monitor", "val_f1"], "--monitor"),
    (["--optimizer", "sgd"], "--optimizer"),
    (["--stem", "tiny"], "--stem"),
    (["--class-weight", "auto"], "--class-weight"),
])
def test_cli_refuses_impossible_recipe_values(data, tmp_path, args, flag):
    """Bad input: each impossible recipe value (NaN passes click's FloatRange and must be
    caught by the library) is a usage error naming its flag: exit 2, no traceback, no run
    folder."""
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["fit", str(data), "--out", str(run), *args,
                                       "--weights", "none", "--quiet"])
    assert result.exit_code == 2, result.output
    assert flag in result.output and "Traceback" not in result.output
    assert not run.exists()


@pytest.mark.parametrize(("change", "parameter"), [
    ({"recipe": "fast"}, "recipe"), ({"warmup_epochs": 1.5}, "warmup_epochs"),
    ({"warmup_epochs": -2}, "warmup_epochs"), ({"label_smoothing": math.nan}, "label_smoothing"),
    ({"optimizer": "sgd"}, "optimizer"), ({"monitor": "loss"}, "monitor"),
    ({"stem": "cifar"}, "stem"), ({"class_weight": "inverse"}, "class_weight"),
])
def test_library_refuses_impossible_recipe_values(data, tmp_path, change, parameter):
    """Bad input (library callers): OptionError naming the parameter, before any file."""
    with pytest.raises(OptionError, match=f"^{parameter} ") as caught:
        train.fit(data, tmp_path / "run", TrainConfig(**{**TINY, **change}), progress=False)
    assert caught.value.parameter == parameter
    assert not (tmp_path / "run").exists()


def test_crafted_checkpoint_stem_is_refused_by_name(tmp_path):
    """Crafted model.pt: an unknown stem is one error naming the file (evaluate/predict exit
    1 with one line), never a model built with an unchecked setting."""
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": "mobilenet_v2", "class_names": ["a", "b"], "n_qubits": 4,
                "n_layers": 2, "q_backend": "torch", "image_size": 32, "state_dict": {},
                "stem": "../../etc"}, run / "model.pt")
    with pytest.raises(ValueError, match="model.pt is not a usable qclassify checkpoint: stem"):
        load_run(run, device="cpu")
    image = plain_dataset(tmp_path / "images", per_class=1) / "normal" / "normal_0.png"
    result = CliRunner().invoke(main, ["predict", str(run), str(image), "--quiet"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.count("\n") == 1 and "stem" in result.output


def test_resume_under_another_recipe_is_refused(data, tmp_path, tiny_model):
    """Resume attack: an interrupted scratch run must not be continued with the paper
    recipe (other optimiser, schedule and selection); the same command resumes it."""
    config = TrainConfig(**TINY)

    class Interrupt(Exception):
        pass

    def stop(record):
        raise Interrupt

    with pytest.raises(Interrupt):
        train.fit(data, tmp_path / "run", config, progress=False, on_epoch=stop)
    with pytest.raises(OptionError, match="other options"):
        train.fit(data, tmp_path / "run", TrainConfig(**TINY, recipe="paper"), progress=False,
                  resume=True)
    result = train.fit(data, tmp_path / "run", config, progress=False, resume=True)
    assert [r.epoch for r in result.history] == [1, 2]


def test_run_from_before_recipes_is_reused_only_by_the_paper_recipe(data, tmp_path):
    """Stale reuse: a finished run whose config.json predates recipes (no recipe keys) was
    trained with the paper recipe, even with --weights none; compare must not reuse it for
    --weights none now that auto means scratch, and must reuse it for --recipe paper."""
    run = tmp_path / "run"
    run.mkdir()
    old_options = {**{k: v for k, v in RECIPES["paper"].items()
                      if k in ("lr", "weight_decay", "lr_schedule", "epochs", "batch_size",
                               "patience", "augment", "threshold")},
                   "model": "qmobilenet", "weights": "none", "image_size": 32}
    (run / "config.json").write_text(json.dumps({"options": old_options}))
    (run / "history.csv").write_text("")
    (run / "model.pt").write_bytes(b"")
    assert run_is_complete(run, TrainConfig(weights="none", image_size=32, recipe="paper"))
    assert not run_is_complete(run, TrainConfig(weights="none", image_size=32))


def test_explicit_flag_equal_to_the_paper_default_still_overrides(data, tmp_path,
                                                                 monkeypatch):
    """Precedence trap: --lr 1e-4 is the paper's value; given explicitly with the scratch
    recipe it must win over scratch's 1e-3 (a "differs from the default" test would drop
    it). Unset flags take the recipe's values."""
    received = []

    def fake_fit(data_dir, run_dir, config, **kwargs):
        received.append(config)
        raise ValueError("stop here")

    monkeypatch.setattr(train, "fit", fake_fit)
    CliRunner().invoke(main, ["fit", str(data), "--out", str(tmp_path / "run"), "--weights",
                              "none", "--lr", "0.0001", "--batch-size", "16", "--quiet"])
    assert received[0].recipe == "scratch"
    assert (received[0].lr, received[0].batch_size) == (1e-4, 16)
    assert received[0].weight_decay == RECIPES["scratch"]["weight_decay"]


def test_warmup_longer_than_training_runs_the_ramp(data, tmp_path, tiny_model, monkeypatch):
    """Degenerate schedule: --warmup-epochs 5 with 2 epochs (scratch's warmup 3 with a
    quick --epochs 1 run is the common case) trains at lr*e/6: the ramp, with no cosine of
    zero or negative length behind it."""
    rates = []
    real_epoch = train._train_epoch

    def recording_epoch(model, loader, optimizer, device, **kwargs):
        rates.append(optimizer.param_groups[0]["lr"])
        return real_epoch(model, loader, optimizer, device, **kwargs)

    monkeypatch.setattr(train, "_train_epoch", recording_epoch)
    config = TrainConfig(**TINY, recipe="scratch", warmup_epochs=5, lr=0.6)
    train.fit(data, tmp_path / "run", config, progress=False)
    assert rates == pytest.approx([0.1, 0.2], rel=RATE_RTOL)
