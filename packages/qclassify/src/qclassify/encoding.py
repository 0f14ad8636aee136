"""Amplitude encoding (eqs. 7–8): a vector of 2^n features as the state of n qubits."""

from __future__ import annotations

import math

import torch

__all__ = ["NORM_EPSILON", "amplitude_encode", "encode"]

# Feature vectors with an L2 norm at or below this have no meaningful direction; they are
# encoded as the uniform state (see `amplitude_encode`). Far below any scale the ReLU layer
# produces, yet its square (1e-24) is a normal float32, so one threshold serves both dtypes.
NORM_EPSILON = 1e-12


def amplitude_encode(features: torch.Tensor, eps: float = NORM_EPSILON) -> torch.Tensor:
    """Amplitudes of the state that encodes each row of ``features`` (eqs. 7–8).

    A row with norm above ``eps`` is divided by its norm (eq. 7). A row at or below ``eps``
    (in practice the all-zero output of a dead ReLU) becomes the uniform superposition
    2^(-n/2)·(1, …, 1). Why the uniform state: it is what eq. 7 gives for any constant
    non-negative row, i.e. "every feature equal", so it favours no basis state (|0…0⟩ would
    single one out); the output stays a valid unit-norm state that PennyLane accepts; and the
    map has zero gradient there instead of the 1/eps blow-up of adding eps to the norm.
    """
    return encode(features, eps)[0]


def encode(features: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`amplitude_encode`'s states and 1/‖x‖ per row (0 on uniform-state rows, which makes
    the analytic backward in `qclassify.statevector` zero there without a mask)."""
    norm = torch.linalg.vector_norm(features, dim=-1, keepdim=True)
    live = norm > eps
    inverse_norm = torch.where(live, norm, math.inf).reciprocal()
    uniform_amplitude = features.shape[-1] ** -0.5
    return torch.where(live, features * inverse_norm, uniform_amplitude), inverse_norm
