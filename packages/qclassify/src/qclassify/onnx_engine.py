"""A run's model in ONNX Runtime: exported on first use, cached in the run folder.

``qclassify predict --engine onnxruntime`` (and ``auto`` on a CPU) needs no earlier
``qclassify export``: the model is exported once into ``RUN/.cache/``, keyed by the SHA-256 of
``model.pt``, so a retrained model is never run from a stale export and a later call costs a
session load only. Where the run folder cannot be written the export runs from memory, as
`diffaug fid` does with its own cache. Images are decoded and preprocessed by the same
pipeline as the torch engine's (`qclassify.predict_batches`), in the same batches; the models
are only built (from ``model.pt``) when there is no loadable export to run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from torch import nn

from qclassify.runfolder import CACHE_FOLDER, RunFolder, atomic_write
from qclassify.serialise import INPUT_NAME, average_probabilities, onnx_bytes

if TYPE_CHECKING:  # annotations only: onnxruntime is imported where it is used
    import onnxruntime


class ExportableRun(Protocol):
    """What `OnnxRunner.for_run` needs of a loaded run: `qclassify.inference.LoadedRun`, or a
    seed ensemble's `qclassify.ensemble_run.EnsembleRun` (its members' models averaged)."""

    run_dir: Path
    image_size: int

    @property
    def models(self) -> list[nn.Module]:
        """Built only when the export is missing or unloadable."""
        ...


__all__ = ["CACHE_FOLDER", "CACHE_FORMAT", "OnnxRunner", "cached_model_path"]

CACHE_FORMAT = "1"  # bump when the exported graph changes, so older caches are not used


def cached_model_path(run_dir: str | Path) -> Path:
    """``RUN/.cache/model-<key>-f<CACHE_FORMAT>.onnx``, named by `RunFolder.model_key` (the
    sha256 of ``model.pt``, or of each member's, in seed order, for a seed ensemble)."""
    run_dir = Path(run_dir)
    return run_dir / CACHE_FOLDER / f"model-{RunFolder(run_dir).model_key()}-f{CACHE_FORMAT}.onnx"


class OnnxRunner:
    """A run's probabilities from ONNX Runtime on the CPU, batch by batch
    (`qclassify.predict_batches.BatchEngine`)."""

    def __init__(self, session: onnxruntime.InferenceSession, image_size: int) -> None:
        self.session = session
        self.image_size = image_size

    @classmethod
    def for_run(cls, run: ExportableRun) -> OnnxRunner:
        """The cached export of a loaded run's models (one, or a seed ensemble's members
        averaged in one graph; on the CPU, torch circuit backend); exported (and cached in
        the run folder) when missing or unloadable, the only case that uses ``run.models``."""
        path = cached_model_path(run.run_dir)
        session = _cached_session(path)
        if session is None:
            exported = onnx_bytes(average_probabilities(run.models), run.image_size)
            try:
                path.parent.mkdir(exist_ok=True)
                atomic_write(path, lambda file: file.write(exported))
            except OSError:
                pass  # a read-only run folder: run from memory, export again next time
            session = _session(exported)
        return cls(session, run.image_size)

    def batch_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (B, C), float64, of normalised images (B, 3, S, S) float32."""
        proba = self.session.run(None, {INPUT_NAME: images})[0].astype(np.float64)
        # Renormalised in float64 so rows sum to one as tightly as the torch engine's (its
        # softmax runs in float64); the values move by float32 rounding only.
        return proba / proba.sum(axis=1, keepdims=True)


def _session(model: str | bytes) -> onnxruntime.InferenceSession:
    import onnxruntime

    return onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])


def _cached_session(path: Path) -> onnxruntime.InferenceSession | None:
    if not path.is_file():
        return None
    try:
        return _session(str(path))
    except Exception:  # noqa: BLE001 - onnxruntime's load errors (InvalidProtobuf, Fail, ...)
        return None  # derive from Exception only; any of them means: export again
