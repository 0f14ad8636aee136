"""The augmenter: eq. 1 then eq. 4 (blur sigma = 0.5 px std dev, then brightness on intensities).

Contract suite: ``check_augmenter`` runs every augmentation path (``__call__``, ``apply``,
``fit_resample``, ``balance_folder``) over every supported image kind. Analytic oracles pin
down the post-processing order, the meaning of sigma and of gamma; a same-seed rederivation
recomputes a whole augmentation with numpy and scipy from the documented draws.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from diffaug import DiffusionAugmentor, NoiseSchedule, balance_folder
from diffaug.augment import plan_samples
from diffaug.io import read_manifest
from diffaug.modes import SIXTEEN_BIT_MODES
from PIL import Image
from scipy.ndimage import gaussian_filter

PIXEL_ATOL = 1  # one grey level: rounding may differ where two float paths differ by 1 ulp
MAX_MEAN_CHANGE = 0.15  # T = 5 noise (std <= 0.22 on [-1, 1]) blurred, gamma within 10 %
NO_NOISE = NoiseSchedule.linear(timesteps=2, beta_start=0.0, beta_end=0.0)  # abar = 1


def _image(kind: str, seed: int = 0) -> Image.Image | np.ndarray:
    rng = np.random.default_rng(seed)
    values = np.clip(np.linspace(0.2, 0.8, 12)[None, :, None]
                     + 0.1 * rng.standard_normal((12, 12, 4)), 0, 1)
    arrays = {
        "L": lambda: Image.fromarray(np.rint(values[..., 0] * 255).astype(np.uint8)),
        "LA": lambda: Image.fromarray(np.rint(values[..., :2] * 255).astype(np.uint8)),
        "RGB": lambda: Image.fromarray(np.rint(values[..., :3] * 255).astype(np.uint8)),
        "RGBA": lambda: Image.fromarray(np.rint(values * 255).astype(np.uint8)),
        "I;16": lambda: Image.fromarray(np.rint(values[..., 0] * 65535).astype(np.uint16)),
        "uint8 (H, W)": lambda: np.rint(values[..., 0] * 255).astype(np.uint8),
        "uint8 (H, W, 3)": lambda: np.rint(values[..., :3] * 255).astype(np.uint8),
        "uint16 (H, W)": lambda: np.rint(values[..., 0] * 65535).astype(np.uint16),
        "float32 (H, W)": lambda: values[..., 0].astype(np.float32),
        "float64 (H, W, 1)": lambda: values[..., :1].copy(),
        "int16 (H, W)": lambda: np.rint(values[..., 0] * 65535 - 32768).astype(np.int16),
        "uint8 (C, H, W)": lambda: _channels_first(np.rint(values[..., :3] * 255), np.uint8),
        "float32 (C, H, W)": lambda: _channels_first(values[..., :2], np.float32),
    }
    if kind in TENSOR_KINDS:
        return _tensor(kind, arrays)
    return arrays[kind]()


def _channels_first(values: np.ndarray, dtype: type) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(values, -1, 0).astype(dtype))


def _tensor(kind: str, arrays: dict[str, Callable[[], np.ndarray]]):
    """Tensor kinds, importing torch (and MONAI, torchvision) only for the tests that use them."""
    torch = pytest.importorskip("torch")
    if kind == "torch float32 (C, H, W)":
        return torch.from_numpy(arrays["float32 (C, H, W)"]())
    if kind == "torch uint8 (H, W)":
        return torch.from_numpy(arrays["uint8 (H, W)"]())
    if kind == "MetaTensor float32 (1, H, W)":
        meta_tensor = pytest.importorskip("monai.data").MetaTensor
        return meta_tensor(torch.from_numpy(arrays["float32 (H, W)"]()[None]),
                           affine=torch.diag(torch.tensor([2.0, 2.0, 1.0, 1.0])))
    tv_tensors = pytest.importorskip("torchvision.tv_tensors")
    return tv_tensors.Image(torch.from_numpy(arrays["uint8 (C, H, W)"]()))


PIL_KINDS = ["L", "LA", "RGB", "RGBA", "I;16"]
ARRAY_KINDS = ["uint8 (H, W)", "uint8 (H, W, 3)", "uint16 (H, W)", "float32 (H, W)",
               "float64 (H, W, 1)", "int16 (H, W)", "uint8 (C, H, W)", "float32 (C, H, W)"]
TENSOR_KINDS = ["torch float32 (C, H, W)", "torch uint8 (H, W)", "MetaTensor float32 (1, H, W)",
                "tv_tensors.Image uint8 (3, H, W)"]


def _as_array(image) -> np.ndarray:
    return np.asarray(image)


def _intensities(image) -> np.ndarray:
    array = _as_array(image)
    if isinstance(image, Image.Image):
        return array.astype(np.float64) / (65535 if image.mode == "I;16" else 255)
    if array.dtype.kind == "f":
        return array.astype(np.float64)
    info = np.iinfo(array.dtype)  # the dtype's full range is the intensity scale
    return (array.astype(np.float64) - info.min) / (info.max - info.min)


def check_augmenter(make_path: Callable[[int], Callable], image) -> None:
    """Contract every augmentation path honours, for one input image.

    ``make_path(seed)`` returns a callable image -> synthetic image using that seed.
    """
    before = _as_array(image).copy()
    out = make_path(0)(image)
    assert type(out) is type(image)
    if isinstance(image, Image.Image):
        assert (out.mode, out.size) == (image.mode, image.size)
        if image.mode in ("LA", "RGBA"):  # alpha passes through untouched
            np.testing.assert_array_equal(_as_array(out)[..., -1], before[..., -1])
    else:
        assert (out.dtype, out.shape) == (image.dtype, image.shape)
        if _as_array(out).dtype.kind == "f":
            assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_array_equal(_as_array(image), before)  # input not modified
    np.testing.assert_array_equal(_as_array(make_path(0)(image)), _as_array(out))  # same seed
    assert not np.array_equal(_as_array(make_path(1)(image)), _as_array(out))  # seed matters
    assert not np.array_equal(_as_array(out), before)  # it is a new image...
    change = np.abs(_intensities(out) - _intensities(image)).mean()
    assert change < MAX_MEAN_CHANGE  # ...close to its source


def _call_path(seed: int) -> Callable:
    return DiffusionAugmentor(seed=seed)


def _apply_path(seed: int) -> Callable:
    def augment(image):
        augmentor = DiffusionAugmentor(seed=seed)
        return augmentor.apply(image, **augmentor.sample_parameters(image)._asdict())
    return augment


def _fit_resample_path(seed: int) -> Callable:
    def augment(image):
        X = np.stack([np.asarray(image)] * 4)
        X_res, _ = DiffusionAugmentor(seed=seed).fit_resample(X, [1, 0, 0, 0], ratio=0.5)
        return X_res[-1]
    return augment


def _balance_folder_path(tmp_path: Path) -> Callable:
    def make_path(seed: int) -> Callable:
        def augment(image):
            root = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
            for name, copies in (("major", 3), ("minor", 1)):
                (root / "in" / name).mkdir(parents=True)
                for index in range(copies):
                    image.save(root / "in" / name / f"img_{index}.png")
            balance_folder(root / "in", root / "out", ratio=0.5, seed=seed)
            (row,) = read_manifest(root / "out" / "diffaug-manifest.csv")
            with Image.open(root / "out" / row.path) as synthetic:
                return synthetic.copy()
        return augment
    return make_path


@pytest.mark.parametrize("kind", PIL_KINDS + ARRAY_KINDS + TENSOR_KINDS)
@pytest.mark.parametrize("make_path", [_call_path, _apply_path], ids=["call", "apply"])
def test_contract_call_and_apply(kind, make_path):
    """Contract suite: the direct paths on every supported PIL mode, array and tensor kind
    (channel-first arrays, int16 and tensors were refused or misread as channel-last)."""
    check_augmenter(make_path, _image(kind))


@pytest.mark.parametrize("kind", ["L", "RGB", "I;16"] + ARRAY_KINDS)
def test_contract_fit_resample(kind):
    """Contract suite: a synthetic row of fit_resample."""
    image = _image(kind)
    check_augmenter(_fit_resample_path, np.asarray(image) if isinstance(image, Image.Image)
                    else image)


@pytest.mark.parametrize("kind", ["L", "RGB", "RGBA", "I;16"])
def test_contract_balance_folder(kind, tmp_path):
    """Contract suite: a synthetic file written by balance_folder (PNG round trip)."""
    check_augmenter(_balance_folder_path(tmp_path), _image(kind))


def test_same_seed_rederivation():
    """Same-seed rederivation: draws in the documented order, then eqs. 1 and 4 by hand."""
    image = _image("L")
    out = np.asarray(DiffusionAugmentor(seed=11)(image)).astype(int)
    rng = np.random.default_rng(11)
    t, gamma = rng.integers(5), rng.uniform(0.9, 1.1)
    noise = rng.standard_normal((12, 12), dtype=np.float32)
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 5))[t]
    x0 = np.asarray(image) / 255 * 2 - 1
    x_t = np.sqrt(abar) * x0 + np.sqrt(1 - abar) * noise
    expected = np.rint(np.clip((gaussian_filter(x_t, 0.5) + 1) / 2 * gamma, 0, 1) * 255)
    np.testing.assert_allclose(out, expected, rtol=0, atol=PIXEL_ATOL)
    assert np.mean(out == expected) > 0.95


def test_brightness_multiplies_intensities_after_blur():
    """Analytic oracle: a flat grey 128 with no noise and gamma 1.1 becomes round(128 * 1.1)."""
    augmentor = DiffusionAugmentor(schedule=NO_NOISE)
    flat = Image.fromarray(np.full((8, 8), 128, np.uint8))
    out = augmentor.apply(flat, t=1, gamma=1.1, noise=np.ones((8, 8)))
    np.testing.assert_array_equal(np.asarray(out), np.full((8, 8), round(128 * 1.1)))
    bright = augmentor.apply(flat, t=1, gamma=3.0, noise=np.zeros((8, 8)))
    np.testing.assert_array_equal(np.asarray(bright), 255)  # clipped to the valid range


def test_blur_sigma_is_a_standard_deviation_in_pixels():
    """Analytic oracle: a 16-bit impulse spreads as a sampled Gaussian, neighbour/centre = e^-2."""
    impulse = np.zeros((9, 9), np.uint16)
    impulse[4, 4] = 65535
    out = DiffusionAugmentor(schedule=NO_NOISE, blur_sigma=0.5).apply(
        Image.fromarray(impulse), t=0, gamma=1.0, noise=np.zeros((9, 9)))
    values = np.asarray(out).astype(np.float64)
    np.testing.assert_allclose(values[4, 5] / values[4, 4], np.exp(-1 / (2 * 0.5**2)), rtol=1e-3)
    np.testing.assert_allclose(values[3, 3] / values[4, 4], np.exp(-2 / (2 * 0.5**2)), rtol=2e-2)


def test_blur_does_not_mix_colour_channels():
    """Analytic oracle: flat R, G, B planes stay flat and distinct (blur is spatial only)."""
    planes = np.zeros((6, 6, 3), np.uint8) + np.array([10, 128, 250], np.uint8)
    out = DiffusionAugmentor(schedule=NO_NOISE).apply(Image.fromarray(planes), t=0,
                                                          gamma=1.0, noise=np.zeros((6, 6, 3)))
    np.testing.assert_array_equal(np.asarray(out), planes)


def test_noise_grows_with_t_through_the_augmenter():
    """Analytic oracle: with the same eps, the distance to the source grows with t."""
    augmentor = DiffusionAugmentor(blur_sigma=0.0)
    image = _image("I;16")
    noise = np.random.default_rng(0).standard_normal((12, 12))
    changes = [np.abs(_intensities(augmentor.apply(image, t=t, gamma=1.0, noise=noise))
                      - _intensities(image)).mean() for t in range(5)]
    assert all(later > earlier for earlier, later in zip(changes, changes[1:], strict=False))


@pytest.mark.parametrize("mode", SIXTEEN_BIT_MODES)
def test_every_sixteen_bit_mode_augments_like_i16(mode):
    """Reference implementation (the I;16 path): every mode diffaug.modes calls 16-bit, mode I
    with values in 0..65535 included (older Pillow opens 16-bit PNGs as I), gives the I;16
    result's values for the same pixels and seed, in its own mode."""
    reference = _image("I;16")
    values = np.asarray(reference)
    dtype = np.asarray(Image.new(mode, (1, 1))).dtype
    image = Image.frombytes(mode, reference.size, values.astype(dtype).tobytes())
    out = DiffusionAugmentor(seed=3)(image)
    assert out.mode == mode
    np.testing.assert_array_equal(np.asarray(out).astype(np.int64),
                                  np.asarray(DiffusionAugmentor(seed=3)(reference)))


def test_sixteen_bit_keeps_sixteen_bit_precision():
    """Contract: 16-bit output uses the full 16-bit scale, not 8-bit steps."""
    out = np.asarray(DiffusionAugmentor(seed=0)(_image("I;16")))
    assert out.dtype == np.uint16
    assert np.any(out % 257 != 0)


def test_draws_follow_the_schedule():
    """Contract: t ~ U{0..T-1}, gamma ~ U(brightness), noise per channel."""
    augmentor = DiffusionAugmentor(schedule=NoiseSchedule.linear(timesteps=3),
                                   brightness=(0.5, 0.6), seed=0)
    draws = [augmentor.sample_parameters(_image("RGBA")) for _ in range(200)]
    assert {d.t for d in draws} == {0, 1, 2}
    assert all(0.5 <= d.gamma <= 0.6 for d in draws)
    assert draws[0].noise.shape == (12, 12, 3)


def test_fit_resample_like_imbalanced_learn():
    """Contract + same-seed rederivation: originals first and unchanged, then synthetic rows,
    each equal to DiffusionAugmentor(seed=its own seed) applied to its source row."""
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (13, 6, 6), dtype=np.uint8)
    y = np.array(["b"] * 3 + ["a"] * 8 + ["c"] * 2)
    augmentor = DiffusionAugmentor(seed=5)
    X_res, y_res = augmentor.fit_resample(X, y, ratio=0.75)
    assert augmentor.sampling_strategy_ == {"a": 0, "b": 3, "c": 4}
    assert len(X_res) == len(y_res) == len(augmentor.sample_indices_) == 13 + 7
    np.testing.assert_array_equal(X_res[:13], X)
    np.testing.assert_array_equal(y_res[:13], y)
    np.testing.assert_array_equal(augmentor.sample_indices_[:13], np.arange(13))
    np.testing.assert_array_equal(y_res, y[augmentor.sample_indices_])
    synthetic_rows = iter(range(13, 20))
    for class_index, label in enumerate(["a", "b", "c"]):
        rows = np.flatnonzero(y == label)
        for sample in plan_samples(5, class_index, len(rows), augmentor.sampling_strategy_[label]):
            row = next(synthetic_rows)
            assert augmentor.sample_indices_[row] == rows[sample.source_index]
            expected = DiffusionAugmentor(seed=sample.seed)(X[rows[sample.source_index]])
            np.testing.assert_array_equal(X_res[row], expected)
    X_again, _ = DiffusionAugmentor(seed=5).fit_resample(X, y, ratio=0.75)
    np.testing.assert_array_equal(X_again, X_res)


def test_fit_resample_without_seed_still_runs():
    """Contract: seed=None draws a fresh run seed; shapes still follow eq. 3."""
    X = np.zeros((5, 4, 4), np.float32)
    X_res, y_res = DiffusionAugmentor().fit_resample(X, [0, 0, 0, 0, 1], ratio=1)
    assert X_res.shape == (8, 4, 4) and X_res.dtype == np.float32
    assert np.bincount(y_res).tolist() == [4, 4]


@pytest.mark.parametrize(("X", "y", "message"), [
    (np.zeros((3, 4, 4)), [0, 0, 0], "at least 2 classes"),
    (np.zeros((3, 4, 4)), [0, 1], r"\(N,\)"),
    (np.zeros((3, 4)), [0, 1, 1], r"\(N, H, W"),
])
def test_fit_resample_rejects_bad_input(X, y, message):
    """Contract: unusable X/y raise a ValueError saying what is expected."""
    with pytest.raises(ValueError, match=message):
        DiffusionAugmentor(seed=0).fit_resample(X, y, ratio=0.5)


@pytest.mark.parametrize(("image", "error", "message"), [
    (Image.new("P", (4, 4)), ValueError, "unsupported image mode 'P'"),
    (Image.new("I", (4, 4), 65536), ValueError, r"mode 'I' values 65536..65536 do not fit"),
    (Image.new("I", (4, 4), -1), ValueError, r"mode 'I' values -1..-1 do not fit"),
    (Image.new("F", (4, 4)), ValueError, "unsupported image mode 'F'"),
    (Image.new("CMYK", (4, 4)), ValueError, "unsupported image mode 'CMYK'"),
    (Image.new("1", (4, 4)), ValueError, "unsupported image mode '1'"),
    (np.zeros((4, 4), np.int32), ValueError, "uint8, uint16 or float"),
    (np.zeros((2, 4, 4, 1), np.uint8), ValueError, r"\(H, W\)"),
    ([[0, 1], [1, 0]], TypeError, "PIL image or a numpy array"),
])
def test_unsupported_images_are_refused(image, error, message):
    """Contract: unsupported modes and dtypes raise with a hint, never a silent conversion."""
    with pytest.raises(error, match=message):
        DiffusionAugmentor(seed=0)(image)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"brightness": (1.1, 0.9)}, "brightness"),
    ({"brightness": (0.0, 1.0)}, "brightness"),
    ({"blur_sigma": -1.0}, "blur_sigma"),
    ({"seed": -3}, "seed"),
    ({"seed": 1.5}, "seed"),
])
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # seed= is a deprecated alias
def test_options_are_validated_at_use(kwargs, message):
    """Contract: bad options raise a ValueError naming the option at first use (the
    constructor only stores them, as scikit-learn requires for clone and set_params)."""
    augmentor = DiffusionAugmentor(**kwargs)
    with pytest.raises(ValueError, match=message):
        augmentor(_image("L"))


def test_constructor_is_keyword_only():
    """Contract: imbalanced-learn style keyword-only constructor."""
    with pytest.raises(TypeError):
        DiffusionAugmentor(NoiseSchedule.linear())  # type: ignore[misc]
