"""tools/medmnist/run_medmnist.py without training: the baseline lookup, the results table and
goal read from a results.csv in qclassify's format, the command lines, and the CLI with the
three subprocesses mocked (the converter runs for real on a tiny fake file built here)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

TOOLS = Path(__file__).resolve().parents[2] / "tools" / "medmnist"




import medmnist_to_folder as converter  # noqa: E402  (tools/medmnist/ is on pytest's pythonpath)
import pipeline  # noqa: E402  (tools/: the runner that starts the steps)
import run_medmnist as tool  # noqa: E402

METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "auc")


def _result_columns() -> tuple[str, ...]:
    """qclassify compare's results.csv header, from qclassify itself (needs torch)."""
    pytest.importorskip("torch")
    from qclassify.compare_report import RESULT_COLUMNS

    return RESULT_COLUMNS


def _row(run: str, role: str, values: dict[str, float], with_ci: bool = True) -> dict:
    """One results.csv row: every metric 0.5 unless in `values`, CIs value ± 0.05."""
    model, _, data = run.partition("@")
    row = {"run": run, "model": model, "data": data, "role": role, "n_test": 4}
    for metric in METRICS:
        value = values.get(metric, 0.5)
        row[metric] = value
        row[f"{metric}_ci_low"] = round(value - 0.05, 6) if with_ci else ""
        row[f"{metric}_ci_high"] = round(value + 0.05, 6) if with_ci else ""
    return row


def _write_results(path: Path, rows: list[dict]) -> Path:
    columns = _result_columns()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_published_baselines_are_found_by_subset_of_the_file_name():
    """Contract: the subset named by a MedMNIST file name (any resolution, any case) finds its
    recorded baselines; a subset without recorded numbers finds none."""
    for name in ("breastmnist.npz", "BreastMNIST_224.npz"):
        found = tool.published_baselines(converter.subset_of(name))
        assert found == tool.PUBLISHED_BASELINES["breastmnist"]
    assert all(0 < b.auc <= 1 and 0 < b.acc <= 1 for b in found)
    assert tool.published_baselines("pathmnist") is None
    assert tool.published_baselines(None) is None


def test_results_table_shows_our_runs_with_intervals_then_the_published_rows(tmp_path):
    """Contract with qclassify's results.csv: values and CIs come back as written, missing CIs
    stay missing, and every recorded baseline follows our runs."""
    rows = tool.read_results(_write_results(tmp_path / "results.csv", [
        _row("qmobilenet@balanced", "proposed", {"auc": 0.912, "accuracy": 0.85}),
        _row("resnet18@original", "baseline", {"auc": 0.8}, with_ci=False),
    ]))
    assert rows[0]["auc"] == pytest.approx(0.912, abs=1e-12)
    assert rows[1]["auc_ci_low"] is None

    table = tool.results_table(rows, "breastmnist", positive_class="malignant", setting="ours")
    lines = table.splitlines()
    assert "Sensitivity (malignant)" in lines[0]
    assert lines[2].startswith("| `qmobilenet@balanced` (proposed) | ours | 0.912 [0.862, 0.962] "
                               "| 0.850 [0.800, 0.900] |")
    assert lines[3].startswith("| `resnet18@original` | ours | 0.800 | 0.500 |")
    published = tool.PUBLISHED_BASELINES["breastmnist"]
    assert len(lines) == 2 + len(rows) + len(published)
    for line, baseline in zip(lines[4:], published, strict=True):
        assert line.startswith(f"| {baseline.method} |")
        assert f"| {baseline.auc:.3f} | {baseline.acc:.3f} |" in line

    other = tool.results_table(rows, "pathmnist", positive_class=None, setting="ours")
    assert len(other.splitlines()) == 2 + len(rows)
    assert "Recall (macro)" in other.splitlines()[0]


@pytest.mark.parametrize(("values", "verdict"), [
    ({"auc": tool.GOAL_AUC, "recall": tool.GOAL_SENSITIVITY,
      "specificity": tool.GOAL_SPECIFICITY}, "PASS"),
    ({"auc": 0.95, "recall": 0.9, "specificity": tool.GOAL_SPECIFICITY - 0.01}, "MISS"),
    ({"auc": tool.GOAL_AUC - 0.01, "recall": 0.9, "specificity": 0.9}, "MISS"),
])
def test_goal_check_of_the_proposed_run(values, verdict):
    """Analytic oracle: the goal is met exactly when every value reaches its threshold."""
    rows = [_row("mobilenet_v2@original", "baseline", {"auc": 0.99, "recall": 0.99,
                                                       "specificity": 0.99}),
            _row("qmobilenet@balanced", "proposed", values)]
    line = tool.goal_check(rows)
    assert f"`qmobilenet@balanced`: {verdict}" in line
    assert "not measured" in tool.goal_check(rows[:1])


def test_commands_carry_the_settings_and_pass_unknown_options_to_compare(tmp_path):
    """The three command lines as the README documents them."""
    settings = tool.Settings(ratio="0.7", seed=3, image_size=32, epochs=1,
                             models=("qmobilenet@balanced", "resnet18"), quiet=True)
    commands = tool.pipeline_commands(tmp_path / "breastmnist.npz", tmp_path / "out" / "b",
                                      settings, ["--patience", "2"], python="PY")
    data, balanced = str(tmp_path / "out/b/data"), str(tmp_path / "out/b/balanced")
    assert commands["convert"][-2:] == [data, "--quiet"]
    assert commands["balance"] == ["PY", "-m", "diffaug", "balance", data, balanced, "--ratio",
                                   "0.7", "--seed", "3", "--workers", "1", "--quiet"]
    compare = commands["compare"]
    assert compare[:8] == ["PY", "-m", "qclassify", "compare", data, "--augmented", balanced,
                           "--out"]
    joined = " ".join(compare)
    for part in ("--image-size 32", "--epochs 1", "--weights none", "--seed 3",
                 "--models qmobilenet@balanced,resnet18", "--patience 2 --quiet"):
        assert part in joined
    assert tool.display(["PY", "-m", "diffaug"], python="PY") == "python -m diffaug"


def _tiny_npz(path: Path) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in {"train": 6, "val": 2, "test": 4}.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2)[:, None]
    np.savez(path, **arrays)
    return path


def test_cli_runs_the_three_steps_and_writes_the_results_file(tmp_path, monkeypatch):
    """CLI with mocked subprocesses: the converter runs in-process for real, compare's report
    is faked; the results file holds our rows, the baselines, the goal and the commands; a
    second call reuses the converted data."""
    npz = _tiny_npz(tmp_path / "breastmnist.npz")
    out = tmp_path / "out"
    calls = []

    def fake_run(command, check):
        calls.append(command)
        if command[1] == str(tool.CONVERTER):
            converter.convert_medmnist(command[2], command[3])
        elif command[2] == "qclassify":
            report = Path(command[command.index("--out") + 1])
            _write_results(report / "results.csv", [
                _row("qmobilenet@balanced", "proposed", {"auc": 0.93, "recall": 0.8,
                                                         "specificity": 0.9})])
            (report / "compare.json").write_text(json.dumps(
                {"positive_class": "malignant", "n_test": 4}))
        return type("Finished", (), {"returncode": 0})()

    monkeypatch.setattr(pipeline.subprocess, "run", fake_run)
    arguments = [str(npz), "--out", str(out), "--epochs", "1", "--image-size", "32",
                 "--models", "qmobilenet@balanced", "--patience", "2", "--quiet"]
    result = CliRunner().invoke(tool.main, arguments, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert [c[2] if c[1] == "-m" else "convert" for c in calls] == [
        "convert", "diffaug", "qclassify"]
    assert calls[2][-3:] == ["--patience", "2", "--quiet"]
    text = (out / "breastmnist" / tool.RESULTS_FILE).read_text()
    assert "| `qmobilenet@balanced` (proposed) |" in text
    assert "| Google AutoML Vision |" in text
    assert "Goal for `qmobilenet@balanced`: PASS" in text
    assert "python -m qclassify compare" in text and "train 6, val 2, test 4" in text

    calls.clear()
    again = CliRunner().invoke(tool.main, arguments, catch_exceptions=False)
    assert again.exit_code == 0 and "reusing" in again.output
    assert [c[2] for c in calls] == ["diffaug", "qclassify"]


def test_cli_errors_are_one_line(tmp_path, monkeypatch):
    """CLI error paths: a missing file is a usage error (2); a data folder converted from
    another file, or a failing step, is one Error line (1); never a traceback."""
    missing = CliRunner().invoke(tool.main, [str(tmp_path / "none.npz")])
    assert missing.exit_code == 2 and "Traceback" not in missing.output

    npz = _tiny_npz(tmp_path / "breastmnist.npz")
    (tmp_path / "out" / "breastmnist" / "data").mkdir(parents=True)
    occupied = CliRunner().invoke(tool.main, [str(npz), "--out", str(tmp_path / "out")])
    assert occupied.exit_code == 1
    assert occupied.output.count("\n") == 1 and occupied.output.startswith("Error:")

    monkeypatch.setattr(pipeline.subprocess, "run",
                        lambda command, check: type("Finished", (), {"returncode": 3})())
    failed = CliRunner().invoke(tool.main, [str(npz), "--out", str(tmp_path / "fresh")])
    assert failed.exit_code == 1 and "exit status 3" in failed.output
    assert "Traceback" not in failed.output
