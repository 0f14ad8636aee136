"""Batches for training and prediction: seeded DataLoaders, deterministic kernels, and
running a model over a loader or over image files."""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from qclassify.images import ImageDataset, ImageRef

__all__ = [
    "EVAL_BATCH_SIZE",
    "deterministic_algorithms",
    "make_loader",
    "mean_probability",
    "predict_dataset_logits",
    "predict_image_logits",
    "predict_logits",
    "predict_proba",
    "probabilities",
]

# Every evaluation pass (the validation split during training, evaluate, predict) runs in
# batches of this size: kernels may be chosen per batch shape, so a threshold tuned during
# training is only reproducible from model.pt when the passes are the same computation.
EVAL_BATCH_SIZE = 32

_CUBLAS_WORKSPACE = "CUBLAS_WORKSPACE_CONFIG"


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    num_workers: int = 0,
    shuffle: bool = False,
    seed: int = 0,
    device: torch.device | None = None,
    epoch_keys: bool = False,
    num_replicas: int = 1,
    rank: int = 0,
) -> DataLoader:
    """A DataLoader whose order depends only on `seed` (and, when shuffling, on the epoch set
    with ``loader.sampler.set_epoch(epoch)``), whatever `num_workers` is.

    With `epoch_keys` (shuffling loaders only), `dataset` is indexed by ``(epoch, index)``
    instead of ``index``, so per-epoch random augmentation can be seeded by the key.

    With `num_replicas` > 1 (shuffling loaders of data-parallel training), this loader is the
    shard of process `rank`: positions rank, rank + num_replicas, ... of the single-process
    order, so the k-th batches of all shards together are the single-process k-th batch of
    ``num_replicas * batch_size`` images. The last ``len(dataset) % num_replicas`` images of
    the order are left out, so that every shard takes the same number of steps.
    """
    if epoch_keys and not shuffle:
        raise ValueError("epoch_keys needs shuffle=True (the epoch comes from the sampler)")
    # Shuffling by DistributedSampler with a single replica: its order is a pure function of
    # (seed, epoch). A sampler drawing from a running generator would depend on how often the
    # loader is iterated: a multi-worker iterator prefetches (draws an order) as soon as it is
    # created, and tqdm.auto calls iter() on its iterable twice.
    sampler_type = _EpochKeySampler if epoch_keys else DistributedSampler
    sampler = (
        sampler_type(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed,
                     drop_last=True)
        if shuffle else None
    )
    # BatchNorm cannot train on a batch of one image; drop a lone last image (shuffled, so a
    # different one each epoch).
    n_images = len(dataset) if sampler is None else len(sampler)
    drop_last = shuffle and n_images > batch_size and n_images % batch_size == 1
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=_seed_worker,
        pin_memory=device is not None and device.type == "cuda",
        persistent_workers=num_workers > 0,
        drop_last=drop_last,
    )


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    loader: DataLoader,
    device: torch.device,
    *,
    progress: bool = False,
    desc: str = "predict",
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Logits (N, C) and labels (N,) on the CPU for every batch of `loader`, in order, and the
    seconds spent in the model's forward pass (image decoding excluded)."""
    model.eval()
    logits, labels, forward_seconds = [], [], 0.0
    for images, batch_labels in tqdm(loader, desc=desc, leave=False, disable=not progress):
        images = images.to(device, non_blocking=True)
        start = time.perf_counter()
        output = model(images)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        forward_seconds += time.perf_counter() - start
        logits.append(output.float().cpu())
        labels.append(torch.as_tensor(batch_labels))
    return torch.cat(logits), torch.cat(labels), forward_seconds


def predict_image_logits(
    model: torch.nn.Module,
    paths: Sequence[str | Path | ImageRef],
    *,
    image_size: int,
    device: torch.device | str = "cpu",
    batch_size: int = EVAL_BATCH_SIZE,
    progress: bool = False,
    window: tuple[float, float] | None = None,
) -> tuple[torch.Tensor, float]:
    """Logits (N, C) of image files (or frames, `ImageRef`) in the given order, preprocessed
    for evaluation (no augmentation; `window` for DICOM/NIfTI files), and the seconds the
    model's forward passes took."""
    images = ImageDataset(paths, None, image_size, window=window)
    return predict_dataset_logits(model, images, device=device, batch_size=batch_size,
                                  progress=progress)


def predict_dataset_logits(
    model: torch.nn.Module,
    images: ImageDataset,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = EVAL_BATCH_SIZE,
    progress: bool = False,
) -> tuple[torch.Tensor, float]:
    """`predict_image_logits` over an `ImageDataset` built once (e.g. with its images cached
    in memory, as training does for the validation split every epoch)."""
    device = torch.device(device)
    loader = make_loader(images, batch_size=batch_size, device=device)
    logits, _, forward_seconds = predict_logits(model, loader, device, progress=progress)
    return logits, forward_seconds


def predict_proba(
    model: torch.nn.Module,
    paths: Sequence[str | Path | ImageRef],
    *,
    image_size: int,
    batch_size: int = EVAL_BATCH_SIZE,
    device: torch.device | str = "cpu",
    progress: bool = False,
    window: tuple[float, float] | None = None,
) -> tuple[np.ndarray, float]:
    """Softmax probabilities (eq. 14), float64 (N, C), of image files in the given order, and
    the seconds the model's forward passes took (image decoding excluded)."""
    logits, forward_seconds = predict_image_logits(
        model, paths, image_size=image_size, device=device, batch_size=batch_size,
        progress=progress, window=window)
    return probabilities(logits), forward_seconds


def probabilities(logits: torch.Tensor) -> np.ndarray:
    """Softmax (eq. 14) in float64: float32 rounding would tie the probabilities of images
    that a barely trained model scores almost alike, and change which threshold is optimal."""
    return torch.softmax(logits.double(), dim=1).numpy()


def mean_probability(probabilities: Sequence[np.ndarray]) -> np.ndarray:
    """A seed ensemble's probabilities: the float64 mean of its members' (N, C) arrays (one
    member's are returned as they are)."""
    return np.mean(np.stack([np.asarray(p, dtype=np.float64) for p in probabilities]), axis=0)


class _EpochKeySampler(DistributedSampler):
    """DistributedSampler's order, each index yielded as ``(epoch, index)``."""

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, index) for index in super().__iter__())


def _seed_worker(worker_id: int) -> None:
    # Each worker's torch seed is derived from the loader's generator; pass it on to the other
    # generators a transform might use.
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


@contextlib.contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """Deterministic kernels while training (warnings, not errors, where none exists).

    Torch's flags and the ``CUBLAS_WORKSPACE_CONFIG`` environment variable are restored on
    exit, so the caller's process is left as it was.
    """
    previous = (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled())
    previous_workspace = os.environ.get(_CUBLAS_WORKSPACE)
    # cuBLAS needs this before its first use to be deterministic (PyTorch reproducibility notes).
    os.environ.setdefault(_CUBLAS_WORKSPACE, ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        if previous_workspace is None:
            os.environ.pop(_CUBLAS_WORKSPACE, None)
        else:
            os.environ[_CUBLAS_WORKSPACE] = previous_workspace
