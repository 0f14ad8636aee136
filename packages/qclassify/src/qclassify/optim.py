"""What a training recipe decides besides the data: the optimiser, the learning-rate schedule
and which epoch counts as the best (`qclassify.options.RECIPES` holds the values)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    SequentialLR,
)

from qclassify.options import TrainConfig

__all__ = ["ADAM_BETAS", "OPTIMIZER_CLASSES", "is_better_epoch", "make_optimizer",
           "make_scheduler"]

ADAM_BETAS = (0.9, 0.999)  # section 2.5, for both optimisers
OPTIMIZER_CLASSES: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,  # weight decay as an L2 term of the gradient (eq. 15)
    "adamw": torch.optim.AdamW,  # weight decay decoupled from the adaptive step
}


def make_optimizer(parameters: Iterable[torch.nn.Parameter],
                   config: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser of a resolved `config`: `config.optimizer` with its lr and weight decay."""
    optimizer_class = OPTIMIZER_CLASSES[config.optimizer]
    return optimizer_class(parameters, lr=config.lr, betas=ADAM_BETAS,
                           weight_decay=config.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> LRScheduler | None:
    """The learning-rate schedule of a resolved `config`, stepped once per epoch.

    Epoch e (1-based) of a W-epoch warmup trains at lr * e / (W + 1) (torch's LinearLR from
    1 / (W + 1) to 1); from epoch W + 1 on, the schedule: constant lr, or cosine annealing from
    lr to 0 over the remaining epochs (CosineAnnealingLR, T_max = epochs - W). None for a
    constant rate without warmup. Without warmup the scheduler is exactly the one of runs made
    before warmup existed, so their saved training state still resumes.
    """
    warmup = config.warmup_epochs
    ramp = (LinearLR(optimizer, start_factor=1 / (warmup + 1), end_factor=1.0,
                     total_iters=warmup) if warmup else None)
    # A warmup as long as the run leaves no epoch to anneal.
    cosine = (CosineAnnealingLR(optimizer, T_max=config.epochs - warmup)
              if config.lr_schedule == "cosine" and config.epochs > warmup else None)
    if ramp is None or cosine is None:  # LinearLR keeps the full rate once its ramp is done
        return ramp or cosine
    return SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])


def is_better_epoch(monitor: str, val_loss: float, val_auc: float, best_loss: float,
                    best_auc: float) -> bool:
    """Whether an epoch beats the best so far by `monitor`: a lower validation loss, or a
    higher validation AUC with ties broken by the lower loss. A NaN loss never wins; the AUC is
    NaN for every epoch when the validation split misses a class, and then the loss decides."""
    if monitor == "val_loss" or math.isnan(val_auc):
        return val_loss < best_loss
    return val_auc > best_auc or (val_auc == best_auc and val_loss < best_loss)
