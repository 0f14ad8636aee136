"""Tests of qclassify.batches: the deterministic-kernels context leaves the process as it was.
Contract tests."""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")

from qclassify.batches import deterministic_algorithms  # noqa: E402

CUBLAS = "CUBLAS_WORKSPACE_CONFIG"


def test_deterministic_algorithms_sets_then_removes_the_cublas_workspace(monkeypatch):
    """Contract: inside, cuBLAS gets its deterministic workspace and torch deterministic
    kernels; after, the variable is gone again and torch's flags are what they were."""
    monkeypatch.delenv(CUBLAS, raising=False)
    flags = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    with deterministic_algorithms():
        assert os.environ[CUBLAS] == ":4096:8"
        assert torch.are_deterministic_algorithms_enabled()
    assert CUBLAS not in os.environ
    assert (torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled()) == flags


def test_deterministic_algorithms_keeps_and_restores_a_users_workspace(monkeypatch):
    """Contract: a value the user set is used as is, and restored even after an error."""
    monkeypatch.setenv(CUBLAS, ":16:8")
    with pytest.raises(RuntimeError, match="boom"), deterministic_algorithms():
        assert os.environ[CUBLAS] == ":16:8"
        os.environ[CUBLAS] = ":0:0"
        raise RuntimeError("boom")
    assert os.environ[CUBLAS] == ":16:8"
