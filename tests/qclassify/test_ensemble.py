"""Tests of seed ensembles: `fit --seeds` (qclassify.ensemble), evaluate/predict on an ensemble
folder (qclassify.ensemble_run) and `compare --seeds` (qclassify.compare_seeds).

Kinds: contract (the run-folder layout others rely on, resumability, plain runs unchanged),
reference implementation (the ensemble's probabilities against each member loaded with
`load_run` and averaged, AUC against scikit-learn, the across-seeds statistics against
scipy.stats.ttest_rel and scipy.stats.t.interval), CLI. Training is real but tiny: 32 px
images, one epoch, random initialisation, two seeds.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402
from qclassify.cli import main  # noqa: E402
from qclassify.config import TrainConfig  # noqa: E402
from qclassify.data import MANIFEST_NAME, discover_dataset  # noqa: E402
from qclassify.ensemble import fit_seeds  # noqa: E402
from qclassify.ensemble_run import evaluate_any  # noqa: E402
from qclassify.inference import load_run  # noqa: E402
from qclassify.metrics import METRIC_NAMES, predict_classes, youden_threshold  # noqa: E402
from qclassify.options import parse_seeds  # noqa: E402
from qclassify.runfolder import RunFolder, read_split_csv  # noqa: E402
from qclassify.stats import delong_test, summarize_seeds  # noqa: E402
from scipy import stats  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

SEEDS = [0, 2]
COUNTS = {"normal": 14, "stenosis": 10}
TINY = TrainConfig(epochs=1, batch_size=8, image_size=32, weights="none", device="cpu",
                   val_fraction=0.25, test_fraction=0.25, threshold="youden")
TINY_OPTIONS = ["--epochs", "1", "--batch-size", "8", "--image-size", "32", "--weights", "none",
                "--device", "cpu", "--val-fraction", "0.25", "--test-fraction", "0.25",
                "--quiet"]
ATOL = 1e-12  # probabilities are float64 throughout; only summation order may differ


def make_image_folder(root: Path, counts: dict[str, int], size: int = 32) -> Path:
    """Class folders of noisy grey PNGs whose brightness depends on the class."""
    rng = np.random.default_rng(0)
    for k, (name, count) in enumerate(sorted(counts.items())):
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = np.clip(70 + 90 * k + rng.normal(0, 25, (size, size)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{name}_{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("ensemble-data") / "data", COUNTS)


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory, data) -> Path:
    """A two-member ensemble (seeds 0 and 2, --threshold youden); treat it as read-only."""
    run = tmp_path_factory.mktemp("ensemble") / "run"
    fit_seeds(data, run, TINY, SEEDS, progress=False)
    return run


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, ensemble, data) -> Path:
    """A copy of the ensemble, evaluated."""
    run = tmp_path_factory.mktemp("evaluated") / "run"
    shutil.copytree(ensemble, run)
    evaluate_any(run, data, n_bootstrap=50)
    return run


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def member_mean_proba(run: Path, data: Path, paths: list[str]) -> np.ndarray:
    """The oracle: every member loaded on its own with `load_run`, probabilities averaged."""
    members = [load_run(member.path, device="cpu") for member in RunFolder(run).members()]
    return np.mean([m.proba([data / p for p in paths])[0] for m in members], axis=0)


def test_parse_seeds_forms():
    """--seeds accepts ranges, lists and single seeds; the result is sorted and unique."""
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("5,0,2,2") == [0, 2, 5]
    assert parse_seeds("3") == [3]
    assert parse_seeds(" 1 , 3-4 ,1") == [1, 3, 4]


def test_layout_one_split_and_one_member_per_seed(ensemble, data):
    """The layout contract: RUN/config.json with the ensemble record, RUN/split.csv seeded by
    the first seed and shared by every member, RUN/seed-<k>/ a complete single run."""
    folder = RunFolder(ensemble)
    config = folder.read_config()
    assert config["ensemble"]["seeds"] == SEEDS
    assert config["ensemble"]["members"] == ["seed-0", "seed-2"]
    assert folder.is_ensemble() and folder.is_finished_ensemble()
    assert not folder.model_file.exists()
    expected_split = discover_dataset(data, seed=SEEDS[0], val_fraction=TINY.val_fraction,
                                      test_fraction=TINY.test_fraction).samples
    assert folder.read_split() == list(expected_split)
    states = []
    for seed, member in zip(SEEDS, folder.members(), strict=True):
        assert member.path == ensemble / f"seed-{seed}"
        assert member.is_trained() and not member.training_state_file.exists()
        assert member.split_file.read_bytes() == folder.split_file.read_bytes()
        member_config = member.read_config()
        assert member_config["options"] == {**config["options"], "seed": seed}
        assert member_config["split_seed"] == SEEDS[0]
        states.append(member.read_checkpoint()["state_dict"])
    assert any(not np.array_equal(states[0][k].numpy(), states[1][k].numpy()) for k in states[0])


def test_plain_seed_run_keeps_todays_layout(tmp_path, data):
    """A plain --seed run has no member folders and no ensemble or split_seed keys."""
    run = tmp_path / "plain"
    result = CliRunner().invoke(main, ["fit", str(data), "--out", str(run), "--seed", "2",
                                       *TINY_OPTIONS], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    config = RunFolder(run).read_config()
    assert "ensemble" not in config and "split_seed" not in config
    assert not RunFolder(run).is_ensemble() and not RunFolder(run).member_folders()
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "history.csv", "model.pt",
                                                      "split.csv"]


def test_ensemble_threshold_is_youden_of_averaged_validation(ensemble, data):
    """--threshold youden: the ensemble's threshold is youden_threshold of the members' mean
    validation probabilities, stored in RUN/config.json (None and a note when none helps)."""
    config = RunFolder(ensemble).read_config()
    val = [s for s in read_split_csv(ensemble / "split.csv") if s.split == "val"]
    proba = member_mean_proba(ensemble, data, [s.path for s in val])
    positive = config["class_names"].index(config["positive_class"])
    is_positive = np.array([s.class_name == config["positive_class"] for s in val])
    expected = youden_threshold(is_positive, proba[:, positive])
    if expected is None:
        assert config["decision_threshold"] is None
        assert "ensemble's validation" in config["decision_rule_note"]
    else:
        assert config["decision_threshold"] == pytest.approx(expected, abs=ATOL)


def test_evaluate_uses_mean_of_member_probabilities(evaluated, data):
    """predictions.csv and metrics.json are the ensemble's: the mean of each member's own
    predict_proba; AUC equals scikit-learn's on the averaged probabilities."""
    folder = RunFolder(evaluated)
    metrics, rows = folder.read_metrics(), folder.read_predictions()
    paths = [row["path"] for row in rows]
    names = metrics["class_names"]
    oracle = member_mean_proba(evaluated, data, paths)
    saved = np.array([[float(row[f"p_{c}"]) for c in names] for row in rows])
    np.testing.assert_allclose(saved, oracle, rtol=0, atol=ATOL)
    positive = names.index(metrics["positive_class"])
    truth = np.array([names.index(row["true_class"]) for row in rows]) == positive
    assert metrics["auc"]["value"] == pytest.approx(roc_auc_score(truth, oracle[:, positive]),
                                                    abs=ATOL)
    threshold = folder.read_config()["decision_threshold"]
    assert metrics["decision_threshold"] == threshold
    predicted = predict_classes(oracle, positive=positive if threshold else None,
                                threshold=threshold)
    assert [row["predicted_class"] for row in rows] == [names[k] for k in predicted]


def test_evaluate_reports_members_and_their_summary(evaluated):
    """metrics.json has each member's six metrics (also in the member's own metrics.json) and
    the mean, sd and 95% t-interval across members (clipped to the metric's range)."""
    metrics = RunFolder(evaluated).read_metrics()
    assert list(metrics["members"]) == ["seed-0", "seed-2"]
    for member in RunFolder(evaluated).members():
        own = member.read_metrics()
        assert metrics["members"][member.path.name] == {m: own[m] for m in METRIC_NAMES}
    aucs = [metrics["members"][name]["auc"]["value"] for name in ("seed-0", "seed-2")]
    summary = metrics["members_summary"]["auc"]
    assert summary["mean"] == pytest.approx(np.mean(aucs), abs=ATOL)
    assert summary["sd"] == pytest.approx(np.std(aucs, ddof=1), abs=ATOL)
    if summary["sd"] > 0:
        expected = stats.t.interval(0.95, len(aucs) - 1, loc=np.mean(aucs),
                                    scale=np.std(aucs, ddof=1) / np.sqrt(len(aucs)))
        # clipped to AUC's range [0, 1] (two members give a wide interval)
        np.testing.assert_allclose(summary["ci95"], np.clip(expected, 0, 1), rtol=0, atol=1e-12)


def test_summarize_seeds_is_scipy_t_interval():
    """The across-seeds interval is mean ± t_{0.975,n-1}·sd/√n, scipy's t.interval."""
    values = [0.71, 0.74, 0.69, 0.80, 0.77]
    summary = summarize_seeds(values)
    expected = stats.t.interval(0.95, 4, loc=np.mean(values),
                                scale=stats.sem(values))
    np.testing.assert_allclose(summary.ci95, expected, rtol=0, atol=1e-12)
    assert summary.sd == pytest.approx(np.std(values, ddof=1), abs=1e-12)


def test_bounded_seed_intervals_are_clipped_to_the_metric_range():
    """Oracle: scipy's t.interval, clipped to [0, 1] for a proportion (four seeds at precision
    0 and one at 0.647 give a symmetric interval below 0); unbounded callers are unchanged;
    every metric the ensemble summary reports is a proportion and is clipped."""
    from qclassify.ensemble_run import members_summary
    from qclassify.metrics import METRIC_NAMES

    values = [0.0, 0.0, 0.0, 0.0, 0.647]
    raw = stats.t.interval(0.95, 4, loc=np.mean(values), scale=stats.sem(values))
    assert raw[0] < 0
    np.testing.assert_allclose(summarize_seeds(values).ci95, raw, rtol=0, atol=1e-12)
    np.testing.assert_allclose(summarize_seeds(values, bounds=(0.0, 1.0)).ci95,
                               np.clip(raw, 0, 1), rtol=0, atol=1e-12)
    members = {f"seed-{k}": {name: {"value": v} for name in METRIC_NAMES}
               for k, v in enumerate(values)}
    for summary in members_summary(members).values():
        assert summary["ci95"][0] == 0.0
        assert summary["ci95"][1] == pytest.approx(raw[1], abs=1e-12)


def test_cli_predict_on_ensemble_prints_mean_probability(ensemble, data):
    """`predict RUN` on an ensemble prints the members' mean probability per image."""
    images = sorted((data / "stenosis").glob("*.png"))[:3]
    result = CliRunner().invoke(main, ["predict", str(ensemble), *map(str, images), "--quiet",
                                       "--device", "cpu", "--engine", "torch"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(result.stdout.splitlines()))
    oracle = member_mean_proba(ensemble, Path("/"), [str(p) for p in images])
    printed = np.array([[float(r["p_normal"]), float(r["p_stenosis"])] for r in rows])
    np.testing.assert_allclose(printed, oracle, rtol=0, atol=ATOL)


def test_ensemble_exports_and_predicts_as_one_onnx_graph(tmp_path, ensemble, data):
    """`export` of an ensemble folder is one graph averaging the members, and `predict
    --engine onnxruntime` on the folder runs it: both equal the members' mean probability
    (float32 graph: 1e-5)."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from qclassify.ensemble_run import predict_any
    from qclassify.export import export_run
    from qclassify.images import ImageDataset

    run = tmp_path / "run"
    shutil.copytree(ensemble, run)
    images = sorted((data / "stenosis").glob("*.png"))[:3]
    oracle = member_mean_proba(run, Path("/"), [str(p) for p in images])
    out = export_run(run, "onnx")
    description = json.loads(out.with_name(out.name + ".json").read_text())
    assert description["source"]["members"] == len(SEEDS)
    dataset = ImageDataset(images, None, 32)
    batch = np.stack([dataset[i][0].numpy() for i in range(len(images))])
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (exported,) = session.run(None, {"images": batch})
    np.testing.assert_allclose(exported, oracle, rtol=0, atol=1e-5)
    rows = predict_any(run, images, device="cpu", engine="onnxruntime")
    printed = np.array([[r["p_normal"], r["p_stenosis"]] for r in rows])
    np.testing.assert_allclose(printed, oracle, rtol=0, atol=1e-5)


def test_resume_skips_finished_members_and_continues_the_interrupted(tmp_path, data):
    """A kill during the second member (after its first epoch): --resume keeps the first
    member's files untouched, continues the second from its training state, then finishes."""
    run, config = tmp_path / "run", dataclasses.replace(TINY, epochs=2, threshold="argmax")

    def kill_second_member(seed, record):
        if seed == SEEDS[1]:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_seeds(data, run, config, SEEDS, progress=False, on_epoch=kill_second_member)
    folder = RunFolder(run)
    assert folder.member(SEEDS[0]).is_trained()
    assert folder.member(SEEDS[1]).training_state_file.is_file()
    assert not folder.is_finished_ensemble()
    first_model = folder.member(SEEDS[0]).model_file.stat().st_mtime_ns
    result = fit_seeds(data, run, config, SEEDS, progress=False, resume=True)
    assert result.skipped == [SEEDS[0]] and list(result.trained) == [SEEDS[1]]
    assert len(result.trained[SEEDS[1]].history) == 2
    assert folder.member(SEEDS[0]).model_file.stat().st_mtime_ns == first_model
    assert folder.is_finished_ensemble()


def test_cli_resume_retrains_a_member_whose_model_is_gone(tmp_path, ensemble, data):
    """A member without model.pt (killed before it was written) is trained again by
    `fit --seeds --resume`; the finished member is skipped."""
    run = tmp_path / "run"
    shutil.copytree(ensemble, run)
    (run / "seed-2" / "model.pt").unlink()
    kept = (run / "seed-0" / "model.pt").stat().st_mtime_ns
    result = CliRunner().invoke(main, ["fit", str(data), "--out", str(run), "--seeds", "0,2",
                                       "--threshold", "youden", "--resume", *TINY_OPTIONS],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "trained 2; already finished: 0" in result.output
    assert (run / "seed-0" / "model.pt").stat().st_mtime_ns == kept
    assert RunFolder(run).is_finished_ensemble()


def test_overwrite_replaces_plain_run_with_ensemble(tmp_path, ensemble, data):
    """--overwrite replaces a folder's run as a whole: an ensemble over a plain run leaves no
    model.pt of the old run; a plain run over an ensemble leaves no member folders."""
    run = tmp_path / "run"
    shutil.copytree(ensemble / "seed-0", run)
    fit_seeds(data, run, TINY, [1], progress=False, overwrite=True)
    assert RunFolder(run).is_finished_ensemble() and not (run / "model.pt").exists()
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "seed-1", "split.csv"]
    result = CliRunner().invoke(main, ["fit", str(data), "--out", str(run), "--overwrite",
                                       *TINY_OPTIONS], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert not RunFolder(run).member_folders() and not RunFolder(run).is_ensemble()


@pytest.fixture(scope="module")
def seed_report(tmp_path_factory, data) -> tuple[Path, object]:
    """compare --seeds of the proposed run and one baseline, two seeds each."""
    base = tmp_path_factory.mktemp("seed-compare")
    balanced = make_balanced_copy(data, base / "balanced")
    report = base / "report"
    args = ["compare", str(data), "--augmented", str(balanced), "--models",
            "qmobilenet@balanced,mobilenet_v2@original", "--out", str(report), "--seeds", "0,2",
            "--bootstrap", "20", *TINY_OPTIONS]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return report, result, args


def make_balanced_copy(data: Path, out: Path) -> Path:
    """A stand-in for `diffaug balance`: the originals plus one flipped synthetic image per
    minority training image (split of the first seed), listed in the manifest."""
    shutil.copytree(data, out)
    dataset = discover_dataset(data, seed=SEEDS[0], val_fraction=TINY.val_fraction,
                               test_fraction=TINY.test_fraction)
    rows = []
    for sample in dataset.subset("train"):
        if sample.class_name == "stenosis":
            source = Path(sample.path)
            synthetic = source.with_name(f"syn_{source.stem}_0.png")
            with Image.open(data / source) as image:
                image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(out / synthetic)
            rows.append({"path": synthetic.as_posix(), "source": source.as_posix(),
                         "class": "stenosis", "split": "", "t": 2, "gamma": 1.0, "seed": 0,
                         "sha256": ""})
    with (out / MANIFEST_NAME).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def test_compare_seeds_per_seed_rows_and_ensemble_rows(seed_report):
    """results.csv: one row per model and seed (today's columns plus `seed`) and the ensemble
    rows, whose metrics are the ensemble's metrics.json."""
    report, result, _ = seed_report
    assert result.exit_code == 0, result.output
    rows = read_rows(report / "results.csv")
    assert [(r["run"], r["seed"]) for r in rows] == [
        ("qmobilenet@balanced", "0"), ("qmobilenet@balanced", "2"),
        ("qmobilenet@balanced", "ensemble"), ("mobilenet_v2@original", "0"),
        ("mobilenet_v2@original", "2"), ("mobilenet_v2@original", "ensemble")]
    for row in rows:
        run = report / "runs" / row["run"]
        metrics = RunFolder(run if row["seed"] == "ensemble" else run / f"seed-{row['seed']}"
                            ).read_metrics()
        assert float(row["auc"]) == pytest.approx(metrics["auc"]["value"], abs=ATOL)
    assert (report / "per-seed-auc.png").stat().st_size > 0
    assert "## Across seeds" in (report / "results.md").read_text(encoding="utf-8")


def test_compare_seeds_paired_t_test_and_interval_match_scipy(seed_report):
    """The paired t-test is scipy.stats.ttest_rel of the per-seed AUCs read back from
    results.csv (matched by seed); the interval is scipy.stats.t.interval."""
    report, _, _ = seed_report
    rows = read_rows(report / "results.csv")
    summary = {r["run"]: r for r in read_rows(report / "seed_summary.csv")}

    def aucs(run):
        return [float(r["auc"]) for r in rows if r["run"] == run and r["seed"] != "ensemble"]

    baseline, proposed = aucs("mobilenet_v2@original"), aucs("qmobilenet@balanced")
    row = summary["mobilenet_v2@original"]
    expected = stats.ttest_rel(baseline, proposed)
    np.testing.assert_allclose([float(row["auc_paired_t"]), float(row["auc_paired_p"])],
                               [expected.statistic, expected.pvalue], rtol=0, atol=1e-9,
                               equal_nan=True)
    assert float(row["auc_mean_difference"]) == pytest.approx(
        np.mean(np.subtract(baseline, proposed)), abs=1e-12)
    assert summary["qmobilenet@balanced"]["auc_paired_p"] == ""
    if np.std(baseline) > 0:
        low, high = np.clip(stats.t.interval(0.95, 1, loc=np.mean(baseline),
                                             scale=stats.sem(baseline)), 0, 1)  # AUC's range
        assert float(row["auc_ci_low"]) == pytest.approx(low, abs=1e-9)
        assert float(row["auc_ci_high"]) == pytest.approx(high, abs=1e-9)


def test_compare_seeds_delong_between_ensembles(seed_report):
    """The ensemble rows' DeLong p-value compares the two ensembles' predictions."""
    report, _, _ = seed_report
    def predictions(run):
        return RunFolder(report / "runs" / run).read_predictions()

    proposed, baseline = predictions("qmobilenet@balanced"), predictions("mobilenet_v2@original")
    truth = np.array([r["true_class"] == "stenosis" for r in proposed])
    expected = delong_test(truth, np.array([float(r["p_stenosis"]) for r in proposed]),
                           np.array([float(r["p_stenosis"]) for r in baseline])).p_value
    row = next(r for r in read_rows(report / "results.csv")
               if r["run"] == "mobilenet_v2@original" and r["seed"] == "ensemble")
    assert float(row["delong_p"]) == pytest.approx(expected, abs=1e-12)


def test_compare_seeds_again_trains_nothing(seed_report):
    """A second compare --seeds reuses every finished member (resumable per member)."""
    report, _, args = seed_report
    mtimes = {p: p.stat().st_mtime_ns for p in report.rglob("model.pt")}
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "trained 0 run(s), reused 2" in result.output
    assert {p: p.stat().st_mtime_ns for p in report.rglob("model.pt")} == mtimes
    assert json.loads((report / "compare.json").read_text())["seeds"] == SEEDS
