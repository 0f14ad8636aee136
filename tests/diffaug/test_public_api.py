"""Contract: every name that `diffaug.__all__` promises resolves, without importing torch."""

from __future__ import annotations

import subprocess
import sys


def test_all_names_resolve_without_torch():
    """Every public name is an attribute of the package, and importing them all leaves torch
    unimported (the fid extra is loaded only when FID runs)."""
    script = ("import sys, diffaug\n"
              "missing = [n for n in diffaug.__all__ if not hasattr(diffaug, n)]\n"
              "assert not missing, missing\n"
              "assert 'torch' not in sys.modules, 'importing diffaug imported torch'\n")
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stderr
