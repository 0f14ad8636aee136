"""A run's model as a file that runs without qclassify: ONNX or TorchScript, plus a JSON file
beside it that says how to feed it.

The exported graph maps normalised images (N, 3, S, S) float32 to class PROBABILITIES (the
softmax is inside), so a consumer needs the preprocessing of ``FILE.json`` and nothing else.
Whatever the run, what is exported is `AveragedProbabilities` over a list of member models:
one member for a single run, one per seed for an ensemble.

How the file is made: `qclassify.serialise`. A run trained with the PennyLane backend is
exported through the exact PyTorch simulation of the same circuit with the same weights (the two
backends' equality is tested in test_quantum).
"""

from __future__ import annotations

import hashlib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from qclassify.ensemble_run import EnsembleRun, load_ensemble
from qclassify.images import IMAGENET_MEAN, IMAGENET_STD
from qclassify.inference import LoadedRun, load_run
from qclassify.options import OptionError
from qclassify.runfolder import MODEL_FILE, RunFolder, atomic_write, write_json
from qclassify.runtime import EXPORT_FORMATS, require_onnx_extra
from qclassify.serialise import (
    INPUT_NAME,
    ONNX_OPSET,
    OUTPUT_NAME,
    SERIALISERS,
    AveragedProbabilities,
    average_probabilities,
    onnx_bytes,
    torchscript_bytes,
)

__all__ = ["DEFAULT_FILE_NAMES", "EXPORT_FORMATS", "INPUT_NAME", "ONNX_OPSET", "OUTPUT_NAME",
           "AveragedProbabilities", "average_probabilities", "export_description",
           "export_run", "onnx_bytes", "sidecar_path", "torchscript_bytes"]

DEFAULT_FILE_NAMES = {"onnx": "model.onnx", "torchscript": "model.ts"}


def sidecar_path(model_file: str | Path) -> Path:
    """Where the description of an exported model lies: ``FILE.json`` beside ``FILE``."""
    model_file = Path(model_file)
    return model_file.with_name(model_file.name + ".json")


def export_description(run: LoadedRun | EnsembleRun, export_format: str, model_file: str | Path,
                       sha256: str) -> dict[str, Any]:
    """What a consumer needs to run the exported model of `run` without qclassify."""
    return {
        "format": export_format,
        "model_file": Path(model_file).name,
        "sha256": sha256,
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, run.image_size, run.image_size],
                  "dtype": "float32", "layout": "NCHW"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(run.class_names)],
                   "dtype": "float32",
                   "meaning": "class probabilities (softmax applied inside), one column per "
                              "class in class_names order"},
        "preprocessing": _preprocessing(run.image_size),
        "class_names": run.class_names,
        "positive_class": run.positive_class,
        "decision_threshold": run.decision_threshold,
        "decision_rule": _decision_rule(run),
        "source": {"model": run.model_name, "run_folder": run.run_dir.name,
                   "members": len(run.models),
                   "quantum_circuit": _circuit_note(run)},
        "exporter": (f"torch.onnx.export (TorchScript-based, opset {ONNX_OPSET})"
                     if export_format == "onnx" else "torch.jit.trace"),
        "qclassify_version": _version("qclassify"),
        "torch_version": torch.__version__,
    }


def _preprocessing(image_size: int) -> dict[str, Any]:
    """`qclassify.images.read_image` then `make_preprocess`, in words a consumer can follow."""
    return {
        "steps": [
            "decode; scale pixels to [0, 1] by the file's bit depth (8-bit / 255, 16-bit / "
            "65535, float images clipped); drop alpha; expand palettes to RGB",
            f"resize to {image_size}x{image_size} (aspect ratio not kept, no crop)",
            "grayscale: repeat the one channel to 3 (RGB stays RGB)",
            "subtract mean and divide by std per channel (RGB order)",
        ],
        "pixel_scale": {"8-bit": 255, "16-bit": 65535},
        "image_size": image_size,
        "resize": {"method": "bilinear", "antialias": True,
                   "applied_to": "float pixels in [0, 1] before channel repetition"},
        "channels": "grayscale repeated to 3",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
    }


def _decision_rule(run: LoadedRun | EnsembleRun) -> str:
    if run.decision_threshold is None:
        return "argmax: the class with the highest probability"
    other = next(name for name in run.class_names if name != run.positive_class)
    return (f"threshold: {run.positive_class!r} when its probability >= "
            f"{run.decision_threshold!r}, else {other!r}")


def _circuit_note(run: LoadedRun | EnsembleRun) -> str | None:
    backend = run.config.get("options", {}).get("q_backend")
    if run.model_name != "qmobilenet":
        return None
    if backend == "pennylane":
        return ("trained with the PennyLane backend; exported through the exact PyTorch "
                "state-vector simulation of the same circuit with the same weights")
    return "exact PyTorch state-vector simulation"


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def export_run(run_dir: str | Path, export_format: str = "onnx",
               out: str | Path | None = None) -> Path:
    """Export a run's model (`average_probabilities` of its members) to `out` (default
    ``RUN/model.onnx`` or ``RUN/model.ts``) and its description (`export_description`) to
    ``out + ".json"``; both written atomically. Returns `out`.

    Raises:
        OptionError: unknown format, or `out` is a folder or the run's checkpoint.
        ValueError: the run folder holds no usable model.
        OnnxExtraMissingError: ONNX asked for without the ``onnx`` extra.
    """
    if export_format not in EXPORT_FORMATS:
        raise OptionError(f"must be one of {', '.join(EXPORT_FORMATS)}; got "
                          f"{export_format!r}", "format")
    if export_format == "onnx":
        require_onnx_extra("qclassify export --format onnx")  # before loading anything
    run = (load_ensemble(run_dir, device="cpu", q_backend="torch")
           if RunFolder(run_dir).is_ensemble() else load_run(run_dir, device="cpu", q_backend="torch"))
    out = Path(out) if out is not None else run.run_dir / DEFAULT_FILE_NAMES[export_format]
    _check_out_file(out, run)
    data = SERIALISERS[export_format](average_probabilities(run.models), run.image_size)
    atomic_write(out, lambda file: file.write(data))
    write_json(sidecar_path(out), export_description(run, export_format, out,
                                                     hashlib.sha256(data).hexdigest()))
    return out


def _check_out_file(out: Path, run: LoadedRun | EnsembleRun) -> None:
    if out.is_dir():
        raise OptionError(f"{out} is a folder; name the file to write", "out")
    if not out.parent.is_dir():
        raise OptionError(f"folder {out.parent} does not exist", "out")
    if out.resolve() == (run.run_dir / MODEL_FILE).resolve():
        raise OptionError(f"{out} is the run's checkpoint; choose another file name", "out")
