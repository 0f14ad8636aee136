"""Adversarial inputs to what loads weights and statistics: planted pickles, crafted .npz files,
absurd option values.

Kinds: CLI (one `Error:` line naming the file or option, the right exit status, no traceback)
and contract tests of the loaders. The code-execution tests plant a checkpoint whose unpickling
creates a marker file; the marker must never appear. torch-only tests skip without torch, so the
statistics and option tests also run in diffaug's torch-free session.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import re
import zipfile
from pathlib import Path
from types import SimpleNamespace
from urllib.error import URLError

import numpy as np
import pytest
from click.testing import CliRunner
from diffaug.cli import main as diffaug_main
from diffaug.fid.frechet import MAX_STATISTICS_DIMS, FeatureStatistics
from diffaug.schedule import MAX_CLI_TIMESTEPS
from PIL import Image

USAGE_ERROR = 2
RUNTIME_ERROR = 1
FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
STATS_DIMS = 4


class PlantedPayload:
    """Unpickling this creates `marker` (`open(marker, "w")`): proof that a load ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def plant_checkpoint(path: Path, marker: Path) -> str:
    """A torch checkpoint at `path` whose unpickling creates `marker`; returns its SHA-256."""
    torch = pytest.importorskip("torch")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"weight": torch.zeros(1), "payload": PlantedPayload(marker)}, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sha256_named_copy(state: dict, folder: Path, stem: str) -> Path:
    """`torch.save(state)` as `folder/<stem>-<its sha256 prefix>.pth` (torch.hub's naming)."""
    torch = pytest.importorskip("torch")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    path = folder / f"{stem}-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def assert_one_line_error(result, exit_code: int, *fragments: str) -> str:
    assert result.exit_code == exit_code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def write_images(folder: Path, count: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        pixels = rng.integers(0, 256, (16, 16), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{index}.png")
    return folder


# ---- item 1: pytorch-fid's Inception weights ------------------------------------------------


@pytest.fixture
def fid_home(tmp_path: Path, monkeypatch) -> Path:
    """An empty TORCH_HOME and ONNX cache of this test; returns the weights' cache path."""
    pytest.importorskip("torch")
    pytest.importorskip("pytorch_fid")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("DIFFAUG_CACHE", str(tmp_path / "diffaug-cache"))
    return tmp_path / "torch-home" / "hub" / "checkpoints" / FID_WEIGHTS_NAME


def fid_cli(tmp_path: Path, *options: str):
    real, other = write_images(tmp_path / "real"), write_images(tmp_path / "other")
    return CliRunner().invoke(diffaug_main, ["fid", str(real), str(other), "--device", "cpu",
                                             "--dims", "64", "--quiet", *options])


def engines() -> list[str]:
    onnx = all(importlib.util.find_spec(name) for name in ("onnxruntime", "onnx", "onnxscript"))
    return ["torch", "onnxruntime"] if onnx else ["torch"]


@pytest.mark.parametrize("engine", engines())
def test_planted_inception_pickle_with_another_hash_never_runs(fid_home, tmp_path,
                                                               engine) -> None:
    """Attack: a pickle planted at $TORCH_HOME/hub/checkpoints/pt_inception-…-6726825d.pth ran
    code when pytorch-fid loaded it (torch.hub, weights_only=False). Its SHA-256 does not start
    6726825d (a warning, which the CLI leaves out before its one error line); read as tensors
    only, it is refused, file named, exit 1."""
    marker = tmp_path / "code-ran"
    plant_checkpoint(fid_home, marker)
    from diffaug.fid.inception import InceptionWeightsError, load_inception_state_dict

    assert_one_line_error(fid_cli(tmp_path, "--engine", engine), RUNTIME_ERROR,
                          str(fid_home), "other than tensors")
    with pytest.warns(UserWarning, match="SHA-256 starts .*, not 6726825d"), \
            pytest.raises(InceptionWeightsError, match="other than tensors"):
        load_inception_state_dict(fid_home)
    assert not marker.exists()


def test_planted_inception_pickle_with_matching_hash_never_runs(fid_home, tmp_path,
                                                                monkeypatch) -> None:
    """Attack: the same pickle when its hash prefix matches the name (32 bits can be forced):
    torch.load(weights_only=True) refuses it, and the message does not advise weights_only=False."""
    from diffaug.fid import inception

    marker = tmp_path / "code-ran"
    digest = plant_checkpoint(fid_home, marker)
    monkeypatch.setattr(inception, "FID_WEIGHTS_SHA256_PREFIX", digest[:8])
    line = assert_one_line_error(fid_cli(tmp_path, "--engine", "torch"), RUNTIME_ERROR,
                                 str(fid_home), "other than tensors")
    assert "weights_only" not in line
    assert not marker.exists()


def test_inception_weights_download_is_hash_checked(fid_home, tmp_path, monkeypatch) -> None:
    """Failure: the missing-weights download did not check the hash the file name carries."""
    import torch.hub

    calls = []

    def offline(url, dst, hash_prefix=None, progress=True):
        calls.append(hash_prefix)
        raise URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    assert_one_line_error(fid_cli(tmp_path), RUNTIME_ERROR, FID_WEIGHTS_NAME)
    assert calls == ["6726825d"]


# ---- item 2: torchvision's ImageNet checkpoints and --weights PATH -------------------------


@pytest.fixture
def hub_home(tmp_path: Path, monkeypatch) -> Path:
    """An empty TORCH_HOME of this test; returns its checkpoints folder."""
    pytest.importorskip("torchvision")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path / "torch-home" / "hub" / "checkpoints"


@pytest.mark.parametrize(("model", "checkpoint"), [("qmobilenet", "mobilenet_v2-b0353104.pth"),
                                                   ("resnet18", "resnet18-f37072fd.pth")])
def test_planted_imagenet_pickle_with_another_hash_never_runs(hub_home, tmp_path, model,
                                                              checkpoint) -> None:
    """Attack: a pickle planted under torchvision's checkpoint name ran code through
    get_model(weights=...). Its hash is reported, and read as tensors only it is refused, file
    named, nothing run."""
    from qclassify.models import WeightsUnavailableError, build_model

    marker = tmp_path / "code-ran"
    plant_checkpoint(hub_home / checkpoint, marker)
    with pytest.warns(UserWarning, match="SHA-256 starts"), \
            pytest.raises(WeightsUnavailableError, match="not a plain state dict") as caught:
        build_model(model, 2, weights="imagenet")
    assert str(hub_home / checkpoint) in str(caught.value)
    assert not marker.exists()


def test_planted_imagenet_pickle_with_matching_hash_never_runs(hub_home, tmp_path,
                                                               monkeypatch) -> None:
    """Attack: the planted pickle with a matching hash prefix: weights_only=True refuses it in
    one line naming the file (CLI `qclassify fit --weights imagenet`, exit 1)."""
    from qclassify import models
    from qclassify.cli import main as qclassify_main

    marker = tmp_path / "code-ran"
    digest = plant_checkpoint(tmp_path / "payload.pth", marker)
    planted = hub_home / f"mobilenet_v2-{digest[:8]}.pth"
    planted.parent.mkdir(parents=True)
    (tmp_path / "payload.pth").rename(planted)
    url = f"https://download.pytorch.org/models/{planted.name}"
    monkeypatch.setattr(models, "imagenet_weights", lambda name: SimpleNamespace(url=url))
    data = tmp_path / "data"
    for name in ("normal", "stenosis"):
        write_images(data / name, 4)
    result = CliRunner().invoke(qclassify_main, [
        "fit", str(data), "--out", str(tmp_path / "run"), "--weights", "imagenet",
        "--epochs", "1", "--image-size", "32", "--device", "cpu", "--quiet"])
    line = assert_one_line_error(result, RUNTIME_ERROR, str(planted), "not a plain state dict")
    assert "weights_only=False" not in line
    assert not marker.exists()


def test_user_weights_path_with_pickle_never_runs(tmp_path) -> None:
    """Attack: `--weights PATH` naming a planted pickle: refused unread, and the message does
    not repeat torch's advice to load it with weights_only=False."""
    pytest.importorskip("torchvision")
    from qclassify.models import build_model

    marker = tmp_path / "code-ran"
    plant_checkpoint(tmp_path / "model.pt", marker)
    with pytest.raises(ValueError, match="not a plain state dict") as caught:
        build_model("resnet18", 2, weights=tmp_path / "model.pt")
    assert "weights_only=False" not in str(caught.value)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["mobilenet_v2", "densenet121"])
def test_verified_imagenet_checkpoint_loads(hub_home, monkeypatch, name) -> None:
    """Contract: a checkpoint whose hash matches its name loads into the backbone; DenseNet's
    legacy key names ("denselayer1.norm.1.weight") are renamed as torchvision does."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    from qclassify import models

    torch.manual_seed(0)
    state = torchvision.models.get_model(name, weights=None).state_dict()
    # torchvision's DenseNet files name tensors as before its modules were renamed
    saved = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.(weight|bias|running_mean|"
                    r"running_var)$", r"\1.\2.\3", key): value for key, value in state.items()}
    assert name != "densenet121" or any(".norm.1." in key for key in saved)
    path = sha256_named_copy(saved, hub_home, name)
    url = f"https://download.pytorch.org/models/{path.name}"
    monkeypatch.setattr(models, "imagenet_weights", lambda _: SimpleNamespace(url=url))
    model = models.build_model(name, 2, weights="imagenet")
    loaded = model.state_dict()
    for key, value in state.items():
        if not key.startswith("classifier"):  # the replaced head
            torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)


def test_missing_imagenet_checkpoint_downloads_with_hash_check(hub_home, monkeypatch) -> None:
    """Contract: a missing checkpoint is downloaded through torch.hub with the hash prefix of
    its name; offline, one clear error."""
    import torch.hub
    from qclassify.models import WeightsUnavailableError, build_model

    calls = []

    def offline(url, dst, hash_prefix=None, progress=True):
        calls.append((Path(dst), hash_prefix))
        raise URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsUnavailableError, match="--weights none"):
        build_model("mobilenet_v2", 2, weights="imagenet")
    assert calls == [(hub_home / "mobilenet_v2-b0353104.pth", "b0353104")]


# ---- item 14: crafted .npz statistics -------------------------------------------------------


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def write_npz(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(f"{name}.npy", data)
    return path


def declared_only(shape: tuple[int, ...]) -> bytes:
    """A .npy header declaring float64 `shape`, followed by a few bytes of data only."""
    buffer = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + bytes(64)


def good_stats() -> dict[str, bytes]:
    return {"mu": npy_bytes(np.zeros(STATS_DIMS)), "sigma": npy_bytes(np.eye(STATS_DIMS))}


CRAFTED = {
    "scalar mu and sigma": {"mu": npy_bytes(np.float64(1)), "sigma": npy_bytes(np.float64(1))},
    "string arrays": {"mu": npy_bytes(np.array(["a", "b"])),
                      "sigma": npy_bytes(np.array([["a", "b"], ["c", "d"]]))},
    "object arrays": {"mu": npy_bytes(np.array([1, None], dtype=object)),
                      "sigma": npy_bytes(np.eye(2))},
    "missing sigma": {"mu": npy_bytes(np.zeros(STATS_DIMS))},
    "sigma of another size": {"mu": npy_bytes(np.zeros(3)), "sigma": npy_bytes(np.eye(4))},
    "declared 200000² sigma": {"mu": declared_only((200_000,)),
                               "sigma": declared_only((200_000, 200_000))},
    "truncated arrays": {"mu": declared_only((STATS_DIMS,)),
                         "sigma": declared_only((STATS_DIMS, STATS_DIMS))},
    "NaN statistics": {"mu": npy_bytes(np.full(STATS_DIMS, np.nan)),
                       "sigma": npy_bytes(np.full((STATS_DIMS, STATS_DIMS), np.nan))},
    "infinite sigma": {"mu": npy_bytes(np.zeros(STATS_DIMS)),
                       "sigma": npy_bytes(np.full((STATS_DIMS, STATS_DIMS), np.inf))},
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted_statistics_are_one_line_naming_the_file(tmp_path, case) -> None:
    """Crafted .npz (scalars, strings, objects, missing or misshapen arrays, a 298 GiB
    declared sigma, truncated data, NaN/inf) gave IndexError, MemoryError or LinAlgError
    tracebacks: now one usage-error line naming the file, decided from the headers before any
    array is allocated."""
    bad = write_npz(tmp_path / "bad.npz", CRAFTED[case])
    good = write_npz(tmp_path / "good.npz", good_stats())
    with pytest.raises(ValueError, match="bad.npz"):
        FeatureStatistics.load(bad)
    result = CliRunner().invoke(diffaug_main, ["fid", str(bad), str(good)],
                                catch_exceptions=False)
    assert_one_line_error(result, USAGE_ERROR, str(bad))


def test_statistics_that_are_not_a_zip_file(tmp_path) -> None:
    """Crafted: a .npz that is not a zip archive gave a BadZipFile traceback."""
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip archive")
    result = CliRunner().invoke(diffaug_main, ["fid", str(bad), str(bad)],
                                catch_exceptions=False)
    assert_one_line_error(result, USAGE_ERROR, str(bad))


def test_statistics_too_large_to_be_inception_features(tmp_path) -> None:
    """Failure: finite statistics whose values overflow float64 in FID's products ended in
    "Eigenvalues did not converge" naming nothing; now the line names both inputs."""
    huge_sigma = npy_bytes(np.eye(STATS_DIMS) * 1e200)
    first = write_npz(tmp_path / "first.npz", {"mu": npy_bytes(np.zeros(STATS_DIMS)),
                                               "sigma": huge_sigma})
    second = write_npz(tmp_path / "second.npz", {"mu": npy_bytes(np.ones(STATS_DIMS)),
                                                 "sigma": huge_sigma})
    result = CliRunner().invoke(diffaug_main, ["fid", str(first), str(second)],
                                catch_exceptions=False)
    assert_one_line_error(result, USAGE_ERROR, str(first), str(second))


def test_largest_pytorch_fid_statistics_still_load(tmp_path) -> None:
    """Contract: the size limit admits pytorch-fid's 2048-dimensional statistics."""
    dims = MAX_STATISTICS_DIMS
    path = write_npz(tmp_path / "pool3.npz", {"mu": npy_bytes(np.zeros(dims, np.float32)),
                                              "sigma": npy_bytes(np.eye(dims, dtype=np.float32))})
    stats = FeatureStatistics.load(path)
    assert stats.mu.shape == (dims,) and stats.sigma.dtype == np.float64


# ---- item 15: --timesteps -------------------------------------------------------------------


def test_timesteps_beyond_ddpm_are_a_usage_error(tmp_path) -> None:
    """Failure: --timesteps 1e8 ran for minutes before any output. Above DDPM's 1000 it is
    now one usage-error line naming the option; nothing is written."""
    data = tmp_path / "in"
    write_images(data / "normal", 3)
    write_images(data / "stenosis", 1)
    out = tmp_path / "out"
    for too_many in (MAX_CLI_TIMESTEPS + 1, 100_000_000, 0):
        result = CliRunner().invoke(diffaug_main, [
            "balance", str(data), str(out), "--ratio", "1", "--timesteps", str(too_many)],
            catch_exceptions=False)
        assert_one_line_error(result, USAGE_ERROR, "--timesteps", str(MAX_CLI_TIMESTEPS))
    assert not out.exists()
    result = CliRunner().invoke(diffaug_main, [
        "balance", str(data), str(out), "--ratio", "1", "--timesteps", str(MAX_CLI_TIMESTEPS),
        "--dry-run"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
