"""Shared fixtures: small image folders built in tmp_path (tests never read shared data)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

IMAGE_SIZE = 12  # pixels per side: enough for a 0.5 px blur, small enough to stay fast


def random_image(rng: np.random.Generator, mode: str = "L", size: int = IMAGE_SIZE) -> Image.Image:
    """A smooth-plus-noise test image of the given PIL mode (L, LA, RGB, RGBA or I;16)."""
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "I;16": 1}[mode]
    dtype, top = (np.uint16, 65535) if mode == "I;16" else (np.uint8, 255)
    ramp = np.linspace(0.2, 0.8, size)[None, :, None]
    values = np.clip(ramp + 0.1 * rng.standard_normal((size, size, channels)), 0, 1)
    array = np.rint(values * top).astype(dtype)
    return Image.fromarray(array[..., 0] if channels == 1 else array)


def write_class_folders(root: Path, counts: dict[str, int], *, mode: str = "L",
                        suffix: str = ".png", seed: int = 0) -> Path:
    """``root/<class>/img_<i>.<suffix>`` with ``counts[class]`` images each; returns root."""
    rng = np.random.default_rng(seed)
    for name, count in counts.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            random_image(rng, mode).save(folder / f"img_{index:03d}{suffix}")
    return root


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root`` with its bytes and modification time."""
    return {path.relative_to(root).as_posix(): (path.read_bytes(), path.stat().st_mtime_ns)
            for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(name="snapshot")
def snapshot_fixture() -> Callable[[Path], dict[str, tuple[bytes, int]]]:
    """:func:`snapshot`, for tests that check a folder was not written."""
    return snapshot


@pytest.fixture
def save_image() -> Callable[..., None]:
    """``save_image(path, seed=0, mode="L")`` writes a small random image (parents created)."""

    def save(path: Path, seed: int = 0, mode: str = "L") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        random_image(np.random.default_rng(seed), mode).save(path)

    return save


@pytest.fixture
def class_folders(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``class_folders({"normal": 6, "stenosis": 2}, mode="L")`` -> IN folder."""

    def make(counts: dict[str, int], name: str = "in", **kwargs) -> Path:
        return write_class_folders(tmp_path / name, counts, **kwargs)

    return make


@pytest.fixture
def split_folders(tmp_path: Path) -> Path:
    """IN/train (imbalanced), IN/val and IN/test (small, also imbalanced)."""
    root = tmp_path / "in"
    write_class_folders(root / "train", {"normal": 8, "stenosis": 3}, seed=1)
    write_class_folders(root / "val", {"normal": 2, "stenosis": 1}, seed=2)
    write_class_folders(root / "test", {"normal": 2, "stenosis": 1}, seed=3)
    return root


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One diffaug cache folder for the whole session (exports are reused between tests)."""
    return tmp_path_factory.mktemp("diffaug-cache")


@pytest.fixture(autouse=True)
def _private_onnx_cache(onnx_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never write ONNX exports into the user's ~/.cache/diffaug."""
    monkeypatch.setenv("DIFFAUG_CACHE", str(onnx_cache))
