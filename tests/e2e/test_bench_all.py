"""tools/bench/bench_all.py without benchmarking: the loop over the scripts' own BENCHMARKs,
their goal checks on results built here, and the commands the report records (the script's
subprocess is mocked; nothing is timed)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import bench_all  # tools/bench/ is on pytest's pythonpath (root pyproject.toml)
import bench_balance
import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]


def _balance_result(per_worker: dict[int, float], floor: float = 100.0) -> dict:
    """bench_balance.py's JSON with the given synthetic images/s per worker count."""
    return {"n_images": 20, "size": 8, "repeats": 1, "counts": {"normal": 18, "lesion": 2},
            "floor": {"seconds": 0.2, "images_per_second": floor},
            "balance": [{"workers": w, "seconds": 1.0, "n_synthetic": 16, "n_copied": 20,
                         "synthetic_per_second": rate, "files_per_second": rate}
                        for w, rate in per_worker.items()]}


def test_balance_goals_hold_exactly_at_their_thresholds():
    """Analytic oracle: per worker, rate / workers / floor >= GOAL_PER_WORKER; scaling from
    one worker, rate(w) / rate(1) >= GOAL_SCALING_EFFICIENCY * w."""
    at_goal = bench_balance.GOAL_PER_WORKER * 100.0  # the floor is 100 images/s
    assert [g.verdict for g in bench_balance.goals(_balance_result({1: at_goal}))] == ["PASS"]
    below = bench_balance.goals(_balance_result({1: at_goal - 0.1}))
    assert [g.verdict for g in below] == ["MISS"]
    linear = 2 * bench_balance.GOAL_SCALING_EFFICIENCY * 100.0
    scaling = bench_balance.goals(_balance_result({1: 100.0, 2: linear}))
    assert [g.verdict for g in scaling] == ["PASS", "PASS", "PASS"]
    assert scaling[2].name == "diffaug balance scaling, 1 → 2 workers"
    sublinear = bench_balance.goals(_balance_result({1: 100.0, 2: linear - 1}))
    assert [g.verdict for g in sublinear] == ["PASS", "PASS", "MISS"]


def test_every_benchmark_is_loaded_from_its_own_script():
    """The loop's table names a module per --only key; each defines its BENCHMARK with its
    own script, title and goal (the heavy ones need torch and PennyLane to import)."""
    pytest.importorskip("torchvision")
    pytest.importorskip("pennylane")
    benchmarks = bench_all.load_benchmarks(list(bench_all.BENCHMARK_MODULES))
    for (key, module), bench in zip(bench_all.BENCHMARK_MODULES.items(), benchmarks,
                                    strict=True):
        assert bench.script == ROOT / "tools" / "bench" / f"{module}.py", key
        assert bench.title and bench.goal and bench.script.is_file()


def test_recorded_commands_hold_no_absolute_path_of_this_machine(tmp_path, monkeypatch):
    """TORCH_HOME is handed to the script absolute (it runs from the repository root) and
    recorded relative to the repository root, as typed there, like the script's path."""
    monkeypatch.chdir(tmp_path)
    torch_home = ROOT.parent / "shared" / "torch-home"
    for typed in (str(torch_home), os.path.relpath(torch_home)):
        env = bench_all.script_environment(bench_balance.BENCHMARK, {"TORCH_HOME": typed})
        assert env["TORCH_HOME"] == str(torch_home)
        command = bench_all.shown_command(bench_balance.BENCHMARK, True, env)
        assert command == (f"TORCH_HOME={os.path.relpath(torch_home, ROOT)} "
                           "python tools/bench/bench_balance.py --quick")
        assert str(ROOT.parent) not in command


class _FakeScript:
    """subprocess.Popen stand-in: writes `result` where the --json option points, prints a line."""

    def __init__(self, argv):
        Path(argv[argv.index("--json") + 1]).write_text(json.dumps(_balance_result({1: 90.0})))
        self.stdout = io.StringIO("timed\n")

    def wait(self):
        return 0


def test_cli_loops_over_the_chosen_benchmarks_and_writes_the_report(tmp_path, monkeypatch):
    """CLI with the benchmark's subprocess mocked: the report holds the script's section with
    the command as typed, its rendered table, raw output and goals, and the BreastMNIST goal
    as not measured."""
    started, real_popen = [], subprocess.Popen

    def popen(argv, **kwargs):  # git and platform start processes too: only the script is faked
        if argv[0] != sys.executable:
            return real_popen(argv, **kwargs)
        started.append(argv)
        return _FakeScript(argv)

    monkeypatch.setattr(bench_all.subprocess, "Popen", popen)
    out = tmp_path / "BENCHMARKS.md"
    result = CliRunner().invoke(bench_all.main, ["--quick", "--only", "balance", "--out",
                                                 str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert [argv[1] for argv in started] == [str(bench_balance.BENCHMARK.script)]
    text = out.read_text()
    assert "## diffaug balance throughput vs the PIL open-and-save floor" in text
    assert "python tools/bench/bench_balance.py --quick`" in text
    assert "| diffaug balance --workers 1 |" in text and "timed" in text
    assert "| diffaug balance, 1 worker(s) | ≥ 0.75× the PIL floor per worker | 0.90×" in text
    assert "not part of this run" in text
