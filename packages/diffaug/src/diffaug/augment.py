"""The diffusion augmenter (eqs. 1 and 4) and array oversampling (eq. 3).

Pixel scaling and the kinds of image accepted are :mod:`diffaug.pixels`'; where the draws
come from (per process, per call, per worker) is :mod:`diffaug.randomness`'; how many images
each class gets is :mod:`diffaug.plan`'s (re-exported here).
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any, NamedTuple, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.ndimage import gaussian_filter

from diffaug.options import (
    check_blur_sigma,
    check_brightness,
    check_channel_axis,
    check_intensity_range,
    check_random_state,
    check_schedule,
)
from diffaug.params import ParamsMixin
from diffaug.pixels import (
    Pixels,
    channel_axis_of,
    check_intensities,
    is_tensor,
    like,
    to_numpy,
    unpack,
)
from diffaug.plan import (
    SamplingStrategy,
    SyntheticSample,
    as_ratio,
    check_sampling_strategy,
    plan_from_strategy,
    plan_samples,
    plan_synthesis,
)
from diffaug.randomness import RandomState, RandomStreams
from diffaug.schedule import NoiseSchedule, forward_diffuse

__all__ = ["DiffusionAugmentor", "DiffusionDraw", "SyntheticSample", "as_ratio",
           "plan_samples", "plan_synthesis"]

ImageT = TypeVar("ImageT")
_DEPRECATED = "deprecated"  # default of the deprecated aliases: "not passed"


class DiffusionDraw(NamedTuple):
    """The random parameters of one synthetic image: timestep, brightness factor, noise."""

    t: int
    gamma: float
    noise: NDArray[np.float32]


class _Settings(NamedTuple):
    """The parameters, validated, with the deprecated aliases resolved."""

    schedule: NoiseSchedule
    blur_sigma: float
    brightness: tuple[float, float]
    channel_axis: int | None
    intensity_range: tuple[float, float] | None
    random_state: RandomState
    sampling_strategy: SamplingStrategy


class DiffusionAugmentor(ParamsMixin):
    """Forward diffusion (eq. 1) of one image at a random t, then blur and brightness (eq. 4).

    ``final = Brightness_gamma(GaussianBlur_sigma(x_t))``: the blur (standard deviation
    ``blur_sigma`` pixels, spatial axes only) acts on x_t, then intensities in [0, 1] are
    multiplied by gamma ~ U(brightness) and clipped. t ~ U{0, …, T-1} and eps ~ N(0, I).

    A scikit-learn estimator and imbalanced-learn sampler (without importing either): every
    parameter is stored unchanged and checked at use; ``get_params``/``set_params``/``clone``
    work; ``fit_resample(X, y)`` oversamples image arrays.

    Parameters (keyword-only):
        sampling_strategy: for ``fit``/``fit_resample``: a float is eq. 3's ratio
            minority/majority after balancing (rounded up in exact decimals, any number of
            classes: 28 vs 10 images at 0.7 gives 20, where imbalanced-learn's truncation gives
            19); a dict gives target counts per class; "auto" (= "not majority"), "minority",
            "not minority" and "all" raise those classes to the majority count.
        random_state: an int (reproducible), a ``numpy.random.Generator`` (used as it is) or
            None (fresh entropy). In forked workers and with ``seed=`` per call, see
            :mod:`diffaug.randomness`.
        schedule: the noise schedule (default ``NoiseSchedule.linear()``, eq. 2).
        blur_sigma, brightness: eq. 4's blur standard deviation (pixels) and gamma range.
        channel_axis: where an array keeps its channels; None decides (tensors: first;
            numpy: the end axis of size <= 4; ambiguous shapes raise).
        intensity_range: ``(low, high)`` of the pixel values; None takes it from the dtype
            (uint8, uint16, int8, int16: their range; floats: [0, 1]). Out-of-range values
            raise; nothing is clipped silently.
        seed, ratio: deprecated aliases of ``random_state`` and ``sampling_strategy``.

    Calling it on a PIL image (an 8- or 16-bit mode of :mod:`diffaug.modes`), a numpy array
    ((H, W), (H, W, C) or (C, H, W)) or a tensor returns the same kind, dtype and shape
    (:mod:`diffaug.pixels`). (image, label) and dict samples are refused with a hint: apply
    the augmenter to the image (MONAI: ``Lambdad(keys="image", func=aug)``).
    """

    def __init__(self, *, sampling_strategy: SamplingStrategy = "auto",
                 random_state: RandomState = None, schedule: NoiseSchedule | None = None,
                 blur_sigma: float = 0.5, brightness: tuple[float, float] = (0.9, 1.1),
                 channel_axis: int | None = None,
                 intensity_range: tuple[float, float] | None = None,
                 seed: int | None | str = _DEPRECATED,
                 ratio: float | str | Decimal = _DEPRECATED) -> None:
        self.sampling_strategy = sampling_strategy
        self.random_state = random_state
        self.schedule = schedule
        self.blur_sigma = blur_sigma
        self.brightness = brightness
        self.channel_axis = channel_axis
        self.intensity_range = intensity_range
        self.seed = seed
        self.ratio = ratio
        self._streams = RandomStreams()
        for old, new in (("seed", "random_state"), ("ratio", "sampling_strategy")):
            if _passed(getattr(self, old)):
                warnings.warn(f"DiffusionAugmentor({old}=...) is deprecated and will be removed "
                              f"in the next release; use {new}=... instead.",
                              DeprecationWarning, stacklevel=2)

    def validate_params(self) -> None:
        """Raise ValueError/TypeError for an unusable parameter (every use checks them too;
        call it to fail before expensive work)."""
        self._settings()

    def sample_parameters(self, image: Any, *, seed: ArrayLike | None = None) -> DiffusionDraw:
        """Draw t, gamma and per-channel noise (in ``image``'s layout) for ``image``.

        ``seed`` (an int or a sequence such as ``[epoch, index]``) keys the draw, together with
        ``random_state``; without it the augmenter's generator for this process is used."""
        settings = self._settings()
        pixels = self._unpack(image, settings)
        draw = _draw(pixels, settings, self._streams.generator(settings.random_state, seed))
        return draw._replace(noise=pixels.to_input_layout(draw.noise))

    def apply(self, image: ImageT, *, t: int, gamma: float, noise: ArrayLike) -> ImageT:
        """The deterministic augmentation: eq. 1 at step ``t`` with ``noise`` (in ``image``'s
        layout), then eq. 4. Computed in float32, like the draws of :meth:`sample_parameters`.

        (Not called ``transform``: imbalanced-learn's Pipeline refuses a step that has both
        ``transform`` and ``fit_resample``.)"""
        settings = self._settings()
        pixels = self._unpack(image, settings)
        noise = pixels.to_channel_last(np.asarray(noise, dtype=np.float32))
        return _diffuse(pixels, settings, DiffusionDraw(t, gamma, noise))

    def __call__(self, image: ImageT, *, seed: ArrayLike | None = None) -> ImageT:
        """One synthetic version of ``image`` with freshly drawn t, gamma and noise; ``seed``
        as in :meth:`sample_parameters`."""
        settings = self._settings()
        pixels = self._unpack(image, settings)
        generator = self._streams.generator(settings.random_state, seed)
        return _diffuse(pixels, settings, _draw(pixels, settings, generator))

    def variants(self, image: ImageT,
                 seeds: Iterable[int]) -> Iterator[tuple[ImageT, DiffusionDraw]]:
        """One synthetic version of ``image`` per seed, with its draw (noise channel last).
        Each is what ``DiffusionAugmentor(random_state=seed, ...)(image)`` gives: drawn from
        ``numpy.random.default_rng(seed)``; the image is read once for all of them."""
        settings = self._settings()
        yield from _variants(self._unpack(image, settings), settings, seeds)

    def fit(self, X: ArrayLike, y: ArrayLike) -> DiffusionAugmentor:
        """Check ``X`` (N images) and ``y`` and set ``sampling_strategy_`` (class -> number of
        images to synthesise); returns ``self``."""
        self._fit(X, y, self._settings())
        return self

    def fit_resample(self, X: ArrayLike, y: ArrayLike, *,
                     ratio: float | str | Decimal = _DEPRECATED) -> tuple[Any, Any]:
        """Oversample the classes ``sampling_strategy`` selects (eq. 3 for a ratio).

        ``X`` is (N, H, W), (N, H, W, C) or (N, C, H, W) (channels as ``channel_axis`` says for
        one image). Returns ``X`` unchanged followed by the synthetic samples (class by class,
        in sorted class order), like imbalanced-learn's samplers, as the kinds of ``X`` and
        ``y`` that came in. Sets ``sampling_strategy_`` and ``sample_indices_`` (for each output
        row, the row of ``X`` it is, or was synthesised from), as RandomOverSampler does.
        ``ratio`` is a deprecated alias of ``sampling_strategy`` for this call.
        """
        settings = self._settings(call_ratio=ratio)
        images, labels, axis = self._fit(X, y, settings)
        run_seed = self._run_seed(settings.random_state)
        sources: list[int] = []
        synthetic = []
        for class_index, label in enumerate(self.sampling_strategy_):
            rows = np.flatnonzero(labels == label)
            for sample in plan_samples(run_seed, class_index, len(rows),
                                       self.sampling_strategy_[label]):
                source = int(rows[sample.source_index])
                pixels = unpack(images[source], channel_axis=axis,
                                intensity_range=settings.intensity_range)
                (result, _), = _variants(pixels, settings, [sample.seed])
                synthetic.append(result)
                sources.append(source)
        self.sample_indices_ = np.concatenate([np.arange(len(images)), sources]).astype(np.intp)
        X_res = np.concatenate([images, np.asarray(synthetic, dtype=images.dtype)
                                .reshape(-1, *images.shape[1:])])
        return like(X, X_res), like(y, labels[self.sample_indices_])

    def _fit(self, X: ArrayLike, y: ArrayLike,
             settings: _Settings) -> tuple[np.ndarray, np.ndarray, int | None]:
        """Check the batch; set ``sampling_strategy_``; return images, labels, channel axis."""
        images, labels = _as_batch(X), _as_batch(y)
        if images.ndim not in (3, 4) or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"X must be (N, H, W), (N, H, W, C) or (N, C, H, W) and y (N,); "
                             f"got {images.shape} and {labels.shape}.")
        axis = channel_axis_of(images.shape[1:], settings.channel_axis,
                               channels_first=is_tensor(X))
        check_intensities(images, settings.intensity_range)
        if labels.dtype.kind == "f" and not np.all(np.mod(labels, 1) == 0):
            raise ValueError("y must hold class labels; got continuous (non-integer float) "
                             "values.")
        classes, counts = np.unique(labels, return_counts=True)
        if len(classes) < 2:
            raise ValueError(f"y needs at least 2 classes to balance; got {classes.tolist()}.")
        self.sampling_strategy_ = plan_from_strategy(
            dict(zip(classes.tolist(), counts.tolist(), strict=True)), settings.sampling_strategy)
        return images, labels, axis

    def _run_seed(self, random_state: RandomState) -> int:
        """The seed of :func:`plan_samples`: ``random_state`` itself when it is an int."""
        if isinstance(random_state, numbers.Integral):
            return int(random_state)
        return int(self._streams.generator(random_state).integers(2**63))

    def _unpack(self, image: Any, settings: _Settings) -> Pixels:
        return unpack(image, channel_axis=settings.channel_axis,
                      intensity_range=settings.intensity_range)

    def _settings(self, call_ratio: Any = _DEPRECATED) -> _Settings:
        random_state = _alias("random_state", self.random_state, None, "seed", self.seed)
        strategy = _alias("sampling_strategy", self.sampling_strategy, "auto", "ratio",
                          self.ratio)
        if _passed(call_ratio):
            warnings.warn("fit_resample(X, y, ratio=...) is deprecated and will be removed in "
                          "the next release; use DiffusionAugmentor(sampling_strategy=...).",
                          DeprecationWarning, stacklevel=3)
            strategy = _alias("sampling_strategy", strategy, "auto", "ratio", call_ratio)
        check_sampling_strategy(strategy, name="ratio" if _passed(self.ratio) or
                                _passed(call_ratio) else "sampling_strategy")
        return _Settings(
            schedule=check_schedule(self.schedule), blur_sigma=check_blur_sigma(self.blur_sigma),
            brightness=check_brightness(self.brightness),
            channel_axis=check_channel_axis(self.channel_axis),
            intensity_range=check_intensity_range(self.intensity_range),
            random_state=check_random_state(random_state,
                                             "seed" if _passed(self.seed) else "random_state"),
            sampling_strategy=strategy)


def _draw(pixels: Pixels, settings: _Settings, generator: np.random.Generator) -> DiffusionDraw:
    """t, gamma, then the noise of the colour channels (channel last), in this order."""
    t = int(generator.integers(settings.schedule.timesteps))
    gamma = float(generator.uniform(*settings.brightness))
    return DiffusionDraw(t, gamma, generator.standard_normal(pixels.color.shape,
                                                             dtype=np.float32))


def _variants(pixels: Pixels, settings: _Settings,
              seeds: Iterable[int]) -> Iterator[tuple[Any, DiffusionDraw]]:
    """For each seed: draw from ``default_rng(seed)``, then eqs. 1 and 4 (the pixels are
    only read, so one unpacked image serves every seed)."""
    for seed in seeds:
        draw = _draw(pixels, settings, np.random.default_rng(seed))
        yield _diffuse(pixels, settings, draw), draw


def _diffuse(pixels: Pixels, settings: _Settings, draw: DiffusionDraw) -> Any:
    """Eq. 1 then eq. 4 on channel-last pixels; the result as the input's kind."""
    x_t = forward_diffuse(pixels.to_unit_range(), draw.t, draw.noise, settings.schedule)
    spatial_sigma = (settings.blur_sigma,) * 2 + (0.0,) * (x_t.ndim - 2)
    intensities = gaussian_filter(x_t, sigma=spatial_sigma)
    # (blurred + 1) / 2 * gamma, clipped to [0, 1], in place
    intensities += np.float32(1.0)
    intensities *= np.float32(draw.gamma / 2.0)
    return pixels.from_intensities(np.clip(intensities, 0.0, 1.0, out=intensities))


def _as_batch(values: ArrayLike) -> np.ndarray:
    """X or y as a numpy array: array-likes as :func:`to_numpy`, lists of images stacked."""
    return np.asarray(values) if isinstance(values, (list, tuple)) else to_numpy(values)


def _passed(value: Any) -> bool:
    """Whether a deprecated alias was given (its default is the string "deprecated")."""
    return not (isinstance(value, str) and value == _DEPRECATED)


def _alias(name: str, value: Any, default: Any, old_name: str, old_value: Any) -> Any:
    """``value``, or the deprecated alias's ``old_value`` when only that one was given."""
    if not _passed(old_value):
        return value
    if not (value is default or isinstance(default, str) and value == default):
        raise ValueError(f"pass {name} only: {old_name} is its deprecated alias.")
    return old_value
