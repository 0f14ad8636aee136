"""Adversarial checks of qclassify: leakage through odd file names and damaged manifests, runs
written into the data, lost runs, unchecked compare inputs and unclear errors.

Each test reproduces one attack or failure found by the hardening pass and fails without its
fix. Every file is generated in tmp_path; one tiny run (1 epoch, 32 px, CPU) is trained per
module and copied before anything is written into it.
"""

from __future__ import annotations

import csv
import importlib.abc
import io
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

torch = pytest.importorskip("torch")
from qclassify import train  # noqa: E402
from qclassify.__main__ import INTERRUPTED_EXIT_CODE, run  # noqa: E402
from qclassify.cli import main  # noqa: E402
from qclassify.compare import compare  # noqa: E402
from qclassify.config import TrainConfig  # noqa: E402
from qclassify.data import MANIFEST_NAME, RUN_RECORD_NAME, discover_dataset  # noqa: E402
from qclassify.inference import load_run  # noqa: E402

MANIFEST_COLUMNS = ("path", "source", "class", "split", "t", "gamma", "seed", "sha256")
TINY = {"epochs": 1, "batch_size": 4, "image_size": 32, "weights": "none", "device": "cpu"}
TINY_OPTIONS = ["--epochs", "1", "--batch-size", "4", "--image-size", "32", "--weights", "none",
                "--device", "cpu", "--quiet"]
# File names that a spreadsheet-minded CSV writer gets wrong; all legal on POSIX.
AWKWARD_STEMS = ("cr\rname", "lf\nname", "comma,name", 'quote"name', "unicodé-中", "back\\slash")


def write_png(path: Path, seed: int, size: int = 32) -> Path:
    """A small noisy grayscale PNG whose bytes depend on `seed`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def make_dataset(root: Path, stems: dict[str, list[str]]) -> Path:
    """Class folders ``root/<class>/<stem>.png``."""
    for k, (class_name, names) in enumerate(sorted(stems.items())):
        for i, stem in enumerate(names):
            write_png(root / class_name / f"{stem}.png", seed=100 * k + i)
    return root


def plain_dataset(root: Path, per_class: int = 8) -> Path:
    return make_dataset(root, {name: [f"{name}_{i:02d}" for i in range(per_class)]
                               for name in ("normal", "stenosis")})


def add_synthetic(root: Path, sources: list[str], *, lineterminator: str = "\r\n") -> list[str]:
    """diffaug's output for `sources`: ``syn_<stem>_0.png`` beside each, listed in a manifest
    written as diffaug writes it (csv.writer, QUOTE_MINIMAL)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_MINIMAL, lineterminator=lineterminator)
    writer.writerow(MANIFEST_COLUMNS)
    paths = []
    for i, source in enumerate(sources):
        class_name, name = source.split("/", 1)
        path = f"{class_name}/syn_{Path(name).stem}_0.png"
        write_png(root / path, seed=1000 + i)
        writer.writerow([path, source, class_name, "", 1, 1.0, i, ""])
        paths.append(path)
    (root / MANIFEST_NAME).write_bytes(buffer.getvalue().encode("utf-8"))
    return paths


def tree(root: Path) -> dict[str, bytes]:
    """Every file below `root` and its bytes (dot-entries included)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def assert_one_line_error(result, exit_code: int, *needles: str) -> None:
    """The CLI failed with `exit_code`, one ``Error:`` line naming `needles`, no traceback."""
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, data folder) of one tiny fit; copy the run before writing into it."""
    base = tmp_path_factory.mktemp("trained")
    data = plain_dataset(base / "data")
    train.fit(data, base / "run", TrainConfig(**TINY), progress=False)
    return base / "run", data


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained[0], tmp_path / "run"))


# Leakage: synthetic images taken for originals ---------------------------------------------


def test_backslash_in_a_name_does_not_turn_synthetic_images_into_originals(tmp_path):
    """Attack: sources named ``scan\\NN.png``; the manifest's paths were rewritten (``\\`` ->
    ``/``) but the discovered ones not, so every synthetic image became an original and some
    landed in val/test."""
    data = make_dataset(tmp_path / "data", {"normal": [f"n{i}" for i in range(10)],
                                            "stenosis": [f"scan\\{i:02d}" for i in range(6)]})
    synthetic = add_synthetic(data, [f"stenosis/scan\\{i:02d}.png" for i in range(6)])
    dataset = discover_dataset(data, seed=0)
    flagged = {s.path for s in dataset.samples if s.synthetic}
    assert flagged <= set(synthetic) and flagged
    assert all(s.synthetic or not Path(s.path).name.startswith("syn_") for s in dataset.samples)
    assert all(not s.synthetic for s in dataset.samples if s.split != "train")


@pytest.mark.parametrize("lineterminator", ["\r\n", "\n"])
def test_manifest_round_trips_awkward_names(tmp_path, lineterminator):
    """Failure: names with CR, LF, commas, quotes, unicode or backslashes, as Python's csv
    writer quotes them, must all be read back as the same paths, with either line ending. (A
    ``\\n``-terminated writer does not quote a CR, so no reader can get such a name back from
    it: that manifest is refused, see the damaged-manifest test.)"""
    stems = [stem for stem in AWKWARD_STEMS if "\r" not in stem or "\r" in lineterminator]
    data = make_dataset(tmp_path / "data", {"normal": [f"n{i}" for i in range(10)],
                                            "stenosis": stems})
    sources = [f"stenosis/{stem}.png" for stem in stems]
    synthetic = add_synthetic(data, sources, lineterminator=lineterminator)
    dataset = discover_dataset(data, seed=0)
    originals = {s.path for s in dataset.samples if not s.synthetic}
    assert originals.isdisjoint(synthetic)
    trained_sources = {s.path for s in dataset.subset("train") if s.path in sources}
    expected = {syn for syn, src in zip(synthetic, sources, strict=True) if src in trained_sources}
    assert {s.path for s in dataset.samples if s.synthetic} == expected


def test_unlisted_synthetic_file_in_a_diffaug_folder_is_refused(tmp_path):
    """Attack: a synthetic image missing from the manifest (added later, or the manifest of
    another run) would be split as an original into val/test."""
    data = plain_dataset(tmp_path / "data")
    add_synthetic(data, ["stenosis/stenosis_00.png"])
    write_png(data / "stenosis" / "syn_stenosis_01_3.png", seed=7)
    with pytest.raises(ValueError, match=r"syn_stenosis_01_3\.png.*does not list it"):
        discover_dataset(data)


def test_unfinished_diffaug_output_is_refused(tmp_path):
    """Attack: a killed `diffaug balance` leaves its run record and synthetic images but no
    manifest; every synthetic image would be used as an original."""
    data = plain_dataset(tmp_path / "data")
    write_png(data / "stenosis" / "syn_stenosis_00_0.png", seed=7)
    (data / RUN_RECORD_NAME).write_text("{}")
    with pytest.raises(ValueError, match="unfinished"):
        discover_dataset(data)


def test_synthetic_looking_names_without_diffaug_files_are_named_in_a_warning(tmp_path):
    """Failure: without any diffaug file a syn_*.png name proves nothing, but it must not pass
    silently."""
    data = plain_dataset(tmp_path / "data")
    write_png(data / "stenosis" / "syn_stenosis_00_0.png", seed=7)
    with pytest.warns(UserWarning, match="syn_stenosis_00_0.png"):
        discover_dataset(data)


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        # diffaug's old writer: an unquoted CR splits a row in two.
        (b"path,source\nstenosis/syn_a\r_0.png,stenosis/a\r.png\n", "does not have the"),
        (b"path,source\nstenosis/syn_\xff_0.png,stenosis/x.png\n", "does not parse"),
        (b"path,source\nstenosis/nosuch.png,stenosis/stenosis_00.png\n", "not in"),
        (b"path,source\n../outside.png,stenosis/stenosis_00.png\n", "not a path inside"),
        (b"file,origin\n", "missing column"),
    ],
    ids=["unquoted-cr", "not-utf8", "missing-file", "outside", "columns"],
)
def test_damaged_manifest_is_one_line_and_writes_nothing(tmp_path, manifest, message):
    """Failure: a manifest that does not parse, or names files that are not there, was read
    silently (its synthetic images then counted as originals) or ended in a traceback."""
    data = plain_dataset(tmp_path / "data")
    (data / MANIFEST_NAME).write_bytes(manifest)
    result = CliRunner().invoke(main, ["fit", str(data), "--out", str(tmp_path / "run"),
                                       *TINY_OPTIONS])
    assert_one_line_error(result, 1, MANIFEST_NAME, message)
    assert not (tmp_path / "run").exists()


def test_non_utf8_file_name_is_refused_before_anything_is_written(tmp_path):
    """Failure: a file name that is not UTF-8 left a run folder holding only config.json (the
    split.csv write failed with a codec error)."""
    data = plain_dataset(tmp_path / "data")
    write_png(data / "stenosis" / os.fsdecode(b"scan\xff.png"), seed=9)
    result = CliRunner().invoke(main, ["fit", str(data), "--out", str(tmp_path / "run"),
                                       *TINY_OPTIONS])
    assert_one_line_error(result, 1, "scan\\xff.png", "UTF-8")
    assert not (tmp_path / "run").exists()


# The user's data is never written into ------------------------------------------------------


@pytest.mark.parametrize("where", ["class-folder", "data", "parent", "symlink"])
def test_fit_refuses_out_overlapping_data(tmp_path, where):
    """Attack: ``fit DATA --out DATA/normal`` was accepted; evaluate then wrote figures into the
    class folder and the next fit trained and tested on them. Also DATA inside --out, and a
    symlink pointing into DATA."""
    data = plain_dataset(tmp_path / "data")
    before = tree(data)
    out = {"class-folder": data / "normal", "data": data, "parent": tmp_path,
           "symlink": tmp_path / "link"}[where]
    if where == "symlink":
        out.symlink_to(data / "normal", target_is_directory=True)
    result = CliRunner().invoke(main, ["fit", str(data), "--out", str(out), *TINY_OPTIONS])
    assert_one_line_error(result, 2, str(data))
    assert tree(data) == before
    with pytest.raises(ValueError, match="data folder"):
        train.fit(data, out, TrainConfig(**TINY), progress=False)


def test_evaluate_refuses_a_run_folder_inside_its_data(trained, tmp_path):
    """Attack: a run folder moved into DATA gets roc.png and confusion_matrix.png written among
    the images by evaluate."""
    run_dir, data = trained
    data = Path(shutil.copytree(data, tmp_path / "data"))
    shutil.copytree(run_dir, data / "normal" / "run")
    before = tree(data)
    result = CliRunner().invoke(main, ["evaluate", str(data / "normal" / "run"), str(data),
                                       "--bootstrap", "0", "--device", "cpu", "--quiet"])
    assert_one_line_error(result, 1, "inside the data folder")
    assert tree(data) == before


def test_compare_refuses_a_report_inside_data(tmp_path):
    """Attack: ``compare DATA --out DATA/report`` writes runs and figures into DATA."""
    data = plain_dataset(tmp_path / "data")
    before = tree(data)
    result = CliRunner().invoke(main, ["compare", str(data), "--out", str(data / "report"),
                                       "--models", "qmobilenet@original", *TINY_OPTIONS])
    assert_one_line_error(result, 2, "inside the data folder")
    assert tree(data) == before


def test_interrupted_overwrite_keeps_the_old_run(run_copy, trained, monkeypatch):
    """Failure: ``fit --overwrite`` deleted the finished model.pt before training; an
    interrupt then left no model. The old run must stay intact and loadable until the new
    model.pt is written, and a finished overwrite replaces every run file."""
    _, data = trained
    (run_copy / "metrics.json").write_text("{}")  # an evaluation of the old model
    before = tree(run_copy)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(train, "_train_epoch", interrupted)
        with pytest.raises(KeyboardInterrupt):
            train.fit(data, run_copy, TrainConfig(**TINY, seed=1), progress=False,
                      overwrite=True)
    assert {k: v for k, v in tree(run_copy).items() if not k.startswith(".")} == before
    assert load_run(run_copy, device="cpu").class_names == ["normal", "stenosis"]

    train.fit(data, run_copy, TrainConfig(**TINY, seed=1), progress=False, overwrite=True)
    assert sorted(p.name for p in run_copy.iterdir()) == [
        "config.json", "history.csv", "model.pt", "split.csv"]
    assert tree(run_copy)["model.pt"] != before["model.pt"]
    assert '"seed": 1' in (run_copy / "config.json").read_text()


# compare: everything checked before the first epoch ------------------------------------------


@pytest.fixture
def no_training(monkeypatch):
    """Make any training inside `compare` fail the test."""
    def forbidden(*args, **kwargs):
        raise AssertionError("compare trained a run before refusing its input")

    monkeypatch.setattr("qclassify.compare.fit", forbidden)


def test_compare_refuses_unknown_positive_before_training(tmp_path, no_training):
    """Failure: ``compare --positive nosuch`` trained a whole run before refusing."""
    data = plain_dataset(tmp_path / "data")
    with pytest.raises(ValueError, match="'nosuch' is not a class"):
        compare(data, None, tmp_path / "report", models=["qmobilenet@original"],
                train_config=TrainConfig(**TINY), positive="nosuch", progress=False)
    assert not (tmp_path / "report").exists()


def test_compare_refuses_augmented_copy_of_other_data(tmp_path, no_training):
    """Attack: ``--augmented`` made from a different dataset with the same file names was
    accepted (only the test split's names were compared)."""
    data = plain_dataset(tmp_path / "data")
    other = plain_dataset(tmp_path / "other")
    write_png(other / "normal" / "normal_03.png", seed=4242)  # same name, other pixels
    add_synthetic(other, ["stenosis/stenosis_00.png"])
    with pytest.raises(ValueError, match=r"original images .* differ .*normal_03\.png"):
        compare(data, other, tmp_path / "report", models=["qmobilenet@balanced"],
                train_config=TrainConfig(**TINY), progress=False)


# Clear messages ------------------------------------------------------------------------------


def test_corrupt_config_json_is_one_line_naming_it(run_copy, trained):
    """Failure: a corrupt config.json gave a bare JSON error naming no file."""
    (run_copy / "config.json").write_text('{"data_dir": ')
    result = CliRunner().invoke(main, ["evaluate", str(run_copy), str(trained[1]),
                                       "--bootstrap", "0", "--device", "cpu", "--quiet"])
    assert_one_line_error(result, 1, str(run_copy / "config.json"))


@pytest.mark.parametrize(
    "change",
    [{"n_qubits": 40}, {"n_layers": 10**12}, {"state_dict": {}}, {"class_names": "ab"},
     {"image_size": "big"}],
    ids=["qubits", "layers", "state-dict", "class-names", "image-size"],
)
def test_crafted_checkpoint_is_one_line_naming_it(run_copy, tmp_path, change):
    """Attack: a checkpoint whose settings make torch allocate terabytes (or whose tensors do
    not fit) gave PyTorch's allocator or load_state_dict message, naming no file."""
    checkpoint = torch.load(run_copy / "model.pt", weights_only=True)
    torch.save({**checkpoint, **change}, run_copy / "model.pt")
    image = write_png(tmp_path / "x.png", seed=1)
    result = CliRunner().invoke(main, ["predict", str(run_copy), str(image), "--device", "cpu",
                                       "--quiet"])
    assert_one_line_error(result, 1, str(run_copy / "model.pt"), "not a usable")
    assert "allocate" not in result.output


def test_huge_image_warning_names_the_file(trained, tmp_path, monkeypatch):
    """Failure: PIL's decompression-bomb warning was printed as it is, naming no file."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 600)  # a 32x32 image is then "huge"
    image = write_png(tmp_path / "big.png", seed=1)
    result = CliRunner().invoke(main, ["predict", str(trained[0]), str(image), "--device",
                                       "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    # pytest shows every repeat; the command line shows the line once.
    (warning,) = {line for line in result.stderr.splitlines() if line.strip()}
    assert warning.startswith("warning: ") and str(image) in warning
    assert "DecompressionBombWarning" not in result.stderr


def test_ctrl_c_in_a_command_exits_130_in_one_line(tmp_path, monkeypatch):
    """Failure: Ctrl-C ended in click's "Aborted!" with status 1 (or a traceback)."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "fit", interrupted)
    data = plain_dataset(tmp_path / "data")
    result = CliRunner().invoke(main, ["fit", str(data), "--out", str(tmp_path / "run"),
                                       *TINY_OPTIONS])
    assert result.exit_code == INTERRUPTED_EXIT_CODE
    assert result.stderr.strip() == "Interrupted." and "Traceback" not in result.output


class _InterruptImport(importlib.abc.MetaPathFinder):
    """Ctrl-C arriving while ``qclassify.cli`` (and so torch) is being imported."""

    def find_spec(self, name, path=None, target=None):
        if name == "qclassify.cli":
            raise KeyboardInterrupt
        return None


def test_ctrl_c_during_start_up_exits_130_in_one_line(monkeypatch, capsys):
    """Failure: Ctrl-C during the seconds torch takes to import printed a KeyboardInterrupt
    traceback."""
    monkeypatch.delitem(sys.modules, "qclassify.cli")
    monkeypatch.setattr(sys, "meta_path", [_InterruptImport(), *sys.meta_path])
    with pytest.raises(SystemExit) as exit_info:
        try:
            run()
        except KeyboardInterrupt:  # escaping, it would end the whole pytest session
            pytest.fail("KeyboardInterrupt escaped qclassify's start-up")
    assert exit_info.value.code == INTERRUPTED_EXIT_CODE
    assert capsys.readouterr().err == "Interrupted.\n"


def test_impossible_model_sizes_are_usage_errors(tmp_path):
    """Failure: ``--qubits 40`` reached torch's allocator instead of being refused."""
    data = plain_dataset(tmp_path / "data")
    result = CliRunner().invoke(main, ["fit", str(data), "--out", str(tmp_path / "run"),
                                       "--qubits", "40", *TINY_OPTIONS])
    assert result.exit_code == 2 and "--qubits" in result.output
    assert not (tmp_path / "run").exists()
