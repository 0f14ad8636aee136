"""Tests of qclassify.batches: the deterministic-kernels context leaves the process as it was;
epoch-keyed loaders and the per-key seeded augmentation of ImageDataset. Contract tests."""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")

from qclassify.batches import deterministic_algorithms, make_loader  # noqa: E402
from qclassify.images import ImageDataset  # noqa: E402

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


def test_epoch_keyed_loader_yields_each_index_once_per_epoch_with_its_epoch():
    """Contract: with epoch_keys the dataset sees (epoch, index) keys, in the same order as the
    plain shuffling loader's indices; without shuffling the option is refused."""

    class Keys(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, key):
            return torch.tensor(key)

    keyed = make_loader(Keys(), batch_size=4, shuffle=True, seed=4, epoch_keys=True)
    plain = make_loader(Keys(), batch_size=4, shuffle=True, seed=4)
    for epoch in (1, 2):
        keyed.sampler.set_epoch(epoch)
        plain.sampler.set_epoch(epoch)
        keys = torch.cat(list(keyed)).tolist()
        assert [k[0] for k in keys] == [epoch] * 10
        assert [k[1] for k in keys] == torch.cat(list(plain)).tolist()
        assert sorted(k[1] for k in keys) == list(range(10))
    with pytest.raises(ValueError, match="shuffle"):
        make_loader(Keys(), batch_size=3, epoch_keys=True)


def test_augmentation_depends_on_the_key_only(image_folder):
    """Same-seed rederivation: an (epoch, index) key gives the same augmented image whatever
    torch's global generator holds, and leaves that generator untouched; other epochs or
    seeds give other images; without augmentation a key is just its index, with it a bare index
    is refused."""
    paths = sorted(image_folder.rglob("*.png"))[:3]
    augmented = ImageDataset(paths, None, 32, augment_seed=0)
    first = augmented[(1, 2)][0]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    torch.testing.assert_close(augmented[(1, 2)][0], first, atol=0, rtol=0)
    assert torch.equal(torch.get_rng_state(), state)
    assert not torch.equal(augmented[(2, 2)][0], first)
    assert not torch.equal(ImageDataset(paths, None, 32, augment_seed=1)[(1, 2)][0], first)
    plain = ImageDataset(paths, None, 32)
    assert torch.equal(plain[(5, 2)][0], plain[2][0])
    assert not torch.equal(plain[2][0], first)
    assert first.shape == plain[2][0].shape == (3, 32, 32)
    with pytest.raises(TypeError, match=r"\(epoch, index\) keys"):
        augmented[2]


@pytest.mark.parametrize("augment_seed", [None, 3])
def test_cached_images_are_the_decoded_ones(make_images, tmp_path, augment_seed):
    """Same-seed rederivation: an ImageDataset that decodes and resizes every image once
    (cache=True) yields the tensors of one that decodes at every access, with and without
    augmentation (the random draws happen after the resize either way)."""

    data = make_images(tmp_path / "data", counts={"normal": 3, "stenosis": 2})
    paths = sorted(data.rglob("*.png"))
    cached = ImageDataset(paths, None, 40, augment_seed=augment_seed, cache=True)
    plain = ImageDataset(paths, None, 40, augment_seed=augment_seed)
    assert cached.resized is not None and plain.resized is None
    keys = range(len(paths)) if augment_seed is None else [(1, i) for i in range(len(paths))]
    for key in keys:
        torch.testing.assert_close(cached[key][0], plain[key][0], atol=0, rtol=0)


def test_cache_too_large_falls_back_to_decoding(make_images, tmp_path, monkeypatch):
    """Contract: above CACHE_LIMIT_BYTES nothing is cached, with one warning saying so."""
    import qclassify.images as images_module

    data = make_images(tmp_path / "data", counts={"normal": 3, "stenosis": 2})
    monkeypatch.setattr(images_module, "CACHE_LIMIT_BYTES", 1000)
    with pytest.warns(UserWarning, match="decoding them at every epoch"):
        dataset = images_module.ImageDataset(sorted(data.rglob("*.png")), None, 40, cache=True)
    assert dataset.resized is None
