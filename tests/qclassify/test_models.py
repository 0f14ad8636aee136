"""Model builder tests: shapes, parameter counts, weights loading, ONNX export."""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from qclassify.models import (  # noqa: E402
    MIN_IMAGE_SIZE,
    MODEL_NAMES,
    QuantumMobileNetV2,
    WeightsUnavailableError,
    build_model,
    check_image_size,
    count_parameters,
    imagenet_weights,
    load_weights_file,
    resolve_device,
)

ATOL = 1e-6  # float32 forward passes of the same weights on the same input


@pytest.fixture(scope="module")
def quantum_model():
    torch.manual_seed(0)
    return QuantumMobileNetV2(num_classes=2).eval()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_gives_one_logit_per_class(name):
    """Contract suite: every table entry builds and maps (B, 3, 32, 32) to (B, classes); the
    baseline's parameter count equals torchvision's own model built for 3 classes (reference)."""
    model = build_model(name, 3).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 3, MIN_IMAGE_SIZE, MIN_IMAGE_SIZE))
    assert logits.shape == (2, 3)
    if name != "qmobilenet":
        reference = torchvision.models.get_model(name, weights=None, num_classes=3)
        assert count_parameters(model) == count_parameters(reference)


def test_min_image_size_is_a_real_limit():
    """Analytic oracle: VGG16's five 2x2 poolings leave no pixel below 32 px."""
    vgg = build_model("vgg16", 2).eval()
    with torch.no_grad(), pytest.raises(RuntimeError):
        vgg(torch.rand(1, 3, MIN_IMAGE_SIZE - 1, MIN_IMAGE_SIZE - 1))
    check_image_size(MIN_IMAGE_SIZE)
    with pytest.raises(ValueError, match="too small"):
        check_image_size(MIN_IMAGE_SIZE - 1)


def test_quantum_model_parameter_counts(quantum_model):
    """Analytic oracle (section 2.4.4): 8 circuit + 10 head parameters at n=4, L=2, two
    classes; reduction 1280*16+16; features exactly torchvision's MobileNetV2 features."""
    assert quantum_model.quantum.weights.shape == (2, 4)
    assert count_parameters(quantum_model.quantum) == 8
    assert count_parameters(quantum_model.head) == 2 * 4 + 2
    assert count_parameters(quantum_model.reduce) == 1280 * 16 + 16
    features = count_parameters(torchvision.models.mobilenet_v2(weights=None).features)
    assert count_parameters(quantum_model) == features + 1280 * 16 + 16 + 8 + 10


def test_quantum_model_qubits_set_the_reduction_width():
    """Analytic oracle: the paper's 8-qubit case reduces 1280 features to 2^8 = 256 (eq. 6)."""
    model = build_model("qmobilenet", 2, n_qubits=8, n_layers=3)
    assert model.reduce[0].out_features == 256
    assert model.quantum.weights.shape == (3, 8)
    assert model.head.in_features == 8


def test_quantum_model_pools_like_torchvision(quantum_model):
    """Reference implementation: the reduction layer receives exactly the 1280-vector that
    torchvision's MobileNetV2 hands its classifier (GAP of eq. 5), given the same features."""
    reference = torchvision.models.mobilenet_v2(weights=None).eval()
    reference.features.load_state_dict(quantum_model.features.state_dict())
    seen = {}
    reference.classifier.register_forward_pre_hook(lambda m, args: seen.update(ref=args[0]))
    hook = quantum_model.reduce.register_forward_pre_hook(lambda m, args: seen.update(ours=args[0]))
    images = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        reference(images)
        quantum_model(images)
    hook.remove()
    assert seen["ours"].shape == (3, 1280)
    torch.testing.assert_close(seen["ours"], seen["ref"], atol=ATOL, rtol=0)


def test_pennylane_backend_gives_the_same_model():
    """Reference implementation: the same state dict in a PennyLane-backed qmobilenet gives
    the logits of the torch-backed one (whole model; the layer itself is tested elsewhere)."""
    pytest.importorskip("pennylane")
    torch.manual_seed(0)
    exact = build_model("qmobilenet", 2).eval()
    pennylane = build_model("qmobilenet", 2, q_backend="pennylane").eval()
    pennylane.load_state_dict(exact.state_dict())
    images = torch.rand(2, 3, MIN_IMAGE_SIZE, MIN_IMAGE_SIZE)
    with torch.no_grad():
        torch.testing.assert_close(pennylane(images), exact(images), atol=1e-5, rtol=0)


def test_weights_path_loads_a_whole_model_state_dict(tmp_path):
    """Same-seed rederivation: a state dict saved from one model, or a checkpoint dict holding
    it, rebuilds identical tensors in a fresh model."""
    torch.manual_seed(1)
    source = build_model("qmobilenet", 2)
    plain, checkpoint = tmp_path / "plain.pt", tmp_path / "checkpoint.pt"
    torch.save(source.state_dict(), plain)
    torch.save({"model": "qmobilenet", "state_dict": source.state_dict()}, checkpoint)
    for path in (plain, checkpoint):
        torch.manual_seed(2)  # a different initialisation, which the file must overwrite
        loaded = build_model("qmobilenet", 2, weights=path)
        for key, tensor in source.state_dict().items():
            torch.testing.assert_close(loaded.state_dict()[key], tensor, atol=0, rtol=0)


def test_weights_path_that_does_not_fit_is_named(tmp_path):
    """Contract: a 3-class file into a 2-class model, or a non-weights file, is a ValueError
    naming the file."""
    three = tmp_path / "three.pt"
    torch.save(build_model("resnet18", 3).state_dict(), three)
    with pytest.raises(ValueError, match="three.pt does not fit"):
        build_model("resnet18", 2, weights=three)
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        load_weights_file(build_model("resnet18", 2), junk)
    with pytest.raises(ValueError, match="existing file"):
        build_model("resnet18", 2, weights=tmp_path / "absent.pt")


def test_imagenet_weights_come_from_torchvision_enums():
    """Reference implementation: the enum members torchvision documents."""
    assert imagenet_weights("mobilenet_v2") is torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    assert imagenet_weights("vgg16") is torchvision.models.VGG16_Weights.IMAGENET1K_V1


@pytest.mark.parametrize("name", ["qmobilenet", "resnet18"])
def test_imagenet_weights_offline_is_a_clear_error(monkeypatch, tmp_path, name):
    """Mocked download: when torch.hub cannot fetch the weights, the error says what to do."""

    def offline(*args, **kwargs):
        raise URLError("Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # nothing cached
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsUnavailableError, match="use --weights none or --weights PATH"):
        build_model(name, 2, weights="imagenet")


def test_bad_builder_arguments():
    """Contract: unknown names and single-class models are ValueErrors."""
    with pytest.raises(ValueError, match="unknown model"):
        build_model("alexnet", 2)
    with pytest.raises(ValueError, match="at least two classes"):
        build_model("mobilenet_v2", 1)


def test_resolve_device(monkeypatch):
    """Contract: auto never picks CUDA when it is absent; asking for it then is an error."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")


def test_resolve_device_checks_the_gpu_index(monkeypatch):
    """Contract: cuda:N must name one of the machine's GPUs (mocked: one GPU)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match=r"only 1 CUDA device\(s\) exist; use cuda:0"):
        resolve_device("cuda:1")


def test_q_device_reaches_the_pennylane_layer():
    """Reference implementation: build_model's q_device is the PennyLane device the quantum
    layer runs on, and lightning.qubit gives the logits of default.qubit for the same seed."""
    pytest.importorskip("pennylane_lightning")
    images = torch.rand(2, 3, MIN_IMAGE_SIZE, MIN_IMAGE_SIZE)
    logits = {}
    for q_device in ("default.qubit", "lightning.qubit"):
        torch.manual_seed(0)
        model = build_model("qmobilenet", 2, q_backend="pennylane", q_device=q_device).eval()
        assert model.quantum.device_name == q_device
        assert model.quantum.circuit.qnode.device.name == q_device
        with torch.no_grad():
            logits[q_device] = model(images)
    torch.testing.assert_close(logits["lightning.qubit"], logits["default.qubit"],
                               atol=ATOL, rtol=0)


# The legacy (TorchScript) exporter: the dynamo exporter needs onnxscript, not a dependency.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_quantum_model_exports_to_onnx(tmp_path: Path, quantum_model):
    """Reference implementation: ONNX Runtime runs the exported whole model (torch backend)
    to the same logits as PyTorch."""
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    images = torch.rand(2, 3, MIN_IMAGE_SIZE, MIN_IMAGE_SIZE)
    path = tmp_path / "qmobilenet.onnx"
    torch.onnx.export(
        quantum_model, (images,), str(path), dynamo=False, input_names=["images"],
        output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = torch.rand(3, 3, MIN_IMAGE_SIZE, MIN_IMAGE_SIZE)
    (onnx_logits,) = session.run(None, {"images": batch.numpy()})
    with torch.no_grad():
        expected = quantum_model(batch).numpy()
    np.testing.assert_allclose(onnx_logits, expected, atol=1e-5, rtol=1e-4)


def test_the_torch_free_model_table_matches_the_architectures():
    """Contract: qclassify.options lists the models (for the CLI, without torch) in the order
    of models.ARCHITECTURES, the table that builds them."""
    from qclassify.models import ARCHITECTURES
    from qclassify.options import MODEL_NAMES

    assert tuple(ARCHITECTURES) == MODEL_NAMES
