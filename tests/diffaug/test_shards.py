"""Sharded ``diffaug balance``: N shards in any order (or at once) plus finish give the
one-machine output byte for byte; killed shards are rerun; mixed runs and missing shards are
refused. Torch-free; tiny PNG folders from the conftest."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import diffaug.balance
import pytest
from click.testing import CliRunner
from diffaug import balance_folder, finish_shards
from diffaug.balance import BalanceInputError, ShardsIncompleteError
from diffaug.cli import main
from diffaug.io import MANIFEST_NAME
from diffaug.shards import SHARDS_FOLDER, parse_shard

OPTIONS = {"ratio": 0.8, "seed": 3}
COUNTS = {"normal": 9, "stenosis": 3, "occlusion": 2}
RUNTIME_ERROR, USAGE_ERROR = 1, 2


def tree(root: Path) -> dict[str, bytes | None]:
    """Every entry under ``root`` (dot-entries included): files with their bytes, folders None."""
    return {path.relative_to(root).as_posix(): path.read_bytes() if path.is_file() else None
            for path in sorted(root.rglob("*"))}


def run_shards(in_dir: Path, out_dir: Path, order: tuple[int, ...], **options) -> None:
    for index in order:
        balance_folder(in_dir, out_dir, **OPTIONS, shard=(index, len(order)), **options)


def _invoke(*args: object):
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def _assert_one_line_error(result, exit_code: int, *fragments: str) -> None:
    assert result.exit_code == exit_code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def one_machine(class_folders, tmp_path) -> tuple[Path, dict[str, bytes | None]]:
    """IN with three classes and the tree of its one-machine run."""
    in_dir = class_folders(COUNTS)
    balance_folder(in_dir, tmp_path / "one", **OPTIONS)
    return in_dir, tree(tmp_path / "one")


@pytest.mark.parametrize("order", list(itertools.permutations((1, 2, 3))))
def test_shards_in_any_order_then_finish_equal_one_run(one_machine, tmp_path, order):
    """Shards 1..3 in every order plus finish: every file (manifest and run record included)
    and folder equals the one-machine run's, and no shard record is left behind."""
    in_dir, expected = one_machine
    out = tmp_path / "sharded"
    run_shards(in_dir, out, order)
    assert not (out / MANIFEST_NAME).exists()  # not a finished run before finish
    report = finish_shards(in_dir, out)
    assert report.shards_merged == 3
    assert tree(out) == expected


def test_split_layout_and_more_shards_than_jobs(split_folders, tmp_path):
    """Split folders, and N larger than the number of sources: empty shards still record."""
    balance_folder(split_folders, tmp_path / "one", **OPTIONS)
    n = 7
    run_shards(split_folders, tmp_path / "sharded", tuple(range(1, n + 1)))
    finish_shards(split_folders, tmp_path / "sharded")
    assert tree(tmp_path / "sharded") == tree(tmp_path / "one")


def test_three_concurrent_shard_processes_then_finish(one_machine, tmp_path):
    """Three `diffaug balance --shard K/3` processes at once on one OUT (no shard waits for
    another), then `--finish`: the one-machine OUT."""
    in_dir, expected = one_machine
    out = tmp_path / "sharded"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "diffaug", "balance", str(in_dir), str(out), "--ratio",
               str(OPTIONS["ratio"]), "--seed", str(OPTIONS["seed"]), "--quiet"]
    processes = [subprocess.Popen([*command, "--shard", f"{k}/3"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for k in (1, 2, 3)]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr.decode()
    result = _invoke("balance", in_dir, out, "--finish", "--quiet")
    assert result.exit_code == 0, result.output
    assert "merged 3 shards" in result.output
    assert tree(out) == expected


class Killed(BaseException):
    """Stands for SIGKILL: nothing in the run catches it."""


def test_killed_shard_is_rerun_with_the_same_command(one_machine, tmp_path, monkeypatch):
    """A shard dies after writing two synthetic images; its rerun (same command) completes,
    and finish gives the one-machine OUT."""
    in_dir, expected = one_machine
    out = tmp_path / "sharded"
    write = diffaug.balance.atomic_write_bytes
    written: list[Path] = []  # synthetic images

    def dying_write(path, data):
        if Path(path).name.startswith("syn_"):
            if len(written) == 2:
                raise Killed
            written.append(Path(path))
        write(path, data)

    balance_folder(in_dir, out, **OPTIONS, shard=(2, 2))
    with monkeypatch.context() as patch:
        patch.setattr(diffaug.balance, "atomic_write_bytes", dying_write)
        with pytest.raises(Killed):
            balance_folder(in_dir, out, **OPTIONS, shard=(1, 2))
    assert len(written) == 2 and all(path.is_file() for path in written)
    assert not (out / SHARDS_FOLDER / "1-of-2.json").exists()
    with pytest.raises(ShardsIncompleteError, match="1/2"):
        finish_shards(in_dir, out)
    balance_folder(in_dir, out, **OPTIONS, shard=(1, 2))
    finish_shards(in_dir, out)
    assert tree(out) == expected


def test_rerun_of_a_finished_shard_verifies_and_repairs_its_part(one_machine, tmp_path):
    """A shard run again after it finished writes nothing; after one of its files is
    corrupted, it rewrites its part."""
    in_dir, expected = one_machine
    out = tmp_path / "sharded"
    run_shards(in_dir, out, (1, 2))
    again = balance_folder(in_dir, out, **OPTIONS, shard=(2, 2))
    assert again.already_done and again.n_synthetic == 0
    victim = out / next(iter(again.shard.copies))
    victim.write_bytes(b"corrupted")
    repaired = balance_folder(in_dir, out, **OPTIONS, shard=(2, 2))
    assert not repaired.already_done and repaired.n_copied == len(repaired.shard.copies)
    finish_shards(in_dir, out)
    assert tree(out) == expected


def test_shard_and_finish_on_a_finished_out_verify_it(one_machine, tmp_path):
    """After finish, OUT is an ordinary finished run: a shard or finish rerun is a no-op."""
    in_dir, expected = one_machine
    out = tmp_path / "sharded"
    run_shards(in_dir, out, (1, 2))
    finish_shards(in_dir, out)
    assert balance_folder(in_dir, out, **OPTIONS, shard=(1, 2)).already_done
    assert finish_shards(in_dir, out).already_done
    assert tree(out) == expected


@pytest.mark.parametrize("other", [{"ratio": 0.9}, {"seed": 4}, {"blur_sigma": 0.7}])
def test_shard_with_other_options_is_refused(class_folders, tmp_path, snapshot, other):
    """A shard started with options other than the first shard's is refused before it writes."""
    in_dir = class_folders(COUNTS)
    out = tmp_path / "sharded"
    balance_folder(in_dir, out, **OPTIONS, shard=(1, 2))
    before = snapshot(out)
    with pytest.raises(BalanceInputError, match="other input or options"):
        balance_folder(in_dir, out, **{**OPTIONS, **other}, shard=(2, 2))
    assert snapshot(out) == before


def test_shard_of_another_split_is_refused(class_folders, tmp_path):
    """--shard 2/4 next to the records of a split into 3 (parts would overlap) is refused."""
    in_dir = class_folders(COUNTS)
    out = tmp_path / "sharded"
    balance_folder(in_dir, out, **OPTIONS, shard=(1, 3))
    with pytest.raises(BalanceInputError, match="split into 3"):
        balance_folder(in_dir, out, **OPTIONS, shard=(2, 4))


def test_cli_refuses_mismatched_options_in_one_line(class_folders, tmp_path):
    """CLI: the mismatched shard ends in one `Error:` line, exit 2."""
    in_dir = class_folders(COUNTS)
    out = tmp_path / "sharded"
    assert _invoke("balance", in_dir, out, "--ratio", "0.8", "--shard", "1/2",
                   "--quiet").exit_code == 0
    _assert_one_line_error(_invoke("balance", in_dir, out, "--ratio", "0.8", "--seed", "9",
                                   "--shard", "2/2", "--quiet"), USAGE_ERROR, "other input or options")


def test_finish_with_missing_shards_names_them_and_writes_nothing(class_folders, tmp_path,
                                                                 snapshot):
    """--finish with shards 2/4 and 4/4 missing: one line naming both, exit 1, OUT untouched."""
    in_dir = class_folders(COUNTS)
    out = tmp_path / "sharded"
    for index in (1, 3):
        balance_folder(in_dir, out, **OPTIONS, shard=(index, 4))
    before = snapshot(out)
    result = _invoke("balance", in_dir, out, "--finish", "--quiet")
    _assert_one_line_error(result, RUNTIME_ERROR, "2/4, 4/4")
    assert snapshot(out) == before


def test_finish_before_any_shard_is_one_line(class_folders, tmp_path):
    """--finish on an OUT no shard has written: one line, exit 1."""
    in_dir = class_folders(COUNTS)
    _assert_one_line_error(_invoke("balance", in_dir, tmp_path / "nothing", "--finish"),
                           RUNTIME_ERROR, "--shard K/N first")


@pytest.mark.parametrize("spec", ["0/3", "4/3", "3", "a/b", "1/0", "-1/3", "1/3/5", "", "1.5/3"])
def test_bad_shard_specs_are_usage_errors(class_folders, tmp_path, spec):
    """--shard must be K/N with 1 <= K <= N: otherwise one line naming --shard, exit 2."""
    in_dir = class_folders(COUNTS)
    result = _invoke("balance", in_dir, tmp_path / "out", "--ratio", "0.8", "--shard", spec)
    _assert_one_line_error(result, USAGE_ERROR, "--shard", "K/N")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("text", "expected"), [("1/1", (1, 1)), ("3/8", (3, 8)), (" 2 / 5 ", (2, 5))])
def test_shard_spec_parsing(text, expected):
    """K/N parses to (K, N)."""
    assert parse_shard(text) == expected


@pytest.mark.parametrize("shard", [(0, 2), (3, 2), (1.0, 2), "1/2", (True, 2), (1, 2, 3)])
def test_library_refuses_bad_shards(class_folders, tmp_path, shard):
    """balance_folder(shard=...) takes (K, N) integers with 1 <= K <= N only."""
    in_dir = class_folders(COUNTS)
    with pytest.raises(ValueError, match="shard must be"):
        balance_folder(in_dir, tmp_path / "out", **OPTIONS, shard=shard)


@pytest.mark.parametrize("extra", [["--ratio", "0.8"], ["--seed", "1"], ["--shard", "1/2"]])
def test_finish_takes_its_options_from_out(class_folders, tmp_path, extra):
    """--finish with run options: one line naming the option, exit 2."""
    in_dir = class_folders(COUNTS)
    _assert_one_line_error(_invoke("balance", in_dir, tmp_path / "out", "--finish", *extra),
                           USAGE_ERROR, "--finish", extra[0])


def test_ratio_is_required_without_finish(class_folders, tmp_path):
    """Without --finish, a missing --ratio is one usage-error line."""
    in_dir = class_folders(COUNTS)
    _assert_one_line_error(_invoke("balance", in_dir, tmp_path / "out"), USAGE_ERROR, "--ratio")


def test_dry_run_prints_the_shards_plan(class_folders, tmp_path):
    """--dry-run --shard K/N prints that shard's share and writes nothing."""
    in_dir = class_folders(COUNTS)
    result = _invoke("balance", in_dir, tmp_path / "out", "--ratio", "0.8", "--seed", "3",
                     "--shard", "2/3", "--dry-run")
    assert result.exit_code == 0, result.output
    report = balance_folder(in_dir, tmp_path / "out", **OPTIONS, shard=(2, 3), dry_run=True)
    assert (f"Dry run: shard 2/3 would copy {len(report.shard.copies)} originals and "
            f"{len(report.shard.rows)} of {report.n_synthetic_planned} synthetic") in result.output
    assert not (tmp_path / "out").exists()


def test_shards_split_the_work_disjointly_and_evenly(class_folders, tmp_path):
    """Round robin: every copy and synthetic image in exactly one shard, shares differing by
    at most one source's images."""
    in_dir = class_folders({"normal": 20, "stenosis": 4, "occlusion": 3})
    parts = [balance_folder(in_dir, tmp_path / "out", ratio=1, shard=(k, 4), dry_run=True).shard
             for k in range(1, 5)]
    copies = [path for part in parts for path in part.copies]
    rows = sorted(row for part in parts for row in part.rows)
    assert len(copies) == len(set(copies)) == 20 + 4 + 3
    assert rows == list(range(len(rows)))
    assert max(len(part.copies) for part in parts) - min(len(part.copies) for part in parts) <= 1
