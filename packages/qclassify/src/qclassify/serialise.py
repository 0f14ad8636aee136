"""A model as a file's bytes: ONNX or TorchScript, mapping normalised images (N, 3, S, S)
float32 to class probabilities, averaged over a list of member models (`average_probabilities`).

ONNX is written by torch's TorchScript-based exporter (``dynamo=False``, opset 17). torch 2.14's
default dynamo exporter gives the same outputs but took 25 s per export against 2.5 s on one
CPU core (a cost every first ``predict --engine onnxruntime`` pays) and needs onnxscript besides
onnx; the model has no data-dependent control flow, which is what the dynamo exporter exists
for. The quantum head exports as plain tensor operations (`qclassify.statevector`).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

from qclassify.runtime import require_onnx_extra

__all__ = ["INPUT_NAME", "ONNX_OPSET", "OUTPUT_NAME", "SERIALISERS", "AveragedProbabilities",
           "average_probabilities", "onnx_bytes", "torchscript_bytes"]

INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
ONNX_OPSET = 17
# Two images: a batch of one would let the tracer specialise shapes to 1.
_EXAMPLE_BATCH = 2


class AveragedProbabilities(nn.Module):
    """Images (N, 3, S, S) -> the mean over `members` of softmax(member(images)), (N, C)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("average_probabilities needs at least one member model")
        self.members = nn.ModuleList(members)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        member_probabilities = [torch.softmax(member(images), dim=1) for member in self.members]
        return torch.stack(member_probabilities).mean(dim=0)


def average_probabilities(members: Sequence[nn.Module]) -> AveragedProbabilities:
    """One module, in eval mode, averaging the class probabilities of `members` (a seed
    ensemble; a single run is a list of one)."""
    return AveragedProbabilities(members).eval()


def _example(image_size: int) -> torch.Tensor:
    return torch.zeros(_EXAMPLE_BATCH, 3, image_size, image_size)


def onnx_bytes(module: nn.Module, image_size: int) -> bytes:
    """The serialised ONNX model of `module` (CPU, eval mode) for square `image_size` inputs,
    batch dimension dynamic.

    Raises:
        OnnxExtraMissingError: onnx is not installed.
    """
    require_onnx_extra("ONNX export")
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notices
        torch.onnx.export(
            module, (_example(image_size),), buffer, dynamo=False, opset_version=ONNX_OPSET,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    return buffer.getvalue()


def torchscript_bytes(module: nn.Module, image_size: int) -> bytes:
    """The saved TorchScript module (`torch.jit.trace`) of `module` for `image_size` inputs;
    load it with ``torch.jit.load``."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit's deprecation and tracer notices
        traced = torch.jit.trace(module, _example(image_size))
        torch.jit.save(traced, buffer)
    return buffer.getvalue()


SERIALISERS: dict[str, Callable[[nn.Module, int], bytes]] = {
    "onnx": onnx_bytes, "torchscript": torchscript_bytes}
