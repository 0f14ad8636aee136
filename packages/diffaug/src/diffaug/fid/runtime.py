"""What runs the FID network: the `fid` extra, the device and the engine.

Everything here answers before the network is built, so that a missing package, an absent GPU
or an engine that cannot run on the device is one clear error instead of a failure halfway
through a feature pass. Installed packages are found, not imported (importing torchvision and
pytorch-fid takes seconds); torch is imported inside `resolve_device` only.
"""

from __future__ import annotations

import importlib.util

__all__ = ["ENGINES", "FID_EXTRA_HINT", "FidExtraMissingError", "choose_engine",
           "require_fid_extra", "resolve_device"]

FID_EXTRA_HINT = "diffaug fid needs the fid extra: pip install 'diffaug[fid]'"
ENGINES = ("auto", "torch", "onnxruntime")


class FidExtraMissingError(ImportError):
    """torch, torchvision or pytorch-fid is not installed."""


def require_fid_extra() -> None:
    """Raise `FidExtraMissingError` with the install hint unless torch, torchvision and
    pytorch-fid are installed (found, not imported: importing them takes seconds)."""
    if not all(_installed(name) for name in ("torch", "torchvision", "pytorch_fid")):
        raise FidExtraMissingError(FID_EXTRA_HINT)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # a module object without a spec, e.g. a test double
        return True


def choose_engine(engine: str, device: str) -> str:
    """`"auto"`: onnxruntime on a CPU when ONNX Runtime (and its exporter) is installed, else
    torch. An explicit engine is checked against the device and the installed packages."""
    if engine not in ENGINES:
        raise ValueError(f"--engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    onnx_ready = all(_installed(name) for name in ("onnxruntime", "onnx", "onnxscript"))
    if engine == "auto":
        return "onnxruntime" if device == "cpu" and onnx_ready else "torch"
    if engine == "onnxruntime" and device != "cpu":
        raise ValueError(f"--engine onnxruntime runs on the CPU; use --device cpu or "
                         f"--engine torch for {device}")
    if engine == "onnxruntime" and not onnx_ready:
        raise FidExtraMissingError(f"--engine onnxruntime needs onnxruntime, onnx and "
                                   f"onnxscript: {FID_EXTRA_HINT}")
    return engine


def resolve_device(device: str) -> str:
    """`"auto"` means CUDA when available, else CPU; anything else must be a torch device this
    machine has (a `ValueError` says which is missing, before any network is built)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"--device {device!r} is not a torch device (try cpu, cuda, cuda:0)") from err
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine; "
                             "use --device cpu or auto")
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"--device {device}: this machine has {count} CUDA device(s), "
                             f"cuda:0 to cuda:{count - 1}")
    return str(resolved)
