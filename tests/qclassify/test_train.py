"""Training tests: run folder contents, determinism, early stopping, run reuse."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

torch = pytest.importorskip("torch")

import qclassify.train as train_module  # noqa: E402
from qclassify.config import TrainConfig, run_is_complete  # noqa: E402
from qclassify.data import read_split_csv  # noqa: E402
from qclassify.inference import evaluate_run, load_run  # noqa: E402
from qclassify.metrics import youden_threshold  # noqa: E402
from qclassify.train import HISTORY_COLUMNS, fit  # noqa: E402

pytestmark = pytest.mark.slow
TINY = dict(epochs=2, batch_size=4, image_size=32, weights="none", device="cpu")
LOSS_ATOL = 1e-5  # the same float32 forward pass, batched differently


def _history(run_dir) -> list[dict[str, str]]:
    with (run_dir / "history.csv").open() as handle:
        return list(csv.DictReader(handle))


def _state(run_dir) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]


def test_fit_writes_the_run_folder(image_folder, tmp_path):
    """Contract (DESIGN run folder): config, split, history and a self-describing model.pt."""
    config = TrainConfig(model="mobilenet_v2", **TINY)
    result = fit(image_folder, tmp_path / "run", config, progress=False)
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == [
        "config.json", "history.csv", "model.pt", "split.csv"]
    stored = json.loads((run / "config.json").read_text())
    assert stored["options"] == json.loads(json.dumps(vars(config.resolved())))
    assert stored["class_names"] == ["normal", "stenosis"]
    assert stored["positive_class"] == "stenosis"  # the training minority
    assert stored["data_dir"] == str(image_folder.resolve())
    assert sum(stored["class_counts"][s]["stenosis"] for s in ("train", "val", "test")) == 6
    assert {"torch", "torchvision", "pennylane", "qclassify"} <= set(stored["versions"])
    assert stored["n_parameters"] == result.n_parameters > 0
    history = _history(run)
    assert list(history[0]) == list(HISTORY_COLUMNS)
    assert [int(row["epoch"]) for row in history] == [1, 2]
    checkpoint = torch.load(run / "model.pt", weights_only=True)
    assert checkpoint["model"] == "mobilenet_v2"
    assert checkpoint["class_names"] == ["normal", "stenosis"]
    assert checkpoint["image_size"] == 32
    assert checkpoint["q_backend"] == "torch" and checkpoint["q_device"] == "default.qubit"
    assert result.train_seconds == pytest.approx(sum(float(r["seconds"]) for r in history))


@pytest.mark.parametrize("augment", [False, True])
def test_same_seed_same_model_and_history(make_images, tmp_path, augment):
    """Same-seed rederivation: two fits with one seed, one of them loading images in two worker
    processes, give identical weights, split and history (except seconds); another seed gives
    other weights. Four training images in batches of two: each epoch's shuffle decides which
    pairs the model sees, over two epochs. With --augment the random flips and affine maps
    are drawn per (seed, epoch, image), so worker processes change nothing either."""
    data = make_images(tmp_path / "data", counts={"normal": 4, "stenosis": 4})
    runs = []
    for name, seed, workers in (("a", 0, 0), ("b", 0, 2), ("c", 1, 0)):
        config = TrainConfig(seed=seed, num_workers=workers, augment=augment,
                             **{**TINY, "batch_size": 2})
        fit(data, tmp_path / name, config, progress=False)
        runs.append(tmp_path / name)
    first, same, other = (_state(run) for run in runs)
    for key, tensor in first.items():
        torch.testing.assert_close(same[key], tensor, atol=0, rtol=0)
    assert any(not torch.equal(other[k], first[k]) for k in first if first[k].is_floating_point())
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in _history(runs[0])]
    assert len(strip) == 2
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in _history(runs[1])]
    assert (runs[0] / "split.csv").read_bytes() == (runs[1] / "split.csv").read_bytes()


def test_early_stopping_restores_the_best_epoch(image_folder, tmp_path, monkeypatch):
    """Mocked validation: scripted validation losses (1.0, 0.5, 0.7, 0.8, ...) with patience 2
    stop after epoch 4, and model.pt holds the weights the model had after epoch 2."""
    scripted = [1.0, 0.5, 0.7, 0.8, 0.9, 1.0]
    snapshots = []
    real_predict = train_module.predict_dataset_logits
    class_index = {"normal": 0, "stenosis": 1}

    def scripted_predict(model, images, **kwargs):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        logits, seconds = real_predict(model, images, **kwargs)
        labels = torch.tensor([class_index[path.parent.name] for path in images.paths])
        # Two-class logits (a on the true class, 0 on the other) whose cross-entropy
        # log(1 + e^-a) is exactly the scripted loss.
        true_logit = -math.log(math.expm1(scripted[len(snapshots) - 1]))
        fake = torch.zeros_like(logits)
        fake[torch.arange(len(labels)), labels] = true_logit
        return fake, seconds

    monkeypatch.setattr(train_module, "predict_dataset_logits", scripted_predict)
    config = TrainConfig(**{**TINY, "epochs": 6, "patience": 2}, recipe="paper")
    result = fit(image_folder, tmp_path / "run", config, progress=False)
    assert [r.epoch for r in result.history] == [1, 2, 3, 4]
    assert [r.val_loss for r in result.history] == pytest.approx(scripted[:4], abs=1e-6)
    assert result.best_epoch == 2 and result.stopped_early
    saved = _state(tmp_path / "run")
    for key, tensor in snapshots[1].items():
        torch.testing.assert_close(saved[key], tensor, atol=0, rtol=0)
    assert any(not torch.equal(snapshots[3][k], saved[k]) for k in saved
               if saved[k].is_floating_point())


def test_saved_model_reproduces_the_best_validation_loss(image_folder, tmp_path):
    """Same-seed rederivation: the validation loss of the saved model, recomputed from the
    split, equals the lowest validation loss in history.csv."""
    config = TrainConfig(**{**TINY, "epochs": 3, "patience": 1}, recipe="paper")
    result = fit(image_folder, tmp_path / "run", config, progress=False)
    run = load_run(tmp_path / "run", device="cpu")
    val = [s for s in read_split_csv(tmp_path / "run" / "split.csv") if s.split == "val"]
    proba, _ = run.proba([image_folder / s.path for s in val])
    labels = torch.tensor([run.class_names.index(s.class_name) for s in val])
    loss = torch.nn.functional.nll_loss(torch.from_numpy(proba).log(), labels).item()
    best = min(r.val_loss for r in result.history)
    assert loss == pytest.approx(best, abs=LOSS_ATOL)
    assert result.history[result.best_epoch - 1].val_loss == best


def test_run_reuse_and_overwrite(image_folder, tmp_path):
    """Contract: a finished run is recognised for the same options (device aside), refused
    as an output folder unless overwrite, and incomplete without model.pt."""
    run = tmp_path / "run"
    config = TrainConfig(**{**TINY, "epochs": 1})
    fit(image_folder, run, config, progress=False)
    assert run_is_complete(run, config)
    assert run_is_complete(run, TrainConfig(**{**TINY, "epochs": 1, "device": "auto"}))
    assert run_is_complete(run, config, data_dir=image_folder)
    assert not run_is_complete(run, config, data_dir=tmp_path)
    assert not run_is_complete(run, TrainConfig(**{**TINY, "epochs": 2}))
    assert not run_is_complete(run, TrainConfig(**{**TINY, "epochs": 1,
                                                   "q_device": "lightning.qubit"}))
    # A config.json written before --q-device existed holds no q_device: it was the default.
    stored = json.loads((run / "config.json").read_text())
    del stored["options"]["q_device"]
    (run / "config.json").write_text(json.dumps(stored))
    assert run_is_complete(run, config)
    assert not run_is_complete(run, TrainConfig(**{**TINY, "epochs": 1,
                                                   "q_device": "lightning.qubit"}))
    with pytest.raises(ValueError, match="already holds a finished run"):
        fit(image_folder, run, config, progress=False)
    fit(image_folder, run, config, progress=False, overwrite=True)
    (run / "model.pt").unlink()
    assert not run_is_complete(run, config)


def test_epoch_callback_and_synthetic_counts(image_folder, tmp_path):
    """Contract: on_epoch sees every history row; synthetic training images are counted but
    the positive class stays the minority of the originals."""
    (image_folder / "diffaug-manifest.csv").write_text(
        "path,source,class,split,t,gamma,seed,sha256\n")
    seen = []
    fit(image_folder, tmp_path / "run", TrainConfig(**TINY), progress=False,
        on_epoch=seen.append)
    assert [r.epoch for r in seen] == [1, 2]
    assert "epoch 2/2" in seen[1].summary(2)
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["n_synthetic_train"] == 0 and stored["positive_class"] == "stenosis"


@pytest.mark.parametrize(
    ("change", "message"),
    [({"image_size": 16}, "^image_size 16 is too small"),
     ({"model": "alexnet"}, "^model 'alexnet' is unknown"),
     ({"epochs": 0}, "^epochs must be at least 1"), ({"device": "cuda:0"}, None)],
)
def test_bad_options_fail_before_any_file_is_written(image_folder, tmp_path, change, message,
                                                     monkeypatch):
    """Contract: impossible options are ValueErrors and leave no run folder behind."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=message or "CUDA is not available"):
        fit(image_folder, tmp_path / "run", TrainConfig(**{**TINY, **change}), progress=False)
    assert not (tmp_path / "run").exists()


class BrightnessModel(torch.nn.Module):
    """A stand-in classifier whose stenosis logit grows with mean image brightness (the test
    images' stenosis discs are larger and brighter): its validation scores are far apart, so
    the best threshold does not hinge on float rounding. `slope` 0 (a buffer, never trained)
    scores every image alike."""

    def __init__(self, slope: float):
        super().__init__()
        self.register_buffer("slope", torch.tensor(slope))
        self.bias = torch.nn.Parameter(torch.zeros(2))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        brightness = images.mean(dim=(1, 2, 3))
        return torch.stack([-brightness, brightness], dim=1) * self.slope + self.bias


@pytest.fixture
def brightness_model(monkeypatch):
    """Make fit and load_run build a `BrightnessModel` of the slope given."""
    import qclassify.inference as inference_module

    def use(slope: float) -> None:
        def build(*args, **kwargs):
            return BrightnessModel(slope)

        monkeypatch.setattr(train_module, "build_model", build)
        monkeypatch.setattr(inference_module, "build_model", build)

    return use


def _validation_proba(run, data):
    """Positive-class labels and probabilities of the saved model on the validation split."""
    loaded = load_run(run, device="cpu")
    val = [s for s in read_split_csv(run / "split.csv") if s.split == "val"]
    proba, _ = loaded.proba([data / s.path for s in val])
    return np.array([s.class_name == "stenosis" for s in val]), proba[:, 1]


def test_youden_threshold_is_tuned_on_the_validation_split(make_images, tmp_path,
                                                           brightness_model):
    """Reference implementation: the checkpoint's decision threshold is youden_threshold of the
    saved model's validation predictions, recomputed from model.pt and split.csv (the same
    computation as during training); evaluate records it and predicts with it; argmax runs
    store none."""
    brightness_model(slope=10.0)
    data = make_images(tmp_path / "data", counts={"normal": 12, "stenosis": 10})
    run = tmp_path / "run"
    fit(data, run, TrainConfig(threshold="youden", **TINY), progress=False)
    is_positive, score = _validation_proba(run, data)
    loaded = load_run(run, device="cpu")
    assert loaded.positive_class == "stenosis"
    assert roc_auc_score(is_positive, score) > 0.9  # the stand-in separates the classes
    assert loaded.decision_threshold == youden_threshold(is_positive, score) is not None
    assert loaded.decision_rule_note is None
    metrics = evaluate_run(run, n_bootstrap=0).metrics
    assert metrics["decision_threshold"] == loaded.decision_threshold
    with (run / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    threshold = loaded.decision_threshold
    predicted = ["stenosis" if float(r["p_stenosis"]) >= threshold else "normal" for r in rows]
    assert [r["predicted_class"] for r in rows] == predicted
    with pytest.raises(ValueError, match="tuned for positive class 'stenosis'"):
        evaluate_run(run, n_bootstrap=0, positive="normal")
    plain = tmp_path / "plain"
    fit(data, plain, TrainConfig(**TINY), progress=False)
    assert load_run(plain).decision_threshold is None


def test_youden_falls_back_to_argmax_when_nothing_beats_chance(make_images, tmp_path,
                                                               brightness_model):
    """Degenerate case: a model that scores every validation image alike has Youden's J = 0
    at every threshold; fit warns once, stores no threshold (argmax, never "predict nothing
    positive"), and config.json, model.pt and metrics.json say why."""
    brightness_model(slope=0.0)
    data = make_images(tmp_path / "data")
    run = tmp_path / "run"
    with pytest.warns(UserWarning, match="no threshold beats chance"):
        fit(data, run, TrainConfig(threshold="youden", **TINY), progress=False)
    is_positive, score = _validation_proba(run, data)
    assert youden_threshold(is_positive, score) is None  # the premise
    loaded = load_run(run, device="cpu")
    assert loaded.decision_threshold is None
    assert "no threshold beats chance" in loaded.decision_rule_note
    stored = json.loads((run / "config.json").read_text())
    assert stored["decision_threshold"] is None
    assert stored["decision_rule_note"] == loaded.decision_rule_note
    metrics = evaluate_run(run, n_bootstrap=0).metrics
    assert metrics["decision_threshold"] is None
    assert metrics["decision_rule_note"] == loaded.decision_rule_note


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_learning_rate_schedule(image_folder, tmp_path, monkeypatch, schedule):
    """Analytic oracle: the rate of epoch e (1-based) is lr for constant and
    lr * (1 + cos(pi * (e - 1) / epochs)) / 2 for cosine (SGDR's formula, eta_min 0)."""
    rates = []
    real_epoch = train_module._train_epoch

    def recording_epoch(model, loader, optimizer, device, **kwargs):
        rates.append(optimizer.param_groups[0]["lr"])
        return real_epoch(model, loader, optimizer, device, **kwargs)

    monkeypatch.setattr(train_module, "_train_epoch", recording_epoch)
    config = TrainConfig(**{**TINY, "epochs": 3, "patience": 5}, lr=1e-3, lr_schedule=schedule,
                         recipe="paper")
    fit(image_folder, tmp_path / "run", config, progress=False)
    expected = [1e-3 if schedule == "constant" else 1e-3 * (1 + math.cos(math.pi * e / 3)) / 2
                for e in range(3)]
    assert rates == pytest.approx(expected, rel=1e-12)


class _Interrupt(Exception):
    """Stands for a kill after an epoch (KeyboardInterrupt would stop pytest)."""


def test_resume_equals_an_uninterrupted_run(make_images, tmp_path):
    """Same-seed rederivation: a run interrupted after epoch 2 of 3 and resumed with
    fit(resume=True) gives the weights and history (seconds aside) of an uninterrupted run —
    with dropout (mobilenet_v2: torch's RNG state), a cosine schedule (scheduler state),
    augmentation and Adam's moments restored; the training state is gone once model.pt is."""
    data = make_images(tmp_path / "data", counts={"normal": 4, "stenosis": 4})
    config = TrainConfig(model="mobilenet_v2", augment=True, lr_schedule="cosine",
                         **{**TINY, "epochs": 3, "patience": 5, "batch_size": 2})
    fit(data, tmp_path / "whole", config, progress=False)

    def interrupt_after_two(record):
        if record.epoch == 2:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        fit(data, tmp_path / "resumed", config, progress=False, on_epoch=interrupt_after_two)
    assert (tmp_path / "resumed" / "training-state.pt").is_file()
    assert not (tmp_path / "resumed" / "model.pt").exists()
    result = fit(data, tmp_path / "resumed", config, progress=False, resume=True)
    assert [r.epoch for r in result.history] == [1, 2, 3]
    whole, resumed = _state(tmp_path / "whole"), _state(tmp_path / "resumed")
    for key, tensor in whole.items():
        torch.testing.assert_close(resumed[key], tensor, atol=0, rtol=0, msg=key)

    def without_seconds(run):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in _history(run)]

    assert without_seconds(tmp_path / "resumed") == without_seconds(tmp_path / "whole")
    assert not (tmp_path / "resumed" / "training-state.pt").exists()


def test_resume_refuses_what_it_cannot_continue(image_folder, tmp_path):
    """Contract: --resume needs an interrupted run of the same options; a finished run, a
    folder without training state, other options, or --overwrite with it are refused."""
    from qclassify.options import OptionError

    config = TrainConfig(**{**TINY, "epochs": 2})

    def stop(record):
        raise _Interrupt

    with pytest.raises(_Interrupt):
        fit(image_folder, tmp_path / "run", config, progress=False, on_epoch=stop)
    with pytest.raises(OptionError, match="other options"):
        fit(image_folder, tmp_path / "run", TrainConfig(**{**TINY, "epochs": 3}),
            progress=False, resume=True)
    with pytest.raises(OptionError, match="choose one"):
        fit(image_folder, tmp_path / "run", config, progress=False, resume=True,
            overwrite=True)
    with pytest.raises(OptionError, match="no interrupted run"):
        fit(image_folder, tmp_path / "empty", config, progress=False, resume=True)
    fit(image_folder, tmp_path / "run", config, progress=False, resume=True)
    with pytest.raises(OptionError, match="nothing to resume"):
        fit(image_folder, tmp_path / "run", config, progress=False, resume=True)
