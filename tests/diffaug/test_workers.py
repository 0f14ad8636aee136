"""Randomness of the augmenter in worker processes and with per-call seeds.

A transform used in a PyTorch DataLoader (or Hugging Face ``Dataset.map(num_proc=...)``) is
copied into forked workers; a generator copied with it repeats the same draws in every worker
and every epoch. These tests run real forked processes (and, when torch is installed, a real
DataLoader with 2 workers); torch is only imported where a test needs it.
"""

from __future__ import annotations

import multiprocessing
import warnings

import numpy as np
import pytest
from diffaug import DiffusionAugmentor

N_SAMPLES, N_EPOCHS = 8, 2


def _image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (10, 10), dtype=np.uint8)


def _bytes(image) -> bytes:
    return np.asarray(image).tobytes()


def _draw_in_child(augmentor: DiffusionAugmentor, queue) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        draws = [_bytes(augmentor(_image())) for _ in range(2)]
    queue.put((draws, [str(warning.message) for warning in caught]))


def test_forked_processes_draw_independently_with_a_warning():
    """Failure reproduced: forked workers (multiprocessing, HF datasets) inherited one generator
    state and repeated each other's draws. Now each reseeds once, from random_state and its
    process id, and warns (once) that such draws are not reproducible."""
    augmentor = DiffusionAugmentor(random_state=0)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_draw_in_child, args=(augmentor, queue))
                for _ in range(2)]
    for child in children:
        child.start()
    results = [queue.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=60)
    draws = [draw for child_draws, _ in results for draw in child_draws]
    assert len(set(draws)) == 4
    assert _bytes(augmentor(_image())) not in draws  # the parent keeps its own stream
    for _, messages in results:
        assert len(messages) == 1 and "not reproducible" in messages[0]


def test_per_call_seed_rederived_from_the_documented_key():
    """Same-seed rederivation: aug(image, seed=[epoch, index]) draws from
    SeedSequence(random_state, spawn_key=(0, epoch, index)), whatever was drawn before."""
    augmentor = DiffusionAugmentor(random_state=7)
    first = augmentor(_image(), seed=[1, 2])
    augmentor(_image())  # unkeyed draws do not shift keyed ones
    generator = np.random.default_rng(np.random.SeedSequence(7, spawn_key=(0, 1, 2)))
    t, gamma = int(generator.integers(5)), float(generator.uniform(0.9, 1.1))
    noise = generator.standard_normal((10, 10), dtype=np.float32)
    expected = DiffusionAugmentor().apply(_image(), t=t, gamma=gamma, noise=noise)
    np.testing.assert_array_equal(first, expected)
    np.testing.assert_array_equal(augmentor(_image(), seed=[1, 2]), first)
    assert not np.array_equal(augmentor(_image(), seed=[2, 1]), first)
    assert not np.array_equal(DiffusionAugmentor(random_state=8)(_image(), seed=[1, 2]), first)


@pytest.mark.parametrize("seed", [-1, 1.5, [], [[1, 2]], "epoch"])
def test_bad_per_call_seed_is_refused(seed):
    """Contract: a seed that is not a non-negative integer (or a sequence of them) raises."""
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        DiffusionAugmentor(random_state=0)(_image(), seed=seed)


def test_generator_random_state_is_used_as_it_is():
    """Contract (scikit-learn semantics): a Generator is drawn from directly, so it gives what
    the int that seeded it gives, and it advances."""
    generator = np.random.default_rng(3)
    out = DiffusionAugmentor(random_state=generator)(_image())
    np.testing.assert_array_equal(out, DiffusionAugmentor(random_state=3)(_image()))
    assert generator.bit_generator.state != np.random.default_rng(3).bit_generator.state


def test_set_params_random_state_takes_effect():
    """Failure guarded: a generator cached at first use must not outlive set_params."""
    augmentor = DiffusionAugmentor(random_state=0)
    augmentor(_image())
    augmentor.set_params(random_state=1)
    np.testing.assert_array_equal(augmentor(_image()), DiffusionAugmentor(random_state=1)(_image()))


class _AugmentedImages:
    """A map-style dataset: the same source image, augmented per item."""

    def __init__(self, augmentor: DiffusionAugmentor, *, keyed: bool) -> None:
        self.augmentor, self.keyed, self.epoch = augmentor, keyed, 0

    def __len__(self) -> int:
        return N_SAMPLES

    def __getitem__(self, index: int) -> np.ndarray:
        seed = [self.epoch, index] if self.keyed else None
        return self.augmentor(_image(), seed=seed)


def _loader_draws(num_workers: int, *, keyed: bool) -> list[bytes]:
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    torch.manual_seed(0)
    dataset = _AugmentedImages(DiffusionAugmentor(random_state=0), keyed=keyed)
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers,
                        multiprocessing_context="fork" if num_workers else None)
    draws = []
    for epoch in range(N_EPOCHS):
        dataset.epoch = epoch  # non-persistent workers get a fresh copy each epoch
        draws += [item.numpy().tobytes() for item in loader]
    return draws


def test_dataloader_workers_draw_independently_each_epoch():
    """Failure reproduced: with DataLoader(num_workers=2) both workers repeated the same draws
    and every epoch repeated the first (4 distinct images out of 16). Now each worker reseeds
    from random_state and torch's per-worker, per-epoch seed: 16 distinct draws, and the same
    bytes again for the same torch seed."""
    draws = _loader_draws(2, keyed=False)
    assert len(set(draws)) == N_SAMPLES * N_EPOCHS
    assert _loader_draws(2, keyed=False) == draws


def test_dataloader_per_call_seed_does_not_depend_on_workers():
    """Contract: keyed draws (seed=[epoch, index]) give the same bytes with 0 or 2 workers."""
    draws = _loader_draws(2, keyed=True)
    assert len(set(draws)) == N_SAMPLES * N_EPOCHS
    assert _loader_draws(0, keyed=True) == draws
