"""Data-parallel training pieces that need no second process: rank shards of the seeded batch
order, the global batch size, the per-rank device, and the single-process identity.

The end-to-end torchrun runs are in tests/qclassify/test_distributed.py.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from qclassify.batches import make_loader  # noqa: E402
from qclassify.distributed import (  # noqa: E402
    SINGLE_PROCESS,
    TORCHRUN_VARIABLES,
    Ranks,
    current_ranks,
    torchrun_group,
)
from qclassify.options import OptionError  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402


class _Indices(Dataset):
    """Item i is (i, 0): a batch shows which images it holds."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[int, int]:
        return index, 0


def _batches(length: int, batch_size: int, epoch: int, *, num_replicas: int = 1,
             rank: int = 0) -> list[list[int]]:
    loader = make_loader(_Indices(length), batch_size=batch_size, shuffle=True, seed=7,
                         num_replicas=num_replicas, rank=rank)
    loader.sampler.set_epoch(epoch)
    return [images.tolist() for images, _ in loader]


@pytest.mark.parametrize("length", [16, 17, 18, 26])
@pytest.mark.parametrize("world_size", [2, 4])
def test_rank_shards_together_are_the_single_process_batches(length, world_size):
    """Failure: shards that overlap, change with the rank count, or regroup images would train
    on other batches than one process does. The k-th batches of all ranks together are the
    single-process k-th batch (global batch 8) whenever each rank gets whole batches; a lone
    last image is dropped as in one process, and at most world_size - 1 images of the last
    batch are left out so that all ranks take the same number of steps."""
    global_batch = 8
    single = _batches(length, global_batch, epoch=3)
    shards = [_batches(length, global_batch // world_size, epoch=3, num_replicas=world_size,
                       rank=rank) for rank in range(world_size)]
    assert len({len(shard) for shard in shards}) == 1  # the same number of steps everywhere
    for step, together in enumerate(zip(*shards, strict=True)):
        images = [image for batch in together for image in batch]
        assert len(images) == len(set(images))  # disjoint
        assert set(images) <= set(single[step])
        assert len(single[step]) - len(images) < world_size
        if step < length // global_batch:
            assert sorted(images) == sorted(single[step])
    assert shards == [_batches(length, global_batch // world_size, epoch=3,
                               num_replicas=world_size, rank=rank) for rank in range(world_size)]
    assert _batches(length, global_batch // world_size, epoch=4, num_replicas=world_size) \
        != shards[0]  # a new order each epoch


def test_single_process_loader_is_unchanged():
    """Regression: one process keeps its order and drops only a lone last image."""
    assert [len(batch) for batch in _batches(17, 4, epoch=1)] == [4, 4, 4, 4]
    assert [len(batch) for batch in _batches(18, 4, epoch=1)] == [4, 4, 4, 4, 2]
    assert sorted(sum(_batches(16, 4, epoch=1), [])) == list(range(16))


def test_global_batch_must_split_over_the_processes():
    """Bad input: --batch-size 3 over 2 processes cannot keep the global batch; the error
    names the flag. --resume is refused under torchrun."""
    ranks = Ranks(rank=1, world_size=2, local_rank=1)
    assert ranks.check_supported(4, resume=False) == 2
    with pytest.raises(OptionError, match="divisible by the 2 torchrun processes") as caught:
        ranks.check_supported(3, resume=False)
    assert caught.value.for_flag().startswith("--batch-size 3 ")
    with pytest.raises(OptionError, match="resume is not available under torchrun"):
        ranks.check_supported(4, resume=True)
    assert SINGLE_PROCESS.check_supported(3, resume=True) == 3


def test_each_rank_takes_the_gpu_of_its_local_rank():
    """Failure: every process on cuda:0. cuda/auto become cuda:LOCAL_RANK; an explicit
    cuda:N under torchrun is refused, naming --device; the CPU stays the CPU."""
    ranks = Ranks(rank=3, world_size=4, local_rank=1)
    assert ranks.device_for(torch.device("cuda")) == torch.device("cuda", 1)
    assert ranks.device_for(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(OptionError, match="LOCAL_RANK") as caught:
        ranks.device_for(torch.device("cuda", 0))
    assert caught.value.for_flag().startswith("--device ")
    assert SINGLE_PROCESS.device_for(torch.device("cuda", 0)) == torch.device("cuda", 0)


def test_without_torchrun_nothing_is_distributed(monkeypatch):
    """Regression: a plain process sets up no process group and every hook is the identity,
    so a single-process run computes what it did before."""
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    model = torch.nn.Linear(2, 2)
    with torchrun_group("cpu") as ranks:
        assert ranks is SINGLE_PROCESS and current_ranks() is SINGLE_PROCESS
        assert not torch.distributed.is_initialized()
        assert ranks.wrap(model, torch.device("cpu")) is model
        assert ranks.sum(1.5, 3) == (1.5, 3)
        assert ranks.from_main(lambda: "computed") == "computed"
        assert ranks.first_to_fail()


def test_seeds_under_torchrun_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    """Misuse: `torchrun ... qclassify fit --seeds 0-2` would have every rank write the same
    member folders; it is a usage error (exit 2, one line) and nothing is created."""
    from click.testing import CliRunner
    from qclassify.cli import main

    for name, value in (("WORLD_SIZE", "2"), ("RANK", "0"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(name, value)
    data = tmp_path / "data"
    for name in ("a", "b"):
        (data / name).mkdir(parents=True)
    result = CliRunner().invoke(main, ["fit", str(data), "--out", str(tmp_path / "run"),
                                       "--weights", "none", "--seeds", "0-2"])
    assert result.exit_code == 2, result.output
    assert "--seeds is not supported under torchrun" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()
