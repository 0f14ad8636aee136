"""Channel axes, intensity ranges and array kinds (numpy, array-likes, tensors, MONAI).

Same-seed rederivations relate each new input kind to one the contract suite already pins
down (a channel-first array to its channel-last transpose, int16 to uint16, a Hounsfield-unit
float image to its [0, 1] rescaling). torch, MONAI and torchvision are imported only by the
tests that need them.
"""

from __future__ import annotations

import numpy as np
import pytest
from diffaug import DiffusionAugmentor
from PIL import Image

HU_RANGE = (-1024.0, 3071.0)  # CT in Hounsfield units
FLOAT32_ATOL = 1e-6  # relative to the intensity range: float32 rounding of the rescaling


def _hwc(channels: int = 3, dtype: type = np.uint8, seed: int = 0) -> np.ndarray:
    values = np.random.default_rng(seed).uniform(0.2, 0.8, (12, 12, channels))
    return (values * 255).astype(dtype) if dtype == np.uint8 else values.astype(dtype)


def _chw(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(image, -1, 0))


def test_channel_first_array_is_augmented_like_its_transpose():
    """Failure reproduced: a MONAI-style (C, H, W) array was read as (H, W, C), blurred along
    the channel and one spatial axis. Now it equals the (H, W, C) result, transposed."""
    image = _hwc()
    out = DiffusionAugmentor(random_state=4)(_chw(image))
    assert out.shape == (3, 12, 12)
    np.testing.assert_array_equal(out, _chw(DiffusionAugmentor(random_state=4)(image)))


def test_explicit_channel_axis_decides_an_ambiguous_shape():
    """Contract: channel_axis=0 or -1 reads a (4, 12, 4) array either way."""
    image = _hwc(4)[:4]  # (4, 12, 4): both end axes could hold the channels
    as_first = DiffusionAugmentor(random_state=1, channel_axis=0)(image)
    as_last = DiffusionAugmentor(random_state=1, channel_axis=-1)(image)
    np.testing.assert_array_equal(
        as_first, _chw(DiffusionAugmentor(random_state=1)(np.moveaxis(image, 0, -1))))
    assert not np.array_equal(as_first, as_last)


@pytest.mark.parametrize(("shape", "channel_axis", "message"), [
    ((3, 4, 4), None, "channel_axis=0 for"),  # both end axes are small
    ((12, 12, 12), None, "channel_axis=0 for"),  # neither is
    ((12, 12), 0, "no channel axis"),
    ((3, 12, 12), 3, "channel_axis must be 0, 1, 2"),
    ((2, 3, 12, 12), None, r"\(H, W\), \(H, W, C\) or \(C, H, W\)"),
])
def test_ambiguous_or_impossible_shapes_are_refused(shape, channel_axis, message):
    """Contract: shapes the augmenter cannot read raise, saying which channel_axis to pass."""
    with pytest.raises(ValueError, match=message):
        DiffusionAugmentor(random_state=0, channel_axis=channel_axis)(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("channel_axis", [1.0, True, "last"])
def test_channel_axis_must_be_an_integer(channel_axis):
    """Contract: a channel_axis that is not an integer raises, naming the option."""
    with pytest.raises(ValueError, match="channel_axis must be an integer"):
        DiffusionAugmentor(channel_axis=channel_axis)(_hwc())


def test_fit_resample_reads_n_c_h_w_batches():
    """Failure reproduced: (N, C, H, W) batches were read as (N, H, W, C). Now they give the
    (N, H, W, C) result, transposed."""
    X = np.stack([_hwc(seed=seed) for seed in range(5)])
    y = np.array([0, 0, 0, 0, 1])
    X_res, y_res = DiffusionAugmentor(random_state=2).fit_resample(X, y)
    X_first, y_first = DiffusionAugmentor(random_state=2).fit_resample(
        np.ascontiguousarray(np.moveaxis(X, -1, 1)), y)
    np.testing.assert_array_equal(X_first, np.moveaxis(X_res, -1, 1))
    np.testing.assert_array_equal(y_first, y_res)


def test_float_outside_unit_range_is_refused_not_clipped():
    """Failure reproduced: float images in Hounsfield units were clipped to 1.0 without a word.
    Now they raise, suggesting intensity_range."""
    image = np.linspace(*HU_RANGE, 144, dtype=np.float32).reshape(12, 12)
    with pytest.raises(ValueError, match=r"intensity_range=\(low, high\)"):
        DiffusionAugmentor(random_state=0)(image)
    with pytest.raises(ValueError, match="outside"):
        DiffusionAugmentor(random_state=0)(np.full((4, 4), np.nan, np.float32))


def test_intensity_range_rescales_like_unit_floats():
    """Same-seed rederivation: with intensity_range=(lo, hi), an image equals the [0, 1]
    result of (v - lo) / (hi - lo), mapped back to [lo, hi]."""
    low, high = HU_RANGE
    image = np.linspace(low + 24, high - 71, 144, dtype=np.float32).reshape(12, 12)
    out = DiffusionAugmentor(random_state=5, intensity_range=HU_RANGE)(image)
    unit = DiffusionAugmentor(random_state=5)((image - low) / (high - low))
    assert out.dtype == np.float32 and low <= out.min() and out.max() <= high
    np.testing.assert_allclose((out - low) / (high - low), unit, rtol=0, atol=FLOAT32_ATOL)
    with pytest.raises(ValueError, match="outside intensity_range"):
        DiffusionAugmentor(intensity_range=(0, 1000))(image)


def test_int16_uses_its_full_range_like_uint16():
    """Same-seed rederivation: int16 (refused before) maps [-32768, 32767] as uint16 maps
    [0, 65535], so its result is the uint16 result shifted by 32768, exactly."""
    unsigned = (_hwc(1, np.float64)[..., 0] * 65535).astype(np.uint16)
    signed = (unsigned.astype(np.int32) - 32768).astype(np.int16)
    out = DiffusionAugmentor(random_state=6)(signed)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out.astype(np.int32) + 32768,
                                  DiffusionAugmentor(random_state=6)(unsigned))


def test_twelve_bit_data_in_uint16_keeps_its_range():
    """Contract: raw 12-bit values in uint16 (or a 16-bit PNG) with intensity_range=(0, 4095)
    stay 12-bit; without it they are 16-bit intensities, 1/16 as bright."""
    raw = (_hwc(1, np.float64)[..., 0] * 4095).astype(np.uint16)
    for image in (raw, Image.fromarray(raw)):
        out = np.asarray(DiffusionAugmentor(random_state=0, intensity_range=(0, 4095))(image))
        assert out.max() <= 4095
        assert abs(out.mean() - raw.mean()) < 0.15 * 4095


@pytest.mark.parametrize(("image", "intensity_range", "message"), [
    (np.zeros((4, 4), np.uint8), (0, 1000), "does not fit uint8"),
    (Image.new("L", (4, 4)), (-1, 255), "does not fit"),
    (np.zeros((4, 4), np.uint8), (5, 5), "low < high"),
    (np.zeros((4, 4), np.uint8), (0, float("inf")), "low < high"),
    (np.zeros((4, 4), np.uint8), 255, "low < high"),
    (np.zeros((4, 4), bool), (0, 1), "got dtype bool"),
])
def test_bad_intensity_ranges_are_refused(image, intensity_range, message):
    """Contract: ranges the dtype cannot hold, or that are not (low < high), raise."""
    with pytest.raises(ValueError, match=message):
        DiffusionAugmentor(intensity_range=intensity_range)(image)


def test_wide_integers_need_an_explicit_range():
    """Contract: int32 data (whose full range float32 cannot resolve) needs intensity_range."""
    image = np.arange(144, dtype=np.int32).reshape(12, 12) - 50
    out = DiffusionAugmentor(random_state=0, intensity_range=(-100, 200))(image)
    assert out.dtype == np.int32 and out.min() >= -100 and out.max() <= 200


@pytest.mark.parametrize(("sample", "hint"), [
    ((np.zeros((4, 4), np.uint8), 1), r"aug\(sample\[0\]\)"),
    ({"image": np.zeros((4, 4), np.uint8), "label": 1}, "Lambdad"),
])
def test_samples_are_refused_with_a_hint(sample, hint):
    """Failure reproduced: (image, label) and dict samples were refused without saying how to
    apply the augmenter; the TypeError now shows how."""
    with pytest.raises(TypeError, match=hint):
        DiffusionAugmentor()(sample)


class _ArrayOnly:
    """An array-like known only through __array__ (like many wrappers)."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self.values


class _Namespace:
    """A minimal array API namespace: asarray wraps numpy results in _DLPackArray."""

    @staticmethod
    def asarray(values: np.ndarray) -> _DLPackArray:
        return _DLPackArray(values)


class _DLPackArray:
    """An array-like known only through __dlpack__ and __array_namespace__ (JAX, CuPy style)."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def __dlpack__(self, **kwargs):
        return self.values.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.values.__dlpack_device__()

    def __array_namespace__(self, api_version=None) -> type[_Namespace]:
        return _Namespace


def test_array_likes_are_read_through_array_and_dlpack():
    """Contract: __array__ objects come back as numpy; __dlpack__ objects with an array API
    namespace come back through that namespace; both with the numpy result."""
    image = _hwc()
    expected = DiffusionAugmentor(random_state=3)(image)
    np.testing.assert_array_equal(DiffusionAugmentor(random_state=3)(_ArrayOnly(image)),
                                  expected)
    out = DiffusionAugmentor(random_state=3)(_DLPackArray(image))
    assert isinstance(out, _DLPackArray)
    np.testing.assert_array_equal(out.values, expected)


def test_fit_resample_keeps_lists_as_lists():
    """Contract (imbalanced-learn's check_samplers_list): lists in, lists out, same values."""
    X = np.stack([_hwc(1, np.float64, seed=seed)[..., 0] for seed in range(4)])
    y = [0, 0, 0, 1]
    X_res, y_res = DiffusionAugmentor(random_state=0).fit_resample(X, y)
    X_list, y_list = DiffusionAugmentor(random_state=0).fit_resample(X.tolist(), y)
    assert isinstance(X_list, list) and isinstance(y_list, list)
    np.testing.assert_array_equal(X_list, X_res)
    np.testing.assert_array_equal(y_list, y_res)


def test_tensor_is_channel_first_and_comes_back_as_a_tensor():
    """Failure reproduced: torch tensors were refused. A (C, H, W) tensor gives the numpy
    (C, H, W) result as a tensor of its dtype; one that requires grad is detached."""
    torch = pytest.importorskip("torch")
    image = _chw(_hwc(3, np.float32))
    tensor = torch.from_numpy(image.copy()).requires_grad_()
    out = DiffusionAugmentor(random_state=8)(tensor)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert not out.requires_grad
    np.testing.assert_array_equal(out.numpy(), DiffusionAugmentor(random_state=8)(image))


def test_tensor_batches_resample_to_tensors():
    """Contract: fit_resample on an (N, C, H, W) uint8 tensor and a label tensor returns
    tensors with the numpy results."""
    torch = pytest.importorskip("torch")
    X = np.stack([_chw(_hwc(seed=seed)) for seed in range(5)])
    y = np.array([1, 1, 1, 1, 0])
    X_res, y_res = DiffusionAugmentor(random_state=0).fit_resample(torch.from_numpy(X),
                                                                    torch.from_numpy(y))
    expected_X, expected_y = DiffusionAugmentor(random_state=0).fit_resample(X, y)
    assert isinstance(X_res, torch.Tensor) and X_res.dtype == torch.uint8
    np.testing.assert_array_equal(X_res.numpy(), expected_X)
    np.testing.assert_array_equal(y_res.numpy(), expected_y)


def test_monai_dict_pipeline_keeps_meta_tensor_metadata():
    """Contract (MONAI): in a dictionary pipeline through Lambdad, a MetaTensor image comes
    back a MetaTensor with its affine and metadata, the label untouched."""
    pytest.importorskip("torch")
    pytest.importorskip("monai")
    from monai.data import MetaTensor
    from monai.transforms import Compose, Lambdad

    image = MetaTensor(_chw(_hwc(1, np.float32)), meta={"filename_or_obj": "case1.nii.gz"})
    image.affine[0, 0] = 0.7
    pipeline = Compose([Lambdad(keys="image", func=DiffusionAugmentor(random_state=0))])
    sample = pipeline({"image": image, "label": 1})
    out = sample["image"]
    assert isinstance(out, MetaTensor) and out.shape == (1, 12, 12) and sample["label"] == 1
    assert out.meta["filename_or_obj"] == "case1.nii.gz" and float(out.affine[0, 0]) == 0.7
