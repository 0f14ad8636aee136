"""Adversarial tests of ``diffaug balance``: odd file names, concurrent and interrupted runs,
tampered outputs, FIFOs, links, crafted images. Each test reproduces one failure found by an
adversarial pass and checks the promise that failure broke.

Kinds: contract tests over tiny folders generated in tmp_path (no network, no shared data);
the CLI through click's CliRunner, or a real subprocess where signals or a blocking open are
involved. Nothing here imports torch.
"""

from __future__ import annotations

import csv
import fcntl
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from diffaug import balance_folder
from diffaug.balance import BalanceInputError
from diffaug.cli import main
from diffaug.fid.frechet import FeatureStatistics
from diffaug.io import (
    MANIFEST_NAME,
    SpreadsheetFormulaWarning,
    atomic_write_bytes,
    read_manifest,
    sha256_file,
)
from PIL import Image, ImageOps

USAGE_ERROR, RUNTIME_ERROR = 2, 1
SIDE = 12  # pixels per side of the generated images


def _save_image(path: Path, seed: int = 0, size: tuple[int, int] = (SIDE, SIDE)) -> Path:
    """A small random grayscale image at ``path`` (format from the suffix; parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size[::-1], dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _dataset(root: Path, counts: dict[str, int]) -> Path:
    """``root/<class>/img_<i>.png`` with ``counts[class]`` images each."""
    for class_index, (name, count) in enumerate(counts.items()):
        for index in range(count):
            _save_image(root / name / f"img_{index:03d}.png", seed=100 * class_index + index)
    return root


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (dot-files included) with its bytes."""
    return {path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob("*")) if path.is_file()}


def _invoke(*args: object):
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def _assert_one_line_error(result, exit_code: int, *fragments: str) -> str:
    """One ``Error:`` line (nothing else on stdout or stderr), the exit status, no traceback."""
    assert result.exit_code == exit_code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _run_cli(*args: object, timeout: float = 60) -> subprocess.CompletedProcess:
    """``python -m diffaug ARGS`` in a real process (same interpreter and PYTHONPATH)."""
    return subprocess.run([sys.executable, "-m", "diffaug", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, check=False)


# `diffaug balance` with each synthetic image taking 0.3 s more: runs long enough to be
# signalled mid-way (worker processes are forked with the patch).
_SLOW_BALANCE = """
import sys, time
from diffaug.augment import DiffusionAugmentor
variants = DiffusionAugmentor.variants
def slow_variants(self, *args, **kwargs):
    for variant in variants(self, *args, **kwargs):
        time.sleep(0.3)
        yield variant
DiffusionAugmentor.variants = slow_variants
from diffaug.cli import main
main(sys.argv[1:])
"""

# `diffaug balance` that waits 1 s between its look at OUT and its first write: two runs
# started together then both get past the look, as in the reported race.
_RACING_BALANCE = """
import sys, time
import diffaug.balance
write_output = diffaug.balance._write_output
def late_write_output(*args, **kwargs):
    time.sleep(1)
    return write_output(*args, **kwargs)
diffaug.balance._write_output = late_write_output
from diffaug.cli import main
main(sys.argv[1:])
"""


# --- item 4: the manifest keeps every file name exact ----------------------------------------

ODD_NAMES = ["cr\rname", "lf\nname", 'comma,and"quote"', "scan\\00", "ünïcödé 名前"]


def test_manifest_round_trips_cr_lf_comma_quote_backslash_unicode(tmp_path):
    """A carriage return in a file name made the manifest unparseable (csv with a "\\n"
    terminator does not quote "\\r"). Class folders and files named with CR, LF, comma,
    quotes, a backslash and unicode must read back exactly, through any CSV reader."""
    in_dir = _dataset(tmp_path / "in", {"majority": 3})
    for index, name in enumerate(ODD_NAMES):
        _save_image(in_dir / name / f"{name}.png", seed=index)
    out = tmp_path / "out"
    balance_folder(in_dir, out, ratio=1)

    with open(out / MANIFEST_NAME, newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    header, cells = table[0], table[1:]
    synthetic = {path.relative_to(out).as_posix() for path in out.rglob("syn_*.png")}
    assert len(cells) == len(synthetic) == 2 * len(ODD_NAMES)
    assert {row[header.index("path")] for row in cells} == synthetic
    assert {row[header.index("class")] for row in cells} == set(ODD_NAMES)
    assert {row[header.index("source")] for row in cells} == {f"{n}/{n}.png" for n in ODD_NAMES}
    assert [row.path for row in read_manifest(out / MANIFEST_NAME)] == \
        [row[header.index("path")] for row in cells]


def test_formula_like_class_name_is_kept_exact_and_named_in_a_warning(tmp_path):
    """A class folder named ``=HYPERLINK(...)`` is formula injection when the manifest is opened
    in a spreadsheet. Policy: the cell stays exact (qclassify matches paths), and the run warns
    in one line that the CSV must be imported as text."""
    name = '=HYPERLINK("evil.example","open me")'
    in_dir = _dataset(tmp_path / "in", {"majority": 2, name: 1})
    with pytest.warns(SpreadsheetFormulaWarning, match="import it as text"):
        balance_folder(in_dir, tmp_path / "out", ratio=1)
    assert {row.class_name for row in read_manifest(tmp_path / "out" / MANIFEST_NAME)} == {name}

    result = _invoke("balance", in_dir, tmp_path / "cli-out", "--ratio", "1", "--quiet")
    assert result.exit_code == 0
    warning_lines = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert len(warning_lines) == 1 and "spreadsheet" in warning_lines[0]


# --- item 5: one run at a time, no mixing of options ------------------------------------------

def test_second_run_on_a_locked_out_fails_at_once_naming_out(tmp_path):
    """Two concurrent runs into one OUT both exited 0 and mixed their files. While another
    process holds OUT's lock, a run fails at once with one line naming OUT and writes nothing;
    once the lock is released the same command runs."""
    in_dir = _dataset(tmp_path / "in", {"a": 3, "b": 1})
    out = tmp_path / "out"
    out.mkdir()
    holder = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running balance holds it
        result = _invoke("balance", in_dir, out, "--ratio", "1", "--seed", "1", "--quiet")
        _assert_one_line_error(result, RUNTIME_ERROR, str(out), "in use by another")
        assert list(out.iterdir()) == []
    finally:
        os.close(holder)
    assert _invoke("balance", in_dir, out, "--ratio", "1", "--quiet").exit_code == 0


def test_two_real_runs_with_different_seeds_never_mix(tmp_path):
    """The race itself: two processes started together with different seeds. One wins; the
    other is refused in one line (lock held, or OUT holds a run with other options), and OUT
    is exactly the winner's run."""
    in_dir = _dataset(tmp_path / "in", {"a": 8, "b": 2})
    out = tmp_path / "out"
    command = [sys.executable, "-c", _RACING_BALANCE, "balance", str(in_dir), str(out),
               "--ratio", "1", "--quiet", "--seed"]
    runs = [subprocess.Popen([*command, seed], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for seed in ("1", "2")]
    outcomes = [(run.wait(60), run.communicate()[1]) for run in runs]
    assert sorted(code for code, _ in outcomes) in ([0, RUNTIME_ERROR], [0, USAGE_ERROR])
    loser = next(stderr for code, stderr in outcomes if code)
    assert loser.strip().count("\n") == 0 and loser.startswith("Error: ")
    winner = "1" if outcomes[0][0] == 0 else "2"
    alone = tmp_path / "alone"
    assert _invoke("balance", in_dir, alone, "--ratio", "1", "--quiet", "--seed",
                   winner).exit_code == 0
    assert _tree(out) == _tree(alone)


@pytest.mark.parametrize("finished", [True, False])
def test_rerun_with_other_options_is_refused(tmp_path, finished):
    """A rerun with options other than the recorded ones must refuse, not mix two runs in one
    OUT, whether the first run finished or was interrupted (no manifest yet)."""
    in_dir = _dataset(tmp_path / "in", {"a": 4, "b": 1})
    out = tmp_path / "out"
    balance_folder(in_dir, out, ratio=1, seed=0)
    if not finished:
        (out / MANIFEST_NAME).unlink()
    before = _tree(out)
    result = _invoke("balance", in_dir, out, "--ratio", "1", "--seed", "1")
    _assert_one_line_error(result, USAGE_ERROR, "other input or options")
    assert _tree(out) == before


# --- item 6: a rerun verifies what it claims ---------------------------------------------------

def test_rerun_repairs_deleted_and_corrupted_files(tmp_path):
    """A rerun said "Nothing to do" after files of a finished OUT were deleted. Every manifest
    row's sha256 and every copy's bytes are checked; what is missing or changed is regenerated
    exactly (deterministic output), and the CLI says so in one warning line."""
    in_dir = _dataset(tmp_path / "in", {"a": 5, "b": 2})
    out = tmp_path / "out"
    balance_folder(in_dir, out, ratio=1)
    finished = _tree(out)
    rows = read_manifest(out / MANIFEST_NAME)
    (out / rows[0].path).unlink()
    (out / rows[1].path).write_bytes(b"tampered")
    (out / "a" / "img_000.png").unlink()

    result = _invoke("balance", in_dir, out, "--ratio", "1", "--quiet")
    assert result.exit_code == 0 and "Nothing to do" not in result.output
    assert "3 files of the finished run" in result.stderr
    assert _tree(out) == finished
    again = balance_folder(in_dir, out, ratio=1)
    assert again.already_done and again.repaired == ()


def test_rerun_follows_a_changed_input_image(tmp_path):
    """A rerun said "Nothing to do" after an IN image changed. The copy no longer matches its
    source, so the run is written again: OUT equals a fresh run of the changed IN (copy and
    every synthetic image drawn from it)."""
    in_dir = _dataset(tmp_path / "in", {"a": 5, "b": 2})
    out = tmp_path / "out"
    balance_folder(in_dir, out, ratio=1)
    _save_image(in_dir / "b" / "img_000.png", seed=999)
    report = balance_folder(in_dir, out, ratio=1)
    assert not report.already_done and Path("b/img_000.png") in report.repaired
    fresh = tmp_path / "fresh"
    balance_folder(in_dir, fresh, ratio=1)
    assert _tree(out) == _tree(fresh)
    for row in read_manifest(out / MANIFEST_NAME):
        assert sha256_file(out / row.path) == row.sha256


def test_rerun_refuses_files_the_run_did_not_write(tmp_path):
    """Synthetic files listed in no manifest (left by a mixed run) were kept by a rerun that
    said "Nothing to do". A file the run would not write is refused, naming it, never deleted."""
    in_dir = _dataset(tmp_path / "in", {"a": 4, "b": 1})
    out = tmp_path / "out"
    balance_folder(in_dir, out, ratio=1)
    stray = _save_image(out / "b" / "syn_img_000_99.png", seed=5)
    with pytest.raises(BalanceInputError, match="syn_img_000_99.png, which this run does not"):
        balance_folder(in_dir, out, ratio=1)
    assert stray.is_file()


# --- item 7: stale temporary files -------------------------------------------------------------

def test_rerun_removes_stale_temporary_files(tmp_path):
    """``kill -9`` can leave a 0-byte temporary file that the rerun kept, so OUT differed from
    an uninterrupted run. Reruns remove temporary files of diffaug's pattern (current and the
    longer names of earlier versions)."""
    in_dir = _dataset(tmp_path / "in", {"a": 4, "b": 1})
    out, uninterrupted = tmp_path / "out", tmp_path / "uninterrupted"
    balance_folder(in_dir, uninterrupted, ratio=1)
    balance_folder(in_dir, out, ratio=1)
    (out / MANIFEST_NAME).unlink()  # killed before the manifest, written last
    (out / "b" / ".tmp-0123456789abcdef").write_bytes(b"")
    (out / "b" / ".syn_img_000_0.png.0123456789abcdef.tmp").write_bytes(b"")
    (out / ".tmp-fedcba9876543210").write_bytes(b"{")
    assert not balance_folder(in_dir, out, ratio=1).already_done
    assert _tree(out) == _tree(uninterrupted)


# --- item 8: workers end with the parent -------------------------------------------------------


def _children(parent: int) -> list[int]:
    """Process ids whose parent is ``parent`` (from /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent:
            children.append(int(stat.parent.name))
    return children


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_workers_end_with_the_parent_on_sigterm(tmp_path):
    """``kill -TERM`` on ``balance --workers 2`` left both pool workers running as orphans.
    After SIGTERM to the parent, no worker remains (each notices its parent is gone)."""
    in_dir = _dataset(tmp_path / "in", {"a": 24, "b": 2})
    parent = subprocess.Popen(
        [sys.executable, "-c", _SLOW_BALANCE, "balance", str(in_dir), str(tmp_path / "out"),
         "--ratio", "1", "--workers", "2", "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        assert _wait_until(lambda: len(_children(parent.pid)) >= 2, timeout=30)
        workers = _children(parent.pid)
        time.sleep(0.5)
        parent.send_signal(signal.SIGTERM)
        parent.wait(10)
        assert _wait_until(lambda: not any(_alive(pid) for pid in workers), timeout=5), \
            [pid for pid in workers if _alive(pid)]
    finally:
        for pid in [parent.pid, *workers]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        parent.wait(10)


# --- item 11: FIFOs ---------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_named_like_an_image_is_skipped_with_one_warning(tmp_path):
    """A FIFO named ``x.png`` in a class folder made ``balance`` block forever. Every
    non-regular file is skipped unread, with one warning line naming it."""
    in_dir = _dataset(tmp_path / "in", {"a": 3, "b": 1})
    os.mkfifo(in_dir / "b" / "x.png")
    result = _run_cli("balance", in_dir, tmp_path / "out", "--ratio", "1", "--quiet")
    assert result.returncode == 0, result.stderr
    warning_lines = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert warning_lines == [f"Warning: skipped {in_dir / 'b' / 'x.png'}: not a regular file "
                             "(a FIFO, socket or device is not read)"]
    assert not (tmp_path / "out" / "b" / "x.png").exists()


# --- item 12: long names, and errors that name the target --------------------------------------

def test_file_names_up_to_the_limit_are_written(tmp_path):
    """Valid names of 234+ characters failed: the temporary name added 22 characters. A
    240-character source name works (its synthetic images are 246 characters)."""
    long_name = "x" * 236 + ".png"
    in_dir = _dataset(tmp_path / "in", {"a": 3})
    _save_image(in_dir / "b" / long_name)
    out = tmp_path / "out"
    report = balance_folder(in_dir, out, ratio=1)
    assert report.n_synthetic == 2 and (out / "b" / long_name).is_file()
    assert (out / "b" / f"syn_{'x' * 236}_0.png").is_file()


def test_source_name_too_long_for_its_synthetic_images_is_refused_up_front(tmp_path):
    """A 252-character source name gives synthetic names over 255 bytes: refused before any
    file is written, naming the source, instead of a write error naming a temporary file."""
    in_dir = _dataset(tmp_path / "in", {"a": 3})
    _save_image(in_dir / "b" / ("y" * 248 + ".png"))
    result = _invoke("balance", in_dir, tmp_path / "out", "--ratio", "1")
    _assert_one_line_error(result, USAGE_ERROR, "y" * 248 + ".png", "255 bytes")
    assert not (tmp_path / "out").exists()


def test_write_errors_name_the_target_never_the_temporary_file(tmp_path):
    """Errors of ``--save-stats`` and of every atomic write named the temporary file. They
    name the file the user asked for."""
    target = tmp_path / "missing-folder" / "stats.npz"
    with pytest.raises(OSError) as raised:
        FeatureStatistics(np.zeros(2), np.eye(2)).save(target)
    assert str(target) in str(raised.value) and ".tmp" not in str(raised.value)
    with pytest.raises(FileNotFoundError, match="out.png") as raised:
        atomic_write_bytes(tmp_path / "missing-folder" / "out.png", b"data")
    assert ".tmp" not in str(raised.value)


# --- item 13: names that are not UTF-8 ---------------------------------------------------------

@pytest.mark.skipif(sys.platform == "darwin", reason="APFS refuses names that are not UTF-8")
def test_name_that_is_not_utf8_is_refused_before_anything_is_written(tmp_path):
    """A non-UTF-8 file name let ``balance`` write every image, then fail with a codec error on
    every rerun. Policy: refused up front in one line naming the file (undecodable bytes shown
    as \\xNN), nothing written."""
    in_dir = _dataset(tmp_path / "in", {"a": 3, "b": 1})
    bad = os.path.join(os.fsencode(in_dir / "b"), b"scan\xff.png")
    with open(bad, "wb") as handle:
        handle.write((in_dir / "b" / "img_000.png").read_bytes())
    result = _invoke("balance", in_dir, tmp_path / "out", "--ratio", "1")
    _assert_one_line_error(result, USAGE_ERROR, "scan\\xff.png", "not valid UTF-8")
    assert not (tmp_path / "out").exists()


# --- item 16: messages ------------------------------------------------------------------------

def test_class_without_usable_sources_names_a_file_and_why(tmp_path):
    """All minority images in unsupported modes: the error said "(see the warnings)" but no
    warning was printed (the run failed first). The one error line names an image and why."""
    in_dir = _dataset(tmp_path / "in", {"a": 3})
    (in_dir / "b").mkdir()
    Image.new("P", (SIDE, SIDE)).save(in_dir / "b" / "palette.png")
    result = _invoke("balance", in_dir, tmp_path / "out", "--ratio", "1")
    line = _assert_one_line_error(result, USAGE_ERROR, "palette.png",
                                  "unsupported image mode 'P'")
    assert "see the warnings" not in line


def test_decompression_bomb_is_skipped_in_one_clean_line(tmp_path, monkeypatch):
    """PIL's decompression-bomb warning was printed raw, with its source line. An image over
    Pillow's pixel limit is skipped like any unreadable image: one warning line naming it."""
    in_dir = tmp_path / "in"
    for index in range(3):
        _save_image(in_dir / "a" / f"img_{index}.png", seed=index, size=(8, 8))
    _save_image(in_dir / "b" / "small.png", size=(8, 8))
    _save_image(in_dir / "b" / "bomb.png", size=(12, 12))  # 144 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # warns above 100, refuses above 200
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _invoke("balance", in_dir, tmp_path / "out", "--ratio", "1", "--quiet")
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert result.exit_code == 0, result.output
    warning_lines = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert len(warning_lines) == 1
    assert f"skipped {in_dir / 'b' / 'bomb.png'}: cannot read image" in warning_lines[0]
    assert "decompression bomb" in warning_lines[0]


# --- item 17: links ---------------------------------------------------------------------------

def test_links_in_in_pointing_outside_are_followed_and_copied_as_files(tmp_path):
    """Policy for links inside IN that point outside it: followed (datasets are often links
    into a central store); OUT gets regular files with the targets' bytes, never a link."""
    store = tmp_path / "store"
    _dataset(store, {"linked-class": 2})
    linked_image = _save_image(store / "loose.png", seed=7)
    in_dir = _dataset(tmp_path / "in", {"a": 4, "b": 1})
    (in_dir / "linked-class").symlink_to(store / "linked-class", target_is_directory=True)
    (in_dir / "b" / "link.png").symlink_to(linked_image)
    out = tmp_path / "out"
    balance_folder(in_dir, out, ratio=1)
    assert not any(path.is_symlink() for path in out.rglob("*"))
    assert (out / "b" / "link.png").read_bytes() == linked_image.read_bytes()
    for name, data in _tree(store / "linked-class").items():
        assert (out / "linked-class" / name).read_bytes() == data


def test_link_planted_in_an_unfinished_out_is_refused(tmp_path):
    """A link planted inside an unfinished OUT was written through, to a folder outside OUT.
    The rerun refuses it in one line naming the link, and writes nothing through it."""
    in_dir = _dataset(tmp_path / "in", {"a": 4, "b": 1})
    out = tmp_path / "out"
    balance_folder(in_dir, out, ratio=1)
    (out / MANIFEST_NAME).unlink()  # an interrupted run
    for path in (out / "b").iterdir():
        path.unlink()
    (out / "b").rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "b").symlink_to(elsewhere, target_is_directory=True)
    result = _invoke("balance", in_dir, out, "--ratio", "1")
    _assert_one_line_error(result, USAGE_ERROR, "symbolic link", str(out / "b"))
    assert list(elsewhere.iterdir()) == []


# --- item 18: EXIF orientation ----------------------------------------------------------------

def test_synthetic_images_are_shown_turned_like_their_source(tmp_path):
    """Synthetic images dropped the source's EXIF orientation, so viewers showed them turned
    against their source. The orientation tag is carried over (pixels stay as stored, like the
    byte-identical copy of the source), so both display the same way."""
    in_dir = _dataset(tmp_path / "in", {"a": 3})
    source = in_dir / "b" / "portrait.jpg"
    source.parent.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    pixels = np.random.default_rng(0).integers(0, 256, (8, 16), dtype=np.uint8)
    Image.fromarray(pixels).save(source, exif=exif)
    out = tmp_path / "out"
    balance_folder(in_dir, out, ratio=1)
    with Image.open(out / "b" / "portrait.jpg") as copy:
        shown = ImageOps.exif_transpose(copy).size
    assert shown == (8, 16)
    synthetic = sorted((out / "b").glob("syn_portrait_*.png"))
    assert len(synthetic) == 2
    for path in synthetic:
        with Image.open(path) as image:
            assert image.size == (16, 8)  # the source's stored pixel grid
            assert ImageOps.exif_transpose(image).size == shown
