"""Eq. 3, M_c = max(0, ceil(ratio * N_maj) - N_c), in exact decimal arithmetic.

Analytic oracle: the expected counts are written out by hand (ceil of an exact decimal product),
including ratios whose binary float product lands just above an integer (0.55 * 100 is
55.000000000000007 in float, so a float ceil gives 56). Same-seed rederivation for the draws.
"""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pytest
from diffaug import plan_synthesis
from diffaug.augment import as_ratio, plan_samples


@pytest.mark.parametrize(("counts", "ratio", "expected"), [
    ({"normal": 280, "stenosis": 102}, 0.7, {"normal": 0, "stenosis": 94}),  # the paper's example
    ({"a": 100, "b": 10}, 0.55, {"a": 0, "b": 45}),
    ({"a": 100, "b": 0}, 0.07, {"a": 0, "b": 7}),
    ({"a": 100, "b": 0}, 0.14, {"a": 0, "b": 14}),
    ({"a": 1000, "b": 0}, 0.57, {"a": 0, "b": 570}),
    ({"a": 280, "b": 200}, 0.7, {"a": 0, "b": 0}),  # already above the target: max(0, ...)
    ({"a": 10, "b": 3}, 1, {"a": 0, "b": 7}),
    ({"a": 7, "b": 1}, 0.5, {"a": 0, "b": 3}),  # ceil(3.5) = 4
    ({"a": 3, "b": 1, "c": 2}, "0.9", {"a": 0, "b": 2, "c": 1}),  # multi-class
    ({"a": 100, "b": 1}, Decimal("0.333"), {"a": 0, "b": 33}),
])
def test_plan_synthesis(counts, ratio, expected):
    """Analytic oracle: hand-computed eq. 3."""
    assert plan_synthesis(counts, ratio=ratio) == expected


@pytest.mark.parametrize("ratio", [0.55, 0.07, 0.14, 0.58, 0.29, 0.57])
def test_float_products_are_not_trusted(ratio):
    """Analytic oracle: eq. 3 follows the decimal ratio as written, not its binary float."""
    exact = math.ceil(Decimal(repr(ratio)) * 100)
    assert plan_synthesis({"a": 100, "b": 0}, ratio=ratio)["b"] == exact
    assert plan_synthesis({"a": 100, "b": 0}, ratio=str(ratio))["b"] == exact


def test_the_trap_is_real():
    """Guard for the test above: a float ceil really does overshoot for 0.55 * 100."""
    assert math.ceil(0.55 * 100) == 56
    assert plan_synthesis({"a": 100, "b": 0}, ratio=0.55)["b"] == 55


@pytest.mark.parametrize("ratio", [0, -0.5, 1.0000001, 1.5, "abc", "", float("nan"),
                                   float("inf"), "nan", True, None, Decimal("Infinity")])
def test_ratio_outside_0_1_is_rejected(ratio):
    """Contract: a ratio outside (0, 1] (or not a number) raises a ValueError naming the range."""
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        plan_synthesis({"a": 10, "b": 1}, ratio=ratio)


@pytest.mark.parametrize("counts", [{}, {"a": -1, "b": 2}, {"a": 2.5, "b": 1}])
def test_bad_counts_are_rejected(counts):
    """Contract: empty or non-integer counts raise a ValueError."""
    with pytest.raises(ValueError):
        plan_synthesis(counts, ratio=0.5)


def test_as_ratio_keeps_the_typed_decimal():
    """Contract: floats are read by their shortest repr, strings exactly."""
    assert as_ratio(0.55) == Decimal("0.55")
    assert as_ratio(" 0.7 ") == Decimal("0.7")
    assert as_ratio(1) == Decimal(1)


def test_plan_samples_rederived_from_seed_sequence():
    """Same-seed rederivation: sources and per-image seeds come from SeedSequence([seed, c])."""
    samples = plan_samples(seed=3, class_index=1, n_sources=5, n_synthetic=6)
    sources = np.random.default_rng(np.random.SeedSequence([3, 1])).integers(5, size=6)
    assert [s.source_index for s in samples] == sources.tolist()
    assert [s.k for s in samples] == list(range(6))
    for sample in samples:
        expected = np.random.SeedSequence([3, 1], spawn_key=(sample.k,)).generate_state(1)[0]
        assert sample.seed == int(expected)
    assert len({s.seed for s in samples}) == 6


def test_plan_samples_prefix_stable():
    """Contract: asking for more images keeps the first ones (seeds and sources) unchanged."""
    assert plan_samples(0, 0, 4, 3) == plan_samples(0, 0, 4, 8)[:3]
    assert plan_samples(0, 0, 4, 0) == []
