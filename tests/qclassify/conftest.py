"""Shared fixtures: tiny generated image-folder datasets and one tiny trained run.

`make_image_folder` is a plain function (also handed out by the `make_images` fixture) so other
test folders can build the same datasets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

DEFAULT_COUNTS = {"normal": 12, "stenosis": 6}
TINY_SIZE = 32  # the backbones' minimum input size: the cheapest image that trains
SPLIT_SHARE = 0.2  # split layout: this share of each class (at least one image) in val and test


def synthetic_picture(rng: np.random.Generator, class_index: int, size: int) -> np.ndarray:
    """A (size, size, 3) float picture in [0, 1]: a centred disc whose radius and brightness
    grow with the class index, on a noisy background, so classes are learnable."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    radius = size * (0.15 + 0.12 * class_index)
    disc = (np.hypot(yy, xx) < radius) * (0.4 + 0.2 * class_index)
    tint = np.array([1.0, 0.9, 0.8])
    picture = (0.2 + disc)[..., None] * tint + 0.05 * rng.standard_normal((size, size, 3))
    return np.clip(picture, 0.0, 1.0)


def to_pil(picture: np.ndarray, mode: str) -> Image.Image:
    """Encode a float picture in [0, 1] in one PIL mode (L, RGB, RGBA, P, LA or I;16)."""
    gray = picture.mean(axis=2)
    if mode == "I;16":
        return Image.fromarray(np.rint(gray * 65535).astype(np.uint16))
    rgb = Image.fromarray(np.rint(picture * 255).astype(np.uint8))
    if mode == "P":
        return rgb.quantize(colors=64, dither=Image.Dither.NONE)
    if mode in ("L", "LA"):
        return Image.fromarray(np.rint(gray * 255).astype(np.uint8)).convert(mode)
    return rgb.convert(mode)


def make_image_folder(
    root: str | Path,
    counts: Mapping[str, int] = DEFAULT_COUNTS,
    size: int = TINY_SIZE,
    mode: str = "L",
    layout: str = "flat",
    seed: int = 0,
) -> Path:
    """Write a small PNG dataset and return `root`.

    ``layout="flat"``: ``root/<class>/<class>_<i>.png`` with ``counts[class]`` images.
    ``layout="split"``: the same images spread over ``root/train|val|test/<class>/``, with 20%
    of each class (at least one) in val and in test.
    """
    if layout not in ("flat", "split"):
        raise ValueError(f"layout must be 'flat' or 'split'; got {layout!r}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    for class_index, (class_name, count) in enumerate(sorted(counts.items())):
        held_out = max(1, round(SPLIT_SHARE * count))
        for i in range(count):
            split = "test" if i < held_out else "val" if i < 2 * held_out else "train"
            folder = root / class_name if layout == "flat" else root / split / class_name
            folder.mkdir(parents=True, exist_ok=True)
            picture = synthetic_picture(rng, class_index, size)
            to_pil(picture, mode).save(folder / f"{class_name}_{i:03d}.png")
    return root


@pytest.fixture
def make_images() -> Callable[..., Path]:
    """The `make_image_folder` function."""
    return make_image_folder


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """A flat two-class folder: 12 normal, 6 stenosis, 32 px grayscale."""
    return make_image_folder(tmp_path / "data")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run folder, data folder) of a 2-epoch qmobilenet fit at 32 px; treat it as read-only
    (copy it before evaluating into it)."""
    pytest.importorskip("torch")
    from qclassify.config import TrainConfig
    from qclassify.train import fit

    base = tmp_path_factory.mktemp("trained")
    data = make_image_folder(base / "data")
    config = TrainConfig(model="qmobilenet", epochs=2, batch_size=4, image_size=TINY_SIZE,
                         weights="none", device="cpu")
    fit(data, base / "run", config, progress=False)
    return base / "run", data
