"""Tests of qclassify.quantum.QuantumFeatureLayer (paper section 2.4, eqs. 7–12).

Kinds: *reference implementation* — an independent PennyLane QNode written here (its own
normalisation through ``AmplitudeEmbedding(normalize=True)``, the gates of eqs. 9–10, ⟨Z⟩)
defines what both backends must compute, outputs and gradients; *analytic oracle* — the
all-zero row is the uniform state, i.e. the reference on an all-ones row; *contract* — shapes,
dtypes, state-dict interchange, seeded init and error messages; *export* — ONNX Runtime and
``torch.export`` reproduce eager PyTorch.
"""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
qml = pytest.importorskip("pennylane")

from qclassify.quantum import BACKENDS, QuantumFeatureLayer  # noqa: E402
from torch import nn  # noqa: E402

ATOL_FLOAT64 = 1e-6  # float64 circuits vs the reference (lightning's state prep: ~3e-8)
ATOL_FLOAT32 = 1e-5  # float32 runs and ONNX Runtime vs float64 / eager PyTorch

# (n_qubits, n_layers): one qubit (no CNOT), odd and even chains, the defaults, the paper's 8.
CIRCUIT_SIZES = [(1, 1), (2, 3), (3, 2), (4, 2), (5, 1), (8, 2)]
LAYER_VARIANTS = [
    pytest.param({"backend": "torch"}, id="torch"),
    pytest.param({"backend": "pennylane", "device_name": "default.qubit"}, id="pl-default"),
    pytest.param({"backend": "pennylane", "device_name": "lightning.qubit"}, id="pl-lightning"),
]


def reference_circuit(n_qubits: int, n_layers: int):
    """Reference QNode f(features, weights) -> (batch, n) ⟨Z⟩ on default.qubit with backprop."""

    @qml.qnode(qml.device("default.qubit", wires=n_qubits), interface="torch",
               diff_method="backprop")
    def circuit(features, weights):
        qml.AmplitudeEmbedding(features, wires=range(n_qubits), normalize=True)
        for layer in range(n_layers):
            for wire in range(n_qubits):
                qml.RY(weights[layer, wire], wires=wire)
            for wire in range(n_qubits - 1):
                qml.CNOT(wires=[wire, wire + 1])
        return [qml.expval(qml.PauliZ(wire)) for wire in range(n_qubits)]

    return lambda features, weights: torch.stack(circuit(features, weights), dim=-1)


def make_layer(variant: dict, n_qubits: int, n_layers: int, seed: int = 0) -> QuantumFeatureLayer:
    if variant.get("device_name") == "lightning.qubit":
        pytest.importorskip("pennylane_lightning")
    torch.manual_seed(seed)
    return QuantumFeatureLayer(n_qubits=n_qubits, n_layers=n_layers, **variant)


def outputs_and_gradients(function, features, weights, cotangent):
    """f(features, weights) and the gradients of <cotangent, f> w.r.t. both arguments."""
    features = features.clone().requires_grad_()
    outputs = function(features, weights)
    feature_grad, weight_grad = torch.autograd.grad((outputs * cotangent).sum(),
                                                    (features, weights))
    return outputs.detach(), feature_grad, weight_grad


@pytest.mark.parametrize("variant", LAYER_VARIANTS)
@pytest.mark.parametrize(("n_qubits", "n_layers"), CIRCUIT_SIZES)
def test_matches_pennylane_reference(variant, n_qubits, n_layers):
    """Reference implementation: outputs and input/weight gradients, float64, atol 1e-6."""
    layer = make_layer(variant, n_qubits, n_layers).double()
    generator = torch.Generator().manual_seed(n_qubits * 10 + n_layers)
    batch = 2 if n_qubits == 8 else 4
    features = torch.randn(batch, 2**n_qubits, dtype=torch.float64, generator=generator)
    features[0] = features[0].abs()  # a non-negative row, as after the ReLU of eq. 6
    cotangent = torch.randn(batch, n_qubits, dtype=torch.float64, generator=generator)
    reference_weights = layer.weights.detach().clone().requires_grad_()

    expected = outputs_and_gradients(reference_circuit(n_qubits, n_layers), features,
                                     reference_weights, cotangent)
    actual = outputs_and_gradients(lambda x, _: layer(x), features, layer.weights, cotangent)

    for name, got, want in zip(("outputs", "input grad", "weight grad"), actual, expected,
                               strict=True):
        assert got.dtype == torch.float64, name
        torch.testing.assert_close(got, want, atol=ATOL_FLOAT64, rtol=0, msg=name)


@pytest.mark.parametrize(("n_qubits", "n_layers"), CIRCUIT_SIZES)
def test_analytic_backward_matches_autograd_and_finite_differences(monkeypatch, n_qubits,
                                                                   n_layers):
    """Reference implementation: the torch backend's hand-written backward (used whenever
    gradients are recorded) equals autograd through the plain operations that exporters
    trace, and torch.autograd.gradcheck's finite differences; a zero row included."""
    import qclassify.statevector as statevector

    layer = make_layer({"backend": "torch"}, n_qubits, n_layers).double()
    generator = torch.Generator().manual_seed(n_qubits)
    features = torch.randn(3, 2**n_qubits, dtype=torch.float64, generator=generator)
    features[1] = 0.0
    cotangent = torch.randn(3, n_qubits, dtype=torch.float64, generator=generator)
    analytic = outputs_and_gradients(lambda x, _: layer(x), features, layer.weights, cotangent)
    assert torch.autograd.gradcheck(layer, (features.clone().requires_grad_(),))
    monkeypatch.setattr(statevector, "_is_tracing", lambda: True)  # the traced (plain) path
    traced = outputs_and_gradients(lambda x, _: layer(x), features, layer.weights, cotangent)
    for name, got, want in zip(("outputs", "input grad", "weight grad"), analytic, traced,
                               strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0, msg=name)


def test_analytic_backward_refuses_double_backward():
    """Contract: second derivatives are not implemented, and say so (no silent zeros)."""
    layer = make_layer({"backend": "torch"}, 2, 1).double()
    features = torch.rand(2, 4, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(layer(features).sum(), features, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
        grad.sum().backward()


@pytest.mark.parametrize("variant", LAYER_VARIANTS)
def test_zero_row_is_uniform_state_with_finite_gradients(variant):
    """Analytic oracle: a zero (or numerically zero) row is encoded as the uniform state,
    which is the normalised all-ones row; outputs and gradients stay finite."""
    n_qubits, n_layers = 3, 2
    layer = make_layer(variant, n_qubits, n_layers).double()
    features = torch.zeros(3, 2**n_qubits, dtype=torch.float64)
    features[1] = 1e-14
    features[2] = torch.linspace(0.1, 1.0, 2**n_qubits, dtype=torch.float64)
    features.requires_grad_()
    outputs = layer(features)
    outputs.sum().backward()

    reference = reference_circuit(n_qubits, n_layers)(
        torch.ones(1, 2**n_qubits, dtype=torch.float64), layer.weights.detach()
    )
    torch.testing.assert_close(outputs[:2].detach(), reference.expand(2, -1),
                               atol=ATOL_FLOAT64, rtol=0)
    assert torch.isfinite(features.grad).all() and torch.isfinite(layer.weights.grad).all()
    assert torch.equal(features.grad[:2], torch.zeros_like(features.grad[:2]))
    assert features.grad[2].abs().sum() > 0  # the ordinary row still gets a gradient


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_shape_dtype_and_parameters(backend, dtype):
    """Contract: (B, 2^n) -> (B, n) in the input's dtype; one parameter (L, n), one state key."""
    layer = make_layer({"backend": backend}, n_qubits=4, n_layers=2)
    outputs = layer(torch.rand(5, 16, dtype=dtype))
    assert outputs.shape == (5, 4) and outputs.dtype == dtype
    assert isinstance(layer.weights, nn.Parameter) and layer.weights.shape == (2, 4)
    assert [name for name, _ in layer.named_parameters()] == ["circuit.weights"]
    assert list(layer.state_dict()) == ["circuit.weights"]
    assert ((outputs >= -1) & (outputs <= 1)).all()  # expectation values of Pauli-Z


def test_float32_agrees_with_float64():
    """Contract: the torch backend computes in the input's dtype; float32 stays close."""
    layer = make_layer({"backend": "torch"}, n_qubits=5, n_layers=3)
    features = torch.rand(6, 32, dtype=torch.float64)
    single = layer(features.float())
    double = layer.double()(features)
    torch.testing.assert_close(single.double(), double, atol=ATOL_FLOAT32, rtol=0)


def test_seeded_init_and_checkpoints_interchange_between_backends():
    """Contract: the same seed gives the same angles whichever backend, and a state dict
    saved from one backend loads into the other and gives the same outputs."""
    seeded = {backend: make_layer({"backend": backend}, 4, 2, seed=7) for backend in BACKENDS}
    torch.testing.assert_close(seeded["torch"].weights, seeded["pennylane"].weights,
                               atol=0, rtol=0)
    angles = torch.rand(2, 4) * 6
    features = torch.rand(3, 16)
    for source, target in (("torch", "pennylane"), ("pennylane", "torch")):
        trained = make_layer({"backend": source}, 4, 2, seed=1)
        trained.load_state_dict({"circuit.weights": angles})
        loaded = make_layer({"backend": target}, 4, 2, seed=2)
        loaded.load_state_dict(trained.state_dict())
        torch.testing.assert_close(loaded(features), trained(features),
                                   atol=ATOL_FLOAT32, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "features", "message"),
    [
        ({"n_qubits": 4}, torch.zeros(3, 12), r"with 4 qubits expects 16 features.*\[3, 12\]"),
        ({"n_qubits": 2}, torch.zeros(4), r"with 2 qubits expects 4 features.*\[4\]"),
        ({"n_qubits": 4, "backend": "qiskit"}, None, r"unknown backend 'qiskit'; choose one"),
        ({"n_qubits": 0}, None, r"n_qubits must be at least 1; got 0"),
        ({"n_qubits": 2, "n_layers": 0}, None, r"n_layers must be at least 1; got 0"),
        ({"n_qubits": 2, "backend": "pennylane", "device_name": "nope.qubit"}, None,
         r"cannot use PennyLane device 'nope.qubit'.*lightning.qubit"),
    ],
)
def test_clear_errors(kwargs, features, message):
    """Contract: bad construction or input width raises one clear ValueError."""
    with pytest.raises(ValueError, match=message):
        QuantumFeatureLayer(**kwargs)(features)


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), QuantumFeatureLayer(4, 2)).eval()


def export_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """An example batch for tracing and a batch of another size for checking; its first row
    is all-negative, so the ReLU zeroes it and the uniform-state fallback is exported too."""
    generator = torch.Generator().manual_seed(3)
    check = torch.randn(7, 8, generator=generator)
    check[0] = -10.0
    return torch.randn(5, 8, generator=generator), check


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript-exporter", "dynamo-exporter"])
def test_onnx_export_matches_torch(tmp_path, dynamo):
    """Export: Linear -> ReLU -> quantum layer, dynamic batch, run by ONNX Runtime.

    torch 2.14's default exporter (dynamo=True) needs `onnxscript`; the TorchScript-based one
    (dynamo=False) is deprecated but needs nothing extra."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    if dynamo:
        pytest.importorskip("onnxscript")
    model = small_model()
    example, check = export_inputs()
    path = tmp_path / "model.onnx"
    dynamic = {"dynamic_shapes": ({0: "batch"},)} if dynamo else {
        "dynamic_axes": {"features": {0: "batch"}, "expectations": {0: "batch"}}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation and tracer warnings of the exporters
        torch.onnx.export(model, (example,), path, dynamo=dynamo, input_names=["features"],
                          output_names=["expectations"], **dynamic)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_outputs,) = session.run(None, {"features": check.numpy()})
    with torch.no_grad():
        expected = model(check)
    torch.testing.assert_close(torch.from_numpy(onnx_outputs), expected,
                               atol=ATOL_FLOAT32, rtol=0)


def test_torch_export_matches_eager():
    """Export: torch.export with a dynamic batch dimension reproduces the eager model."""
    model = small_model()
    example, check = export_inputs()
    program = torch.export.export(model, (example,),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(check), model(check),
                                   atol=ATOL_FLOAT32, rtol=0)
