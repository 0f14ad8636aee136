"""CLI tests: ``diffaug balance`` through click's CliRunner, results checked through the library;
every bad-input path ends in one ``Error:`` line, exit status 2 and no traceback."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from diffaug.balance import RUN_RECORD_NAME
from diffaug.cli import main
from diffaug.io import MANIFEST_NAME, read_manifest
from PIL import Image

USAGE_ERROR = 2


def _invoke(*args: str):
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def _assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == USAGE_ERROR, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


def test_every_command_has_help():
    """CLI: the group and each command print help and exit 0."""
    assert _invoke("--help").exit_code == 0
    for name in main.commands:
        result = _invoke(name, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output


def test_balance_writes_what_the_library_reads(class_folders, tmp_path):
    """CLI: a run writes originals, synthetic files and the manifest; the summary says so."""
    in_dir = class_folders({"normal": 6, "stenosis": 2})
    result = _invoke("balance", in_dir, tmp_path / "out", "--ratio", "0.55", "--seed", "1",
                     "--quiet")
    assert result.exit_code == 0
    rows = read_manifest(tmp_path / "out" / MANIFEST_NAME)
    assert len(rows) == 2  # ceil(0.55 * 6) - 2 = 2
    assert "Wrote 2 synthetic images and copied 8 originals" in result.stdout
    assert "Balancing" not in result.output  # --quiet
    assert (tmp_path / "out" / RUN_RECORD_NAME).is_file()


def test_progress_bar_goes_to_stderr(class_folders, tmp_path):
    """CLI: without --quiet a progress bar is drawn on stderr, not mixed into stdout."""
    in_dir = class_folders({"a": 3, "b": 1})
    result = _invoke("balance", in_dir, tmp_path / "out", "--ratio", "1")
    assert result.exit_code == 0
    assert "Balancing" in result.stderr and "Balancing" not in result.stdout


def test_dry_run_prints_the_plan(split_folders, tmp_path):
    """CLI: --dry-run prints counts before/after and M per class, and writes nothing."""
    result = _invoke("balance", split_folders, tmp_path / "out", "--ratio", "0.7", "--dry-run")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert "train/: balanced" in lines and "val/: copied unchanged" in lines
    # ceil(0.7 * 8) = 6: stenosis goes from 3 to 6 with 3 synthetic images
    assert any(line.split() == ["stenosis", "3", "3", "6"] for line in lines)
    assert any(line.split() == ["normal", "8", "0", "8"] for line in lines)
    assert "Dry run: would write 3 synthetic images" in result.stdout
    assert not (tmp_path / "out").exists()


def test_rerun_is_a_no_op_and_workers_do_not_matter(class_folders, tmp_path):
    """CLI: the same command twice does nothing the second time; --workers 2 gives the same
    manifest as --workers 1."""
    in_dir = class_folders({"a": 5, "b": 1})
    args = ("balance", in_dir, tmp_path / "one", "--ratio", "0.8", "--quiet")
    assert _invoke(*args).exit_code == 0
    again = _invoke(*args, "--workers", "2")
    assert again.exit_code == 0 and "Nothing to do" in again.stdout
    assert _invoke("balance", in_dir, tmp_path / "two", "--ratio", "0.8", "--quiet", "--workers",
                   "2").exit_code == 0
    assert (tmp_path / "one" / MANIFEST_NAME).read_bytes() == \
        (tmp_path / "two" / MANIFEST_NAME).read_bytes()


def test_skipped_files_are_named_on_stderr(class_folders, tmp_path):
    """CLI: unreadable and non-image files are named in warnings and the run goes on."""
    in_dir = class_folders({"a": 3, "b": 1})
    (in_dir / "b" / "scan.png").write_bytes(b"not a png")
    (in_dir / "a" / "notes.txt").write_text("hello")
    result = _invoke("balance", in_dir, tmp_path / "out", "--ratio", "1", "--quiet")
    assert result.exit_code == 0
    assert f"Warning: skipped {in_dir / 'b' / 'scan.png'}: cannot read image" in result.stderr
    assert f"Warning: skipped {in_dir / 'a' / 'notes.txt'}: not an image" in result.stderr


def test_notebook_folders_palettes_and_readmes(class_folders, tmp_path, save_image):
    """CLI: a Jupyter checkpoint folder is ignored (it used to count as a class and fail), a
    sub-folder and a palette image are named in warnings, a top-level README is copied."""
    in_dir = class_folders({"a": 4, "b": 1})
    (in_dir / ".ipynb_checkpoints").mkdir()
    save_image(in_dir / "a" / "nested" / "x.png")
    Image.new("P", (6, 6)).save(in_dir / "b" / "palette.png")
    (in_dir / "README.md").write_text("four a, two b")
    result = _invoke("balance", in_dir, tmp_path / "out", "--ratio", "1", "--quiet")
    assert result.exit_code == 0, result.output
    assert f"Warning: skipped {in_dir / 'a' / 'nested'}: a sub-folder" in result.stderr
    assert (f"Warning: copied {in_dir / 'b' / 'palette.png'} but not used to synthesise: "
            "unsupported image mode 'P'") in result.stderr
    assert ".ipynb_checkpoints" not in result.output
    assert (tmp_path / "out" / "README.md").read_text() == "four a, two b"
    assert (tmp_path / "out" / "b" / "palette.png").read_bytes() == \
        (in_dir / "b" / "palette.png").read_bytes()
    assert {Path(row.source).name for row in read_manifest(tmp_path / "out" / MANIFEST_NAME)} \
        == {"img_000.png"}


@pytest.mark.parametrize("ratio", ["0", "-0.2", "1.01", "2", "nan", "inf", "abc", ""])
def test_ratio_outside_0_1(class_folders, tmp_path, ratio):
    """CLI: --ratio outside (0, 1] is a usage error naming the option."""
    in_dir = class_folders({"a": 3, "b": 1})
    result = _invoke("balance", in_dir, tmp_path / "out", "--ratio", ratio)
    _assert_one_line_error(result, "--ratio", "(0, 1]")
    assert not (tmp_path / "out").exists()


def test_missing_in(tmp_path):
    """CLI: a missing IN is named."""
    _assert_one_line_error(_invoke("balance", tmp_path / "nowhere", tmp_path / "out", "--ratio",
                                   "1"), "nowhere", "does not exist")


def test_out_inside_in(class_folders, snapshot):
    """CLI: OUT inside IN (or IN itself) is refused and IN is not written."""
    in_dir = class_folders({"a": 3, "b": 1})
    before = snapshot(in_dir)
    for out in (in_dir / "augmented", in_dir, in_dir / "a"):
        _assert_one_line_error(_invoke("balance", in_dir, out, "--ratio", "1"), "inside")
    assert snapshot(in_dir) == before


def test_out_not_empty(class_folders, tmp_path):
    """CLI: an OUT holding other files, or another run's output, is refused."""
    in_dir = class_folders({"a": 3, "b": 1})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    _assert_one_line_error(_invoke("balance", in_dir, tmp_path / "out", "--ratio", "1"),
                           "not empty")
    assert _invoke("balance", in_dir, tmp_path / "done", "--ratio", "1", "--quiet").exit_code == 0
    _assert_one_line_error(_invoke("balance", in_dir, tmp_path / "done", "--ratio", "0.9"),
                           "other input or options")


@pytest.mark.parametrize(("layout", "fragments"), [
    ({"a": 3}, ("at least 2 class folders",)),
    ({"a": 3, "b": 0}, ("class folder", "holds no readable images")),
])
def test_single_class_and_empty_class(class_folders, tmp_path, layout, fragments):
    """CLI: a single class, or an empty class folder, is a usage error naming the folder."""
    in_dir = class_folders(layout)
    _assert_one_line_error(_invoke("balance", in_dir, tmp_path / "out", "--ratio", "1"),
                           *fragments)


@pytest.mark.parametrize("option", [("--brightness", "1.2", "0.8"), ("--beta-start", "0.5"),
                                    ("--beta-end", "1.5")])
def test_bad_method_options(class_folders, tmp_path, option):
    """CLI: impossible brightness or beta ranges are one-line usage errors."""
    in_dir = class_folders({"a": 3, "b": 1})
    _assert_one_line_error(_invoke("balance", in_dir, tmp_path / "out", "--ratio", "1", *option))


def test_write_failure_is_one_line(class_folders, tmp_path):
    """CLI: an OUT that cannot be created (its parent is a file) exits 1 with one line."""
    in_dir = class_folders({"a": 3, "b": 1})
    (tmp_path / "file").write_text("x")
    result = _invoke("balance", in_dir, tmp_path / "file" / "out", "--ratio", "1", "--quiet")
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert result.output.startswith("Error: ")


def test_diffaug_never_imports_torch(class_folders, tmp_path):
    """Contract: importing diffaug and running `diffaug balance` leave torch unimported."""
    in_dir = class_folders({"a": 3, "b": 1})
    script = textwrap.dedent(f"""
        import sys
        import diffaug
        from diffaug.cli import main
        main(["balance", {str(in_dir)!r}, {str(tmp_path / 'out')!r}, "--ratio", "1",
              "--quiet"], standalone_mode=False)
        sys.exit("torch" in sys.modules)
    """)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert Path(tmp_path / "out" / MANIFEST_NAME).is_file()


def test_no_diffaug_module_imports_torch():
    """Contract: every module of the package, the FID ones included, imports without torch;
    the package exports the torch-free FID API."""
    script = textwrap.dedent("""
        import importlib, pkgutil, sys
        import diffaug
        for module in pkgutil.iter_modules(diffaug.__path__, "diffaug."):
            if module.name != "diffaug.__main__":
                importlib.import_module(module.name)
        from diffaug import FidReport, KernelDistance, compute_fid  # noqa: F401
        assert {"compute_fid", "FidReport"} <= set(diffaug.__all__)
        sys.exit(", ".join(name for name in sys.modules if name.split(".")[0] == "torch") or None)
    """)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stderr
