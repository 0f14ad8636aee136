"""tools/demo/run_demo.py: the README's demo pipeline, end to end at a tiny size.

The script runs once per module (48 px images, 32 px training, one epoch, four runs, a few
dozen images) through the real ``diffaug`` and ``qclassify`` command lines; the tests then
check what it printed and wrote. TORCH_HOME points at an empty folder, as on a machine that
never downloaded pytorch-fid's weights, so the FID step must skip with its note.
"""

from __future__ import annotations

import csv
import math
import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("torch")
pytestmark = pytest.mark.slow

TOOLS = Path(__file__).resolve().parents[2] / "tools" / "demo"
SIZE, IMAGE_SIZE, EPOCHS = 48, 32, 1
COUNTS = {"train": (12, 5), "val": (4, 2), "test": (4, 4)}
MODELS = ("qmobilenet", "mobilenet_v2")  # every default run of each: both data settings
EXPECTED_RUNS = {"qmobilenet@balanced", "qmobilenet@original", "mobilenet_v2@original",
                 "mobilenet_v2@balanced"}
RATIO = Decimal("0.7")
ARGS = ["--size", str(SIZE), "--image-size", str(IMAGE_SIZE), "--epochs", str(EPOCHS),
        *(arg for split, pair in COUNTS.items() for arg in (f"--{split}", *map(str, pair))),
        *(arg for model in MODELS for arg in ("--models", model)), "--bootstrap", "50",
        "--quiet"]




import pipeline  # noqa: E402  (tools/ and tools/demo/ are on pytest's pythonpath)
import run_demo  # noqa: E402


def _run_script(cwd: Path, torch_home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TORCH_HOME": str(torch_home)}
    return subprocess.run([sys.executable, str(TOOLS / "run_demo.py"), "demo", *ARGS],
                          cwd=cwd, env=env, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One demo run: (folder it ran in, empty TORCH_HOME, finished process)."""
    cwd = tmp_path_factory.mktemp("demo")
    torch_home = tmp_path_factory.mktemp("torch-home")
    done = _run_script(cwd, torch_home)
    assert done.returncode == 0, done.stdout + done.stderr
    return cwd, torch_home, done


def _expected_synthetic() -> int:
    """Analytic oracle, eq. 3 in exact decimals: M = ceil(ratio * N_maj) - N_min."""
    normal, stenosis = COUNTS["train"]
    return math.ceil(RATIO * normal) - stenosis


def test_each_step_runs_the_command_it_shows(demo):
    """CLI: steps 1, 2 and 4 echo the commands a user would type, in pipeline order."""
    _, _, done = demo
    commands = [line[2:] for line in done.stdout.splitlines() if line.startswith("$ ")]
    assert len(commands) == 3
    assert re.fullmatch(r"python \S*make_demo_data\.py demo/data --size 48 --train 12 5 "
                        r"--val 4 2 --test 4 4 --seed 0 --quiet", commands[0])
    assert commands[1] == "diffaug balance demo/data demo/balanced --ratio 0.7 --seed 0 --quiet"
    assert commands[2].startswith("qclassify compare demo/data --augmented demo/balanced "
                                  "--out demo/report --image-size 32 --epochs 1 --lr 1e-3 "
                                  "--weights none --recipe paper --device auto --seed 0")


def test_plan_shows_the_eq3_synthetic_count(demo):
    """Analytic oracle: the printed balance plan adds M = ceil(0.7 * 12) - 5 stenosis images."""
    _, _, done = demo
    normal, stenosis = COUNTS["train"]
    m = _expected_synthetic()
    assert m == 4
    assert re.search(rf"^\s+normal\s+{normal}\s+0\s+{normal}$", done.stdout, re.MULTILINE)
    assert re.search(rf"^\s+stenosis\s+{stenosis}\s+{m}\s+{stenosis + m}$", done.stdout,
                     re.MULTILINE)


def test_manifest_lists_the_synthetic_train_stenosis_images(demo):
    """Contract: diffaug's manifest has one row per synthetic image, each in train/stenosis."""
    cwd, _, _ = demo
    balanced = cwd / "demo" / "balanced"
    with (balanced / "diffaug-manifest.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == _expected_synthetic()
    assert {(row["split"], row["class"]) for row in rows} == {("train", "stenosis")}
    assert all((balanced / row["path"]).is_file() for row in rows)


def test_fid_is_skipped_with_a_note_without_cached_weights(demo):
    """CLI: no weights under TORCH_HOME, so step 3 prints where they belong and runs nothing."""
    _, torch_home, done = demo
    note = next(line for line in done.stdout.splitlines() if line.startswith("FID skipped:"))
    assert f"{torch_home / 'hub' / 'checkpoints'}/" in note
    assert "download once with network access" in note
    assert "--fid" not in done.stdout
    assert not any(torch_home.rglob("*.pth"))  # nothing was downloaded


def test_report_table_and_figures(demo):
    """Contract: results.csv has one row per run, every report figure exists, step 5 prints
    the table and where the report is."""
    from qclassify.compare_report import FIGURE_FILES

    cwd, _, done = demo
    report = cwd / "demo" / "report"
    with (report / "results.csv").open(newline="", encoding="utf-8") as handle:
        assert {row["run"] for row in csv.DictReader(handle)} == EXPECTED_RUNS
    for name in FIGURE_FILES.values():
        assert (report / name).is_file(), name
    results = done.stdout.split("[5/5] results", 1)[1]
    table_rows = [line for line in results.splitlines() if line.startswith("| `")]
    assert len(table_rows) == len(EXPECTED_RUNS)
    assert f"report:  {Path('demo/report/results.md')}" in results
    assert re.search(r"^demo finished in \d+\.\d min \(data \d+ s, balance \d+ s, "
                     r"compare \d+ s\)$", results, re.MULTILINE)


def test_rerun_skips_the_generator(demo, monkeypatch):
    """Mocked steps: called again on the same OUT, the demo keeps the data and reruns only
    balance and compare, which themselves reuse finished work (tests/diffaug/test_cli.py,
    tests/qclassify/test_compare.py check that; a second real run would double this file)."""
    cwd, torch_home, _ = demo
    ran = []
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setattr(pipeline.subprocess, "run",
                        lambda argv, check: ran.append(argv) or subprocess.CompletedProcess(argv, 0))
    options = run_demo.DemoOptions(out=cwd / "demo", size=SIZE, counts=COUNTS)
    seconds = run_demo.run_demo(options)
    assert list(seconds) == ["balance", "compare"]
    assert ran == [run_demo.balance_step(options).argv, run_demo.compare_step(options).argv]
    assert ran[0][:3] == [sys.executable, "-m", "diffaug"]
    assert ran[1][:3] == [sys.executable, "-m", "qclassify"]


def test_data_made_with_other_options_is_refused(demo):
    """Contract: demo-data.json decides whether OUT/data can be reused."""
    cwd, _, _ = demo
    same = run_demo.DemoOptions(out=cwd / "demo", size=SIZE, counts=COUNTS)
    assert run_demo.data_already_generated(same)
    other = run_demo.DemoOptions(out=cwd / "demo", size=SIZE + 16, counts=COUNTS)
    with pytest.raises(ValueError, match="made with other options"):
        run_demo.data_already_generated(other)
    assert not run_demo.data_already_generated(run_demo.DemoOptions(out=cwd / "nothing-here"))


def test_fid_runs_when_the_weights_are_cached(tmp_path, monkeypatch):
    """Reference implementation: the weights file is where pytorch-fid's loader caches it
    (torch.hub's checkpoints folder, named after FID_WEIGHTS_URL); the note then disappears."""
    pytest.importorskip("pytorch_fid")
    import torch.hub
    from pytorch_fid.inception import FID_WEIGHTS_URL

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert run_demo.fid_skip_note() is not None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_URL.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert run_demo.fid_skip_note() is None
    step = run_demo.balance_step(run_demo.DemoOptions(out=tmp_path / "demo"), fid=True)
    assert step.shown[:2] == ["diffaug", "balance"] and "--fid" in step.shown


def test_a_failing_step_is_named(tmp_path, monkeypatch):
    """CLI: the generator refuses a non-empty OUT/data; the demo stops with one line naming
    the step, exit status 1, no traceback."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo" / "data").mkdir(parents=True)
    (tmp_path / "demo" / "data" / "stray.txt").write_text("not demo data")
    result = CliRunner().invoke(run_demo.main, ["demo", *ARGS])
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: step 1 (generate the demo data) failed with exit status")
    assert "Traceback" not in result.output
    assert not (tmp_path / "demo" / "balanced").exists()


def test_default_runs_are_the_papers_seven_but_vgg16(tmp_path):
    """Oracle: qclassify's own run parser. The demo's default --models selects the paper's
    runs (compare's DEFAULT_RUNS) without VGG-16, in table order; `--models all` passes no
    --models, so compare makes all seven."""
    from qclassify.compare import DEFAULT_RUNS, select_runs

    def compare_models(options):
        argv = run_demo.compare_step(options).shown
        return argv[argv.index("--models") + 1].split(",") if "--models" in argv else None

    default = compare_models(run_demo.DemoOptions(out=tmp_path))
    runs, skipped = select_runs(default, has_augmented=True)
    assert runs == [spec for spec in DEFAULT_RUNS if spec.model != "vgg16"] and not skipped
    assert compare_models(run_demo.DemoOptions(out=tmp_path, models=("all",))) is None
    assert select_runs(None, has_augmented=True)[0] == list(DEFAULT_RUNS)
