"""Attacks on sharded `diffaug balance` (--shard K/N, --finish): duplicate and racing shards,
tampered records, inputs changed between shards, corrupted parts, other shards' temporary
files, links planted in OUT. Torch-free; tiny generated PNG folders."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from diffaug import balance_folder, finish_shards
from diffaug.balance import BalanceInputError, OutputFolderBusyError, ShardsIncompleteError
from diffaug.cli import main
from diffaug.io import MANIFEST_NAME
from diffaug.shards import SHARDS_FOLDER
from PIL import Image

OPTIONS = {"ratio": 1, "seed": 5}


def _tree(root: Path) -> dict[str, bytes | None]:
    return {path.relative_to(root).as_posix(): path.read_bytes() if path.is_file() else None
            for path in sorted(root.rglob("*"))}


def _save(path: Path, seed: int, size: int = 10) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def in_dir(tmp_path: Path) -> Path:
    """IN: 6 normal and 2 stenosis images (ratio 1 asks for 4 synthetic images)."""
    root = tmp_path / "in"
    for index in range(6):
        _save(root / "normal" / f"n{index}.png", index)
    for index in range(2):
        _save(root / "stenosis" / f"s{index}.png", 100 + index)
    return root


@pytest.fixture
def expected(in_dir: Path, tmp_path: Path) -> dict[str, bytes | None]:
    """The tree of the one-machine run."""
    balance_folder(in_dir, tmp_path / "one", **OPTIONS)
    return _tree(tmp_path / "one")


def _hold_lock(out: Path, name: str) -> int:
    (out / SHARDS_FOLDER).mkdir(parents=True, exist_ok=True)
    descriptor = os.open(out / SHARDS_FOLDER / name, os.O_RDWR | os.O_CREAT)
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return descriptor


def test_same_shard_started_twice_fails_at_once(in_dir, tmp_path):
    """Attack: a requeued job starts shard 1/2 while the first copy still runs. The second
    fails at once naming the shard (exit 1, one line) instead of racing its twin."""
    out = tmp_path / "out"
    balance_folder(in_dir, out, **OPTIONS, shard=(2, 2))
    descriptor = _hold_lock(out, "1-of-2.lock")
    try:
        with pytest.raises(OutputFolderBusyError, match="shard 1/2"):
            balance_folder(in_dir, out, **OPTIONS, shard=(1, 2))
        assert balance_folder(in_dir, out, **OPTIONS, shard=(2, 2)).already_done  # no waiting
        result = CliRunner().invoke(main, ["balance", str(in_dir), str(out), "--ratio", "1",
                                           "--seed", "5", "--shard", "1/2"])
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert "Traceback" not in result.output
    finally:
        os.close(descriptor)


def test_finish_while_a_shard_reruns_is_refused(in_dir, tmp_path):
    """Attack: --finish while a shard (record present, rerunning) still writes: refused,
    nothing written."""
    out = tmp_path / "out"
    for index in (1, 2):
        balance_folder(in_dir, out, **OPTIONS, shard=(index, 2))
    before = _tree(out)
    descriptor = _hold_lock(out, "2-of-2.lock")
    try:
        with pytest.raises(OutputFolderBusyError, match="shard 2/2"):
            finish_shards(in_dir, out)
    finally:
        os.close(descriptor)
    assert _tree(out) == before


def test_racing_shards_with_other_options_never_merge(in_dir, tmp_path):
    """Attack: two shards with different seeds start at once on an empty OUT (both pass the
    start check); finish refuses the odd record and writes nothing."""
    out, other = tmp_path / "out", tmp_path / "other"
    balance_folder(in_dir, out, **OPTIONS, shard=(1, 2))
    balance_folder(in_dir, other, **{**OPTIONS, "seed": 6}, shard=(2, 2))
    odd = other / SHARDS_FOLDER / "2-of-2.json"
    (out / SHARDS_FOLDER / "2-of-2.json").write_bytes(odd.read_bytes())
    before = _tree(out)
    with pytest.raises(BalanceInputError, match="2-of-2.json.*other options"):
        finish_shards(in_dir, out)
    assert _tree(out) == before


@pytest.mark.parametrize("tamper", ["garbage", "duplicate_row", "sha256"])
def test_tampered_records_are_refused(in_dir, tmp_path, expected, tamper):
    """Attack: a shard record edited by hand (not JSON, a row listed twice, a wrong sha256).
    Finish refuses naming the record or the shard; rerunning the shard (after removing a
    record that is not one, as the message says) repairs it."""
    out = tmp_path / "out"
    for index in (1, 2):
        balance_folder(in_dir, out, **OPTIONS, shard=(index, 2))
    path = out / SHARDS_FOLDER / "1-of-2.json"
    record = json.loads(path.read_text())
    if tamper == "garbage":
        path.write_text("{not json")
    elif tamper == "duplicate_row":
        record["rows"].append(record["rows"][0])
        path.write_text(json.dumps(record))
    else:
        record["rows"][0][-1] = "0" * 64
        path.write_text(json.dumps(record))
    with pytest.raises((BalanceInputError, ShardsIncompleteError), match="1-of-2|shard 1/2"):
        finish_shards(in_dir, out)
    assert not (out / MANIFEST_NAME).exists()
    if tamper != "sha256":  # not a record: the message says to remove it
        path.unlink()
    balance_folder(in_dir, out, **OPTIONS, shard=(1, 2))
    finish_shards(in_dir, out)
    assert _tree(out) == expected


def test_input_changed_between_shards_is_refused(in_dir, tmp_path):
    """Attack: an image of IN is replaced (another size) after shard 1 ran: shard 2 and
    finish refuse instead of mixing parts of two inputs."""
    out = tmp_path / "out"
    balance_folder(in_dir, out, **OPTIONS, shard=(1, 2))
    _save(in_dir / "normal" / "n3.png", 7, size=14)
    with pytest.raises(BalanceInputError, match="input folder changed"):
        balance_folder(in_dir, out, **OPTIONS, shard=(2, 2))


def test_file_corrupted_before_finish_names_its_shard(in_dir, tmp_path, expected):
    """Attack: a synthetic image written by a shard is truncated before --finish: one line
    naming the file and the shard to rerun, exit 1, no manifest; the rerun then finishes."""
    out = tmp_path / "out"
    reports = [balance_folder(in_dir, out, **OPTIONS, shard=(index, 2)) for index in (1, 2)]
    record = json.loads((out / SHARDS_FOLDER / "2-of-2.json").read_text())
    victim = record["rows"][0][1]
    (out / victim).write_bytes((out / victim).read_bytes()[:20])
    result = CliRunner().invoke(main, ["balance", str(in_dir), str(out), "--finish"])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert victim in result.output and "shard 2/2" in result.output
    assert not (out / MANIFEST_NAME).exists()
    assert reports[1].shard.rows
    balance_folder(in_dir, out, **OPTIONS, shard=(2, 2))
    finish_shards(in_dir, out)
    assert _tree(out) == expected


def test_shards_leave_other_shards_temporary_files_alone(in_dir, tmp_path, expected):
    """Attack on parallel shards: a temporary file of another shard's write in progress must
    not be deleted by a starting shard (its rename would fail); finish removes stale ones."""
    out = tmp_path / "out"
    balance_folder(in_dir, out, **OPTIONS, shard=(1, 2))
    in_progress = out / "normal" / ".tmp-0123456789abcdef"
    in_progress.write_bytes(b"half")
    balance_folder(in_dir, out, **OPTIONS, shard=(2, 2))
    assert in_progress.exists()
    finish_shards(in_dir, out)
    assert _tree(out) == expected


def test_link_planted_in_out_between_shards_is_refused(in_dir, tmp_path):
    """Attack: between shards, a class folder of OUT is replaced by a link elsewhere; the next
    shard refuses instead of writing through it."""
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    balance_folder(in_dir, out, **OPTIONS, shard=(1, 2))
    (out / "stenosis").rename(elsewhere)
    (out / "stenosis").symlink_to(elsewhere, target_is_directory=True)
    before = _tree(elsewhere)
    with pytest.raises(BalanceInputError, match="symbolic link"):
        balance_folder(in_dir, out, **OPTIONS, shard=(2, 2))
    assert _tree(elsewhere) == before
