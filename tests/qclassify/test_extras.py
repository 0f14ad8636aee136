"""Optional extras fail at first use with an install hint, never at import."""

from __future__ import annotations

import sys

import pytest

pytest.importorskip("torch")

from qclassify.quantum import QuantumFeatureLayer  # noqa: E402


def test_pennylane_backend_without_pennylane_names_the_extra(monkeypatch):
    """Contract (STYLE: optional dependencies): with PennyLane not installed, the torch backend
    works and the pennylane backend raises ImportError naming `qclassify[pennylane]`."""
    monkeypatch.setitem(sys.modules, "pennylane", None)  # `import pennylane` now fails
    assert QuantumFeatureLayer(n_qubits=2, n_layers=1, backend="torch").weights.shape == (1, 2)
    with pytest.raises(ImportError, match=r"pip install 'qclassify\[pennylane\]'"):
        QuantumFeatureLayer(n_qubits=2, n_layers=1, backend="pennylane")


def test_cli_without_pennylane_is_one_line(make_images, tmp_path, monkeypatch):
    """CLI: `fit --q-backend pennylane` without PennyLane is one `Error:` line with the hint."""
    from click.testing import CliRunner
    from qclassify.cli import main

    monkeypatch.setitem(sys.modules, "pennylane", None)
    data = make_images(tmp_path / "data")
    result = CliRunner().invoke(main, ["fit", str(data), "--out", str(tmp_path / "run"),
                                       "--weights", "none", "--image-size", "32", "--epochs", "1",
                                       "--q-backend", "pennylane", "--quiet"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("Error: the 'pennylane' backend")
    assert "Traceback" not in result.output
