"""tools/pipeline.py, the runner of tools/demo/run_demo.py and tools/medmnist/run_medmnist.py:
steps echoed as typed and run in order, skipped with their reason, stopped in one line naming
the failing step; subprocesses are mocked. Last, the pipeline scripts run by their path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pipeline  # tools/ is on pytest's pythonpath (root pyproject.toml)
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _steps(*, skip_second=None) -> list[pipeline.Step]:
    return [
        pipeline.module_step("balance", "balance", "diffaug", ["balance", "in", "out"],
                             console_script=True),
        pipeline.module_step("compare", "compare", "qclassify", ["compare", "in"],
                             skip=skip_second),
        pipeline.script_step("figure", "draw", ROOT / "tools" / "demo" / "demo_figure.py",
                             ["out"]),
    ]


def _record_runs(monkeypatch, statuses: dict[str, int] | None = None) -> list[list[str]]:
    """Mock subprocess.run: record each argv, exit with the status given for its step name."""
    ran = []

    def fake_run(argv, check):
        ran.append(argv)
        status = next((code for name, code in (statuses or {}).items() if name in argv), 0)
        return subprocess.CompletedProcess(argv, status)

    monkeypatch.setattr(pipeline.subprocess, "run", fake_run)
    return ran


def test_steps_run_in_order_and_echo_what_a_user_types(monkeypatch):
    """Each step: a `[n/total] title` heading, then `$ ` and the command as typed; what runs
    is this interpreter with the same arguments. Returns the seconds of each step by name."""
    ran = _record_runs(monkeypatch)
    monkeypatch.chdir(ROOT)
    lines: list[str] = []
    steps = _steps()
    seconds = pipeline.run_steps(steps, total=4, echo=lines.append)
    assert ran == [step.argv for step in steps]
    assert all(argv[0] == sys.executable for argv in ran)
    assert list(seconds) == ["balance", "compare", "figure"]
    assert lines == [
        "\n[1/4] balance", "$ diffaug balance in out",
        "\n[2/4] compare", "$ python -m qclassify compare in",
        "\n[3/4] draw", "$ python tools/demo/demo_figure.py out",
    ]


def test_a_step_recorded_as_done_is_skipped_with_its_reason(monkeypatch):
    ran = _record_runs(monkeypatch)
    lines: list[str] = []
    steps = _steps(skip_second=lambda: "already compared")
    seconds = pipeline.run_steps(steps, echo=lines.append)
    assert ran == [steps[0].argv, steps[2].argv]
    assert list(seconds) == ["balance", "figure"]
    assert lines[2:4] == ["\n[2/3] compare", "already compared"]


def test_a_failing_step_stops_the_pipeline_in_one_line_naming_it(monkeypatch):
    """CLI contract: StepFailed is a ClickException (exit status 1, one 'Error:' line); the
    steps after it do not run."""
    ran = _record_runs(monkeypatch, {"qclassify": 3})
    with pytest.raises(pipeline.StepFailed) as failed:
        pipeline.run_steps(_steps(), echo=lambda line: None)
    message = failed.value.format_message()
    assert message.startswith("step 2 (compare) failed with exit status 3: "
                              "python -m qclassify compare in;")
    assert "\n" not in message and failed.value.exit_code == 1
    assert len(ran) == 2


def test_a_check_that_cannot_decide_stops_before_the_step(monkeypatch):
    """A skip check raising ValueError (the folder holds something else) names the step; the
    step is neither announced nor run."""
    def occupied():
        raise ValueError("out holds something else")

    ran = _record_runs(monkeypatch)
    lines: list[str] = []
    with pytest.raises(pipeline.StepFailed, match=r"^step 2 \(compare\): out holds something"):
        pipeline.run_steps(_steps(skip_second=occupied), echo=lines.append)
    assert len(ran) == 1 and not any("[2/3]" in line for line in lines)


def test_paths_are_shown_as_typed_from_the_current_folder(tmp_path, monkeypatch):
    """A script below the current folder is shown relative to it, one elsewhere in full; the
    interpreter is shown as `python`, anything else as given."""
    monkeypatch.chdir(tmp_path)
    inside, outside = tmp_path / "tools" / "x.py", ROOT / "tools" / "pipeline.py"
    assert pipeline.typed_path(inside) == os.path.join("tools", "x.py")
    assert pipeline.typed_path(outside) == str(outside)
    assert pipeline.typed_path("relative/y.py") == "relative/y.py"
    assert pipeline.as_typed(["PY", str(inside), str(inside)], python="PY") == [
        "python", os.path.join("tools", "x.py"), str(inside)]
    assert pipeline.as_typed(["other", "-m", "diffaug"], python="PY") == ["other", "-m", "diffaug"]


def test_layout_names_the_three_folders(tmp_path):
    layout = pipeline.PipelineLayout(tmp_path / "out")
    assert (layout.data, layout.balanced, layout.report) == (
        tmp_path / "out" / "data", tmp_path / "out" / "balanced", tmp_path / "out" / "report")


@pytest.mark.parametrize("script", ["demo/run_demo.py", "medmnist/run_medmnist.py",
                                    "bench/bench_all.py", "bench/fid_quality.py"])
def test_scripts_that_import_across_tools_folders_run_by_their_path(tmp_path, script):
    """`python tools/<folder>/<script>.py --help` works from any folder, with only the
    packages importable (no tools/ folder on PYTHONPATH), as the README and nox type it."""
    if script.endswith("fid_quality.py"):
        pytest.importorskip("torchvision")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        path for path in os.environ.get("PYTHONPATH", "").split(os.pathsep)
        if path and "tools" not in Path(path).parts)}
    done = subprocess.run([sys.executable, str(ROOT / "tools" / script), "--help"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Usage: {Path(script).name} ")
