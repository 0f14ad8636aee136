"""`qclassify export` and `predict --engine`: the exported files against the run's own torch
prediction (the oracle), the JSON description as the only knowledge a consumer needs, the
engines' parity and the averaging module of ensembles."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from qclassify.cli import main  # noqa: E402
from qclassify.export import average_probabilities, export_run, onnx_bytes, sidecar_path  # noqa: E402
from qclassify.images import ImageDataset  # noqa: E402
from qclassify.inference import predict_paths  # noqa: E402
from qclassify.onnx_engine import cached_model_path  # noqa: E402

TOLERANCE = 1e-5  # float32 graph against the run's float32 forward, float64 softmax
# PIL's antialiased bilinear resize and torchvision's differ by a fraction of a grey level.
RESIZE_TOLERANCE = 2e-3


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    """(run copy with model.onnx and model.ts exported, data folder)."""
    run, data = trained_run
    copy = tmp_path_factory.mktemp("export") / "run"
    shutil.copytree(run, copy)
    export_run(copy, "onnx")
    export_run(copy, "torchscript")
    return copy, data


def _images(data: Path) -> list[Path]:
    return sorted((data / "normal").iterdir())[:3] + sorted((data / "stenosis").iterdir())[:3]


def _torch_proba(run: Path, images: list[Path]) -> np.ndarray:
    rows = predict_paths(run, images, device="cpu", engine="torch")
    return np.array([[row["p_normal"], row["p_stenosis"]] for row in rows])


def _batch(images: list[Path], size: int) -> np.ndarray:
    dataset = ImageDataset(images, None, size)
    return torch.stack([dataset[i][0] for i in range(len(images))]).numpy()


def test_onnx_and_torchscript_give_the_runs_probabilities(exported):
    """Reference implementation: both exported files map the run's preprocessed images to
    the probabilities `qclassify predict --engine torch` prints, at a batch size other than
    the one traced (the batch axis is dynamic)."""
    run, data = exported
    images = _images(data)
    expected = _torch_proba(run, images)
    batch = _batch(images, 32)
    session = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    (onnx_proba,) = session.run(None, {"images": batch})
    np.testing.assert_allclose(onnx_proba, expected, atol=TOLERANCE, rtol=0)
    with pytest.warns(FutureWarning):  # torch.jit.load's deprecation notice
        scripted = torch.jit.load(str(run / "model.ts"))
    with torch.no_grad():
        ts_proba = scripted(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(ts_proba, expected, atol=TOLERANCE, rtol=0)


def _consumer_preprocess(path: Path, description: dict) -> np.ndarray:
    """What a consumer without qclassify writes from the JSON alone: numpy and PIL."""
    prep = description["preprocessing"]
    size = prep["image_size"]
    with Image.open(path) as image:
        channels = [image] if image.mode == "L" else list(image.convert("RGB").split())
        scaled = [np.asarray(c, dtype=np.float32) / prep["pixel_scale"]["8-bit"]
                  for c in channels]
    resized = [np.asarray(Image.fromarray(c, mode="F").resize((size, size),
                                                              Image.Resampling.BILINEAR))
               for c in scaled]
    pixels = np.stack(resized * 3 if len(resized) == 1 else resized)
    mean, std = (np.array(prep[k], dtype=np.float32)[:, None, None] for k in ("mean", "std"))
    return ((pixels - mean) / std).astype(np.float32)


def test_json_beside_the_model_is_enough_to_run_it(exported, tmp_path):
    """Contract: a consumer with onnxruntime, numpy and PIL only, reading model.onnx.json
    (preprocessing, names, classes, decision rule, sha256), reproduces `qclassify predict`'s
    rows for images that need resizing, grayscale and RGB."""
    run, data = exported
    description = json.loads(sidecar_path(run / "model.onnx").read_text())
    model_bytes = (run / "model.onnx").read_bytes()
    assert description["sha256"] == hashlib.sha256(model_bytes).hexdigest()
    images = []
    for k, source in enumerate(_images(data)):
        with Image.open(source) as image:
            mode = "RGB" if k % 2 else "L"
            resized = image.convert(mode).resize((48, 48), Image.Resampling.NEAREST)
            resized.save(tmp_path / f"{k}.png")
        images.append(tmp_path / f"{k}.png")
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    batch = np.stack([_consumer_preprocess(p, description) for p in images])
    (proba,) = session.run([description["output"]["name"]],
                           {description["input"]["name"]: batch})
    rows = predict_paths(run, images, device="cpu", engine="torch")
    expected = np.array([[row[f"p_{c}"] for c in description["class_names"]] for row in rows])
    np.testing.assert_allclose(proba, expected, atol=RESIZE_TOLERANCE, rtol=0)
    assert description["decision_rule"].startswith("argmax")
    predicted = [description["class_names"][k] for k in proba.argmax(axis=1)]
    assert predicted == [row["predicted_class"] for row in rows]


def test_engines_agree_and_the_export_is_cached(exported):
    """Reference implementation: `--engine onnxruntime` prints torch's probabilities to 1e-5;
    its export is cached under RUN/.cache keyed by model.pt's sha256 and reused."""
    run, data = exported
    images = _images(data)
    rows = predict_paths(run, images, device="cpu", engine="onnxruntime")
    proba = np.array([[row["p_normal"], row["p_stenosis"]] for row in rows])
    np.testing.assert_allclose(proba, _torch_proba(run, images), atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12, rtol=0)
    cache = cached_model_path(run)
    assert cache.is_file() and cache.parent == run / ".cache"
    stamp = cache.stat().st_mtime_ns
    predict_paths(run, images[:1], device="cpu", engine="auto")  # auto on CPU: onnxruntime
    assert cache.stat().st_mtime_ns == stamp


def test_cli_engine_parity(exported):
    """CLI: `predict --engine torch` and `--engine onnxruntime` print the same CSV rows, the
    probabilities equal to 1e-5."""
    run, data = exported
    outputs = {}
    for engine in ("torch", "onnxruntime"):
        result = CliRunner().invoke(main, ["predict", str(run), str(data / "stenosis"),
                                           "--device", "cpu", "--engine", engine, "--quiet"])
        assert result.exit_code == 0, result.output
        outputs[engine] = [line.split(",") for line in result.stdout.splitlines()]
    torch_rows, onnx_rows = outputs["torch"], outputs["onnxruntime"]
    assert [r[:2] for r in torch_rows] == [r[:2] for r in onnx_rows]
    np.testing.assert_allclose(np.array([r[2:] for r in onnx_rows[1:]], dtype=float),
                               np.array([r[2:] for r in torch_rows[1:]], dtype=float),
                               atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("command", [["predict", "--engine", "onnxruntime"],
                                     ["export", "--format", "onnx"]])
def test_missing_onnxruntime_is_one_line_naming_the_extra(exported, monkeypatch, command):
    """CLI (STYLE: optional dependencies): without onnxruntime, `--engine onnxruntime` and
    `export --format onnx` are one `Error:` line naming `qclassify[onnx]`, exit 1."""
    run, data = exported
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    extra = [str(data / "normal"), "--device", "cpu"] if command[0] == "predict" else []
    result = CliRunner().invoke(main, [command[0], str(run), *extra, *command[1:]])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        result.output.strip().splitlines()[-1]]
    assert "qclassify[onnx]" in result.output and "Traceback" not in result.output


def test_two_member_module_averages_probabilities(tmp_path):
    """Analytic oracle: the ensemble module's output (eager and exported) is the mean of its
    members' softmax probabilities."""
    torch.manual_seed(0)
    members = [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3))
               for _ in range(2)]
    images = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        expected = torch.stack([torch.softmax(m(images), dim=1) for m in members]).mean(0)
        averaged = average_probabilities(members)(images)
    torch.testing.assert_close(averaged, expected, atol=1e-7, rtol=0)
    session = ort.InferenceSession(onnx_bytes(average_probabilities(members), 32),
                                   providers=["CPUExecutionProvider"])
    (exported,) = session.run(None, {"images": images.numpy()})
    np.testing.assert_allclose(exported, expected.numpy(), atol=TOLERANCE, rtol=0)


def test_pennylane_run_exports_through_the_torch_simulation(exported, tmp_path):
    """Contract: a checkpoint trained with the PennyLane backend exports (PennyLane not
    needed) to the same probabilities, and the JSON says which simulation was traced."""
    run, data = exported
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    checkpoint = torch.load(copy / "model.pt", weights_only=True)
    torch.save({**checkpoint, "q_backend": "pennylane"}, copy / "model.pt")
    config = json.loads((copy / "config.json").read_text())
    config["options"]["q_backend"] = "pennylane"
    (copy / "config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(main, ["export", str(copy), "--out", str(tmp_path / "q.onnx")])
    assert result.exit_code == 0, result.output
    images = _images(data)
    session = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    (proba,) = session.run(None, {"images": _batch(images, 32)})
    np.testing.assert_allclose(proba, _torch_proba(run, images), atol=TOLERANCE, rtol=0)
    description = json.loads((tmp_path / "q.onnx.json").read_text())
    assert "PennyLane" in description["source"]["quantum_circuit"]
