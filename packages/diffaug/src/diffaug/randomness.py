"""Where the augmenter's draws come from: one generator per process, per-call keys, workers.

A generator made in one process is copied into every forked worker (PyTorch ``DataLoader``,
Hugging Face ``Dataset.map(num_proc=...)``, ``multiprocessing``), so without care each worker
repeats the others' draws. :class:`RandomStreams` therefore keeps one generator per process:

* in the process that built the augmenter: ``random_state`` itself (an int seeds a fresh
  generator, a ``numpy.random.Generator`` is used as it is, None draws OS entropy);
* in any other process: a generator keyed by ``random_state``'s entropy and the seed the
  framework gave that worker, which PyTorch changes every epoch for non-persistent workers
  (``torch.utils.data.get_worker_info().seed``, read only when torch is already loaded);
  without one, the process id keys it and a warning says the draws are independent but not
  reproducible;
* for a call with an explicit ``seed`` (e.g. ``[epoch, index]``): a generator keyed by
  ``random_state``'s entropy and that seed, in any process: the same bytes whatever the
  number of workers, when ``random_state`` is an int.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["RandomStreams", "keyed_generator", "seed_key", "worker_seed"]

RandomState = int | np.random.Generator | None

#: First spawn-key word of each keyed stream, so a per-call seed never equals a worker's key.
CALL_STREAM, WORKER_STREAM = 0, 1


def keyed_generator(entropy: int, stream: int, key: Sequence[int]) -> np.random.Generator:
    """``default_rng(SeedSequence(entropy, spawn_key=(stream, *key)))``: independent streams."""
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(stream, *key)))


def seed_key(seed: Any) -> tuple[int, ...]:
    """A per-call ``seed`` (a non-negative integer or a sequence of them) as spawn-key words."""
    words = np.asarray(seed)
    if words.ndim > 1 or words.size == 0 or words.dtype.kind not in "iu" or np.any(words < 0):
        raise ValueError(f"seed must be a non-negative integer or a sequence of them, e.g. "
                         f"[epoch, index]; got {seed!r}.")
    return tuple(int(word) for word in words.reshape(-1))


def worker_seed() -> int | None:
    """The seed PyTorch gave this DataLoader worker for this epoch; None outside one.

    Never imports torch: a worker exists only if the caller's torch did.
    """
    data = sys.modules.get("torch.utils.data")
    info = None if data is None else data.get_worker_info()
    return None if info is None else int(info.seed) % 2**64


def _root_entropy(random_state: RandomState) -> int:
    if random_state is None:
        return int(np.random.SeedSequence().entropy)
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**63))
    return int(random_state)


class RandomStreams:
    """The generators of one augmenter (see the module docstring); built with it, so it
    remembers the process it was built in."""

    def __init__(self) -> None:
        self._origin_pid = os.getpid()
        self._stream: tuple[int, Any, np.random.Generator] | None = None  # pid, source, rng
        self._entropy: tuple[Any, int] | None = None  # source, its entropy

    def generator(self, random_state: RandomState, seed: Any = None) -> np.random.Generator:
        """The generator for this process (or, with ``seed``, for this call)."""
        if seed is not None:
            return keyed_generator(self._entropy_of(random_state), CALL_STREAM, seed_key(seed))
        pid = os.getpid()
        if self._stream is None or self._stream[0] != pid or self._stream[1] is not random_state:
            self._stream = (pid, random_state, self._new_generator(random_state, pid))
        return self._stream[2]

    def _new_generator(self, random_state: RandomState, pid: int) -> np.random.Generator:
        key = worker_seed()
        if key is None and pid == self._origin_pid:
            if isinstance(random_state, np.random.Generator):
                return random_state
            return np.random.default_rng(random_state)
        if key is None:
            key = pid
            if random_state is not None:
                warnings.warn(
                    f"DiffusionAugmentor runs in process {pid}, not the one it was built in, "
                    "outside a PyTorch DataLoader worker: it reseeds from the process id, so "
                    "draws are independent but not reproducible. Pass seed=... per call (e.g. "
                    "aug(image, seed=[epoch, index])) for reproducible draws.",
                    RuntimeWarning, stacklevel=4)
        return keyed_generator(self._entropy_of(random_state), WORKER_STREAM, (key,))

    def _entropy_of(self, random_state: RandomState) -> int:
        """``random_state``'s entropy, drawn once (a Generator or None would otherwise give a
        new value per call); forked workers inherit it when it was drawn before the fork."""
        if self._entropy is None or self._entropy[0] is not random_state:
            self._entropy = (random_state, _root_entropy(random_state))
        return self._entropy[1]
