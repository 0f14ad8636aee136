"""The quantum feature layer of section 2.4: amplitude encoding, a RY/CNOT circuit, ⟨Z⟩ readout.

One circuit, two interchangeable backends with the same parameter, state-dict key and
initialisation, so a checkpoint trained with one loads into the other:

* ``"torch"`` (default): an exact state-vector simulation written in PyTorch
  (`qclassify.statevector`) — batched, differentiable, runs on any device and dtype, and
  exports to ONNX / ``torch.export``.
* ``"pennylane"``: the same circuit as a ``qml.qnn.TorchLayer`` on any PennyLane device
  (``default.qubit``, ``lightning.qubit``, …), batched by parameter broadcasting.

Wire 0 is the most significant bit of a basis-state index (PennyLane's convention).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from qclassify.encoding import NORM_EPSILON, amplitude_encode
from qclassify.options import BACKENDS
from qclassify.statevector import StateVectorCircuit

__all__ = ["BACKENDS", "NORM_EPSILON", "QuantumFeatureLayer", "amplitude_encode"]

def _initial_weights(n_layers: int, n_qubits: int) -> torch.Tensor:
    """Angles uniform in [0, 2π) from torch's global RNG (TorchLayer's default init)."""
    return nn.init.uniform_(torch.empty(n_layers, n_qubits), 0.0, 2 * math.pi)


def _pennylane_circuit(initial_weights: torch.Tensor, device_name: str) -> nn.Module:
    """The same circuit as a PennyLane QNode wrapped in ``qml.qnn.TorchLayer``."""
    try:
        import pennylane as qml  # an optional extra, slow to import; only this backend needs it
    except ImportError as err:
        raise ImportError("the 'pennylane' backend needs PennyLane: pip install "
                          "'qclassify[pennylane]' (the default 'torch' backend does not)") from err

    n_layers, n_qubits = initial_weights.shape
    wires = range(n_qubits)
    try:
        device = qml.device(device_name, wires=n_qubits)
    except Exception as err:  # DeviceError, found in pennylane.exceptions only since 0.42
        raise ValueError(
            f"cannot use PennyLane device {device_name!r} ({' '.join(str(err).split())}); "
            "e.g. default.qubit, or lightning.qubit with pennylane-lightning installed"
        ) from err

    # "best" is backprop on default.qubit and adjoint on lightning.qubit; the adjoint
    # gradient w.r.t. the embedded state is only its component tangent to the unit sphere,
    # which is all that survives the normalisation in `amplitude_encode`.
    @qml.qnode(device, interface="torch", diff_method="best")
    def circuit(inputs, weights):
        qml.AmplitudeEmbedding(inputs, wires=wires)  # inputs are already unit-norm (eq. 8)
        for layer in range(n_layers):
            for wire in wires:
                qml.RY(weights[layer, wire], wires=wire)  # eq. 9
            # eq. 10 is an open chain; qml.BasicEntanglerLayers would close it into a ring
            # (adding CNOT(n-1, 0)) and use RX by default, so the gates are written out.
            for wire in range(n_qubits - 1):
                qml.CNOT(wires=[wire, wire + 1])  # eq. 10
        return [qml.expval(qml.PauliZ(wire)) for wire in wires]  # eq. 12

    return qml.qnn.TorchLayer(
        circuit,
        weight_shapes={"weights": (n_layers, n_qubits)},
        init_method={"weights": initial_weights},
    )


class QuantumFeatureLayer(nn.Module):
    """Amplitude-encode 2^n features on n qubits, apply L RY/CNOT layers, read out ⟨Z⟩ (§2.4).

    Args:
        n_qubits: number of qubits n; the input has 2^n features, the output n.
        n_layers: number of layers L, each RY(θ_{l,q}) on every qubit then CNOT(q, q+1)
            for q = 0 … n−2.
        backend: ``"torch"`` (exact PyTorch simulation) or ``"pennylane"`` (TorchLayer).
        device_name: PennyLane device of the ``"pennylane"`` backend (``"default.qubit"``,
            ``"lightning.qubit"``, ...); the ``"torch"`` backend ignores it.

    The trainable angles are ``weights`` (shape ``(n_layers, n_qubits)``, uniform in
    [0, 2π) from torch's RNG); their state-dict key is the same for both backends.
    Input ``(batch, 2**n_qubits)``, output ``(batch, n_qubits)`` in the input's dtype and
    on its device. The PennyLane backend runs the circuit in float64 (PennyLane's norm check
    rejects float32 states).
    """

    def __init__(
        self,
        n_qubits: int = 4,
        n_layers: int = 2,
        backend: str = "torch",
        device_name: str = "default.qubit",
    ) -> None:
        super().__init__()
        if n_qubits < 1:
            raise ValueError(f"n_qubits must be at least 1; got {n_qubits}")
        if n_layers < 1:
            raise ValueError(f"n_layers must be at least 1; got {n_layers}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.n_qubits = n_qubits
        self.n_layers = n_layers
        self.backend = backend
        self.device_name = device_name
        initial_weights = _initial_weights(n_layers, n_qubits)
        if backend == "torch":
            self.circuit = StateVectorCircuit(initial_weights)
            self.circuit_dtype: torch.dtype | None = None
        else:
            self.circuit = _pennylane_circuit(initial_weights, device_name)
            self.circuit_dtype = torch.float64

    @property
    def weights(self) -> nn.Parameter:
        """The circuit angles θ, shape ``(n_layers, n_qubits)``."""
        return self.circuit.weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_features = 2**self.n_qubits
        if x.dim() != 2 or x.shape[1] != n_features:
            raise ValueError(
                f"QuantumFeatureLayer with {self.n_qubits} qubits expects {n_features} "
                f"features, input shape (batch, {n_features}); got shape {list(x.shape)}"
            )
        if self.circuit_dtype is None:  # the torch backend encodes inside its circuit
            return self.circuit(x)
        return self.circuit(amplitude_encode(x.to(self.circuit_dtype))).to(x.dtype)

    def extra_repr(self) -> str:
        device = f", device_name={self.device_name!r}" if self.backend == "pennylane" else ""
        return (f"n_qubits={self.n_qubits}, n_layers={self.n_layers}, "
                f"backend={self.backend!r}{device}")
