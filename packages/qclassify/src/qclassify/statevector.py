"""Exact state-vector simulation of the circuit of eqs. 9–12 in PyTorch, with an analytic
(adjoint) backward: the ``"torch"`` backend of `qclassify.quantum.QuantumFeatureLayer`.

Everything is real (RY and CNOT are real matrices and the encoded state is real), so no complex
dtype is needed, which keeps the module exportable to ONNX. Wire 0 is the most significant bit
of a basis-state index (PennyLane's convention). Measured speeds: BENCHMARKS.md.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from qclassify.encoding import NORM_EPSILON, encode

__all__ = ["StateVectorCircuit"]


def _basis_bits(n_qubits: int) -> torch.Tensor:
    """(2^n, n) table: bit of wire q in basis index i, wire 0 the most significant."""
    shifts = torch.arange(n_qubits - 1, -1, -1)
    return (torch.arange(2**n_qubits)[:, None] >> shifts) & 1


def _cnot_chain_permutation(n_qubits: int) -> torch.Tensor:
    """Index p with (CNOT(n-2, n-1) ⋯ CNOT(0, 1) ψ)[i] = ψ[p[i]] (eq. 10, applied as a chain).

    CNOT(c, t) maps basis index i to i XOR (bit_c(i) << bit position of t) and is its own
    inverse, so appending it to a chain whose output is ψ[p] gives ψ[p[cnot(i)]].
    """
    index = torch.arange(2**n_qubits)
    permutation = index.clone()
    for control in range(n_qubits - 1):
        control_shift = n_qubits - 1 - control  # target = control + 1 sits one bit lower
        flipped = index ^ (((index >> control_shift) & 1) << (control_shift - 1))
        permutation = permutation[flipped]
    return permutation


# RY(θ) = [[cos θ/2, −sin θ/2], [sin θ/2, cos θ/2]] (eq. 9). Entry (r, c) is read at code
# 2r + c, and all four are cos(θ/2 + phase): −sin x = cos(x + π/2), sin x = cos(x − π/2).
RY_ENTRY_PHASES = (0.0, math.pi / 2, -math.pi / 2, 0.0)
# Wires per gather in `_ry_layer_unitaries`: one gather over k wires touches k·4^k entries per
# layer (24 576 for 6, but 524 288 for all 8 of n = 8), so larger circuits join groups.
WIRES_PER_GATHER = 6


def _wire_groups(n_qubits: int) -> list[range]:
    """Consecutive wire groups of near-equal size, at most WIRES_PER_GATHER each."""
    n_groups = -(-n_qubits // WIRES_PER_GATHER)
    bounds = [round(g * n_qubits / n_groups) for g in range(n_groups + 1)]
    return [range(lo, hi) for lo, hi in zip(bounds, bounds[1:], strict=False)]


def _ry_entry_codes(wires: range) -> torch.Tensor:
    """(k, 2^k, 2^k) index into the flattened (n, 4) RY entries of a group of k wires.

    Entry [w, i, j] locates RY(θ_{wires[w]})[bit_w(i), bit_w(j)],
    so the product over w of the gathered entries is element (i, j) of the Kronecker product
    of the group's RY gates.
    """
    bits = _basis_bits(len(wires)).T  # (k, 2^k)
    first = torch.tensor(list(wires))[:, None, None]
    return (4 * first + 2 * bits[:, :, None] + bits[:, None, :]).contiguous()


def _ry_layer_unitaries(weights: torch.Tensor, codes: list[torch.Tensor],
                        phases: torch.Tensor) -> torch.Tensor:
    """(L, n) angles -> (L, 2^n, 2^n): ⊗_q RY(θ_{l,q}) (eq. 9), wire 0 the leftmost factor.

    `codes` are the `_ry_entry_codes` of the `_wire_groups`: each group's Kronecker product
    is one gather and one product (a handful of operations, which is what counts at n = 4);
    outer products join the groups. A single table may list its rows in another order (the
    CNOT chain's, see `StateVectorCircuit`); the result's rows follow it.
    """
    entries = torch.cos(torch.add(phases, weights[..., None], alpha=0.5)).flatten(1)
    unitary = None
    for table in codes:
        gathered = entries.index_select(1, table.view(-1)).view(-1, *table.shape)
        block = gathered.prod(dim=1)  # (L, 2^k, 2^k)
        size = block.shape[-1]
        if unitary is None:
            unitary = block
        else:
            joined = unitary.shape[-1] * size
            unitary = (unitary[:, :, None, :, None] * block[:, None, :, None, :]
                       ).reshape(-1, joined, joined)
    return unitary


def _generator_index(n_qubits: int) -> torch.Tensor:
    """(n·2^n,) index into a flattened 2^n×2^n matrix M: entry q·2^n + i is M[i, i XOR bit q]."""
    size = 2**n_qubits
    index = torch.arange(size)
    masks = 1 << torch.arange(n_qubits - 1, -1, -1)
    return (index * size + (index[None, :] ^ masks[:, None])).flatten()


def _propagate(states: torch.Tensor, layers: torch.Tensor) -> list[torch.Tensor]:
    """[ψ_0, ψ_1, …, ψ_L] with ψ_l = U_l ψ_{l−1} (eq. 11), states as rows of a batch."""
    history = [states]
    for layer in layers.unbind(0):
        history.append(history[-1] @ layer.T)
    return history


def _simulate(circuit: StateVectorCircuit, features: torch.Tensor, weights: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """⟨Z_q⟩ of the encoded ``features`` (eqs. 7–12), with what the analytic backward needs:
    (outputs, 1/‖x‖ per row, layer unitaries, [ψ_0, …, ψ_L])."""
    layers = circuit.unitaries(weights.to(features.dtype))
    states, inverse_norm = encode(features, NORM_EPSILON)
    history = _propagate(states, layers)
    return history[-1].square() @ circuit.z_signs.to(features.dtype), inverse_norm, layers, history


class _AdjointCircuit(torch.autograd.Function):
    """Amplitude encoding and the circuit with a hand-written backward (the adjoint method).

    Autograd through the simulation records a few dozen tiny operations whose bookkeeping,
    not arithmetic, is what a training step at n = 4 costs. The backward here is a handful of
    matrix products instead, from three facts: U_l is a plain matrix, so the state gradient
    goes back through U_lᵀ; dRY(θ)/dθ = RY(θ)·½Ỹ with Ỹ = [[0, −1], [1, 0]], so
    ∂ψ_l/∂θ_{l,q} = U_l·½Ỹ_q ψ_{l−1} and ∂E/∂θ_{l,q} = ½⟨∂E/∂ψ_{l−1}, Ỹ_q ψ_{l−1}⟩ with
    (Ỹ_q ψ)_i = −z_q(i)·ψ_{i XOR bit q} (z_q(i) = ±1, the ⟨Z_q⟩ sign of eq. 12), which summed
    over the batch is −½ Σ_i z_q(i) M_l[i, i XOR bit q] with M_l = Σ_b ∂E/∂ψ_{l−1} ψ_{l−1}ᵀ;
    and eq. 7's x/‖x‖ passes back (g − ψ⟨ψ, g⟩)/‖x‖, zero on rows encoded as the uniform
    state. The tests check both gradients against autograd and against PennyLane.
    """

    @staticmethod
    def forward(ctx, features, weights, circuit):  # noqa: D102
        outputs, inverse_norm, layers, history = _simulate(circuit, features, weights)
        dtype = features.dtype
        # Intermediates and constant tables: saving them (rather than recomputing in backward)
        # is what makes the backward a handful of products. Saved intermediates rule out
        # double backward, which `_adjoint_backward_once` refuses anyway.
        ctx.save_for_backward(inverse_norm, layers, circuit.z_signs.to(dtype),
                              circuit.generator_signs.to(dtype), circuit.generator_index,
                              *history)
        ctx.weights_dtype = weights.dtype
        return outputs

    @staticmethod
    def backward(ctx, grad_outputs):  # noqa: D102
        if torch.is_grad_enabled():  # create_graph=True: a later double backward must fail
            return _adjoint_backward_once(ctx, grad_outputs)
        return _adjoint_backward(ctx, grad_outputs)


def _adjoint_backward(ctx, grad_outputs: torch.Tensor) -> tuple:
    """`_AdjointCircuit.backward` (see its docstring for the maths)."""
    inverse_norm, layers, z_signs, generator_signs, generator_index, *history = ctx.saved_tensors
    grad_state = (grad_outputs @ z_signs.T).mul_(2) * history[-1]  # eq. 12
    outer_products = []
    for layer in range(len(layers) - 1, -1, -1):
        grad_state = grad_state @ layers[layer]  # ∂E/∂ψ_{l−1} = U_lᵀ ∂E/∂ψ_l (rows: ·U_l)
        outer_products.append(grad_state.T @ history[layer])  # M_l, last layer first
    stacked = torch.stack(outer_products[::-1]).flatten(1)
    paired = stacked.index_select(1, generator_index).view(-1, *generator_signs.shape)
    grad_weights = (paired * generator_signs).sum(dim=-1)
    states = history[0]  # eq. 7: x/‖x‖ passes back (g − ψ⟨ψ, g⟩)/‖x‖
    grad_features = (grad_state - states * (states * grad_state).sum(-1, keepdim=True))
    return grad_features.mul_(inverse_norm), grad_weights.to(ctx.weights_dtype), None


# The usual decorator, applied only when a graph of the backward is requested: it costs a few
# per cent of the layer's training step at n = 4 (BENCHMARKS.md).
_adjoint_backward_once = torch.autograd.function.once_differentiable(_adjoint_backward)


class StateVectorCircuit(nn.Module):
    """Exact real state-vector simulation of the circuit; the ``"torch"`` backend.

    ``circuit(features) -> ⟨Z_q⟩``: amplitude encoding (eqs. 7–8), then the circuit with the
    angles in ``weights``. Everything is real (RY and CNOT are real matrices, the encoded state
    is real), so no complex dtype is needed, which keeps the module exportable to ONNX. Per
    forward it builds each layer's 2^n×2^n unitary once (the CNOT chain is a row permutation of
    the RY product) and multiplies the batch of states through the layers; this beat
    contracting each gate into a (B, 2, …, 2) state by 1.4–3.7× (n = 4 and 8, batch 16 and
    256). Multiplying the layer unitaries together first only pays for batches above 2^n, and a
    batch-size-dependent order would not survive export with a dynamic batch dimension.

    While gradients are recorded the forward runs inside `_AdjointCircuit` (analytic
    backward); tracers and exporters see the plain operations, so ONNX, ``torch.export`` and
    TorchScript tracing work. How each of these choices was measured: BENCHMARKS.md.
    """

    def __init__(self, initial_weights: torch.Tensor) -> None:
        super().__init__()
        n_qubits = initial_weights.shape[1]
        self.weights = nn.Parameter(initial_weights)
        # Weight-independent tables; not persistent, so state dicts match the PennyLane backend.
        codes = [_ry_entry_codes(wires) for wires in _wire_groups(n_qubits)]
        permutation = _cnot_chain_permutation(n_qubits)
        z_signs = 1.0 - 2.0 * _basis_bits(n_qubits).to(initial_weights.dtype)
        if len(codes) == 1:  # one gather: it can read the rows in CNOT-chain order itself
            codes, permutation = [codes[0][:, permutation].contiguous()], None
        tables = {
            "ry_phases": torch.tensor(RY_ENTRY_PHASES, dtype=torch.float64),
            "cnot_permutation": permutation,
            # ⟨Z_q⟩ = Σ_i |ψ_i|² (−1)^{bit_q(i)} (eq. 12).
            "z_signs": z_signs,
            "generator_index": _generator_index(n_qubits),
            # −½ z_q(i): ∂E/∂θ_{l,q} = Σ_i generator_signs[q, i] M_l[i, i XOR bit q].
            "generator_signs": -0.5 * z_signs.T.contiguous(),
        }
        tables |= {f"ry_codes_{g}": table for g, table in enumerate(codes)}
        for name, table in tables.items():
            self.register_buffer(name, table, persistent=False)
        self.ry_code_names = [f"ry_codes_{g}" for g in range(len(codes))]

    def unitaries(self, weights: torch.Tensor) -> torch.Tensor:
        """(L, 2^n, 2^n) layer unitaries: the CNOT chain after ⊗_q RY (eqs. 9–10)."""
        codes = [getattr(self, name) for name in self.ry_code_names]
        ry = _ry_layer_unitaries(weights, codes, self.ry_phases.to(weights.dtype))
        if self.cnot_permutation is None:  # already in the gather
            return ry
        return ry.index_select(1, self.cnot_permutation)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and not _is_tracing():
            return _AdjointCircuit.apply(features, self.weights, self)
        return _simulate(self, features, self.weights)[0]


def _is_tracing() -> bool:
    """True while TorchScript or dynamo / torch.export records the model (the TorchScript-based
    ONNX exporter traces, the dynamo-based one exports)."""
    return (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()
            or torch.compiler.is_exporting())
