"""Tests of `qclassify compare` (qclassify.compare, qclassify.compare_report and the CLI command).

Kinds: contract (run selection, report files, resumability, the same-test-set rule), reference
implementation (the table's metrics and p-values recomputed from predictions.csv with
qclassify.metrics/stats, themselves tested against scikit-learn), CLI. Training is real but
tiny: 32 px images, one epoch, random initialisation.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402
from qclassify.cli import main  # noqa: E402
from qclassify.compare import DEFAULT_RUNS, compare, select_runs  # noqa: E402
from qclassify.compare_report import FIGURE_FILES, RunOutcome, write_report  # noqa: E402
from qclassify.config import TrainConfig  # noqa: E402
from qclassify.data import MANIFEST_NAME, discover_dataset  # noqa: E402
from qclassify.metrics import METRIC_NAMES, evaluate_predictions  # noqa: E402
from qclassify.stats import mcnemar_test  # noqa: E402

COUNTS = {"normal": 20, "stenosis": 14}
TINY = TrainConfig(epochs=1, batch_size=8, image_size=32, weights="none", device="cpu",
                   val_fraction=0.2, test_fraction=0.25)
TINY_OPTIONS = ["--epochs", "1", "--batch-size", "8", "--image-size", "32", "--weights", "none",
                "--device", "cpu", "--val-fraction", "0.2", "--test-fraction", "0.25",
                "--bootstrap", "50", "--quiet"]
TWO_RUNS = ["qmobilenet@balanced", "mobilenet_v2@original"]


def make_image_folder(root: Path, counts: dict[str, int], size: int = 32) -> Path:
    """Class folders of noisy grey PNGs whose brightness depends on the class. (The shared
    `make_images` fixture is function-scoped; the runs here are trained once per module.)"""
    rng = np.random.default_rng(0)
    for k, (name, count) in enumerate(sorted(counts.items())):
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = np.clip(70 + 90 * k + rng.normal(0, 25, (size, size)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{name}_{i:03d}.png")
    return root


def make_balanced_copy(data: Path, out: Path, config: TrainConfig) -> Path:
    """A stand-in for `diffaug balance DATA OUT`: the originals copied, plus one synthetic image
    per minority-class training image, listed in the manifest (DESIGN.md format)."""
    shutil.copytree(data, out)
    dataset = discover_dataset(data, seed=config.seed, val_fraction=config.val_fraction,
                               test_fraction=config.test_fraction)
    rows = []
    for sample in dataset.subset("train"):
        if sample.class_name != "stenosis":
            continue
        source = Path(sample.path)
        synthetic = source.with_name(f"syn_{source.stem}_0.png")
        with Image.open(data / source) as image:
            image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(out / synthetic)
        rows.append({"path": synthetic.as_posix(), "source": source.as_posix(),
                     "class": sample.class_name, "split": "", "t": 2, "gamma": 1.0,
                     "seed": 0, "sha256": ""})
    with (out / MANIFEST_NAME).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("compare-data")
    data = make_image_folder(base / "data", COUNTS)
    return data, make_balanced_copy(data, base / "balanced", TINY)


@pytest.fixture(scope="module")
def first_report(tmp_path_factory, datasets) -> tuple[Path, object]:
    """One CLI compare of two runs (the proposed model and a baseline)."""
    data, balanced = datasets
    report = tmp_path_factory.mktemp("report") / "report"
    result = CliRunner().invoke(main, ["compare", str(data), "--augmented", str(balanced),
                                       "--models", TWO_RUNS[0], "--models", TWO_RUNS[1],
                                       "--out", str(report), *TINY_OPTIONS],
                                catch_exceptions=False)
    return report, result


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def model_mtimes(report: Path) -> dict[str, int]:
    return {run.name: (run / "model.pt").stat().st_mtime_ns
            for run in sorted((report / "runs").iterdir())}


def test_select_runs_defaults_subsets_and_missing_augmented():
    """Contract: the paper's seven runs by default; --models by name or name@data; without AUG
    the balanced runs are skipped (named) or, when asked for explicitly, refused."""
    runs, skipped = select_runs(None, has_augmented=True)
    assert [r.label for r in runs] == [r.label for r in DEFAULT_RUNS] and skipped == []
    assert runs[0].label == "qmobilenet@balanced" and runs[0].role == "proposed"
    runs, _ = select_runs(["mobilenet_v2", "resnet18@balanced"], has_augmented=True)
    assert [(r.label, r.role) for r in runs] == [("mobilenet_v2@original", "baseline"),
                                                 ("mobilenet_v2@balanced", "ablation"),
                                                 ("resnet18@balanced", "extra")]
    runs, skipped = select_runs(None, has_augmented=False)
    assert all(r.data == "original" for r in runs) and len(runs) == 5
    assert skipped == ["qmobilenet@balanced", "mobilenet_v2@balanced"]
    with pytest.raises(ValueError, match="--augmented"):
        select_runs(["qmobilenet@balanced"], has_augmented=False)
    with pytest.raises(ValueError, match="unknown model 'alexnet'"):
        select_runs(["alexnet"], has_augmented=True)
    with pytest.raises(ValueError, match="data setting"):
        select_runs(["vgg16@smote"], has_augmented=True)


@pytest.mark.slow
def test_cli_compare_writes_table_and_figures(first_report, datasets):
    """CLI + contract: two rows, the printed table, every figure, nothing half-written."""
    report, result = first_report
    assert result.exit_code == 0, result.output
    assert "qmobilenet@balanced" in result.output and str(report) in result.output
    rows = read_rows(report / "results.csv")
    assert [row["run"] for row in rows] == TWO_RUNS
    assert [row["role"] for row in rows] == ["proposed", "baseline"]
    assert (report / "results.md").read_text().count("`mobilenet_v2@original`") == 1
    for name in FIGURE_FILES.values():
        assert (report / name).stat().st_size > 10_000, name
    assert not [p for p in report.rglob(".*") if p.is_file()]


@pytest.mark.slow
def test_table_matches_predictions_of_the_same_original_test_images(first_report, datasets):
    """Reference: each row's metrics, CIs and p-values recomputed from the runs' predictions;
    contract: both runs were scored on DATA's original test images, no synthetic image."""
    report, _ = first_report
    data, _ = datasets
    expected = [s.path for s in discover_dataset(data, seed=TINY.seed,
                                                 val_fraction=TINY.val_fraction,
                                                 test_fraction=TINY.test_fraction
                                                 ).subset("test")]
    predictions = {}
    for row in read_rows(report / "results.csv"):
        rows = read_rows(report / "runs" / row["run"] / "predictions.csv")
        assert [r["path"] for r in rows] == expected
        y = np.array([["normal", "stenosis"].index(r["true_class"]) for r in rows])
        proba = np.array([[float(r["p_normal"]), float(r["p_stenosis"])] for r in rows])
        predictions[row["run"]] = (y, proba)
        # stenosis is the training minority, hence the positive class (index 1)
        recomputed = evaluate_predictions(y, proba, ["normal", "stenosis"], positive=1,
                                          n_bootstrap=50, seed=TINY.seed)
        for name in METRIC_NAMES:
            assert float(row[name]) == pytest.approx(recomputed[name]["value"], abs=1e-9)
            assert float(row[f"{name}_ci_low"]) == pytest.approx(recomputed[name]["ci95"][0],
                                                                  abs=1e-9)
    reference, baseline = read_rows(report / "results.csv")
    assert reference["delong_p"] == reference["mcnemar_p"] == ""
    (y, proba_ref), (_, proba_base) = predictions.values()
    mcnemar = mcnemar_test(y, proba_ref.argmax(1), proba_base.argmax(1)).p_value
    assert float(baseline["mcnemar_p"]) == pytest.approx(mcnemar, abs=1e-12)
    assert 0 <= float(baseline["delong_p"]) <= 1


@pytest.mark.slow
def test_compare_resumes_without_retraining(first_report, datasets, tmp_path):
    """Contract: a second call trains nothing (model files untouched), also for a run whose
    config.json predates the q_device option; after an interrupted run (model.pt missing)
    only that run is trained again."""
    report, _ = first_report
    data, balanced = datasets
    copy = shutil.copytree(report, tmp_path / "report")
    before = model_mtimes(copy)
    older = copy / "runs" / "qmobilenet@balanced" / "config.json"
    stored = json.loads(older.read_text())
    del stored["options"]["q_device"]
    older.write_text(json.dumps(stored))
    again = compare(data, balanced, copy, models=[",".join(TWO_RUNS)][0].split(","),
                    train_config=TINY, n_bootstrap=50, progress=False)
    assert again.trained == [] and model_mtimes(copy) == before
    assert [row["run"] for row in again.rows] == TWO_RUNS
    (copy / "runs" / "mobilenet_v2@original" / "model.pt").unlink()
    resumed = compare(data, balanced, copy, models=TWO_RUNS, train_config=TINY,
                      n_bootstrap=50, progress=False)
    assert resumed.trained == ["mobilenet_v2@original"]
    assert model_mtimes(copy)["qmobilenet@balanced"] == before["qmobilenet@balanced"]


def test_augmented_with_other_test_images_is_refused_before_training(datasets, tmp_path):
    """Contract (same-test-set rule) + CLI: one error line, no traceback, nothing trained."""
    data, balanced = datasets
    broken = shutil.copytree(balanced, tmp_path / "broken")
    test_image = next(s.path for s in discover_dataset(
        data, seed=TINY.seed, val_fraction=TINY.val_fraction, test_fraction=TINY.test_fraction
    ).subset("test"))
    (broken / test_image).unlink()
    result = CliRunner().invoke(main, ["compare", str(data), "--augmented", str(broken),
                                       "--out", str(tmp_path / "report"), *TINY_OPTIONS])
    assert result.exit_code == 1
    assert result.output.startswith("Error: the test images of")
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "report").exists()


def test_cli_compare_help_names_its_options():
    result = CliRunner().invoke(main, ["compare", "--help"], catch_exceptions=False)
    assert result.exit_code == 0
    for option in ("--augmented", "--models", "--out", "--epochs", "--bootstrap", "--quiet",
                   "--q-device"):
        assert option in result.output


def test_cli_balanced_run_without_augmented_is_one_line_error(datasets, tmp_path):
    """CLI: asking for a balanced run without AUG is one error line naming --augmented."""
    data, _ = datasets
    result = CliRunner().invoke(main, ["compare", str(data), "--models", "qmobilenet@balanced",
                                       "--out", str(tmp_path / "report"), *TINY_OPTIONS])
    assert result.exit_code == 2 and "--augmented" in result.output  # a usage error
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_write_report_multiclass(tmp_path):
    """Contract, multi-class: macro metrics, McNemar p for every non-reference run and no
    DeLong p (it compares binary AUCs); the same-test-images check."""
    rng = np.random.default_rng(0)
    names = ["a", "b", "c"]
    y = rng.integers(0, 3, 60)
    outcomes = []
    for i, label in enumerate(["qmobilenet@balanced", "resnet18@original", "vgg16@original"]):
        logits = rng.normal(size=(60, 3))
        logits[np.arange(60), y] += 2.0 - 0.5 * i
        proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        run_dir = tmp_path / "runs" / label
        run_dir.mkdir(parents=True)
        (run_dir / "history.csv").write_text(
            "epoch,train_loss,val_loss,val_accuracy,val_auc,seconds\n"
            "1,0.9,1.0,0.5,0.6,1.0\n2,0.7,0.8,0.6,0.7,1.0\n")
        metrics = evaluate_predictions(y, proba, names, positive=None, n_bootstrap=40)
        metrics.update(n_parameters=10, train_seconds=2.0, inference_ms_per_image=0.5)
        model, data = label.split("@")
        outcomes.append(RunOutcome(label, model, data, "baseline", run_dir, metrics,
                                   [f"{k}.png" for k in range(60)], y, proba))
    rows, files = write_report(tmp_path, outcomes, reference=outcomes[0].label,
                               n_bootstrap=40, seed=0, summary={})
    assert [r["delong_p"] for r in rows] == [None, None, None]
    assert rows[0]["mcnemar_p"] is None and all(0 <= r["mcnemar_p"] <= 1 for r in rows[1:])
    assert rows[0]["auc"] == pytest.approx(outcomes[0].metrics["auc"]["value"], abs=1e-12)
    assert set(FIGURE_FILES) <= set(files) and "macro averages" in files["results_md"].read_text()
    outcomes[2].paths = outcomes[2].paths[::-1]
    with pytest.raises(ValueError, match="other test images"):
        write_report(tmp_path, outcomes, reference=outcomes[0].label, n_bootstrap=40, seed=0,
                     summary={})
