"""Training recipes (--recipe auto|paper|scratch) and their levers: resolution and precedence,
what config.json records and fit prints, and a visible effect of each lever."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")

import qclassify.train as train_module  # noqa: E402
from qclassify.cli import main  # noqa: E402
from qclassify.compare import compare  # noqa: E402
from qclassify.config import run_is_complete  # noqa: E402
from qclassify.inference import load_run  # noqa: E402
from qclassify.models import MODEL_NAMES, build_model  # noqa: E402
from qclassify.options import RECIPE_FIELDS, RECIPES, TrainConfig  # noqa: E402
from qclassify.train import fit  # noqa: E402

pytestmark = pytest.mark.slow
TINY = dict(epochs=2, batch_size=4, image_size=32, weights="none", device="cpu")
CLI_TINY = ["--image-size", "32", "--batch-size", "4", "--device", "cpu", "--quiet"]
RATE_RTOL = 1e-12  # the same float64 arithmetic, in another order
LOSS_ATOL = 1e-5  # float32 cross-entropy against float64 numpy
# Where each model first halves the resolution (and so where the low-resolution stem acts).
FIRST_DOWNSAMPLING = {"qmobilenet": "features.0.0", "mobilenet_v2": "features.0.0",
                      "resnet18": "conv1", "densenet121": "features.conv0",
                      "vgg16": "features.4"}


class TinyModel(torch.nn.Module):
    """A two-parameter stand-in classifier (mean brightness -> two logits): fit runs in
    milliseconds and the recipe's optimiser, schedule and selection are all that matter."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor([-1.0, 1.0]))
        self.bias = torch.nn.Parameter(torch.zeros(2))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(1, 2, 3))[:, None] * self.scale + self.bias


@pytest.fixture
def tiny_model(monkeypatch):
    """fit builds a `TinyModel` whatever the options."""
    monkeypatch.setattr(train_module, "build_model", TinyModel)


@pytest.fixture
def recorded_epochs(monkeypatch):
    """Each epoch's optimizer class, learning rate and label smoothing as `_train_epoch`
    receives them."""
    seen = []
    real_epoch = train_module._train_epoch

    def recording_epoch(model, loader, optimizer, device, **kwargs):
        seen.append((type(optimizer), optimizer.param_groups[0]["lr"],
                     kwargs["label_smoothing"]))
        return real_epoch(model, loader, optimizer, device, **kwargs)

    monkeypatch.setattr(train_module, "_train_epoch", recording_epoch)
    return seen


def _history(run_dir) -> list[dict[str, float]]:
    with (run_dir / "history.csv").open() as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def test_auto_recipe_follows_the_weights(tmp_path):
    """Contract: auto = scratch with weights "none", paper with imagenet or a weights file;
    every unset recipe option takes the recipe's value; resolving twice changes nothing."""
    weights_file = tmp_path / "weights.pt"
    weights_file.write_bytes(b"")
    scratch = TrainConfig(weights="none").resolved()
    assert scratch.recipe == "scratch"
    expected = {**RECIPES["scratch"], "stem": "standard"}  # stem auto is standard for now
    assert {field: getattr(scratch, field) for field in RECIPE_FIELDS} == expected
    for weights in ("imagenet", str(weights_file)):
        paper = TrainConfig(weights=weights).resolved()
        assert paper.recipe == "paper"
        assert {field: getattr(paper, field) for field in RECIPE_FIELDS} == RECIPES["paper"]
    assert scratch.resolved() == scratch
    # The paper's recipe is section 2.5's, as DESIGN.md fixes it.
    paper = TrainConfig().resolved()
    assert (paper.optimizer, paper.lr, paper.weight_decay, paper.epochs, paper.batch_size,
            paper.patience, paper.monitor, paper.warmup_epochs, paper.lr_schedule) == (
        "adam", 1e-4, 1e-4, 30, 16, 5, "val_loss", 0, "constant")


def test_explicit_values_override_the_recipe():
    """Precedence: TrainConfig defaults < recipe < explicit values, for library callers."""
    config = TrainConfig(recipe="scratch", lr=3e-4, weights="imagenet").resolved()
    assert config.recipe == "scratch" and config.lr == 3e-4
    assert config.weight_decay == RECIPES["scratch"]["weight_decay"]
    assert TrainConfig(weights="none", recipe="paper").resolved().optimizer == "adam"


def test_fit_prints_and_records_the_resolved_recipe(image_folder, tmp_path):
    """CLI: --weights none resolves to scratch; an explicit --lr (and --epochs) overrides it,
    the other values come from the recipe; fit prints one line first, config.json records it."""
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["fit", str(image_folder), "--out", str(run),
                                       "--model", "mobilenet_v2", "--weights", "none",
                                       "--epochs", "1", "--lr", "0.002", *CLI_TINY],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    first_line = result.output.splitlines()[0]
    assert first_line.startswith("recipe scratch (from --weights none): adamw lr 0.002 wd 0.05, "
                                 "warmup 3 + cosine, 1 epochs, batch 4, early stop on val AUC, "
                                 "patience 15")
    options = json.loads((run / "config.json").read_text())["options"]
    assert options["recipe"] == "scratch"
    assert (options["lr"], options["epochs"], options["batch_size"]) == (0.002, 1, 4)
    assert {k: options[k] for k in ("optimizer", "weight_decay", "warmup_epochs", "monitor",
                                    "patience", "lr_schedule")} == {
        k: RECIPES["scratch"][k] for k in ("optimizer", "weight_decay", "warmup_epochs",
                                           "monitor", "patience", "lr_schedule")}
    assert run_is_complete(run, TrainConfig(model="mobilenet_v2", weights="none", epochs=1,
                                            lr=0.002, image_size=32, batch_size=4))


def test_a_weights_file_selects_the_paper_recipe(image_folder, tmp_path, monkeypatch):
    """CLI: --weights PATH (pretrained) resolves auto to paper; --recipe scratch forces
    scratch; train.fit receives the resolved options (fit itself mocked)."""
    weights_file = tmp_path / "weights.pt"
    weights_file.write_bytes(b"")
    received = []

    def fake_fit(data, run_dir, config, **kwargs):
        received.append(config)
        kwargs["on_start"]()  # where the real fit prints the recipe: model built, nothing written
        raise ValueError("stop here")

    monkeypatch.setattr(train_module, "fit", fake_fit)
    for extra, recipe in (([], "paper"), (["--recipe", "scratch"], "scratch")):
        result = CliRunner().invoke(main, ["fit", str(image_folder), "--out",
                                           str(tmp_path / "run"), "--weights",
                                           str(weights_file), *extra, *CLI_TINY])
        assert result.exit_code == 1
        assert result.output.startswith(f"recipe {recipe} (")
        assert received[-1].recipe == recipe
        assert received[-1].lr == RECIPES[recipe]["lr"]


def test_adamw_and_warmup_then_cosine(image_folder, tmp_path, tiny_model, recorded_epochs):
    """Analytic oracle: scratch trains with torch.optim.AdamW; epoch e of a W-epoch warmup
    runs at lr*e/(W+1), then cosine from lr to 0 over the E-W remaining epochs
    (lr*(1+cos(pi*k/(E-W)))/2, k = 0, 1, ...); the paper recipe uses Adam."""
    lr, warmup, epochs = 1e-2, 2, 5
    config = TrainConfig(**{**TINY, "epochs": epochs}, recipe="scratch", lr=lr,
                         warmup_epochs=warmup, lr_schedule="cosine")
    fit(image_folder, tmp_path / "run", config, progress=False)
    expected = [lr * e / (warmup + 1) for e in range(1, warmup + 1)]
    expected += [lr * (1 + math.cos(math.pi * k / (epochs - warmup))) / 2
                 for k in range(epochs - warmup)]
    assert [rate for _, rate, _ in recorded_epochs] == pytest.approx(expected, rel=RATE_RTOL)
    assert {kind for kind, _, _ in recorded_epochs} == {torch.optim.AdamW}
    recorded_epochs.clear()
    fit(image_folder, tmp_path / "paper", TrainConfig(**TINY, recipe="paper"), progress=False)
    assert {kind for kind, _, _ in recorded_epochs} == {torch.optim.Adam}


def test_resume_continues_the_warmup_schedule(image_folder, tmp_path, tiny_model,
                                              recorded_epochs):
    """Same-seed rederivation: a scratch run (warmup + cosine, SequentialLR) interrupted
    after epoch 2 and resumed runs every epoch at the rate of an uninterrupted run."""
    config = TrainConfig(**{**TINY, "epochs": 5}, recipe="scratch", warmup_epochs=2)
    fit(image_folder, tmp_path / "whole", config, progress=False)
    whole = [rate for _, rate, _ in recorded_epochs]
    recorded_epochs.clear()

    class Interrupt(Exception):
        pass

    def interrupt_after_two(record):
        if record.epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(image_folder, tmp_path / "resumed", config, progress=False,
            on_epoch=interrupt_after_two)
    fit(image_folder, tmp_path / "resumed", config, progress=False, resume=True)
    assert [rate for _, rate, _ in recorded_epochs] == pytest.approx(whole, rel=RATE_RTOL)


def test_monitor_val_auc_keeps_the_epoch_with_the_highest_auc(image_folder, tmp_path,
                                                              tiny_model, monkeypatch):
    """Mocked metric: scripted validation AUCs (0.6, 0.9, 0.9, 0.7); --monitor val_auc keeps
    the epoch of the highest AUC in history.csv, the tie broken by the lower validation
    loss; --monitor val_loss keeps the lowest loss."""
    scripted = iter([0.6, 0.9, 0.9, 0.7] * 2)
    monkeypatch.setattr(train_module, "_auc", lambda labels, proba: next(scripted))
    for monitor in ("val_auc", "val_loss"):
        run = tmp_path / monitor
        config = TrainConfig(**{**TINY, "epochs": 4}, recipe="scratch", monitor=monitor,
                             lr=0.5)
        result = fit(image_folder, run, config, progress=False)
        rows = _history(run)
        if monitor == "val_auc":
            best = max(rows, key=lambda row: (row["val_auc"], -row["val_loss"]))
            assert [row["val_auc"] for row in rows] == [0.6, 0.9, 0.9, 0.7]
        else:
            best = min(rows, key=lambda row: row["val_loss"])
        assert result.best_epoch == int(best["epoch"])
        assert torch.load(run / "model.pt", weights_only=True)["best_epoch"] == result.best_epoch


def test_label_smoothing_changes_the_training_loss_by_its_formula():
    """Analytic oracle: with smoothing eps over C classes the training loss per image is
    (1 - eps) * CE + eps * mean_k(-log p_k), computed here with numpy; fit passes the option."""
    torch.manual_seed(0)
    images, labels = torch.rand(6, 3, 4, 4), torch.tensor([0, 1, 1, 0, 1, 0])
    model = TinyModel()
    frozen = torch.optim.SGD(model.parameters(), lr=0.0)  # the loss of the same weights
    log_p = torch.log_softmax(model(images), dim=1).detach().double().numpy()
    cross_entropy = -log_p[np.arange(6), labels.numpy()].mean()
    for eps in (0.0, 0.3):
        loss = train_module._train_epoch(model, [(images, labels)], frozen, "cpu",
                                         progress=False, desc="", label_smoothing=eps)
        expected = (1 - eps) * cross_entropy + eps * (-log_p.mean(axis=1)).mean()
        assert loss == pytest.approx(expected, abs=LOSS_ATOL)


def test_fit_passes_label_smoothing(image_folder, tmp_path, tiny_model, recorded_epochs):
    """Contract: --label-smoothing reaches every training epoch and config.json."""
    config = TrainConfig(**TINY, label_smoothing=0.2)
    fit(image_folder, tmp_path / "run", config, progress=False)
    assert [smoothing for _, _, smoothing in recorded_epochs] == [0.2, 0.2]
    options = json.loads((tmp_path / "run" / "config.json").read_text())["options"]
    assert options["label_smoothing"] == 0.2


def test_balanced_class_weights_are_sklearns_formula_and_weight_the_loss():
    """Analytic oracles: "balanced" weights are n / (C * n_c); the weighted training loss is
    sklearn's log_loss with each image weighted by its class's weight; "none" is plain CE."""
    from sklearn.metrics import log_loss

    labels = [0, 0, 0, 0, 1, 0]
    weights = train_module.class_weights("balanced", labels, 2)
    np.testing.assert_allclose(weights.numpy(), [6 / (2 * 5), 6 / (2 * 1)], rtol=1e-6)
    assert train_module.class_weights("none", labels, 2) is None
    torch.manual_seed(0)
    images, targets = torch.rand(6, 3, 4, 4), torch.tensor(labels)
    model = TinyModel()
    frozen = torch.optim.SGD(model.parameters(), lr=0.0)
    proba = torch.softmax(model(images).double(), dim=1).detach().numpy()
    loss = train_module._train_epoch(model, [(images, targets)], frozen, "cpu", progress=False,
                                     desc="", class_weight=weights)
    expected = log_loss(labels, proba, sample_weight=weights.numpy()[labels], labels=[0, 1])
    assert loss == pytest.approx(expected, abs=LOSS_ATOL)
    assert expected != pytest.approx(log_loss(labels, proba, labels=[0, 1]), abs=1e-3)


def test_validation_auc_counts_round_off_near_ties_as_ties():
    """Oracle: sklearn's AUC of the exactly tied scores. Probabilities equal up to float32
    round-off, ordered by that round-off to rank perfectly, are scored as ties: a network that
    outputs a constant scores 0.5, and a tied group inside a real ranking counts half; scores
    further apart than the tolerance are ranked as sklearn ranks them."""
    from sklearn.metrics import roc_auc_score

    labels = np.array([0, 0, 1, 1, 0, 1])
    noise = np.where(labels == 1, 8e-8, 0.0) + np.arange(6) * 1e-8
    constant = np.stack([0.5647 - noise, 0.4353 + noise], axis=1)
    assert roc_auc_score(labels, constant[:, 1]) == 1.0  # what the round-off alone gives
    assert train_module._auc(labels, constant) == roc_auc_score(labels, np.full(6, 0.4353)) == 0.5
    tied = np.array([0.1, 0.3, 0.2, 0.3, 0.3, 0.9])  # 0.3 x3: two negatives, one positive
    nudged = tied + np.where(tied == 0.3, noise * 5, 0.0)
    assert train_module._auc(labels, np.stack([1 - nudged, nudged], 1)) == roc_auc_score(
        labels, tied)
    spread = constant[:, 1] + 1000 * noise
    assert train_module._auc(labels, np.stack([1 - spread, spread], 1)) == roc_auc_score(
        labels, spread) == 1.0


def test_balanced_class_weights_need_every_class_in_train():
    """Bad input: a class without training images is named, as an option error."""
    from qclassify.options import OptionError

    with pytest.raises(OptionError, match=r"class index\(es\) \[1\] have none"):
        train_module.class_weights("balanced", [0, 0, 0], 2)


def test_fit_passes_the_class_weight(image_folder, tmp_path, tiny_model, monkeypatch):
    """Contract: --class-weight balanced reaches every training epoch as the weights of the
    train split's labels, and config.json records it; the recipes leave it off."""
    seen = []
    real_epoch = train_module._train_epoch
    monkeypatch.setattr(train_module, "_train_epoch", lambda *args, **kwargs: (
        seen.append(kwargs["class_weight"]), real_epoch(*args, **kwargs))[1])
    fit(image_folder, tmp_path / "run", TrainConfig(**TINY, class_weight="balanced"),
        progress=False)
    with (tmp_path / "run" / "split.csv").open(newline="") as handle:
        train = [row["class"] for row in csv.DictReader(handle) if row["split"] == "train"]
    classes = sorted(set(train))
    expected = [len(train) / (2 * train.count(name)) for name in classes]
    assert len(seen) == TINY["epochs"]
    for weights in seen:
        np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-6)
    options = json.loads((tmp_path / "run" / "config.json").read_text())["options"]
    assert options["class_weight"] == "balanced"
    assert {recipe["class_weight"] for recipe in RECIPES.values()} == {"none"}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_lowres_stem_doubles_the_first_feature_map(name):
    """Contract (models.ARCHITECTURES): for all five models the low-resolution stem doubles
    the side of the feature map where the standard network first halves it, and keeps every
    tensor's name and shape (standard checkpoints, ImageNet's included, still load)."""
    sides = {}
    for stem in ("standard", "lowres"):
        torch.manual_seed(0)
        model = build_model(name, 2, weights="none", stem=stem).eval()
        output = {}

        def record_side(module, args, out, output=output):
            output["side"] = out.shape[-1]  # returns None: the output is left as it is

        model.get_submodule(FIRST_DOWNSAMPLING[name]).register_forward_hook(record_side)
        with torch.no_grad():
            model(torch.rand(1, 3, 32, 32))
        sides[stem] = (output["side"], {k: v.shape for k, v in model.state_dict().items()})
    assert sides["lowres"][0] == 2 * sides["standard"][0] == 32
    assert sides["lowres"][1] == sides["standard"][1]


def test_lowres_stem_round_trips_through_model_pt(image_folder, tmp_path):
    """Contract: model.pt records the stem; load_run rebuilds it (same predictions as the
    trained model's validation outputs); a checkpoint without the key is the standard stem."""
    run = tmp_path / "run"
    fit(image_folder, run, TrainConfig(model="mobilenet_v2", stem="lowres",
                                       **{**TINY, "epochs": 1}), progress=False)
    checkpoint = torch.load(run / "model.pt", weights_only=True)
    assert checkpoint["stem"] == "lowres"
    assert load_run(run, device="cpu").model.features[0][0].stride == (1, 1)
    del checkpoint["stem"]  # as written before the option existed
    torch.save(checkpoint, run / "model.pt")
    assert load_run(run, device="cpu").model.features[0][0].stride == (2, 2)


def test_compare_resolves_the_recipe_once_and_reuses_runs(image_folder, tmp_path):
    """Contract: compare trains every run with the same resolved recipe, records it in
    compare.json and each run's config.json, and a second call reuses the finished runs."""
    config = TrainConfig(**{**TINY, "epochs": 1})
    report = tmp_path / "report"
    first = compare(image_folder, None, report, models=["mobilenet_v2@original"],
                    train_config=config, n_bootstrap=0, progress=False)
    assert first.trained == ["mobilenet_v2@original"]
    summary = json.loads((report / "compare.json").read_text())
    assert summary["train_config"]["recipe"] == "scratch"
    run_options = json.loads((report / "runs" / "mobilenet_v2@original" / "config.json")
                             .read_text())["options"]
    assert run_options == {**summary["train_config"], "model": "mobilenet_v2"}
    again = compare(image_folder, None, report, models=["mobilenet_v2@original"],
                    train_config=config, n_bootstrap=0, progress=False)
    assert again.trained == []
