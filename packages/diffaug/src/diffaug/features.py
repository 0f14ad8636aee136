"""Inception pool features of image files, as pytorch-fid computes them.

The network, its block table and its weights are pytorch-fid's own (`InceptionV3`; the weights
file cached in `$TORCH_HOME/hub/checkpoints`, hash-checked and loaded as tensors only by
`diffaug.inception_weights`, never unpickled by pytorch-fid's loader). What differs is where pytorch-fid's users get stuck: each image is resized to 299x299 on its own
(the same bilinear `F.interpolate` that `InceptionV3(resize_input=True)` applies to a batch), so
folders of mixed sizes work; 16-bit images are scaled by their full range instead of being
clipped by PIL's `convert("RGB")`; images are decoded on threads while the network runs.

Two engines run the network. ``torch``: pytorch-fid's module itself (BatchNorms folded,
channels-last). ``onnxruntime`` (the default on a CPU when installed): the same module exported
once to ONNX and cached (`diffaug.inception_onnx`); it starts without importing torchvision or
pytorch-fid and runs the convolutions faster. Both give pytorch-fid's features to float32
rounding.

torch, torchvision, pytorch-fid and ONNX Runtime are the `fid` extra: they are imported inside
functions only, so `import diffaug` keeps working without them.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from diffaug.inception_weights import (
    FID_WEIGHTS_SHA256_PREFIX,
    FID_WEIGHTS_URL,
    InceptionWeightsError,
    ensure_inception_weights,
    first_line,
    inception_weights_path,
    load_inception_state_dict,
    not_the_weights,
    pytorch_fid_loads,
)
from diffaug.io import read_image
from diffaug.modes import SIXTEEN_BIT_MAX, SIXTEEN_BIT_MODES, bit_depth

if TYPE_CHECKING:  # annotations only: torch is imported where it is used
    import torch

__all__ = [
    "BLOCK_INDEX_BY_DIM",
    "ENGINES",
    "FID_EXTRA_HINT",
    "FID_WEIGHTS_SHA256_PREFIX",
    "FID_WEIGHTS_URL",
    "IMAGE_EXTENSIONS",
    "INCEPTION_SIZE",
    "FidExtraMissingError",
    "InceptionFeatures",
    "InceptionWeightsError",
    "build_inception",
    "choose_engine",
    "ensure_inception_weights",
    "inception_weights_path",
    "list_images",
    "load_inception_input",
    "load_inception_state_dict",
    "require_fid_extra",
    "resolve_device",
]

FID_EXTRA_HINT = "diffaug fid needs the fid extra: pip install 'diffaug[fid]'"
INCEPTION_SIZE = 299
CPU_FORWARD_SLICE = 8  # images per forward pass of the torch engine on a CPU (see _torch_forward)
ENGINES = ("auto", "torch", "onnxruntime")
# pytorch-fid's own constants (pytorch_fid.inception / fid_score), written out so that the
# onnxruntime engine starts without importing pytorch-fid, whose import pulls in torchvision
# (about a second); tests check them against pytorch-fid's.
BLOCK_INDEX_BY_DIM = {64: 0, 192: 1, 768: 2, 2048: 3}
IMAGE_EXTENSIONS = frozenset({"bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp"})
FLOAT_MODE = "F"  # 32-bit float intensities, read as [0, 1]


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


def list_images(folder: str | os.PathLike, *, recursive: bool = False) -> list[Path]:
    """Sorted image files of `folder` with pytorch-fid's extensions (any letter case)."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder, an image list or a .npz statistics file")
    candidates = root.rglob("*") if recursive else root.glob("*")
    files = sorted(
        p for p in candidates if p.is_file() and p.suffix[1:].lower() in IMAGE_EXTENSIONS
    )
    if not files:
        hint = "" if recursive else " (use --recursive for nested folders)"
        raise ValueError(f"{root}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}){hint}")
    return files


def load_inception_input(path: str | os.PathLike) -> torch.Tensor:
    """One image as a float32 tensor (3, 299, 299) in [0, 1], ready for `InceptionV3`.

    8-bit images are scaled exactly like pytorch-fid (PIL `convert("RGB")`, `ToTensor`);
    16-bit images (the modes of `diffaug.modes`, mode I included when its values fit) and float
    images by their full range, where PIL's `convert("RGB")` would clip them at 255. The resize
    is pytorch-fid's batch resize applied to this image alone.
    """
    import torch.nn.functional as F

    try:
        unit = _to_unit_rgb(read_image(Path(path)))
    except ValueError as err:  # UnreadableImageError included
        raise ValueError(f"{path}: {err}") from err
    resized = F.interpolate(
        unit[None], size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False
    )
    return resized[0]


def _to_unit_rgb(image: Image.Image) -> torch.Tensor:
    import torch

    if image.mode in SIXTEEN_BIT_MODES:
        bit_depth(image)  # mode I: its values must fit 16 bits
        unit = np.asarray(image, dtype=np.float32) / np.float32(SIXTEEN_BIT_MAX)
    elif image.mode == FLOAT_MODE:
        unit = np.array(image, dtype=np.float32)  # a writable copy, as torch wants
        if unit.min() < 0 or unit.max() > 1:
            raise ValueError(f"mode F values outside [0, 1] (range {unit.min():g}.."
                             f"{unit.max():g}); save it as 8- or 16-bit")
    else:
        # torchvision's ToTensor: uint8 to float32, divided by 255 (the same rounding).
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / np.float32(255)
        return torch.from_numpy(rgb).permute(2, 0, 1)
    return torch.from_numpy(unit).expand(3, -1, -1)


class InceptionFeatures:
    """Callable: image files -> (n, dims) float64 pool features of pytorch-fid's InceptionV3.

    Builds the network once (checking the weights first), then runs it on batches of
    `batch_size` images while `num_workers` threads decode and resize the next batch.
    `engine` (see `ENGINES`, `choose_engine`) picks what runs the network.
    """

    def __init__(
        self,
        *,
        dims: int = 2048,
        batch_size: int = 50,
        device: str = "auto",
        num_workers: int | None = None,
        engine: str = "auto",
    ) -> None:
        require_fid_extra()
        if dims not in BLOCK_INDEX_BY_DIM:
            raise ValueError(f"dims must be one of {list(BLOCK_INDEX_BY_DIM)}, got {dims}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.dims = dims
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self.engine = choose_engine(engine, self.device)
        self.num_workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
        weights = ensure_inception_weights()
        if self.engine == "onnxruntime":
            from diffaug.inception_onnx import OnnxInception

            self._forward = OnnxInception.load_or_export(weights, dims)
        else:
            import torch

            # channels_last lets oneDNN run the convolutions about 1.5x faster on CPU; the
            # features agree with the default layout to float32 rounding.
            network = build_inception(weights, dims).to(self.device,
                                                        memory_format=torch.channels_last)
            self._forward = partial(_torch_forward, network)

    def __call__(
        self, files: Sequence[str | os.PathLike], *, on_batch: Callable[[int], None] | None = None
    ) -> NDArray[np.float64]:
        """Features of `files` in order; `on_batch(n)` is called after each batch of n images."""
        features = np.empty((len(files), self.dims), dtype=np.float64)
        start = 0
        for batch in self._batches(files):
            features[start : start + len(batch)] = self._forward(batch)
            start += len(batch)
            if on_batch is not None:
                on_batch(len(batch))
        return features

    def _batches(self, files: Sequence[str | os.PathLike]) -> Iterator[torch.Tensor]:
        import torch

        # Equal batches of at most batch_size (156 images: 4 x 39, not 50, 50, 50, 6): a small
        # last batch costs nearly as much time as a full one on CPU.
        size = math.ceil(len(files) / max(1, math.ceil(len(files) / self.batch_size))) or 1
        chunks = [files[i : i + size] for i in range(0, len(files), size)]
        with ThreadPoolExecutor(max_workers=max(1, self.num_workers)) as pool:

            def submit(chunk: Sequence[str | os.PathLike]) -> list[Future[torch.Tensor]]:
                return [pool.submit(load_inception_input, path) for path in chunk]

            ahead = submit(chunks[0]) if chunks else []
            for index in range(len(chunks)):
                current = ahead
                ahead = submit(chunks[index + 1]) if index + 1 < len(chunks) else []
                yield torch.stack([future.result() for future in current])


def build_inception(weights: Path, dims: int) -> torch.nn.Module:
    """pytorch-fid's `InceptionV3` for `dims` (weights from `load_inception_state_dict`,
    BatchNorms folded, eval mode) returning pooled features (n, dims): blocks below pool3 are
    feature maps, which pytorch-fid averages spatially.

    Raises:
        InceptionWeightsError: the weights file is not pytorch-fid's or does not fit the network.
    """
    import torch
    from pytorch_fid.inception import InceptionV3

    state = load_inception_state_dict(weights)
    try:
        with pytorch_fid_loads(state):
            network = InceptionV3([BLOCK_INDEX_BY_DIM[dims]], resize_input=False)
    except RuntimeError as err:  # load_state_dict: missing, unexpected or misshapen tensors
        raise not_the_weights(weights, first_line(err)) from err
    _fold_batch_norms(network.eval())

    class PooledInception(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inception = network

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            block = self.inception(images)[0]
            return torch.nn.functional.adaptive_avg_pool2d(block, output_size=(1, 1)).flatten(1)

    return PooledInception().eval()


def _torch_forward(network: torch.nn.Module, batch: torch.Tensor) -> NDArray[np.float64]:
    """Features of one batch through the torch module, on the module's device."""
    import torch

    device = next(network.parameters()).device
    # On a CPU, slices of a few images run faster than whole batches: oneDNN keeps their
    # activations in cache (Inception over 156 images on 2 cores: 7.8 s in slices of 8,
    # 8.5 s in batches of 39). A GPU takes the whole batch at once.
    step = CPU_FORWARD_SLICE if device.type == "cpu" else len(batch)
    with torch.inference_mode():
        batch = batch.to(device, memory_format=torch.channels_last)
        pooled = [network(batch[i : i + step]) for i in range(0, len(batch), step)]
        return torch.cat(pooled).double().cpu().numpy()


def _fold_batch_norms(network: torch.nn.Module) -> None:
    """Fold every eval-mode BatchNorm into the convolution before it (torch's own
    `fuse_conv_bn_eval`): the same affine map, one pass over the activations less."""
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    from torchvision.models.inception import BasicConv2d

    for block in network.modules():
        if isinstance(block, BasicConv2d):
            block.conv = fuse_conv_bn_eval(block.conv, block.bn)
            block.bn = torch.nn.Identity()
