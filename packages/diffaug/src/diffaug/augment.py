"""The diffusion augmenter (eqs. 1 and 4), the synthesis count (eq. 3) and array oversampling.

Pixel scaling: a pixel value v of bit depth b maps to ``x0 = 2 v / (2^b - 1) - 1`` in [-1, 1];
float arrays are intensities in [0, 1] and map to ``2 v - 1``. The inverse clips, rescales and
(for integer images) rounds, so 8-bit stays 8-bit, 16-bit stays 16-bit and the PIL mode is kept.
Noise is drawn independently per colour channel; an alpha channel (LA, RGBA) is passed through.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from decimal import ROUND_CEILING, Decimal, InvalidOperation, localcontext
from typing import Any, NamedTuple, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray
from PIL import Image
from scipy.ndimage import gaussian_filter

from diffaug.modes import ALPHA_MODES, bit_depth
from diffaug.schedule import NoiseSchedule, forward_diffuse

__all__ = ["DiffusionAugmentor", "DiffusionDraw", "SyntheticSample", "as_ratio",
           "plan_samples", "plan_synthesis"]

_MAX_BY_DTYPE = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}

ImageT = TypeVar("ImageT", Image.Image, np.ndarray)


class DiffusionDraw(NamedTuple):
    """The random parameters of one synthetic image: timestep, brightness factor, noise."""

    t: int
    gamma: float
    noise: NDArray[np.float32]


class _Pixels(NamedTuple):
    """Colour channels to augment, the untouched alpha channel and how to rebuild the input."""

    color: np.ndarray
    alpha: np.ndarray | None
    max_value: int | None  # None: float intensities in [0, 1]
    mode: str | None  # PIL mode, None for numpy input


def _unpack(image: Image.Image | np.ndarray) -> _Pixels:
    if isinstance(image, Image.Image):
        max_value = 2 ** bit_depth(image) - 1
        values = np.asarray(image)
        if image.mode in ALPHA_MODES:
            color = values[..., 0] if image.mode == "LA" else values[..., :-1]
            return _Pixels(color, values[..., -1], max_value, image.mode)
        return _Pixels(values, None, max_value, image.mode)
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3):
            raise ValueError(f"arrays must be (H, W) or (H, W, C); got shape {image.shape}.")
        if np.issubdtype(image.dtype, np.floating):
            return _Pixels(image, None, None, None)
        if image.dtype not in _MAX_BY_DTYPE:
            raise ValueError(f"arrays must be uint8, uint16 or float (intensities in [0, 1]); "
                             f"got dtype {image.dtype}.")
        return _Pixels(image, None, _MAX_BY_DTYPE[image.dtype], None)
    raise TypeError(f"expected a PIL image or a numpy array; got {type(image).__name__}.")


def _repack(pixels: _Pixels, intensities: np.ndarray, like: ImageT) -> ImageT:
    """Intensities in [0, 1] back to the input's type, dtype and mode."""
    if pixels.max_value is None:
        return intensities.astype(like.dtype)
    color = np.rint(intensities * pixels.max_value).astype(pixels.color.dtype)
    if pixels.mode is None:
        return color
    if pixels.alpha is not None:
        color = np.dstack([color, pixels.alpha])
    # frombytes, not fromarray: it keeps every mode (I;16B, I;16L, I) as it came in.
    return Image.frombytes(pixels.mode, like.size, color.tobytes())


def _to_unit_range(pixels: _Pixels) -> NDArray[np.float32]:
    """x0 on the [-1, 1] scale, in float32: ample for 8- and 16-bit pixels (24-bit mantissa)
    and about twice as fast as float64 through eqs. 1 and 4."""
    scale = 1.0 if pixels.max_value is None else pixels.max_value
    values = pixels.color.astype(np.float32)
    values *= np.float32(2.0 / scale)
    values -= np.float32(1.0)
    return values


class DiffusionAugmentor:
    """Forward diffusion (eq. 1) of one image at a random t, then blur and brightness (eq. 4).

    ``final = Brightness_gamma(GaussianBlur_sigma(x_t))``: the blur (standard deviation
    ``blur_sigma`` pixels, spatial axes only) acts on x_t, then intensities in [0, 1] are
    multiplied by gamma ~ U(brightness) and clipped. t ~ U{0, …, T-1} and eps ~ N(0, I).

    Calling it on a PIL image (an 8- or 16-bit mode of :mod:`diffaug.modes`) or a numpy array
    (uint8, uint16 or float intensities in [0, 1]; (H, W) or (H, W, C)) returns the same type,
    mode, dtype and shape. The augmenter owns a numpy Generator seeded by ``seed``.
    """

    def __init__(self, *, schedule: NoiseSchedule | None = None, blur_sigma: float = 0.5,
                 brightness: tuple[float, float] = (0.9, 1.1), seed: int | None = None) -> None:
        low, high = (float(value) for value in brightness)
        if not 0 < low <= high < float("inf"):
            raise ValueError(f"brightness must be a range (low, high) with 0 < low <= high; "
                             f"got {tuple(brightness)}.")
        if not 0 <= blur_sigma < float("inf"):
            raise ValueError(f"blur_sigma must be >= 0 pixels; got {blur_sigma}.")
        if seed is not None and (not isinstance(seed, numbers.Integral) or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None; got {seed!r}.")
        self.schedule = NoiseSchedule.linear() if schedule is None else schedule
        self.blur_sigma = float(blur_sigma)
        self.brightness = (low, high)
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def sample_parameters(self, image: Image.Image | np.ndarray) -> DiffusionDraw:
        """Draw t, gamma and per-channel noise for ``image`` from the augmenter's generator."""
        shape = _unpack(image).color.shape
        t = int(self._rng.integers(self.schedule.timesteps))
        gamma = float(self._rng.uniform(*self.brightness))
        return DiffusionDraw(t, gamma, self._rng.standard_normal(shape, dtype=np.float32))

    def transform(self, image: ImageT, *, t: int, gamma: float, noise: ArrayLike) -> ImageT:
        """The deterministic augmentation: eq. 1 at step ``t`` with ``noise``, then eq. 4.

        Computed in float32 (``noise`` included), like the draws of :meth:`sample_parameters`."""
        pixels = _unpack(image)
        noise = np.asarray(noise, dtype=np.float32)
        x_t = forward_diffuse(_to_unit_range(pixels), t, noise, self.schedule)
        spatial_sigma = (self.blur_sigma,) * 2 + (0.0,) * (x_t.ndim - 2)
        intensities = gaussian_filter(x_t, sigma=spatial_sigma)
        # (blurred + 1) / 2 * gamma, clipped to [0, 1], in place
        intensities += np.float32(1.0)
        intensities *= np.float32(gamma / 2.0)
        return _repack(pixels, np.clip(intensities, 0.0, 1.0, out=intensities), image)

    def __call__(self, image: ImageT) -> ImageT:
        """One synthetic version of ``image`` with freshly drawn t, gamma and noise."""
        return self.transform(image, **self.sample_parameters(image)._asdict())

    def fit_resample(self, X: ArrayLike, y: ArrayLike, *,
                     ratio: float | str | Decimal) -> tuple[np.ndarray, np.ndarray]:
        """Oversample every minority class up to ``ratio`` × the majority count (eq. 3).

        Returns ``X`` unchanged followed by the synthetic samples (class by class, in sorted
        class order), like imbalanced-learn's samplers. Sets ``sampling_strategy_``
        (class -> number synthesised) and ``sample_indices_`` (for each output row, the row of
        ``X`` it is, or was synthesised from), as RandomOverSampler does.
        """
        X, y = np.asarray(X), np.asarray(y)
        if X.ndim not in (3, 4) or y.ndim != 1 or len(X) != len(y):
            raise ValueError(f"X must be (N, H, W[, C]) and y (N,); got {X.shape} and {y.shape}.")
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2:
            raise ValueError(f"y needs at least 2 classes to balance; got {classes.tolist()}.")
        plan = plan_synthesis(dict(zip(classes.tolist(), counts.tolist(), strict=True)),
                              ratio=ratio)
        run_seed = self.seed if self.seed is not None else int(self._rng.integers(2**63))
        sources: list[int] = []
        synthetic = []
        for class_index, label in enumerate(classes.tolist()):
            rows = np.flatnonzero(y == label)
            for sample in plan_samples(run_seed, class_index, len(rows), plan[label]):
                source = int(rows[sample.source_index])
                augmentor = self._with_seed(sample.seed)
                synthetic.append(augmentor(X[source]))
                sources.append(source)
        self.sampling_strategy_ = plan
        self.sample_indices_ = np.concatenate([np.arange(len(X)), sources]).astype(np.intp)
        X_res = np.concatenate([X, np.asarray(synthetic, dtype=X.dtype).reshape(-1, *X.shape[1:])])
        return X_res, y[self.sample_indices_]

    def _with_seed(self, seed: int) -> DiffusionAugmentor:
        return DiffusionAugmentor(schedule=self.schedule, blur_sigma=self.blur_sigma,
                                  brightness=self.brightness, seed=seed)


class SyntheticSample(NamedTuple):
    """Synthetic image k of a class: which source it comes from and its own seed."""

    k: int
    source_index: int
    seed: int


def plan_samples(seed: int, class_index: int, n_sources: int,
                 n_synthetic: int) -> list[SyntheticSample]:
    """Sources (uniform, with replacement) and per-image seeds for one class.

    Each synthetic image gets its own seed from ``SeedSequence([seed, class_index])`` spawned at
    key k, so an image does not depend on how the work is split and can be regenerated alone
    with ``DiffusionAugmentor(seed=sample.seed)``. The source draw uses the unspawned sequence.
    """
    if n_synthetic and n_sources < 1:
        raise ValueError(f"class {class_index} has no images to synthesise from.")
    entropy = [int(seed), int(class_index)]
    source_rng = np.random.default_rng(np.random.SeedSequence(entropy))
    picks = source_rng.integers(n_sources, size=n_synthetic) if n_synthetic else []
    return [SyntheticSample(k, int(pick), _spawned_seed(entropy, k)) for k, pick in enumerate(picks)]


def _spawned_seed(entropy: list[int], k: int) -> int:
    return int(np.random.SeedSequence(entropy, spawn_key=(k,)).generate_state(1)[0])


def as_ratio(value: float | str | Decimal) -> Decimal:
    """``value`` as an exact Decimal in (0, 1]; floats by their shortest repr (0.55 -> 0.55)."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str, Decimal)):
        raise ValueError(f"ratio must be a number in (0, 1]; got {value!r}.")
    try:
        ratio = Decimal(repr(float(value)) if isinstance(value, float) else str(value).strip())
    except InvalidOperation:
        raise ValueError(f"ratio must be a number in (0, 1]; got {value!r}.") from None
    if not ratio.is_finite() or not 0 < ratio <= 1:
        raise ValueError(f"ratio must be a number in (0, 1] (minority/majority after "
                         f"balancing); got {value}.")
    return ratio


def plan_synthesis(counts: Mapping[Any, int], *, ratio: float | str | Decimal) -> dict[Any, int]:
    """Eq. 3 per class: ``M_c = max(0, ceil(ratio * N_maj) - N_c)``, in exact decimals.

    >>> plan_synthesis({"normal": 280, "stenosis": 102}, ratio=0.7)
    {'normal': 0, 'stenosis': 94}
    """
    ratio = as_ratio(ratio)
    if not counts:
        raise ValueError("counts is empty: there are no classes to balance.")
    for name, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0:
            raise ValueError(f"class {name!r} count must be a non-negative integer; got {count!r}.")
    with localcontext() as context:
        context.prec = 100  # exact for any realistic ratio and count
        target = int((ratio * max(counts.values())).to_integral_value(rounding=ROUND_CEILING))
    return {name: max(0, target - int(count)) for name, count in counts.items()}
