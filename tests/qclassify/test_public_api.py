"""Contract: every name that `qclassify.__all__` promises resolves to an object."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

import qclassify  # noqa: E402


@pytest.mark.parametrize("name", qclassify.__all__)
def test_all_names_resolve(name):
    """Each lazily exported name imports from the module its table names."""
    assert getattr(qclassify, name) is not None


def test_unknown_names_are_attribute_errors():
    """A name outside __all__ is an AttributeError, as for any module."""
    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        qclassify.nosuch  # noqa: B018
