"""DDP under torchrun (CLI): two CPU processes with Gloo, started as a subprocess by
``python -m torch.distributed.run``, against a single-process run of the same global batch.

Hooks are injected the clean way: torchrun runs a small script from tmp_path that patches
qclassify and then starts its command line (``qclassify.__main__.run``), exactly what
``torchrun -m qclassify`` runs; qclassify itself has no test hooks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import qclassify.train as train_module  # noqa: E402
from qclassify.config import TrainConfig  # noqa: E402
from qclassify.inference import evaluate_run  # noqa: E402
from qclassify.runfolder import RunFolder  # noqa: E402

pytestmark = pytest.mark.slow
# 12 images a class in train/val/test folders: 16 training images, 4 global batches of 4.
COUNTS = {"benign": 12, "malignant": 12}
# The paper recipe (Adam, lr 1e-4): Adam's step is about lr * sign(gradient) for gradients near
# zero, so summation-order noise moves such weights by up to 2 lr; the scratch recipe's lr 1e-3
# would need a tolerance too loose to catch a sharding bug.
TINY_OPTIONS = ["--model", "qmobilenet", "--weights", "none", "--recipe", "paper", "--image-size", "32",
                "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--quiet"]
TINY = TrainConfig(model="qmobilenet", weights="none", recipe="paper", image_size=32, epochs=1, batch_size=4,
                   device="cpu")
# Two processes add the halves of each gradient in another order than one process adds the
# whole: float32 rounding, amplified by Adam's division by sqrt(v) for tiny gradients.
WEIGHTS_ATOL = 1e-5
LOSS_ATOL = 1e-5
TORCHRUN_TIMEOUT_S = 300

# Batch-independent and RNG-free training: BatchNorm normalises with its running statistics
# and Dropout is off, so one process and two compute the same thing. (Under DDP on the CPU
# each process normalises its own half batch, and dropout masks come from each process's own
# random stream: those are the documented differences, not what this test checks.)
HOOKS = '''
from torch import nn


def freeze_batch_dependence(build_model):
    def build(*args, **kwargs):
        model = build_model(*args, **kwargs)
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm2d, nn.Dropout)):
                module.train = lambda mode=True, module=module: nn.Module.train(module, False)
        return model
    return build
'''
FREEZE = '''
import hooks
import qclassify.train

qclassify.train.build_model = hooks.freeze_batch_dependence(qclassify.train.build_model)
'''
FAIL_ON_RANK_1 = '''
import os

import qclassify.train

original = qclassify.train._train_epoch


def failing_epoch(*args, **kwargs):
    if os.environ["RANK"] == "1":
        raise ValueError("simulated failure on rank 1")
    return original(*args, **kwargs)


qclassify.train._train_epoch = failing_epoch
'''


def _torchrun(tmp_path: Path, target: list[str], *args: str) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc_per_node 2 TARGET ARGS`` on the CPU."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", *target, *args]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=TORCHRUN_TIMEOUT_S)


def _script(tmp_path: Path, name: str, patch: str) -> list[str]:
    """A script that applies `patch` and runs qclassify's command line, as torchrun target."""
    script = tmp_path / name
    script.write_text(textwrap.dedent(patch) + "\nfrom qclassify.__main__ import run\nrun()\n")
    return [str(script)]


def _error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines()
            if line.startswith("Error:")]


@pytest.fixture
def data(tmp_path, make_images) -> Path:
    return make_images(tmp_path / "data", COUNTS, layout="split")


def test_torchrun_fit_equals_a_single_process_run(data, tmp_path, monkeypatch):
    """DDP correctness: rank shards, gradient averaging and rank-0 validation reproduce the
    single-process run with the same global batch (weights and history up to float rounding);
    only rank 0 writes the run folder and prints, and evaluate loads its model.pt."""
    (tmp_path / "hooks.py").write_text(HOOKS)
    target = _script(tmp_path, "fit_frozen.py", FREEZE)
    result = _torchrun(tmp_path, target, "fit", str(data), "--out", str(tmp_path / "ddp"),
                       *TINY_OPTIONS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("run folder:") == 1  # rank 1 prints nothing

    monkeypatch.syspath_prepend(str(tmp_path))
    import hooks

    monkeypatch.setattr(train_module, "build_model",
                        hooks.freeze_batch_dependence(train_module.build_model))
    train_module.fit(data, tmp_path / "single", TINY, progress=False)

    ddp, single = RunFolder(tmp_path / "ddp"), RunFolder(tmp_path / "single")
    assert sorted(p.name for p in ddp.path.iterdir()) == sorted(
        p.name for p in single.path.iterdir())
    assert ddp.read_split() == single.read_split()
    assert ddp.read_config()["torchrun_processes"] == 2
    # Losses and weights only: a one-epoch model scores the validation images within ~1e-7 of
    # each other, so their rank order (val_auc, val_accuracy) is float noise, not DDP's doing.
    for ddp_row, single_row in zip(ddp.read_history(), single.read_history(), strict=True):
        for column in ("train_loss", "val_loss"):
            assert ddp_row[column] == pytest.approx(single_row[column], abs=LOSS_ATOL)
    ddp_state = ddp.read_checkpoint()["state_dict"]
    for name, tensor in single.read_checkpoint()["state_dict"].items():
        torch.testing.assert_close(ddp_state[name], tensor, atol=WEIGHTS_ATOL, rtol=0,
                                   msg=name)
    assert evaluate_run(ddp.path, n_bootstrap=0).metrics["n_test"] == 4


def test_a_failure_on_one_rank_ends_all_with_one_line(data, tmp_path):
    """Attack: one process raises in the middle of training while the other waits in a
    gradient all-reduce. Both must end (no hang), with one Error line in all, no traceback of
    ours, a non-zero exit and no model.pt."""
    target = _script(tmp_path, "fail_rank_1.py", FAIL_ON_RANK_1)
    result = _torchrun(tmp_path, target, "fit", str(data), "--out", str(tmp_path / "run"),
                       *TINY_OPTIONS)
    assert result.returncode != 0
    assert _error_lines(result) == ["Error: simulated failure on rank 1"]
    assert "qclassify" not in "".join(line for line in result.stderr.splitlines()
                                      if line.lstrip().startswith('File "'))
    assert not (tmp_path / "run" / "model.pt").exists()


def test_a_batch_not_divisible_by_the_processes_is_one_line(data, tmp_path):
    """Bad input under ``torchrun -m qclassify``: --batch-size 3 on 2 processes. Every rank
    detects it; one line is printed (not one per rank), nothing is written."""
    options = [*TINY_OPTIONS]
    options[options.index("--batch-size") + 1] = "3"
    result = _torchrun(tmp_path, ["-m", "qclassify"], "fit", str(data), "--out",
                       str(tmp_path / "run"), *options)
    assert result.returncode != 0
    assert _error_lines(result) == [
        "Error: --batch-size 3 is the global batch and must be divisible by the 2 torchrun "
        "processes; use a multiple of 2"]
    assert not (tmp_path / "run").exists()
