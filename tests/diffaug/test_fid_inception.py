"""FID/KID through pytorch-fid's InceptionV3 (`diffaug.fid.features`, `diffaug fid`).

No real weights: a session fixture writes a randomly initialised FID Inception state dict into a
temporary $TORCH_HOME, where pytorch-fid's own loader finds it; tests that use it accept its own
SHA-256 prefix in place of the real file's (`accept_weights`). Kinds: reference implementation
(`python -m pytorch_fid` as a subprocess, pytorch-fid's statistics and its batch-resizing
network in process), analytic oracles (16-bit 257·k equals 8-bit k), mocked heavy model (the
`balance --fid` wiring) and CLI tests (one-line errors, warnings on stderr).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock
from urllib.error import URLError

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
pf_inception = pytest.importorskip("pytorch_fid.inception")
fid_score = pytest.importorskip("pytorch_fid.fid_score")

from click.testing import CliRunner  # noqa: E402
from diffaug import balance_folder  # noqa: E402
from diffaug.cli import main  # noqa: E402
from diffaug.fid import (  # noqa: E402
    FewImagesWarning,
    compute_fid,
    fid_of_balanced_classes,
    images,
    inception,
    onnx_engine,
)
from diffaug.fid.features import InceptionFeatures  # noqa: E402
from diffaug.fid.frechet import FeatureStatistics  # noqa: E402
from diffaug.fid.images import list_images, load_inception_input  # noqa: E402
from diffaug.fid.inception import InceptionWeightsError  # noqa: E402
from diffaug.fid.runtime import FidExtraMissingError, choose_engine, resolve_device  # noqa: E402
from diffaug.io import MANIFEST_NAME, read_manifest  # noqa: E402
from diffaug.modes import SIXTEEN_BIT_MODES  # noqa: E402
from PIL import Image  # noqa: E402

WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
DIMS = 64  # first max-pool block: three convolutions, fast on a CPU
PYTORCH_FID_RTOL = 1e-3  # the agreement required with `python -m pytorch_fid`
FEATURE_RTOL = 1e-4  # float32 convolutions in another memory layout / batch composition
SAME_FEATURES_RTOL = 1e-6  # one feature set, two exact trace formulas


@pytest.fixture(scope="session")
def random_weights_home(tmp_path_factory) -> Path:
    """A TORCH_HOME whose hub cache holds a random FID Inception state dict. The network is
    pytorch-fid's own `fid_inception_v3()` with the download and the load stubbed out; the
    convolutions get He initialisation so activations neither vanish nor explode."""
    home = tmp_path_factory.mktemp("torch-home")
    path = home / "hub" / "checkpoints" / WEIGHTS_NAME
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    with mock.patch.object(pf_inception, "load_state_dict_from_url", return_value={}), \
            mock.patch.object(torchvision.models.Inception3, "load_state_dict"):
        network = pf_inception.fid_inception_v3()
    for module in network.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    torch.save(network.state_dict(), path)
    return home


def accept_weights(home: Path, monkeypatch) -> None:
    """Let diffaug's hash check accept the random weights under `home` as the real ones."""
    digest = hashlib.sha256((home / "hub" / "checkpoints" / WEIGHTS_NAME).read_bytes())
    prefix_length = len(inception.FID_WEIGHTS_SHA256_PREFIX)
    monkeypatch.setattr(inception, "FID_WEIGHTS_SHA256_PREFIX",
                        digest.hexdigest()[:prefix_length])


@pytest.fixture
def torch_home(random_weights_home: Path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(random_weights_home))
    accept_weights(random_weights_home, monkeypatch)
    return random_weights_home


def write_images(folder: Path, count: int, *, brightness: float = 100, seed: int = 0,
                 sizes=((24, 24),)) -> list[Path]:
    """`count` noisy 8-bit images, alternating L and RGB, cycling through `sizes` (w, h)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        width, height = sizes[index % len(sizes)]
        pixels = np.clip(rng.normal(brightness, 40, (height, width, 3)), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels if index % 2 else pixels[..., 0])
        paths.append(folder / f"img_{index:02d}.png")
        image.save(paths[-1])
    return paths


@pytest.fixture
def two_folders(tmp_path: Path) -> tuple[Path, Path]:
    write_images(tmp_path / "real", 16, seed=1)
    write_images(tmp_path / "other", 16, brightness=140, seed=2)
    return tmp_path / "real", tmp_path / "other"


def test_fid_equals_pytorch_fid_cli(torch_home, two_folders) -> None:
    """Reference implementation: `python -m pytorch_fid A B` on the same folders."""
    real, other = two_folders
    command = [sys.executable, "-m", "pytorch_fid", str(real), str(other), "--device", "cpu",
               "--dims", str(DIMS), "--num-workers", "0", "--batch-size", "8"]
    finished = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300)
    expected = float(finished.stdout.split("FID:")[1].split()[0])
    with pytest.warns(FewImagesWarning):
        report = compute_fid(real, other, dims=DIMS, device="cpu", batch_size=5)
    assert report.fid == pytest.approx(expected, rel=PYTORCH_FID_RTOL)
    assert (report.n_real, report.n_other) == (16, 16)


def test_saved_statistics_equal_pytorch_fids(torch_home, two_folders, tmp_path) -> None:
    """Reference implementation: pytorch-fid's calculate_activation_statistics (batch-resizing
    network, ToTensor scaling); CLI --save-stats writes them, and FID from the .npz equals FID
    from the folder."""
    real, other = two_folders
    out = tmp_path / "real-stats.npz"
    runner = CliRunner()
    result = runner.invoke(main, ["fid", str(real), str(out), "--save-stats", "--dims", str(DIMS),
                                  "--device", "cpu", "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    network = pf_inception.InceptionV3([pf_inception.InceptionV3.BLOCK_INDEX_BY_DIM[DIMS]])
    mu, sigma = fid_score.calculate_activation_statistics(
        list_images(real), network, batch_size=8, dims=DIMS, device="cpu", num_workers=0)
    saved = FeatureStatistics.load(out)
    np.testing.assert_allclose(saved.mu, mu, rtol=FEATURE_RTOL, atol=FEATURE_RTOL * np.abs(mu).max())
    np.testing.assert_allclose(saved.sigma, sigma, rtol=FEATURE_RTOL,
                               atol=FEATURE_RTOL * np.abs(sigma).max())
    with pytest.warns(FewImagesWarning):
        from_folders = compute_fid(real, other, dims=DIMS, device="cpu").fid
    result = runner.invoke(main, ["fid", str(out), str(other), "--dims", str(DIMS), "--device",
                                  "cpu", "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    printed = float(result.stdout.split("FID:")[1].split()[0])
    assert printed == pytest.approx(from_folders, rel=SAME_FEATURES_RTOL)


def test_mixed_sizes_are_resized_per_image(torch_home, tmp_path) -> None:
    """Reference implementation: each image alone through pytorch-fid's InceptionV3 with its
    own bilinear resize (`resize_input=True`), where pytorch-fid itself cannot batch them."""
    files = write_images(tmp_path / "mixed", 4, sizes=[(20, 20), (33, 17), (40, 28), (299, 310)])
    ours = InceptionFeatures(dims=DIMS, device="cpu", batch_size=3)(files)
    network = pf_inception.InceptionV3([0]).eval()
    with torch.no_grad():
        expected = np.stack([
            network(torchvision.transforms.functional.to_tensor(
                Image.open(path).convert("RGB"))[None])[0].mean(dim=(2, 3))[0].numpy()
            for path in files
        ])
    np.testing.assert_allclose(ours, expected, rtol=FEATURE_RTOL,
                               atol=FEATURE_RTOL * np.abs(expected).max())


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path) -> None:
    """Analytic oracle: a 16-bit image of 257·k is the 8-bit image of k (65535 = 257·255), and
    so is a float image of k/255; PIL's convert("RGB"), which pytorch-fid uses, clips instead."""
    levels = np.random.default_rng(3).integers(0, 256, (9, 11))
    Image.fromarray(levels.astype(np.uint8)).save(tmp_path / "eight.png")
    Image.fromarray((levels * 257).astype(np.uint16)).save(tmp_path / "sixteen.png")
    Image.fromarray((levels / 255).astype(np.float32)).save(tmp_path / "float.tif")
    eight = load_inception_input(tmp_path / "eight.png")
    assert Image.open(tmp_path / "sixteen.png").mode == "I;16"
    torch.testing.assert_close(load_inception_input(tmp_path / "sixteen.png"), eight,
                               rtol=0, atol=0)
    torch.testing.assert_close(load_inception_input(tmp_path / "float.tif"), eight,
                               rtol=0, atol=1e-6)
    clipped = torchvision.transforms.functional.to_tensor(
        Image.open(tmp_path / "sixteen.png").convert("RGB"))
    assert clipped.mean() > 0.95 > eight.mean() + 0.3  # pytorch-fid sees an almost white image


@pytest.mark.parametrize("mode", SIXTEEN_BIT_MODES)
def test_every_sixteen_bit_mode_is_scaled_by_its_full_range(tmp_path, monkeypatch, mode) -> None:
    """Analytic oracle, over diffaug.modes' one table of 16-bit modes (the augmenter's too):
    257·k in any of them, mode I included, is the 8-bit image of k. The decoded image is
    mocked because Pillow cannot write every one of these modes to a file."""
    levels = np.random.default_rng(4).integers(0, 256, (9, 11))
    Image.fromarray(levels.astype(np.uint8)).save(tmp_path / "eight.png")
    dtype = np.asarray(Image.new(mode, (1, 1))).dtype
    image = Image.frombytes(mode, (11, 9), (levels * 257).astype(dtype).tobytes())
    eight = load_inception_input(tmp_path / "eight.png")
    monkeypatch.setattr("diffaug.fid.images.read_image", lambda path: image)
    torch.testing.assert_close(load_inception_input(tmp_path / "deep.png"), eight, rtol=0, atol=0)


def test_mode_i_beyond_sixteen_bits_is_named(tmp_path) -> None:
    """Contract: a 32-bit integer image whose values do not fit 16 bits is refused by name."""
    Image.fromarray(np.full((4, 4), 70_000, np.int32)).save(tmp_path / "wide.tif")
    with pytest.raises(ValueError, match=r"wide\.tif: mode 'I' values 70000\.\.70000 do not fit"):
        load_inception_input(tmp_path / "wide.tif")


def test_cuda_device_without_cuda_is_one_line(torch_home, two_folders, monkeypatch) -> None:
    """CLI (CUDA availability mocked, so it runs on any machine): `--device cuda` where there
    is no CUDA is a usage error saying what to use instead, before any network is built;
    `auto` falls back to the CPU; a CUDA index the machine lacks is named."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = "--device cuda: CUDA is not available on this machine; use --device cpu or auto"
    with pytest.raises(ValueError) as caught:
        resolve_device("cuda")
    assert str(caught.value) == message
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    output = one_line_cli_error(["fid", *map(str, two_folders), "--device", "cuda"], 2)
    assert output.strip() == f"Error: {message}"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="--device cuda:3: this machine has 1 CUDA device"):
        resolve_device("cuda:3")


class NetworkBuilt(AssertionError):
    """Raised by a mocked InceptionFeatures: the network was built when it should not be."""


def refuse_network(**options) -> None:
    raise NetworkBuilt("InceptionFeatures was built")


@pytest.mark.parametrize("which", ["real", "other", "save-stats"])
def test_too_few_images_fail_before_the_network(tmp_path, monkeypatch, which) -> None:
    """CLI, mocked heavy model: a folder of one image is one line (exit 2) naming the folder,
    found while counting the inputs, before the Inception network is built."""
    monkeypatch.setattr("diffaug.fid.score.InceptionFeatures", refuse_network)
    write_images(tmp_path / "one", 1)
    write_images(tmp_path / "many", 4)
    folders = {"real": ["one", "many"], "other": ["many", "one"], "save-stats": ["one", "s.npz"]}
    arguments = [str(tmp_path / name) for name in folders[which]]
    extra = ["--save-stats"] if which == "save-stats" else []
    output = one_line_cli_error(["fid", *arguments, *extra, "--device", "cpu", "--quiet"], 2)
    assert f"{tmp_path / 'one'}: FID needs at least 2 images per set, found 1" in output
    with pytest.raises(ValueError, match="found 1"):
        compute_fid([tmp_path / "many" / "img_00.png"], tmp_path / "many")


def test_recursive_folders_and_few_image_warning(torch_home, tmp_path) -> None:
    """CLI: nested folders need --recursive (the error says so); FID and KID then match the
    library on the same files, and the few-images warning goes to stderr."""
    nested = write_images(tmp_path / "real" / "a", 3, seed=4)
    nested += write_images(tmp_path / "real" / "b" / "c", 3, seed=5)
    write_images(tmp_path / "other", 6, brightness=140, seed=6)
    with pytest.raises(ValueError, match="--recursive"):
        list_images(tmp_path / "real")
    arguments = ["fid", str(tmp_path / "real"), str(tmp_path / "other"), "--dims", str(DIMS),
                 "--device", "cpu", "--kid", "--quiet"]
    result = CliRunner().invoke(main, [*arguments, "--recursive"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with pytest.warns(FewImagesWarning, match="6 images for 64-dimensional"):
        expected = compute_fid(sorted(nested), tmp_path / "other", dims=DIMS, device="cpu",
                               kid=True)
    fid_text, kid_text = result.stdout.split("FID:")[1].split("KID:")
    assert float(fid_text) == pytest.approx(expected.fid, rel=SAME_FEATURES_RTOL)
    kid_mean, kid_std = (float(value) for value in kid_text.split("±"))
    assert kid_mean == pytest.approx(expected.kid.mean, rel=1e-5)  # printed with 6 digits
    assert kid_std == pytest.approx(expected.kid.std, rel=1e-5, abs=1e-12)
    assert "Warning:" in result.stderr and "KID" in result.stderr
    assert "Warning:" not in result.stdout


def one_line_cli_error(arguments: list[str], exit_code: int) -> str:
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    return result.output


def test_missing_weights_offline_is_one_line(tmp_path, two_folders, monkeypatch) -> None:
    """CLI: no cached weights and no network (mocked) -> the file pytorch-fid needs and where
    to put it, exit 1."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-home"))
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        mock.Mock(side_effect=URLError("Name or service not known")))
    expected_path = tmp_path / "empty-home" / "hub" / "checkpoints" / WEIGHTS_NAME
    with pytest.raises(InceptionWeightsError) as caught:
        compute_fid(*two_folders, dims=DIMS, device="cpu")
    assert str(expected_path) in str(caught.value)
    output = one_line_cli_error(["fid", *map(str, two_folders), "--device", "cpu"], 1)
    assert WEIGHTS_NAME in output and str(expected_path) in output


def test_unusable_weights_file_is_one_line(tmp_path, two_folders, monkeypatch) -> None:
    """CLI: a truncated weights file is named, with the fix, exit 1."""
    path = tmp_path / "home" / "hub" / "checkpoints" / WEIGHTS_NAME
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a state dict")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    output = one_line_cli_error(["fid", *map(str, two_folders), "--device", "cpu"], 1)
    assert str(path) in output and "delete it" in output


def test_unreadable_image_is_named(torch_home, two_folders) -> None:
    """CLI: a broken file among the images is named in one line, exit 2."""
    real, other = two_folders
    (real / "broken.png").write_bytes(b"\x89PNG not really")
    output = one_line_cli_error(["fid", str(real), str(other), "--dims", str(DIMS),
                                 "--device", "cpu", "--quiet"], 2)
    assert "broken.png" in output


def test_balanced_classes_compare_synthetic_with_their_originals(torch_home, class_folders,
                                                                 tmp_path) -> None:
    """Library: for each class that received synthetic images, FID/KID of its originals vs
    its synthetic files (from the manifest) — the same numbers as on those explicit lists."""
    out = tmp_path / "out"
    balance_folder(class_folders({"normal": 6, "stenosis": 3}), out, ratio=1, seed=0)
    synthetic = [out / row.path for row in read_manifest(out / MANIFEST_NAME)]
    originals = sorted((out / "stenosis").glob("img_*.png"))
    with pytest.warns(FewImagesWarning):
        reports = fid_of_balanced_classes(out, dims=DIMS, device="cpu")
        expected = compute_fid(originals, synthetic, dims=DIMS, device="cpu", kid=True)
    assert list(reports) == ["stenosis"]
    assert (reports["stenosis"].n_real, reports["stenosis"].n_other) == (3, 3)
    assert reports["stenosis"].fid == pytest.approx(expected.fid, rel=SAME_FEATURES_RTOL)
    assert reports["stenosis"].kid.mean == pytest.approx(expected.kid.mean, rel=SAME_FEATURES_RTOL)


class PixelFeatures:
    """Mocked Inception: 3x8x8 average-pooled pixels of pytorch-fid's input tensor."""

    dims = 192

    def __init__(self, **options) -> None:
        pass

    def __call__(self, files, *, on_batch=None):
        pooled = [torch.nn.functional.adaptive_avg_pool2d(load_inception_input(p), 8) for p in files]
        if on_batch is not None:
            on_batch(len(files))
        return torch.stack(pooled).flatten(1).double().numpy()


def test_cli_balance_reports_fid(class_folders, tmp_path, monkeypatch) -> None:
    """CLI, mocked heavy model: `balance --fid` prints each balanced class's FID and KID,
    equal to the library's numbers for that run folder."""
    monkeypatch.setattr("diffaug.fid.score.InceptionFeatures", PixelFeatures)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["balance", str(class_folders({"normal": 6, "stenosis": 3})), str(out),
               "--ratio", "1", "--fid", "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with pytest.warns(FewImagesWarning):
        expected = fid_of_balanced_classes(out)["stenosis"]
    line = next(line for line in result.stdout.splitlines() if line.startswith("stenosis "))
    assert float(line.split("FID:")[1].split()[0]) == pytest.approx(expected.fid, rel=1e-12)
    assert "(3 synthetic, 3 originals)" in line


def test_written_out_constants_are_pytorch_fids() -> None:
    """Reference: the constants copied so the onnxruntime engine need not import pytorch-fid."""
    assert inception.FID_WEIGHTS_URL == pf_inception.FID_WEIGHTS_URL
    name = inception.FID_WEIGHTS_URL.rsplit("/", 1)[1]
    assert torch.hub.HASH_REGEX.search(name).group(1) == inception.FID_WEIGHTS_SHA256_PREFIX
    assert inception.BLOCK_INDEX_BY_DIM == pf_inception.InceptionV3.BLOCK_INDEX_BY_DIM
    assert images.PYTORCH_FID_IMAGE_EXTENSIONS == fid_score.IMAGE_EXTENSIONS


@pytest.mark.parametrize("dims", [DIMS, 2048])
def test_onnxruntime_engine_gives_the_torch_engines_features(torch_home, two_folders,
                                                             dims) -> None:
    """Reference implementation: pytorch-fid's network through torch, on the same images;
    the whole network (2048) and its first block (64)."""
    files = list_images(two_folders[0])[:6]
    onnx = InceptionFeatures(dims=dims, device="cpu", batch_size=4, engine="onnxruntime")
    plain = InceptionFeatures(dims=dims, device="cpu", batch_size=4, engine="torch")
    assert (onnx.engine, plain.engine) == ("onnxruntime", "torch")
    ours, reference = onnx(files), plain(files)
    assert ours.shape == (6, dims) and np.abs(reference).max() > 0
    np.testing.assert_allclose(ours, reference, rtol=FEATURE_RTOL,
                               atol=FEATURE_RTOL * np.abs(reference).max())


def test_onnx_export_is_cached_and_redone_for_other_weights(random_weights_home, two_folders,
                                                            tmp_path, monkeypatch) -> None:
    """Contract: the first use exports and caches; the next loads the cache without exporting;
    weights with another modification time are exported again; the features stay the same."""
    home = tmp_path / "home"
    shutil.copytree(random_weights_home, home)
    monkeypatch.setenv("TORCH_HOME", str(home))
    accept_weights(home, monkeypatch)
    monkeypatch.setenv("DIFFAUG_CACHE", str(tmp_path / "cache"))
    weights = home / "hub" / "checkpoints" / WEIGHTS_NAME
    exports = []
    real_export = onnx_engine.export_inception

    def counting_export(*args):
        exports.append(args)
        return real_export(*args)

    monkeypatch.setattr(onnx_engine, "export_inception", counting_export)
    files = list_images(two_folders[0])[:3]
    first = InceptionFeatures(dims=DIMS, device="cpu", engine="onnxruntime")(files)
    cached = onnx_engine.cached_model_path(weights, DIMS)
    assert cached.is_file() and cached.parent == tmp_path / "cache" and len(exports) == 1
    np.testing.assert_array_equal(
        InceptionFeatures(dims=DIMS, device="cpu", engine="onnxruntime")(files), first)
    assert len(exports) == 1
    stamp = weights.stat()
    os.utime(weights, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))
    InceptionFeatures(dims=DIMS, device="cpu", engine="onnxruntime")
    assert len(exports) == 2
    cached.write_bytes(b"not an onnx model")
    np.testing.assert_array_equal(
        InceptionFeatures(dims=DIMS, device="cpu", engine="onnxruntime")(files), first)
    assert len(exports) == 3


def test_unwritable_cache_runs_from_memory(torch_home, two_folders, tmp_path,
                                          monkeypatch) -> None:
    """Contract: a cache folder that cannot be made (a file is in the way) costs the cache,
    not the result."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("DIFFAUG_CACHE", str(blocker / "cache"))
    files = list_images(two_folders[0])[:2]
    features = InceptionFeatures(dims=DIMS, device="cpu", engine="onnxruntime")(files)
    assert features.shape == (2, DIMS) and np.isfinite(features).all()


def test_engine_choice(monkeypatch) -> None:
    """Contract: auto picks onnxruntime on a CPU and torch elsewhere or without ONNX Runtime;
    an explicit onnxruntime on CUDA, or without the package, is a clear error."""
    assert choose_engine("auto", "cpu") == "onnxruntime"
    assert choose_engine("auto", "cuda:0") == "torch"
    assert choose_engine("torch", "cpu") == "torch"
    with pytest.raises(ValueError, match="--engine onnxruntime runs on the CPU"):
        choose_engine("onnxruntime", "cuda")
    with pytest.raises(ValueError, match="--engine must be one of"):
        choose_engine("tensorrt", "cpu")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    assert choose_engine("auto", "cpu") == "torch"
    with pytest.raises(FidExtraMissingError, match="--engine onnxruntime needs onnxruntime"):
        choose_engine("onnxruntime", "cpu")
