"""The noise schedule (eq. 2) and the closed-form forward diffusion step (eq. 1).

Both follow diffusers' ``DDPMScheduler(beta_schedule="linear")`` exactly, 0-indexed:
``betas = linspace(beta_start, beta_end, T)`` and ``alphas_cumprod[t] = prod_{s<=t}(1 - betas[s])``,
so ``forward_diffuse`` equals ``DDPMScheduler.add_noise`` for the same x0, noise and t.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["MAX_CLI_TIMESTEPS", "NoiseSchedule", "forward_diffuse"]

# The most diffusion steps the command line accepts: DDPM's T (diffusers' default
# num_train_timesteps). The paper uses 5; a schedule of 1e8 steps costs gigabytes and minutes
# (its betas are recorded in the run record) before the first image.
MAX_CLI_TIMESTEPS = 1000


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """A variance schedule: ``betas[t]`` for t = 0 … T−1 and their cumulative products.

    Build one with :meth:`linear`; ``betas`` and ``alphas_cumprod`` are read-only float64 arrays.
    """

    betas: NDArray[np.float64]
    alphas_cumprod: NDArray[np.float64] = field(init=False)

    def __post_init__(self) -> None:
        betas = np.array(self.betas, dtype=np.float64)
        if betas.ndim != 1 or betas.size == 0:
            raise ValueError(f"betas must be a non-empty 1-D sequence; got shape {betas.shape}.")
        if not np.all((betas >= 0) & (betas < 1)):
            raise ValueError(f"every beta must lie in [0, 1); got {betas.tolist()}.")
        alphas_cumprod = np.cumprod(1.0 - betas)
        for array in (betas, alphas_cumprod):
            array.setflags(write=False)
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas_cumprod", alphas_cumprod)

    @classmethod
    def linear(cls, timesteps: int = 5, beta_start: float = 1e-4,
               beta_end: float = 0.02) -> NoiseSchedule:
        """The linear schedule of eq. 2 (paper defaults: T = 5, 1e-4 … 0.02)."""
        if isinstance(timesteps, bool) or not isinstance(timesteps, (int, np.integer)) \
                or timesteps < 1:
            raise ValueError(f"timesteps must be an integer >= 1; got {timesteps!r}.")
        if not 0 <= beta_start <= beta_end < 1:
            raise ValueError("betas must satisfy 0 <= beta_start <= beta_end < 1; "
                             f"got beta_start={beta_start}, beta_end={beta_end}.")
        return cls(np.linspace(beta_start, beta_end, int(timesteps), dtype=np.float64))

    @property
    def timesteps(self) -> int:
        """T, the number of diffusion steps."""
        return int(self.betas.size)


def forward_diffuse(x0: ArrayLike, t: ArrayLike, noise: ArrayLike,
                    schedule: NoiseSchedule) -> NDArray[np.floating]:
    """Eq. 1: ``sqrt(abar[t]) * x0 + sqrt(1 - abar[t]) * noise``.

    ``x0`` is on the [-1, 1] scale and ``noise`` has its shape. ``t`` is one integer, or (like
    diffusers' ``timesteps``) one integer per sample along the first axis of ``x0``. Computed
    in float32 when both ``x0`` and ``noise`` are float32 arrays, else in float64.
    """
    x0, noise = np.asarray(x0), np.asarray(noise)
    dtype = np.float32 if x0.dtype == noise.dtype == np.float32 else np.float64
    x0, noise = x0.astype(dtype, copy=False), noise.astype(dtype, copy=False)
    if noise.shape != x0.shape:
        raise ValueError(f"noise must have the shape of x0 {x0.shape}; got {noise.shape}.")
    t = np.asarray(t)
    if not np.issubdtype(t.dtype, np.integer) or t.ndim > 1:
        raise ValueError(f"t must be an integer or a 1-D integer array; got {t!r}.")
    if np.any((t < 0) | (t >= schedule.timesteps)):
        raise ValueError(f"t must lie in 0 … {schedule.timesteps - 1}; got {t.tolist()}.")
    if t.ndim == 1 and (x0.ndim == 0 or t.shape[0] != x0.shape[0]):
        raise ValueError(f"one t per sample needs x0 with {t.shape[0]} rows; got {x0.shape}.")
    alpha_bar = schedule.alphas_cumprod[t].reshape(t.shape + (1,) * (x0.ndim - t.ndim))
    signal, spread = np.sqrt(alpha_bar).astype(dtype), np.sqrt(1.0 - alpha_bar).astype(dtype)
    return signal * x0 + spread * noise
