"""The quantum-enhanced MobileNetV2 (sections 2.3-2.4) and the classical baselines.

Every model comes from one table (`ARCHITECTURES`): the torchvision network it starts from and,
for a baseline, which final ``Linear`` is replaced by one with ``num_classes`` outputs.
ImageNet weights are the checkpoints of torchvision's weights enums (downloaded once into the
torch hub cache, ``$TORCH_HOME/hub/checkpoints``), read by `qclassify.hub_weights`: hash
checked and tensors only, never through torchvision's unpickling loader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.models import WeightsEnum, get_model, get_model_weights

from qclassify.devices import resolve_device  # re-exported: callers found it here
from qclassify.hub_weights import (
    WeightsUnavailableError,
    cached_checkpoint_path,
    load_hub_state_dict,
    read_state_dict,
    unusable_checkpoint,
)
from qclassify.options import AUTO_STEM, MIN_IMAGE_SIZE, MODEL_NAMES, STEMS, check_image_size
from qclassify.quantum import QuantumFeatureLayer

__all__ = [
    "ARCHITECTURES",
    "IMAGENET_WEIGHTS",
    "MIN_IMAGE_SIZE",
    "MODEL_NAMES",
    "QuantumMobileNetV2",
    "WeightsUnavailableError",
    "build_model",
    "check_image_size",
    "count_parameters",
    "imagenet_weights",
    "load_weights_file",
    "resolve_device",
]

# MobileNetV2's feature map has 1280 channels (section 2.3.1).
MOBILENET_V2_FEATURES = 1280
# The weights every torchvision backbone here offers (the original ImageNet-1k training).
IMAGENET_WEIGHTS = "IMAGENET1K_V1"
# torchvision's DenseNet checkpoints predate its module names: "denselayer1.norm.1.weight" is now
# "denselayer1.norm1.weight" (torchvision.models.densenet renames them on load the same way).
_DENSENET_LEGACY_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


@dataclass(frozen=True)
class Architecture:
    """How to build one model: its torchvision network, the classifier layer to replace, and
    what the low-resolution stem (``stem="lowres"``) changes: the first convolution's stride
    becomes 1 and the first max pool (if any) an identity. Neither holds parameters, so every
    checkpoint of the standard stem still loads."""

    torchvision_name: str
    head: str | None  # dotted path of the final Linear; None for the quantum model
    stem_conv: str | None = None  # dotted path of the strided first convolution
    stem_pool: str | None = None  # dotted path of the first max pool


# Low-resolution stems, as the CIFAR variants of these networks (which also shrink ResNet's
# 7x7 conv1 to 3x3; here only strides change, so ImageNet weights keep their shapes):
#   qmobilenet, mobilenet_v2: features[0][0] (3x3, stride 2) -> stride 1.
#   resnet18: conv1 (7x7, stride 2) -> stride 1 and the 3x3 max pool after it removed.
#   densenet121: features.conv0 (7x7, stride 2) -> stride 1 and features.pool0 removed.
#   vgg16: no strided convolution; its first max pool (features[4]) is removed.
# Each removes a factor 2 (ResNet and DenseNet: 4) of downsampling: a 32 px image ends in a
# 2x2 (8x8) feature map instead of 1x1.
ARCHITECTURES = {
    "qmobilenet": Architecture("mobilenet_v2", head=None, stem_conv="features.0.0"),
    "mobilenet_v2": Architecture("mobilenet_v2", head="classifier.1", stem_conv="features.0.0"),
    "resnet18": Architecture("resnet18", head="fc", stem_conv="conv1", stem_pool="maxpool"),
    "densenet121": Architecture("densenet121", head="classifier", stem_conv="features.conv0",
                                stem_pool="features.pool0"),
    "vgg16": Architecture("vgg16", head="classifier.6", stem_pool="features.4"),
}


def imagenet_weights(torchvision_name: str) -> WeightsEnum:
    """The ImageNet weights enum member of a torchvision model, e.g.
    ``MobileNet_V2_Weights.IMAGENET1K_V1`` for ``"mobilenet_v2"``."""
    return get_model_weights(torchvision_name)[IMAGENET_WEIGHTS]


def _torchvision_model(torchvision_name: str, weights: WeightsEnum | None) -> nn.Module:
    """torchvision's network, with `weights`' checkpoint loaded by `load_hub_state_dict`."""
    model = get_model(torchvision_name, weights=None)
    if weights is not None:
        state = _current_key_names(load_hub_state_dict(weights.url))
        try:
            model.load_state_dict(state)
        except RuntimeError as err:  # missing, unexpected or misshapen tensors
            raise unusable_checkpoint(cached_checkpoint_path(weights.url),
                                      f"it does not fit torchvision's {torchvision_name}") from err
    return model


def _current_key_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with DenseNet's legacy key names renamed in place (other keys never match), so
    that the dict keeps its `_metadata`, which versioned modules such as BatchNorm read."""
    for key in list(state):
        current = _DENSENET_LEGACY_KEY.sub(r"\1\2", key)
        if current != key:
            state[current] = state.pop(key)
    return state


class QuantumMobileNetV2(nn.Module):
    """MobileNetV2 features -> GAP -> Linear(1280, 2^n) + ReLU -> quantum layer -> Linear(n, C).

    Args:
        num_classes: number of output logits.
        n_qubits: qubits n of the quantum layer; the reduction layer has 2^n outputs (eq. 6).
        n_layers: rotation + entanglement layers L of the circuit (eqs. 9-11).
        backend: ``"torch"`` (exact simulation) or ``"pennylane"`` (``qml.qnn.TorchLayer``).
        weights: torchvision ``MobileNet_V2_Weights`` for the features, or None (random init).
        device_name: PennyLane device of the ``"pennylane"`` backend (e.g. ``"lightning.qubit"``).
    """

    def __init__(
        self,
        num_classes: int,
        n_qubits: int = 4,
        n_layers: int = 2,
        backend: str = "torch",
        weights: WeightsEnum | None = None,
        device_name: str = "default.qubit",
    ) -> None:
        super().__init__()
        self.features = _torchvision_model("mobilenet_v2", weights).features
        # eq. 6: the paper's 256 = 2^8 is the n_qubits=8 case
        self.reduce = nn.Sequential(nn.Linear(MOBILENET_V2_FEATURES, 2**n_qubits), nn.ReLU())
        # eqs. 7-12: amplitude encoding, L RY/CNOT layers, <Z> per qubit
        self.quantum = QuantumFeatureLayer(n_qubits=n_qubits, n_layers=n_layers, backend=backend,
                                           device_name=device_name)
        self.head = nn.Linear(n_qubits, num_classes)  # eq. 13

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits (B, num_classes) for images (B, 3, H, W); softmax (eq. 14) is left to
        the loss and to prediction."""
        # Global average pooling (eq. 5) as a mean: unlike adaptive pooling, its CUDA backward
        # is deterministic.
        pooled = self.features(images).mean(dim=(2, 3))
        return self.head(self.quantum(self.reduce(pooled)))


def build_model(
    name: str,
    num_classes: int,
    *,
    weights: str | Path = "none",
    n_qubits: int = 4,
    n_layers: int = 2,
    q_backend: str = "torch",
    q_device: str = "default.qubit",
    stem: str = "standard",
) -> nn.Module:
    """Build a model of `MODEL_NAMES` with `num_classes` outputs.

    Args:
        weights: ``"imagenet"`` (torchvision's ImageNet weights for the backbone, new head),
            ``"none"`` (random init), or the path of a state dict of the WHOLE model (same name
            and number of classes), either saved with ``torch.save(model.state_dict(), path)``
            or a qclassify ``model.pt`` checkpoint.
        n_qubits, n_layers, q_backend, q_device: the quantum layer of ``"qmobilenet"``
            (ignored otherwise); `q_device` is the PennyLane device of ``q_backend="pennylane"``.
        stem: ``"standard"``, ``"lowres"`` (no first downsampling, see `ARCHITECTURES`) or
            ``"auto"`` (`AUTO_STEM`).

    Raises:
        ValueError: unknown name or weights, fewer than two classes, a weights file that does
            not fit. WeightsUnavailableError: ImageNet weights cannot be downloaded.
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least two classes; got {num_classes}")
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; choose one of {', '.join(STEMS)}")
    weights_file = _weights_file(weights)
    architecture = ARCHITECTURES[name]
    tv_weights = imagenet_weights(architecture.torchvision_name) if weights == "imagenet" else None
    if architecture.head is None:
        model = QuantumMobileNetV2(num_classes, n_qubits, n_layers, q_backend, weights=tv_weights,
                                   device_name=q_device)
    else:
        model = _torchvision_model(architecture.torchvision_name, tv_weights)
        _replace_linear(model, architecture.head, num_classes)
    if (AUTO_STEM if stem == "auto" else stem) == "lowres":
        _use_lowres_stem(model, architecture)
    if weights_file is not None:
        load_weights_file(model, weights_file)
    return model


def _weights_file(weights: str | Path) -> Path | None:
    if str(weights) in ("imagenet", "none"):
        return None
    path = Path(weights)
    if not path.is_file():
        raise ValueError(f"weights must be 'imagenet', 'none' or an existing file; got {weights}")
    return path


def _replace_linear(model: nn.Module, dotted_path: str, num_classes: int) -> None:
    old = model.get_submodule(dotted_path)
    _replace_module(model, dotted_path, nn.Linear(old.in_features, num_classes))


def _replace_module(model: nn.Module, dotted_path: str, new: nn.Module) -> None:
    parent_path, _, attribute = dotted_path.rpartition(".")
    # setattr also replaces a numbered child of nn.Sequential ("classifier.1").
    setattr(model.get_submodule(parent_path), attribute, new)


def _use_lowres_stem(model: nn.Module, architecture: Architecture) -> None:
    """Remove the first downsampling of `model` in place (see `ARCHITECTURES`)."""
    if architecture.stem_conv is not None:
        model.get_submodule(architecture.stem_conv).stride = (1, 1)
    if architecture.stem_pool is not None:
        _replace_module(model, architecture.stem_pool, nn.Identity())


def load_weights_file(model: nn.Module, path: str | Path) -> None:
    """Load a state dict (or a checkpoint dict with a ``state_dict`` entry) into `model`; the
    file is read as tensors only (`read_state_dict`).

    Raises:
        ValueError: unreadable file, not a plain state dict, or tensors that do not match the
            model's (named in one line).
    """
    state = read_state_dict(path)
    own = model.state_dict()
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    mismatched = sorted(k for k in own.keys() & state.keys() if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        example = (missing or unexpected or mismatched)[0]
        raise ValueError(
            f"weights file {path} does not fit this model: {len(missing)} missing, "
            f"{len(unexpected)} unexpected and {len(mismatched)} differently shaped tensors "
            f"(first: {example}); it must come from the same model with the same classes"
        )
    model.load_state_dict(state)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (scalars) of `model`."""
    return sum(p.numel() for p in model.parameters())
