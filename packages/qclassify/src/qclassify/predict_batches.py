"""Prediction's input pipeline, shared by both engines: every image decoded once, a couple of
batches ahead of the engine, and normalised a whole batch at a time.

The decode that feeds a batch is also the readability check: a file that cannot be decoded
is reported (`BatchPrediction.unreadable`) and left out, and the readable images are batched
as if it had never been listed, so the batches are those of a folder without it. Decoding
runs in a small thread pool while the engine runs the current batch: Pillow, numpy, torch
and ONNX Runtime release the GIL for most of their work. Images are read and resized one by
one (`qclassify.images.read_resized`: bit depth, DICOM/NIfTI frames and windows as
everywhere else), then converted to three channels and normalised per batch
(`qclassify.images.normalise_batch`): the same float32 values as `ImageDataset`'s
per-image transforms, at a fraction of their cost on small images.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from qclassify.batches import EVAL_BATCH_SIZE, mean_probability, probabilities
from qclassify.images import ImageRef, normalise_batch, read_resized, unreadable_reason

__all__ = ["BATCHES_AHEAD", "DECODE_WORKERS", "BatchEngine", "BatchPrediction", "TorchEngine",
           "predict_refs"]

# Two decoding threads keep up with the engine on small images; more would take cores from
# ONNX Runtime's own threads.
DECODE_WORKERS = 2
# Batches decoded ahead of the engine: enough to hide decoding, few enough that memory
# stays bounded (a few batches of float32 images, whatever the number of files).
BATCHES_AHEAD = 2


class BatchEngine(Protocol):
    """What computes probabilities from network inputs: `TorchEngine`, or
    `qclassify.onnx_engine.OnnxRunner`."""

    def batch_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (B, C), float64, of normalised images (B, 3, S, S) float32."""
        ...


class TorchEngine:
    """A run's models (one, or a seed ensemble's members) in eager PyTorch: the mean of their
    float64 softmax probabilities (`qclassify.batches.probabilities`)."""

    def __init__(self, models: Sequence[nn.Module], device: torch.device) -> None:
        self.models = [model.eval() for model in models]
        self.device = device

    @torch.no_grad()
    def batch_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (B, C), float64, of normalised images (B, 3, S, S)."""
        inputs = torch.from_numpy(images).to(self.device)
        return mean_probability([probabilities(model(inputs).float().cpu())
                                 for model in self.models])


@dataclass
class BatchPrediction:
    """The readable samples in their given order, their probabilities, and why each
    unreadable file was left out."""

    refs: list[ImageRef] = field(default_factory=list)
    proba: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))  # (N, C) float64
    unreadable: dict[str, str] = field(default_factory=dict)  # path -> reason


def predict_refs(
    engine: BatchEngine,
    refs: Sequence[ImageRef],
    *,
    image_size: int,
    window: tuple[float, float] | None = None,
    batch_size: int = EVAL_BATCH_SIZE,
    progress: bool = False,
) -> BatchPrediction:
    """Run `engine` over every sample of `refs` that can be decoded, in batches of
    `batch_size` readable images (the last one smaller), each file decoded once.

    Args:
        window: (center, width) for DICOM/NIfTI files; None keeps each file's own.
        progress: a progress bar (tqdm, on stderr) while the samples are predicted.
    """
    result = BatchPrediction()
    waiting: list[torch.Tensor] = []  # decoded images of the next batch
    rows: list[np.ndarray] = []
    chunks = [refs[start:start + batch_size] for start in range(0, len(refs), batch_size)]
    # No bar for no samples: tqdm would leave its empty bar's line behind.
    with tqdm(total=len(refs), desc="predict", unit="image", leave=False,
              disable=not (progress and refs)) as bar:
        for chunk, decoded in zip(chunks, _decoded_chunks(chunks, image_size, window),
                                  strict=True):
            for ref, image in zip(chunk, decoded, strict=True):
                if isinstance(image, str):
                    result.unreadable.setdefault(str(ref.path), image)
                else:
                    result.refs.append(ref)
                    waiting.append(image)
            while len(waiting) >= batch_size:
                rows.append(engine.batch_proba(normalise_batch(waiting[:batch_size]).numpy()))
                del waiting[:batch_size]
            bar.update(len(chunk))
        if waiting:
            rows.append(engine.batch_proba(normalise_batch(waiting).numpy()))
    if rows:
        result.proba = np.concatenate(rows)
    return result


def _decoded_chunks(
    chunks: Sequence[Sequence[ImageRef]], image_size: int, window: tuple[float, float] | None,
) -> Iterator[list[torch.Tensor | str]]:
    """Each chunk decoded (`_decode`) in the thread pool, in order, at most `BATCHES_AHEAD`
    chunks ahead of the one being consumed."""
    pool = ThreadPoolExecutor(max_workers=DECODE_WORKERS, thread_name_prefix="decode")
    pending: deque[Future[list[torch.Tensor | str]]] = deque()
    try:
        for chunk in chunks:
            pending.append(pool.submit(_decode_chunk, chunk, image_size, window))
            if len(pending) > BATCHES_AHEAD:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        # An engine error stops the pass: nothing queued is decoded for nobody.
        pool.shutdown(wait=True, cancel_futures=True)


def _decode_chunk(chunk: Sequence[ImageRef], image_size: int,
                  window: tuple[float, float] | None) -> list[torch.Tensor | str]:
    return [_decode(ref, image_size, window) for ref in chunk]


def _decode(ref: ImageRef, image_size: int,
            window: tuple[float, float] | None) -> torch.Tensor | str:
    """The sample resized (C, S, S), or why its file cannot be decoded."""
    try:
        return read_resized(ref, image_size, window=window)
    except ValueError as err:
        return unreadable_reason(err)
