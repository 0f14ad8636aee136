"""Adversarial checks of `qclassify export` and `predict --engine onnxruntime`: a checkpoint
overwritten by --out, stale or damaged cached exports, read-only run folders and unclear
errors.

Each test reproduces one attack or failure and fails without its guard. Everything is
generated in tmp_path; one tiny run (1 epoch, 32 px, CPU) is trained per module and copied
before anything is written into it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from qclassify.cli import main  # noqa: E402
from qclassify.config import TrainConfig  # noqa: E402
from qclassify.inference import predict_paths  # noqa: E402
from qclassify.onnx_engine import cached_model_path  # noqa: E402
from qclassify.runtime import choose_engine  # noqa: E402
from qclassify.train import fit  # noqa: E402

TOLERANCE = 1e-5


def _write_png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(run folder with its ONNX export cached, data folder); copy before writing."""
    base = tmp_path_factory.mktemp("export-adversarial")
    for k, name in enumerate(("normal", "stenosis")):
        for i in range(6):
            _write_png(base / "data" / name / f"{name}_{i}.png", seed=10 * k + i)
    config = TrainConfig(epochs=1, batch_size=4, image_size=32, weights="none", device="cpu")
    fit(base / "data", base / "run", config, progress=False)
    predict_paths(base / "run", [base / "data"], device="cpu", engine="onnxruntime")
    return base / "run", base / "data"


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained[0], copy)
    return copy


def _proba(run: Path, data: Path, engine: str) -> np.ndarray:
    rows = predict_paths(run, [data], device="cpu", engine=engine)
    return np.array([[row["p_normal"], row["p_stenosis"]] for row in rows])


def _one_error_line(result, exit_code: int, *fragments: str) -> None:
    assert result.exit_code == exit_code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0]


def test_out_onto_the_checkpoint_is_refused(run_copy):
    """Attack: `export RUN --out RUN/model.pt` would replace the trained checkpoint with the
    ONNX file; refused as a usage error, the checkpoint byte-identical."""
    before = (run_copy / "model.pt").read_bytes()
    result = CliRunner().invoke(main, ["export", str(run_copy), "--out",
                                       str(run_copy / "model.pt")])
    _one_error_line(result, 2, "--out", "checkpoint")
    assert (run_copy / "model.pt").read_bytes() == before
    assert not (run_copy / "model.pt.json").exists()


def test_out_in_a_missing_folder_is_one_line(run_copy, tmp_path):
    """Failure: --out in a folder that does not exist gave an OSError traceback after the
    export's work; now one usage line naming the folder, nothing written."""
    target = tmp_path / "missing" / "q.onnx"
    result = CliRunner().invoke(main, ["export", str(run_copy), "--out", str(target)])
    _one_error_line(result, 2, str(target.parent))
    assert not target.parent.exists()


def test_export_without_a_model_is_one_line(tmp_path):
    """Failure: exporting a run folder whose training never finished (no model.pt) must
    name the folder and the fix, not trace back."""
    (tmp_path / "run").mkdir()
    result = CliRunner().invoke(main, ["export", str(tmp_path / "run")])
    _one_error_line(result, 1, "model.pt", "qclassify fit")
    assert list((tmp_path / "run").iterdir()) == []


def test_damaged_cached_export_is_exported_again(run_copy, trained):
    """Failure: a truncated or garbage RUN/.cache/*.onnx (a killed disk, a stray copy) made
    every later predict fail inside ONNX Runtime; it is now exported again."""
    cache = cached_model_path(run_copy)
    cache.write_bytes(b"not an onnx model")
    proba = _proba(run_copy, trained[1], "onnxruntime")
    np.testing.assert_allclose(proba, _proba(run_copy, trained[1], "torch"), atol=TOLERANCE,
                               rtol=0)
    assert cache.stat().st_size > 1000


def test_retrained_checkpoint_never_uses_the_old_export(run_copy, trained):
    """Attack: model.pt replaced (retrained, or --overwrite) while RUN/.cache holds the old
    model's export; the cache is keyed by model.pt's sha256, so the new weights are run."""
    checkpoint = torch.load(run_copy / "model.pt", weights_only=True)
    checkpoint["state_dict"]["head.bias"] += torch.tensor([2.0, -2.0])
    torch.save(checkpoint, run_copy / "model.pt")
    proba = _proba(run_copy, trained[1], "onnxruntime")
    np.testing.assert_allclose(proba, _proba(run_copy, trained[1], "torch"), atol=TOLERANCE,
                               rtol=0)
    assert len(list((run_copy / ".cache").glob("*.onnx"))) == 2


def test_read_only_run_folder_still_predicts(run_copy, trained, monkeypatch):
    """Failure: a shared, read-only run folder must still predict with onnxruntime (the
    export then runs from memory) instead of failing to write its cache. The write is made
    to fail by the library's own writer (tests may run as root, who writes anywhere)."""
    import qclassify.onnx_engine
    import qclassify.runfolder

    def refuse(path, write):
        raise PermissionError(13, "Permission denied", str(path))

    shutil.rmtree(run_copy / ".cache")
    monkeypatch.setattr(qclassify.onnx_engine, "atomic_write", refuse)
    monkeypatch.setattr(qclassify.runfolder, "atomic_write", refuse)  # the settings memo
    proba = _proba(run_copy, trained[1], "onnxruntime")
    np.testing.assert_allclose(proba, _proba(run_copy, trained[1], "torch"), atol=TOLERANCE,
                               rtol=0)
    assert list((run_copy / ".cache").iterdir()) == []


def test_onnxruntime_on_a_gpu_is_refused_before_loading():
    """Failure: `--engine onnxruntime --device cuda` would silently run on the CPU; it is
    refused, naming both fixes, before any model is loaded."""
    with pytest.raises(ValueError, match="--device cpu or --engine torch"):
        choose_engine("onnxruntime", "cuda")
    assert choose_engine("auto", "cuda") == "torch"
