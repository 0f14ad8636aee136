"""Loading, evaluating and predicting with a finished run folder."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from qclassify.config import TrainConfig  # noqa: E402
from qclassify.data import read_split_csv  # noqa: E402
from qclassify.images import make_preprocess, read_image  # noqa: E402
from qclassify.inference import (  # noqa: E402
    evaluate_run,
    evaluate_test_split,
    load_run,
    predict_paths,
    save_evaluation,
)
from qclassify.runfolder import RunFolder  # noqa: E402
from qclassify.train import fit  # noqa: E402
from sklearn.metrics import accuracy_score  # noqa: E402

PROBA_ATOL = 1e-6  # the same float32 forward pass, batched differently
CIRCUIT_ATOL = 1e-5  # the same weights, circuit simulated in float32 (torch) or float64 (PL)
METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "auc")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A private copy of the session's trained run, and its data folder."""
    run, data = trained_run
    return shutil.copytree(run, tmp_path / "run"), data


def _rows(path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_evaluating_writes_nothing_and_saving_writes_what_evaluate_run_does(run_copy):
    """Contract: evaluate_test_split is pure (the folder is unchanged), its predictions are the
    test originals of split.csv with sklearn's accuracy in its metrics, and save_evaluation
    writes the files that RunFolder reads back to the same numbers."""
    run, _ = run_copy
    before = sorted(p.name for p in run.iterdir())
    evaluation = evaluate_test_split(run, n_bootstrap=20, seed=0)
    assert sorted(p.name for p in run.iterdir()) == before
    test = [s.path for s in read_split_csv(run / "split.csv") if s.split == "test"]
    assert evaluation.paths == test
    accuracy = accuracy_score(evaluation.labels, evaluation.proba.argmax(axis=1))
    assert evaluation.metrics["accuracy"]["value"] == pytest.approx(accuracy, abs=1e-12)
    folder = save_evaluation(evaluation)
    assert folder == RunFolder(run)
    assert json.dumps(folder.read_metrics()) == json.dumps(evaluation.metrics)
    rows = folder.read_predictions()
    assert [row["path"] for row in rows] == test
    np.testing.assert_allclose([[float(row[f"p_{c}"]) for c in ("normal", "stenosis")]
                                for row in rows], evaluation.proba, rtol=0, atol=1e-15)
    assert folder.roc_file.read_bytes().startswith(PNG_MAGIC)
    history = folder.read_history()
    assert evaluation.metrics["train_seconds"] == pytest.approx(
        sum(row["seconds"] for row in history))


def test_evaluate_writes_metrics_predictions_and_figures(run_copy):
    """Reference implementation: metrics.json has the DESIGN keys, and its accuracy is
    sklearn's accuracy of predictions.csv, which lists exactly the test originals."""
    run, _ = run_copy
    metrics = evaluate_run(run, n_bootstrap=50, seed=0).metrics
    stored = json.loads((run / "metrics.json").read_text())
    assert stored == json.loads(json.dumps(metrics))
    for name in METRICS:
        assert set(stored[name]) == {"value", "ci95"}
    assert {"confusion_matrix", "n_test", "inference_ms_per_image", "n_parameters",
            "train_seconds"} <= set(stored)
    rows = _rows(run / "predictions.csv")
    assert list(rows[0]) == ["path", "true_class", "predicted_class", "p_normal", "p_stenosis"]
    test = [s.path for s in read_split_csv(run / "split.csv") if s.split == "test"]
    assert [r["path"] for r in rows] == test and stored["n_test"] == len(test)
    expected = accuracy_score([r["true_class"] for r in rows], [r["predicted_class"] for r in rows])
    assert stored["accuracy"]["value"] == pytest.approx(expected, abs=1e-12)
    assert np.asarray(stored["confusion_matrix"]).sum() == len(test)
    history = _rows(run / "history.csv")
    assert stored["train_seconds"] == pytest.approx(sum(float(r["seconds"]) for r in history))
    assert stored["positive_class"] == "stenosis"
    for figure in ("confusion_matrix.png", "roc.png"):
        assert (run / figure).read_bytes().startswith(PNG_MAGIC)


def test_predictions_match_a_direct_forward_pass(run_copy):
    """Reference implementation: predictions.csv probabilities equal softmax(model(x)) for
    each test image read and preprocessed on its own."""
    run, data = run_copy
    evaluate_run(run, n_bootstrap=0)
    loaded = load_run(run, device="cpu")
    preprocess = make_preprocess(loaded.image_size)
    for row in _rows(run / "predictions.csv"):
        image = preprocess(read_image(data / row["path"]))[None]
        with torch.no_grad():
            expected = torch.softmax(loaded.model(image).double(), dim=1)[0].numpy()
        got = np.array([float(row["p_normal"]), float(row["p_stenosis"])])
        np.testing.assert_allclose(got, expected, atol=PROBA_ATOL, rtol=0)


def test_evaluate_positive_option(run_copy):
    """Contract: --positive picks the class of the binary view; an unknown one is an error."""
    run, data = run_copy
    assert evaluate_run(run, data, n_bootstrap=0, positive="normal").metrics["positive_class"] == "normal"
    with pytest.raises(ValueError, match="not a class"):
        evaluate_run(run, data, n_bootstrap=0, positive="tumour")


def test_three_classes_in_split_folders(make_images, tmp_path):
    """Contract: a three-class split-layout run is evaluated with macro averages and no
    positive class (which --positive cannot name)."""
    data = make_images(tmp_path / "data", counts={"a": 6, "b": 6, "c": 6}, layout="split")
    config = TrainConfig(model="mobilenet_v2", epochs=1, batch_size=4, image_size=32,
                         weights="none", device="cpu")
    fit(data, tmp_path / "run", config, progress=False)
    metrics = evaluate_run(tmp_path / "run", n_bootstrap=10).metrics
    assert metrics["positive_class"] is None and metrics["averaging"] == "macro"
    assert np.asarray(metrics["confusion_matrix"]).shape == (3, 3)
    assert [r["path"].split("/")[0] for r in _rows(tmp_path / "run" / "predictions.csv")] == (
        ["test"] * metrics["n_test"])
    with pytest.raises(ValueError, match="two-class"):
        evaluate_run(tmp_path / "run", n_bootstrap=0, positive="a")


def test_evaluate_names_missing_test_images(run_copy, tmp_path):
    """Contract: evaluating against a folder without the run's test images says so."""
    run, _ = run_copy
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(ValueError, match="missing from"):
        evaluate_run(run, tmp_path / "elsewhere", n_bootstrap=0)


def test_predict_paths_files_and_folders(trained_run, tmp_path):
    """Contract: folders are searched recursively in path order, files kept as given, each row
    `path, predicted_class, p_<class>...` with probabilities summing to one; unreadable images
    are skipped by name."""
    run, data = trained_run
    (tmp_path / "nested").mkdir()
    shutil.copy(data / "normal" / "normal_000.png", tmp_path / "nested" / "b.png")
    shutil.copy(data / "stenosis" / "stenosis_000.png", tmp_path / "a.png")
    (tmp_path / "broken.png").write_bytes(b"garbage")
    single = data / "normal" / "normal_001.png"
    with pytest.warns(UserWarning, match="broken.png"):
        rows = predict_paths(run, [single, tmp_path], batch_size=2, device="cpu")
    assert [r["path"] for r in rows] == [str(single), str(tmp_path / "a.png"),
                                         str(tmp_path / "nested" / "b.png")]
    for row in rows:
        assert list(row) == ["path", "predicted_class", "p_normal", "p_stenosis"]
        assert row["p_normal"] + row["p_stenosis"] == pytest.approx(1.0, abs=1e-9)
        winner = "normal" if row["p_normal"] >= row["p_stenosis"] else "stenosis"
        assert row["predicted_class"] == winner


def test_load_run_rebuilds_the_checkpoints_pennylane_device(run_copy):
    """Contract: load_run builds the quantum layer on the checkpoint's q_device (here the
    weights of a torch-backend run, moved to PennyLane), which predicts what the torch
    backend predicts; a checkpoint written before q_device existed gets default.qubit."""
    pytest.importorskip("pennylane_lightning")
    run, data = run_copy
    images = sorted((data / "stenosis").iterdir())[:3]
    expected, _ = load_run(run, device="cpu").proba(images)
    checkpoint = torch.load(run / "model.pt", weights_only=True)
    checkpoint.update(q_backend="pennylane", q_device="lightning.qubit")
    torch.save(checkpoint, run / "model.pt")
    moved = load_run(run, device="cpu")
    assert moved.model.quantum.circuit.qnode.device.name == "lightning.qubit"
    np.testing.assert_allclose(moved.proba(images)[0], expected, atol=CIRCUIT_ATOL, rtol=0)
    del checkpoint["q_device"]
    torch.save(checkpoint, run / "model.pt")
    assert load_run(run, device="cpu").model.quantum.device_name == "default.qubit"


def test_load_run_without_model(tmp_path):
    """Contract: a folder without model.pt (or no folder) is a ValueError saying so."""
    (tmp_path / "run").mkdir()
    with pytest.raises(ValueError, match="holds no model.pt"):
        load_run(tmp_path / "run")
    with pytest.raises(ValueError, match="does not exist"):
        load_run(tmp_path / "absent")
    (tmp_path / "run" / "model.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="cannot read"):
        load_run(tmp_path / "run")
