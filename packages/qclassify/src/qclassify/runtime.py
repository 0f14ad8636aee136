"""What runs a trained model outside eager PyTorch: the export formats, the prediction
engines and the `onnx` extra, without importing torch (the command line builds its choices
from here, so ``qclassify --help`` stays instant).

The conventions are `diffaug fid`'s (`diffaug.fid.runtime`): ``auto`` is ONNX Runtime on a CPU
when the extra is installed, else torch; an explicit engine is checked against the device and
the installed packages before any image is read. Installed packages are found, not imported.
"""

from __future__ import annotations

import importlib.util

__all__ = ["ENGINES", "EXPORT_FORMATS", "ONNX_EXTRA_HINT", "OnnxExtraMissingError",
           "choose_engine", "onnx_extra_installed", "require_onnx_extra"]

EXPORT_FORMATS = ("onnx", "torchscript")
ENGINES = ("auto", "torch", "onnxruntime")
ONNX_EXTRA_HINT = "pip install 'qclassify[onnx]'"
# The TorchScript-based exporter writes its protobuf with `onnx`; ONNX Runtime runs it.
_ONNX_MODULES = ("onnx", "onnxruntime")


class OnnxExtraMissingError(ImportError):
    """onnx or onnxruntime is not installed."""


def onnx_extra_installed() -> bool:
    """Whether every package of the ``onnx`` extra is installed (found, not imported)."""
    return all(_installed(name) for name in _ONNX_MODULES)


def require_onnx_extra(purpose: str) -> None:
    """Raise `OnnxExtraMissingError` naming `purpose` and the install hint unless the ``onnx``
    extra is installed."""
    if not onnx_extra_installed():
        raise OnnxExtraMissingError(f"{purpose} needs onnx and onnxruntime: {ONNX_EXTRA_HINT}")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # a module object without a spec, e.g. a test double
        return True


def choose_engine(engine: str, device_type: str) -> str:
    """The engine that runs a prediction on a device of `device_type` (``"cpu"``, ``"cuda"``).

    ``"auto"``: onnxruntime on a CPU when the ``onnx`` extra is installed, else torch. An
    explicit engine is checked against the device and the installed packages.

    Raises:
        ValueError: unknown engine, or onnxruntime asked for on another device than the CPU.
        OnnxExtraMissingError: onnxruntime asked for without the ``onnx`` extra.
    """
    if engine not in ENGINES:
        raise ValueError(f"--engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    if engine == "auto":
        return "onnxruntime" if device_type == "cpu" and onnx_extra_installed() else "torch"
    if engine == "onnxruntime":
        if device_type != "cpu":
            raise ValueError(f"--engine onnxruntime runs on the CPU; use --device cpu or "
                             f"--engine torch for {device_type}")
        require_onnx_extra("--engine onnxruntime")
    return engine
