"""qclassify: MobileNetV2 with a quantum feature layer for imbalanced image classification.

Names are imported lazily (PEP 562) so that light modules such as `qclassify.figures` and
`qclassify.metrics` can be used without paying for torch and PennyLane imports.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "QuantumFeatureLayer": "qclassify.quantum",
    "amplitude_encode": "qclassify.quantum",
    "BACKENDS": "qclassify.quantum",
    "QuantumMobileNetV2": "qclassify.models",
    "build_model": "qclassify.models",
    "MODEL_NAMES": "qclassify.models",
    "TrainConfig": "qclassify.options",
    "fit": "qclassify.train",
    "run_is_complete": "qclassify.config",
    "load_run": "qclassify.inference",
    "evaluate_run": "qclassify.inference",
    "predict_paths": "qclassify.inference",
    "fit_seeds": "qclassify.ensemble",
    "load_ensemble": "qclassify.ensemble_run",
    "evaluate_any": "qclassify.ensemble_run",
    "predict_any": "qclassify.ensemble_run",
    "discover_dataset": "qclassify.data",
    "read_image": "qclassify.images",
    "METRIC_NAMES": "qclassify.metrics",
    "evaluate_predictions": "qclassify.metrics",
    "bootstrap_metrics": "qclassify.metrics",
    "delong_test": "qclassify.stats",
    "mcnemar_test": "qclassify.stats",
    "compare": "qclassify.compare",
    "CompareResult": "qclassify.compare",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'qclassify' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
