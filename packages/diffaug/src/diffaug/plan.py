"""How many images to synthesise per class (eq. 3 and imbalanced-learn's sampling strategies),
and from which sources with which seeds.

Eq. 3 rounds up in exact decimals: ``ceil(ratio * N_maj)``. imbalanced-learn's float
``sampling_strategy`` truncates a binary float product instead, so the two can differ by one
image: 28 majority and 10 minority images at 0.7 give a minority of 20 here (ceil 19.6) and 19
in imbalanced-learn (``int(28 * 0.7 - 10) = 9`` added). Every other strategy agrees with it.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from decimal import ROUND_CEILING, Decimal, InvalidOperation, localcontext
from typing import Any, NamedTuple

import numpy as np

__all__ = ["SAMPLING_STRATEGY_NAMES", "SyntheticSample", "as_ratio", "check_sampling_strategy",
           "plan_from_strategy", "plan_samples", "plan_synthesis"]

#: imbalanced-learn's over-sampling strategy names. "auto", "not majority" and "all" all raise
#: every class to the majority count (the majority itself gets nothing, whatever it is called).
SAMPLING_STRATEGY_NAMES = ("auto", "not majority", "minority", "not minority", "all")

SamplingStrategy = float | str | Decimal | Mapping[Any, int]


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
    with ``DiffusionAugmentor(random_state=sample.seed)``. The source draw uses the unspawned
    sequence.
    """
    if n_synthetic and n_sources < 1:
        raise ValueError(f"class {class_index} has no images to synthesise from.")
    entropy = [int(seed), int(class_index)]
    source_rng = np.random.default_rng(np.random.SeedSequence(entropy))
    picks = source_rng.integers(n_sources, size=n_synthetic) if n_synthetic else []
    return [SyntheticSample(k, int(pick), _spawned_seed(entropy, k)) for k, pick in enumerate(picks)]


def _spawned_seed(entropy: list[int], k: int) -> int:
    return int(np.random.SeedSequence(entropy, spawn_key=(k,)).generate_state(1)[0])


def as_ratio(value: float | str | Decimal, *, name: str = "ratio") -> Decimal:
    """``value`` as an exact Decimal in (0, 1]; floats by their shortest repr (0.55 -> 0.55).

    ``name`` is the option the message names (``ratio``, ``sampling_strategy``)."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str, Decimal)):
        raise ValueError(f"{name} must be a number in (0, 1]; got {value!r}.")
    try:
        ratio = Decimal(repr(float(value)) if isinstance(value, float) else str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{name} must be a number in (0, 1]; got {value!r}.") from None
    if not ratio.is_finite() or not 0 < ratio <= 1:
        raise ValueError(f"{name} must be a number in (0, 1] (minority/majority after "
                         f"balancing); got {value}.")
    return ratio


def plan_synthesis(counts: Mapping[Any, int], *, ratio: float | str | Decimal) -> dict[Any, int]:
    """Eq. 3 per class: ``M_c = max(0, ceil(ratio * N_maj) - N_c)``, in exact decimals.

    >>> plan_synthesis({"normal": 280, "stenosis": 102}, ratio=0.7)
    {'normal': 0, 'stenosis': 94}
    """
    ratio = as_ratio(ratio)
    _check_counts(counts)
    with localcontext() as context:
        context.prec = 100  # exact for any realistic ratio and count
        target = int((ratio * max(counts.values())).to_integral_value(rounding=ROUND_CEILING))
    return {name: max(0, target - int(count)) for name, count in counts.items()}


def plan_from_strategy(counts: Mapping[Any, int],
                       sampling_strategy: SamplingStrategy) -> dict[Any, int]:
    """Images to synthesise per class for an imbalanced-learn style ``sampling_strategy``.

    A number is eq. 3's ratio (:func:`plan_synthesis`, any number of classes); a mapping gives
    the target count of the classes it names (the others are left alone); a name of
    :data:`SAMPLING_STRATEGY_NAMES` raises the classes it selects to the majority count.
    ``counts`` is in class order: ties for the minority go to the first class, as in
    imbalanced-learn.

    >>> plan_from_strategy({"a": 28, "b": 10}, 0.7)
    {'a': 0, 'b': 10}
    """
    _check_counts(counts)
    check_sampling_strategy(sampling_strategy)
    if isinstance(sampling_strategy, str):
        return _plan_from_name(counts, sampling_strategy)
    if isinstance(sampling_strategy, Mapping):
        return _plan_from_targets(counts, sampling_strategy)
    return plan_synthesis(counts, ratio=sampling_strategy)


def check_sampling_strategy(sampling_strategy: SamplingStrategy, *,
                            name: str = "sampling_strategy") -> None:
    """Raise ValueError unless ``sampling_strategy`` is a ratio in (0, 1], a mapping or one of
    :data:`SAMPLING_STRATEGY_NAMES` (a mapping's counts are checked against the classes)."""
    if isinstance(sampling_strategy, str) and sampling_strategy not in SAMPLING_STRATEGY_NAMES:
        raise ValueError(f"{name} must be a ratio in (0, 1], a dict of target counts or one of "
                         f"{', '.join(map(repr, SAMPLING_STRATEGY_NAMES))}; "
                         f"got {sampling_strategy!r}.")
    if not isinstance(sampling_strategy, (str, Mapping)):
        as_ratio(sampling_strategy, name=name)


def _plan_from_name(counts: Mapping[Any, int], name: str) -> dict[Any, int]:
    minority = min(counts, key=counts.__getitem__)
    left_alone = {"minority": set(counts) - {minority}, "not minority": {minority}}.get(name, ())
    majority_count = max(counts.values())
    return {label: 0 if label in left_alone else majority_count - count
            for label, count in counts.items()}


def _plan_from_targets(counts: Mapping[Any, int], targets: Mapping[Any, int]) -> dict[Any, int]:
    unknown = [label for label in targets if label not in counts]
    if unknown:
        raise ValueError(f"sampling_strategy names classes that are not in y: {unknown}; "
                         f"the classes are {list(counts)}.")
    for label, target in targets.items():
        if isinstance(target, bool) or not isinstance(target, numbers.Integral):
            raise ValueError(f"sampling_strategy[{label!r}] must be an integer target count; "
                             f"got {target!r}.")
        if target < counts[label]:
            raise ValueError(f"sampling_strategy[{label!r}] = {target} is below the "
                             f"{counts[label]} images class {label!r} already has; an "
                             "over-sampler only adds images.")
    return {label: int(targets.get(label, count)) - count for label, count in counts.items()}


def _check_counts(counts: Mapping[Any, int]) -> None:
    if not counts:
        raise ValueError("counts is empty: there are no classes to balance.")
    for name, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0:
            raise ValueError(f"class {name!r} count must be a non-negative integer; got {count!r}.")
