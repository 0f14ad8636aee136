"""Data-parallel training under ``torchrun`` (DistributedDataParallel).

``torchrun --nproc_per_node N -m qclassify fit ...`` starts N processes ("ranks"), each with
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in its environment. `torchrun_group` joins them in
a process group (NCCL on CUDA, Gloo on the CPU) for the length of a command; `current_ranks`
tells the training code where it runs. Without torchrun, `current_ranks` is a single process
whose every method is the identity, so a plain run computes exactly what it always did.

Policies (why, in one line each):

- ``--batch-size`` is the global batch: each rank trains on ``batch_size / N`` images, so the
  recipe of section 2.5 means the same thing whatever N is.
- Each global batch is the single-process run's batch: `qclassify.batches.make_loader` deals
  the same seeded permutation out in turn (rank r takes positions r, r + N, ...), so the first
  B positions, split over the ranks, are exactly the single-process batch of B images. At
  most N - 1 images of an epoch's last batch are left out (a different few each epoch), so
  that every rank takes the same number of steps; a lone last image is dropped as in one
  process.
- Dropout masks come from each rank's own random stream, so they are not the single-process
  masks (the run is still reproducible for a given N).
- BatchNorm: SyncBatchNorm on CUDA (statistics over the global batch, as in one process);
  torch implements it for GPUs only, so on the CPU each rank normalises its own B/N images.
- Validation runs on rank 0 alone, over the whole split, with the unwrapped model: the same
  computation as ``evaluate``/``predict`` on model.pt; its result is broadcast, so the best
  epoch and early stopping are decided identically on every rank.
- Errors: the first rank to fail prints its one line; the ranks that fail after it (because a
  peer vanished from a collective, or with the same error) exit silently with their own
  status, and torchrun stops the rest.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from qclassify.devices import resolve_device
from qclassify.options import OptionError

__all__ = ["SINGLE_PROCESS", "TORCHRUN_VARIABLES", "Ranks", "current_ranks", "torchrun_group", "under_torchrun"]

# What torchrun sets in every process it starts (and what a plain process lacks).
TORCHRUN_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK")
# How long a failing rank waits for torchrun's store to record that it failed first.
_STORE_TIMEOUT = timedelta(seconds=10)
T = TypeVar("T")


def under_torchrun() -> bool:
    """Whether this process was started by torchrun (its environment variables are set)."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in the process group: a single process by default."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that validates, logs and writes the run folder."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def check_supported(self, batch_size: int, *, resume: bool) -> int:
        """The per-rank batch size; OptionError when `batch_size` cannot be split evenly or
        an option is not available with several processes."""
        if batch_size % self.world_size:
            raise OptionError(
                f"{batch_size} is the global batch and must be divisible by the "
                f"{self.world_size} torchrun processes; use a multiple of {self.world_size}",
                "batch_size")
        if resume and self.is_distributed:
            raise OptionError("is not available under torchrun; resume the run in a single "
                              "process", "resume")
        return batch_size // self.world_size

    def device_for(self, device: torch.device) -> torch.device:
        """This rank's device: its own GPU (``cuda:LOCAL_RANK``) when `device` is CUDA."""
        if not self.is_distributed or device.type != "cuda":
            return device
        if device.index is not None:
            raise OptionError(f"{device} names one GPU, but under torchrun each process uses "
                              "the GPU of its LOCAL_RANK; use --device cuda or auto", "device")
        return torch.device("cuda", self.local_rank)

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """`model` for training: DistributedDataParallel (with SyncBatchNorm on CUDA) in a
        process group, else `model` itself. Its parameters stay `model`'s."""
        if not self.is_distributed:
            return model
        if device.type == "cuda":  # converted in place: the BatchNorm parameters are kept
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            return nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
        return nn.parallel.DistributedDataParallel(model)

    def sum(self, *values: float) -> tuple[float, ...]:
        """Each value summed over the ranks."""
        if not self.is_distributed:
            return values
        total = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        dist.all_reduce(total)
        return tuple(total.tolist())

    def from_main(self, compute: Callable[[], T]) -> T:
        """`compute()` on rank 0, its result (any picklable object) on every rank."""
        if not self.is_distributed:
            return compute()
        result = [compute() if self.is_main else None]
        dist.broadcast_object_list(result, src=0, device=_collective_device())
        return result[0]

    def first_to_fail(self) -> bool:
        """Whether this process is the first of the group to fail (call it once, when failing):
        torchrun's store counts the failures, so exactly one rank reports an error that every
        rank hits, or that a vanished peer caused. Unreachable store: the rank that hosted it
        failed first."""
        if not self.is_distributed:
            return True
        key = "qclassify/failures/{}/{}".format(os.environ.get("TORCHELASTIC_RUN_ID", ""),
                                                 os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
        try:
            store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                                  is_master=False, timeout=_STORE_TIMEOUT)
            return store.add(key, 1) == 1
        except (RuntimeError, KeyError, ValueError):
            return False


SINGLE_PROCESS = Ranks()


def current_ranks() -> Ranks:
    """This process's place in the default process group (a single process when there is
    none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE_PROCESS
    return Ranks(rank=dist.get_rank(), world_size=dist.get_world_size(),
                 local_rank=int(os.environ.get("LOCAL_RANK", "0")))


@contextlib.contextmanager
def torchrun_group(device: str = "auto") -> Iterator[Ranks]:
    """Under torchrun, the default process group for the block (NCCL when `device` resolves
    to CUDA, Gloo otherwise), destroyed on leaving it, also on errors; elsewhere, or when the
    caller already made a group, nothing is set up."""
    if not under_torchrun() or dist.is_initialized():
        yield current_ranks()
        return
    on_cuda = resolve_device(device).type == "cuda"
    if on_cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend="nccl" if on_cuda else "gloo")
    try:
        yield current_ranks()
    finally:
        dist.destroy_process_group()


def _collective_device() -> torch.device:
    """NCCL moves only CUDA tensors; Gloo, CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
