"""Inception pool features of image files, as pytorch-fid computes them.

`InceptionFeatures` builds pytorch-fid's network once (`diffaug.fid.inception`, weights checked
first) and runs it on batches of images decoded and scaled on threads (`diffaug.fid.images`)
while the network runs. Two engines run the network (`diffaug.fid.runtime.choose_engine`).
``torch``: pytorch-fid's module itself (BatchNorms folded, channels-last). ``onnxruntime`` (the
default on a CPU when installed): the same module exported once to ONNX and cached
(`diffaug.fid.onnx_engine`); it starts without importing torchvision or pytorch-fid and runs the
convolutions faster. Both give pytorch-fid's features to float32 rounding.

torch, torchvision, pytorch-fid and ONNX Runtime are the `fid` extra: they are imported inside
functions only, so `import diffaug` keeps working without them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from diffaug.fid.images import load_inception_input
from diffaug.fid.inception import BLOCK_INDEX_BY_DIM, build_inception, ensure_inception_weights
from diffaug.fid.onnx_engine import OnnxInception
from diffaug.fid.runtime import choose_engine, require_fid_extra, resolve_device

if TYPE_CHECKING:  # annotations only: torch is imported where it is used
    import torch

__all__ = ["InceptionFeatures"]

CPU_FORWARD_SLICE = 8  # images per forward pass of the torch engine on a CPU (see _torch_forward)


class InceptionFeatures:
    """Callable: image files -> (n, dims) float64 pool features of pytorch-fid's InceptionV3.

    Builds the network once (checking the weights first), then runs it on batches of
    `batch_size` images while `num_workers` threads decode and resize the next batch.
    `engine` (see `diffaug.fid.runtime.choose_engine`) picks what runs the network.
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
