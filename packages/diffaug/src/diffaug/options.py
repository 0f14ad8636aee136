"""Checks of the augmenter's options: each returns the option in the form the code uses, or
raises a ValueError (TypeError for a wrong type of object) naming the option and what it
accepts. The augmenter runs them at use, never in its constructor (scikit-learn's rule).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from diffaug.randomness import RandomState
from diffaug.schedule import NoiseSchedule

__all__ = ["check_blur_sigma", "check_brightness", "check_channel_axis", "check_intensity_range",
           "check_random_state", "check_schedule"]


def check_schedule(schedule: NoiseSchedule | None) -> NoiseSchedule:
    """``schedule``, or eq. 2's default linear schedule for None."""
    if schedule is None:
        return NoiseSchedule.linear()
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule or None; got {schedule!r}.")
    return schedule


def check_blur_sigma(blur_sigma: float) -> float:
    """``blur_sigma`` as a float >= 0 (pixels)."""
    if not _is_real(blur_sigma) or not 0 <= blur_sigma < math.inf:
        raise ValueError(f"blur_sigma must be >= 0 pixels; got {blur_sigma!r}.")
    return float(blur_sigma)


def check_brightness(brightness: tuple[float, float]) -> tuple[float, float]:
    """``brightness`` as a float pair 0 < low <= high."""
    pair = _pair(brightness)
    if len(pair) != 2 or not all(map(_is_real, pair)) or not 0 < pair[0] <= pair[1] < math.inf:
        raise ValueError(f"brightness must be a range (low, high) with 0 < low <= high; "
                         f"got {brightness!r}.")
    return float(pair[0]), float(pair[1])


def check_channel_axis(channel_axis: int | None) -> int | None:
    """``channel_axis`` as an int, or None (decide from the shape)."""
    if channel_axis is not None and (isinstance(channel_axis, bool)
                                     or not isinstance(channel_axis, numbers.Integral)):
        raise ValueError(f"channel_axis must be an integer axis (0 for (C, H, W), -1 for "
                         f"(H, W, C)) or None; got {channel_axis!r}.")
    return None if channel_axis is None else int(channel_axis)


def check_intensity_range(intensity_range: Any) -> tuple[float, float] | None:
    """``intensity_range`` as a finite float pair low < high, or None (from the dtype)."""
    if intensity_range is None:
        return None
    pair = _pair(intensity_range)
    if len(pair) != 2 or not all(map(_is_real, pair)) \
            or not -math.inf < pair[0] < pair[1] < math.inf:
        raise ValueError(f"intensity_range must be (low, high) with low < high, finite; "
                         f"got {intensity_range!r}.")
    return float(pair[0]), float(pair[1])


def check_random_state(random_state: Any, name: str) -> RandomState:
    """``random_state`` unchanged if it is an int >= 0, a numpy Generator or None; ``name``
    is the option the message names (``seed`` for the deprecated alias)."""
    if random_state is None or isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, bool) or not isinstance(random_state, numbers.Integral) \
            or random_state < 0:
        raise ValueError(f"{name} must be a non-negative integer seed, a numpy.random.Generator "
                         f"or None; got {random_state!r}.")
    return random_state


def _pair(value: Any) -> tuple[Any, ...]:
    """``value`` as a tuple, empty if it is not iterable (the callers then refuse it)."""
    try:
        return tuple(value)
    except TypeError:
        return ()


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)

