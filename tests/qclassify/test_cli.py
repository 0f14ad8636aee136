"""CLI tests: fit / evaluate / predict through click, and every bad-input path."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402
from qclassify.cli import main  # noqa: E402

TINY = ["--epochs", "1", "--batch-size", "4", "--image-size", "32", "--weights", "none",
        "--device", "cpu", "--quiet"]


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _assert_one_line_error(result, *fragments: str, exit_code: int | None = None) -> None:
    assert result.exit_code != 0
    if exit_code is not None:
        assert result.exit_code == exit_code
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if "Usage:" not in result.output:  # click's own parse errors print the usage line first
        assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[-1], result.output


@pytest.mark.parametrize("command", [[], *([name] for name in sorted(main.commands))])
def test_every_command_has_help(command):
    """CLI: --help works for the group and every command (also those added later)."""
    result = _invoke(*command, "--help")
    assert result.exit_code == 0 and "Usage:" in result.output


def test_fit_evaluate_predict(image_folder, tmp_path):
    """CLI: fit writes the run folder and prints one line per epoch; evaluate prints the six
    metrics and writes metrics.json; predict prints the CSV the library returns."""
    run = tmp_path / "run"
    result = _invoke("fit", image_folder, "--out", run, "--model", "mobilenet_v2", *TINY)
    assert result.exit_code == 0, result.output
    assert [line for line in result.stdout.splitlines() if line.startswith("epoch 1/1")]
    assert f"run folder: {run}" in result.stdout.splitlines()
    assert json.loads((run / "config.json").read_text())["options"]["model"] == "mobilenet_v2"

    result = _invoke("evaluate", run, "--bootstrap", "20", "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    for name in ("accuracy", "precision", "recall", "specificity", "f1", "auc"):
        assert any(line.startswith(name) for line in result.stdout.splitlines())
    assert f"{metrics['accuracy']['value']:.4f}" in result.stdout
    assert metrics["n_bootstrap"] == 20

    result = _invoke("predict", run, image_folder / "stenosis", "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["path", "predicted_class", "p_normal", "p_stenosis"]
    assert len(rows) == 6
    assert result.stderr == ""


def test_predict_progress_goes_to_stderr(trained_run):
    """CLI: without --quiet predict shows progress bars on stderr; stdout stays the CSV that
    --quiet prints, byte for byte."""
    run, data = trained_run
    args = ("predict", run, data / "normal", "--device", "cpu", "--batch-size", "4")
    quiet, verbose = _invoke(*args, "--quiet"), _invoke(*args)
    assert quiet.exit_code == verbose.exit_code == 0, verbose.output
    assert verbose.stdout == quiet.stdout
    assert len(list(csv.DictReader(io.StringIO(verbose.stdout)))) == 12
    assert "predict:" in verbose.stderr  # the bar is on stderr (its last frame depends on timing)
    assert quiet.stderr == ""


def test_q_device_reaches_the_checkpoint(tmp_path, make_images):
    """CLI: --q-device is recorded in config.json and model.pt, and evaluate/predict rebuild
    the quantum layer on it; an unknown device is one error line before any file is written."""
    pytest.importorskip("pennylane_lightning")
    from qclassify.inference import load_run

    data = make_images(tmp_path / "data", counts={"normal": 4, "stenosis": 4})
    run = tmp_path / "run"
    pennylane = ["--q-backend", "pennylane", "--q-device"]
    result = _invoke("fit", data, "--out", run, *TINY, *pennylane, "lightning.qubit")
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["options"]["q_device"] == (
        "lightning.qubit")
    assert load_run(run, device="cpu").model.quantum.device_name == "lightning.qubit"

    result = _invoke("fit", data, "--out", tmp_path / "bad", *TINY, *pennylane, "nope.qubit")
    _assert_one_line_error(result, "cannot use PennyLane device 'nope.qubit'", exit_code=1)
    assert not (tmp_path / "bad").exists()


def test_unreadable_image_is_named_and_skipped(image_folder, tmp_path):
    """CLI: a corrupt image gives one warning line with its name, and training goes on."""
    (image_folder / "normal" / "corrupt.png").write_bytes(b"not an image")
    result = _invoke("fit", image_folder, "--out", tmp_path / "run", *TINY)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "corrupt.png" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: skipping unreadable image")
    assert "corrupt.png" not in (tmp_path / "run" / "split.csv").read_text()


@pytest.mark.parametrize(
    ("arrange", "extra", "fragments", "exit_code"),
    [
        (lambda data: shutil.rmtree(data), [], ["does not exist"], 2),
        (lambda data: (shutil.rmtree(data), data.mkdir()), [], ["no images"], 2),
        (lambda data: shutil.rmtree(data / "stenosis"), [], ["only one class"], 2),
        (lambda data: None, ["--image-size", "16"], ["--image-size", "32<=x<=4096"], 2),
        (lambda data: None, ["--weights", "absent.pt"], ["--weights", "absent.pt"], 2),
        (lambda data: None, ["--model", "alexnet"], ["--model"], 2),
        (lambda data: None, ["--val-fraction", "0"], ["--val-fraction", "0<x<1"], 2),
        (lambda data: None, ["--test-fraction", "1"], ["--test-fraction", "0<x<1"], 2),
        (lambda data: None, ["--val-fraction", "0.5", "--test-fraction", "0.5"],
         ["sum below 1"], 2),
        (lambda data: None, ["--seed", "-1"], ["--seed", "x>=0"], 2),
        (lambda data: None, ["--device", "gpu"], ["--device", "'gpu' is not auto, cpu, cuda"], 2),
        (lambda data: None, ["--device", "cuda:x"], ["--device", "cuda:N"], 2),
        (lambda data: None, ["--device", "cuda:1"], ["--device", "CUDA is not available"], 2),
        (lambda data: None, ["--threshold", "f1"], ["--threshold", "'f1' is not one of"], 2),
        (lambda data: None, ["--lr-schedule", "step"], ["--lr-schedule", "'step' is not"], 2),
        (lambda data: shutil.copytree(data / "stenosis", data / "third"),
         ["--threshold", "youden"], ["--threshold youden", "two-class task", "3 classes"], 2),
    ],
    ids=["missing-folder", "empty-folder", "one-class", "image-too-small", "bad-weights",
         "bad-model", "val-fraction-0", "test-fraction-1", "fractions-sum-1", "negative-seed",
         "device-gpu", "device-cuda-x", "device-cuda-unavailable", "threshold-unknown",
         "lr-schedule-unknown", "threshold-three-classes"],
)
def test_fit_bad_input(image_folder, tmp_path, arrange, extra, fragments, exit_code,
                       monkeypatch):
    """CLI: each bad input is one clear error line, no traceback, and names no run folder
    (none was made); an option or input to change exits 2 (click's usage status), a failure
    while running 1."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    arrange(image_folder)
    # extra comes last: click keeps the last value of a repeated option
    result = _invoke("fit", image_folder, "--out", tmp_path / "run", *TINY, *extra)
    _assert_one_line_error(result, *fragments, exit_code=exit_code)
    assert "run folder" not in result.output
    assert not (tmp_path / "run").exists()


def test_fit_refuses_an_occupied_run_folder(trained_run, tmp_path):
    """CLI: an existing run is not overwritten without --overwrite."""
    run, data = trained_run
    occupied = shutil.copytree(run, tmp_path / "run")
    result = _invoke("fit", data, "--out", occupied, *TINY)
    _assert_one_line_error(result, "already holds a finished run", "--overwrite", exit_code=2)


def test_evaluate_and_predict_without_model(tmp_path, image_folder):
    """CLI: a run folder without model.pt is one error line for evaluate and predict."""
    (tmp_path / "run").mkdir()
    for args in (["evaluate", tmp_path / "run", image_folder],
                 ["predict", tmp_path / "run", image_folder]):
        _assert_one_line_error(_invoke(*args), "holds no model.pt", exit_code=1)


def test_evaluate_bad_positive_and_predict_no_images(trained_run, tmp_path):
    """CLI: an unknown --positive class, and predict on a folder without images."""
    run, data = trained_run
    copy = shutil.copytree(run, tmp_path / "run")
    result = _invoke("evaluate", copy, "--positive", "tumour", "--device", "cpu")
    _assert_one_line_error(result, "'tumour' is not a class", exit_code=2)
    (tmp_path / "empty").mkdir()
    result = _invoke("predict", run, tmp_path / "empty", "--device", "cpu")
    _assert_one_line_error(result, "no readable images", exit_code=1)


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["fit", "--help"],
                                  ["compare", "--help"], ["evaluate", "--help"]])
def test_help_and_version_import_neither_torch_nor_sklearn(args):
    """CLI convention: help and version come from the torch-free qclassify.options, so they
    start at once (the time is measured in BENCHMARKS, not here); every help has an example."""
    script = ("import sys\n"
              "from qclassify.cli import main\n"
              f"try:\n    main({args!r})\n"
              "except SystemExit as end:\n    assert end.code in (0, None), end.code\n"
              "heavy = [m for m in ('torch', 'sklearn', 'pennylane') if m in sys.modules]\n"
              "assert not heavy, heavy\n")
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stderr
    if "--help" in args:
        assert "Example:" in completed.stdout


def test_evaluate_json_is_the_metrics_file(trained_run, tmp_path):
    """CLI: --json prints exactly what metrics.json holds, for scripts."""
    run, _ = trained_run
    copy = shutil.copytree(run, tmp_path / "run")
    result = _invoke("evaluate", copy, "--bootstrap", "10", "--device", "cpu", "--quiet", "--json")
    assert result.exit_code == 0, result.output
    def canonical(text: str) -> str:  # NaN-safe: NaN != NaN, its JSON spelling is equal
        return json.dumps(json.loads(text), sort_keys=True)

    assert canonical(result.stdout) == canonical((copy / "metrics.json").read_text())


def test_library_errors_name_parameters_and_the_cli_names_flags(image_folder, tmp_path):
    """Convention: TrainConfig's error names its parameter (batch_size); the CLI's names the
    flag the user typed (--batch-size), exit status 2."""
    from qclassify.options import OptionError, TrainConfig

    with pytest.raises(OptionError, match="^lr_schedule must be one of") as caught:
        TrainConfig(lr_schedule="step").validate()
    assert caught.value.for_flag().startswith("--lr-schedule must be one of")
    result = _invoke("compare", image_folder, "--out", tmp_path / "report", "--models",
                     "alexnet", *TINY)
    _assert_one_line_error(result, "--models names unknown model 'alexnet'", exit_code=2)
