"""Images in and out of the augmenter: their kind, channel axis and intensity scale.

Accepted: PIL images (8- and 16-bit modes of :mod:`diffaug.modes`), numpy arrays, and
array-likes with ``__array__`` or ``__dlpack__`` (torch tensors, MONAI ``MetaTensor``,
torchvision ``tv_tensors.Image``). torch is never imported here: a tensor can only exist if the
caller imported it, so ``sys.modules["torch"]`` is used. Results come back as the same kind,
dtype, shape (and, for tensors, type, device and metadata) as the input.

Intensities: the pixel values ``[low, high]`` map to x0 in [-1, 1]. By default the range comes
from the dtype (the PIL mode's bit depth; the full range of uint8, uint16, int8 and int16; [0, 1]
for floats); ``intensity_range=(low, high)`` sets it for any integer or float data (raw 12-bit
values, Hounsfield units). Values outside the range raise; nothing is clipped silently.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from diffaug.modes import ALPHA_MODES, bit_depth

__all__ = ["Pixels", "channel_axis_of", "check_intensities", "is_tensor", "like", "to_numpy",
           "unpack"]

#: A 3-D numpy array whose last (else first) axis has at most this many entries has its
#: channels there: (H, W, C) or (C, H, W) for grayscale, RGB and RGBA.
MAX_CHANNELS = 4
#: Integer dtypes whose full range is the default intensity range: exact in float32 arithmetic.
_FULL_RANGE_DTYPES = tuple(np.dtype(t) for t in (np.uint8, np.uint16, np.int8, np.int16))
_UNIT_RANGE = (0.0, 1.0)


class Pixels(NamedTuple):
    """The colour values to augment (channel last) and how to give the result back."""

    color: np.ndarray  # (H, W) or (H, W, C)
    low: float
    high: float
    channel_axis: int | None  # where the input keeps its channels, when not last
    rebuild: Callable[[np.ndarray], Any]  # colour values in the input's layout -> input kind

    def to_unit_range(self) -> NDArray[np.float32]:
        """x0 = 2 (v - low) / (high - low) - 1, in float32: ample for 16-bit pixels (24-bit
        mantissa) and about twice as fast as float64 through eqs. 1 and 4."""
        values = self.color.astype(np.float32)
        values -= np.float32(self.low)
        values *= np.float32(2.0 / (self.high - self.low))
        values -= np.float32(1.0)
        return values

    def from_intensities(self, intensities: NDArray[np.float32]) -> Any:
        """Intensities in [0, 1] back to ``[low, high]``, rounded for integers, as the input."""
        values = intensities * (self.high - self.low) + self.low
        if self.color.dtype.kind in "iu":
            values = np.rint(values)
        return self.rebuild(self.to_input_layout(values.astype(self.color.dtype)))

    def to_channel_last(self, array: np.ndarray) -> np.ndarray:
        """An array in the input's layout (the noise of a draw) in the layout of ``color``."""
        return array if self.channel_axis is None else np.moveaxis(array, self.channel_axis, -1)

    def to_input_layout(self, array: np.ndarray) -> np.ndarray:
        """An array in the layout of ``color`` in the input's layout."""
        return array if self.channel_axis is None else np.moveaxis(array, -1, self.channel_axis)


def unpack(image: Any, *, channel_axis: int | None = None,
           intensity_range: tuple[float, float] | None = None) -> Pixels:
    """``image`` as :class:`Pixels`. ``channel_axis`` applies to arrays (a PIL image's mode
    says where its channels are); raises ValueError/TypeError for what cannot be augmented."""
    if isinstance(image, Image.Image):
        return _unpack_pil(image, intensity_range)
    values = to_numpy(image)
    axis = channel_axis_of(values.shape, channel_axis, channels_first=is_tensor(image))
    low, high = check_intensities(values, intensity_range)
    moved = None if axis in (None, values.ndim - 1) else axis
    color = values if moved is None else np.moveaxis(values, moved, -1)
    return Pixels(color, low, high, moved, lambda result: like(image, result))


def _unpack_pil(image: Image.Image, intensity_range: tuple[float, float] | None) -> Pixels:
    values = np.asarray(image)
    low, high = check_intensities(values, intensity_range, (0.0, 2.0 ** bit_depth(image) - 1))
    alpha = values[..., -1] if image.mode in ALPHA_MODES else None
    color = values if alpha is None else values[..., 0] if image.mode == "LA" else values[..., :-1]

    def rebuild(result: np.ndarray) -> Image.Image:
        full = result if alpha is None else np.dstack([result, alpha])
        # frombytes, not fromarray: it keeps every mode (I;16B, I;16L, I) as it came in.
        return Image.frombytes(image.mode, image.size, full.tobytes())

    return Pixels(color, low, high, None, rebuild)


def channel_axis_of(shape: tuple[int, ...], channel_axis: int | None, *,
                    channels_first: bool) -> int | None:
    """The (non-negative) channel axis of one image of ``shape``, None for (H, W).

    ``channel_axis=None`` decides: tensors are channel first (C, H, W); a numpy array has its
    channels on the one end axis with at most :data:`MAX_CHANNELS` entries, and is ambiguous
    (ValueError) when both ends or neither qualify."""
    if len(shape) not in (2, 3):
        raise ValueError(f"an image must be (H, W), (H, W, C) or (C, H, W); got shape {shape}.")
    if channel_axis is not None:
        if len(shape) == 2:
            raise ValueError(f"channel_axis={channel_axis} but the image is (H, W) with no "
                             f"channel axis (shape {shape}); pass channel_axis=None.")
        if not -3 <= channel_axis < 3:
            raise ValueError(f"channel_axis must be 0, 1, 2 (or -3..-1) for shape {shape}; "
                             f"got {channel_axis}.")
        return channel_axis % 3
    if len(shape) == 2:
        return None
    if channels_first:
        return 0
    first, last = shape[0] <= MAX_CHANNELS, shape[-1] <= MAX_CHANNELS
    if first == last:
        raise ValueError(f"cannot tell which axis of shape {shape} holds the channels; pass "
                         "channel_axis=0 for (C, H, W) or channel_axis=-1 for (H, W, C).")
    return 2 if last else 0


def check_intensities(values: np.ndarray, intensity_range: tuple[float, float] | None,
                      dtype_range: tuple[float, float] | None = None) -> tuple[float, float]:
    """The (low, high) intensity scale of ``values``; raises if a value lies outside it.

    ``dtype_range`` is the scale the data type allows (default: from ``values.dtype``)."""
    dtype_range = dtype_range or _dtype_range(values.dtype, explicit=intensity_range is not None)
    low, high = dtype_range if intensity_range is None else intensity_range
    if intensity_range is not None and values.dtype.kind in "iu" and not (
            dtype_range[0] <= low and high <= dtype_range[1]):
        raise ValueError(f"intensity_range={intensity_range} does not fit {values.dtype} values, "
                         f"which span {dtype_range}.")
    if intensity_range is not None or values.dtype.kind == "f":
        _check_within(values, low, high, explicit=intensity_range is not None)
    return low, high


def _dtype_range(dtype: np.dtype, *, explicit: bool) -> tuple[float, float]:
    if dtype.kind == "f":
        return _UNIT_RANGE
    if dtype in _FULL_RANGE_DTYPES or (explicit and dtype.kind in "iu"):
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    raise ValueError(f"arrays must be uint8, uint16 or float (intensities in [0, 1]), or int8 "
                     f"or int16 (their full range), unless intensity_range=(low, high) is "
                     f"given for integer data; got dtype {dtype}.")


def _check_within(values: np.ndarray, low: float, high: float, *, explicit: bool) -> None:
    smallest, largest = (values.min(), values.max()) if values.size else (low, high)
    if low <= smallest and largest <= high:  # False for NaN
        return
    if explicit:
        raise ValueError(f"image values span [{smallest:g}, {largest:g}], outside "
                         f"intensity_range=({low:g}, {high:g}); widen the range.")
    raise ValueError(f"float image values span [{smallest:g}, {largest:g}], outside [0, 1] (the "
                     "default for floats); pass intensity_range=(low, high) with your data's "
                     "scale, e.g. (0, 4095) for raw 12-bit values. Values are never clipped.")


def is_tensor(value: Any) -> bool:
    """Whether ``value`` is a torch tensor (or subclass), without importing torch."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def to_numpy(value: Any) -> np.ndarray:
    """A numpy array of an array-like (a view where possible; tensors are copied off the GPU)."""
    if isinstance(value, np.ndarray):
        return value
    if is_tensor(value):
        return value.numpy(force=True)
    if hasattr(value, "__array__"):
        return np.asarray(value)
    if hasattr(value, "__dlpack__"):
        return np.from_dlpack(value)
    raise TypeError(_not_an_image(value))


def _not_an_image(value: Any) -> str:
    if isinstance(value, tuple):
        hint = ("it takes one image: for (image, label) samples use "
                "`lambda sample: (aug(sample[0]), *sample[1:])`")
    elif isinstance(value, Mapping):
        hint = ("it takes one image: for dict samples apply it to the image key, e.g. MONAI's "
                "`Lambdad(keys='image', func=aug)` or `{**sample, 'image': aug(sample['image'])}`")
    else:
        hint = "convert it first"
    return (f"expected a PIL image or a numpy array (or an array-like with __array__ or "
            f"__dlpack__, such as a torch tensor); got {type(value).__name__}: {hint}.")


def like(template: Any, result: np.ndarray) -> Any:
    """``result`` as the kind of array ``template`` is: numpy; a tensor of the template's dtype
    and device (and, at the same shape, its type and metadata: MetaTensor, tv_tensors); the
    template's array API namespace; a list (imbalanced-learn's convention). Other array-likes
    come back as numpy arrays."""
    if isinstance(template, np.ndarray):
        return result
    if isinstance(template, list):
        return result.tolist()
    if is_tensor(template):
        values = sys.modules["torch"].from_numpy(np.ascontiguousarray(result))
        if tuple(template.shape) != result.shape:
            return values.to(device=template.device, dtype=template.dtype)
        out = template.detach().clone()  # keeps the subclass and its metadata
        out.copy_(values)  # (its return value is a plain Tensor for tv_tensors)
        return out
    namespace = getattr(template, "__array_namespace__", None)
    return result if namespace is None else namespace().asarray(result)

