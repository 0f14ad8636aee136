"""Adversarial checks of `qclassify export` and `predict --engine onnxruntime`: a checkpoint
overwritten by --out, stale or damaged cached exports, read-only run folders and unclear
errors; and of the fast predict path: one decode per image (unreadable files found by the
decode that feeds the batch), batch-level preprocessing equal to the per-image transforms, and
no torch model built when a cached ONNX export can run.

Each test reproduces one attack or failure and fails without its guard. Everything is
generated in tmp_path; one tiny run (1 epoch, 32 px, CPU) is trained per module, its ONNX
export cached, and copied before anything is written into it.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import qclassify.images  # noqa: E402
import qclassify.inference  # noqa: E402
from dicom_files import CT_RESCALE, FULL_12_BIT_WINDOW, write_dicom  # noqa: E402
from qclassify.cli import main  # noqa: E402
from qclassify.config import TrainConfig  # noqa: E402
from qclassify.ensemble_run import predict_any  # noqa: E402
from qclassify.images import ImageDataset, ImageRef, normalise_batch, read_resized  # noqa: E402
from qclassify.inference import predict_paths  # noqa: E402
from qclassify.onnx_engine import cached_model_path  # noqa: E402
from qclassify.runfolder import RunFolder  # noqa: E402
from qclassify.runtime import choose_engine  # noqa: E402
from qclassify.train import fit  # noqa: E402

TOLERANCE = 1e-5  # float32 graph against the float32 torch forward, float64 softmax
PREPROCESS_TOLERANCE = 1e-6  # the same float32 operations, batched instead of per image
SIZE = 32
ENGINES = ("torch", "onnxruntime")


def _write_png(path: Path, seed: int, shape=(SIZE, SIZE), dtype=np.uint8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    high = 256 if dtype == np.uint8 else 65536
    pixels = np.random.default_rng(seed).integers(0, high, shape).astype(dtype)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(run folder with its ONNX export cached, data folder); copy before writing."""
    base = tmp_path_factory.mktemp("export-adversarial")
    for k, name in enumerate(("normal", "stenosis")):
        for i in range(6):
            _write_png(base / "data" / name / f"{name}_{i}.png", seed=10 * k + i)
    config = TrainConfig(epochs=1, batch_size=4, image_size=SIZE, weights="none", device="cpu")
    fit(base / "data", base / "run", config, progress=False)
    predict_paths(base / "run", [base / "data"], device="cpu", engine="onnxruntime")
    return base / "run", base / "data"


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained[0], copy)
    return copy


def _proba(rows: list[dict]) -> np.ndarray:
    return np.array([[row["p_normal"], row["p_stenosis"]] for row in rows])


def _folder_proba(run: Path, data: Path, engine: str) -> np.ndarray:
    return _proba(predict_paths(run, [data], device="cpu", engine=engine))


def _one_error_line(result, exit_code: int, *fragments: str) -> None:
    assert result.exit_code == exit_code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0]


def test_out_onto_the_checkpoint_is_refused(run_copy):
    """Attack: `export RUN --out RUN/model.pt` would replace the trained checkpoint with the
    ONNX file; refused as a usage error, the checkpoint byte-identical."""
    before = (run_copy / "model.pt").read_bytes()
    result = CliRunner().invoke(main, ["export", str(run_copy), "--out",
                                       str(run_copy / "model.pt")])
    _one_error_line(result, 2, "--out", "checkpoint")
    assert (run_copy / "model.pt").read_bytes() == before
    assert not (run_copy / "model.pt.json").exists()


def test_out_in_a_missing_folder_is_one_line(run_copy, tmp_path):
    """Failure: --out in a folder that does not exist gave an OSError traceback after the
    export's work; now one usage line naming the folder, nothing written."""
    target = tmp_path / "missing" / "q.onnx"
    result = CliRunner().invoke(main, ["export", str(run_copy), "--out", str(target)])
    _one_error_line(result, 2, str(target.parent))
    assert not target.parent.exists()


def test_export_without_a_model_is_one_line(tmp_path):
    """Failure: exporting a run folder whose training never finished (no model.pt) must
    name the folder and the fix, not trace back."""
    (tmp_path / "run").mkdir()
    result = CliRunner().invoke(main, ["export", str(tmp_path / "run")])
    _one_error_line(result, 1, "model.pt", "qclassify fit")
    assert list((tmp_path / "run").iterdir()) == []


def test_damaged_cached_export_is_exported_again(run_copy, trained):
    """Failure: a truncated or garbage RUN/.cache/*.onnx (a killed disk, a stray copy) made
    every later predict fail inside ONNX Runtime; it is now exported again."""
    cache = cached_model_path(run_copy)
    cache.write_bytes(b"not an onnx model")
    proba = _folder_proba(run_copy, trained[1], "onnxruntime")
    np.testing.assert_allclose(proba, _folder_proba(run_copy, trained[1], "torch"),
                               atol=TOLERANCE, rtol=0)
    assert cache.stat().st_size > 1000


def test_retrained_checkpoint_never_uses_the_old_export(run_copy, trained):
    """Attack: model.pt replaced (retrained, or --overwrite) while RUN/.cache holds the old
    model's export; the cache is keyed by model.pt's sha256, so the new weights are run."""
    checkpoint = torch.load(run_copy / "model.pt", weights_only=True)
    checkpoint["state_dict"]["head.bias"] += torch.tensor([2.0, -2.0])
    torch.save(checkpoint, run_copy / "model.pt")
    proba = _folder_proba(run_copy, trained[1], "onnxruntime")
    np.testing.assert_allclose(proba, _folder_proba(run_copy, trained[1], "torch"),
                               atol=TOLERANCE, rtol=0)
    assert len(list((run_copy / ".cache").glob("*.onnx"))) == 2


def test_read_only_run_folder_still_predicts(run_copy, trained, monkeypatch):
    """Failure: a shared, read-only run folder must still predict with onnxruntime (the
    export then runs from memory) instead of failing to write its cache. The write is made
    to fail by the library's own writer (tests may run as root, who writes anywhere)."""
    import qclassify.onnx_engine
    import qclassify.runfolder

    def refuse(path, write):
        raise PermissionError(13, "Permission denied", str(path))

    shutil.rmtree(run_copy / ".cache")
    monkeypatch.setattr(qclassify.onnx_engine, "atomic_write", refuse)
    monkeypatch.setattr(qclassify.runfolder, "atomic_write", refuse)  # the settings memo
    proba = _folder_proba(run_copy, trained[1], "onnxruntime")
    np.testing.assert_allclose(proba, _folder_proba(run_copy, trained[1], "torch"),
                               atol=TOLERANCE, rtol=0)
    assert list((run_copy / ".cache").iterdir()) == []


def test_onnxruntime_on_a_gpu_is_refused_before_loading():
    """Failure: `--engine onnxruntime --device cuda` would silently run on the CPU; it is
    refused, naming both fixes, before any model is loaded."""
    with pytest.raises(ValueError, match="--device cpu or --engine torch"):
        choose_engine("onnxruntime", "cuda")
    assert choose_engine("auto", "cuda") == "torch"


def _images_with_a_broken_one(trained, tmp_path) -> tuple[Path, list[Path], Path]:
    """A folder of the run's 12 PNGs with a truncated PNG sorted in the middle."""
    folder = tmp_path / "images"
    shutil.copytree(trained[1], folder)
    good = sorted(folder.rglob("*.png"))
    broken = folder / "normal" / "normal_3b.png"
    broken.write_bytes(good[0].read_bytes()[:60])  # header kept, pixel data cut off
    return folder, good, broken


@pytest.mark.parametrize("engine", ENGINES)
def test_unreadable_file_is_decoded_once_and_skipped_once(trained, tmp_path, monkeypatch,
                                                          engine):
    """Failure: every image was decoded twice (a readability pass over all files, then the
    prediction pass). Now each file is read exactly once, the truncated one is reported in
    exactly one warning with today's text, and the other files get their rows, in path
    order, with the probabilities of a folder without the broken file (same batches)."""
    folder, good, broken = _images_with_a_broken_one(trained, tmp_path)
    expected = _proba(predict_paths(trained[0], good, device="cpu", engine=engine,
                                    batch_size=4))
    reads: list[Path] = []
    read_image = qclassify.images.read_image

    def counting_read(path, **options):
        reads.append(Path(path))
        return read_image(path, **options)

    monkeypatch.setattr(qclassify.images, "read_image", counting_read)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = predict_paths(trained[0], [folder], device="cpu", engine=engine, batch_size=4)
    skipped = [str(w.message) for w in caught if "unreadable" in str(w.message)]
    assert len(skipped) == 1 and skipped[0].startswith(f"skipping unreadable image {broken}: ")
    assert sorted(reads) == sorted([*good, broken])  # each file once
    assert [row["path"] for row in rows] == [str(p) for p in good]
    np.testing.assert_allclose(_proba(rows), expected, atol=TOLERANCE, rtol=0)


def test_all_unreadable_is_one_error_naming_the_paths(trained, tmp_path):
    """Failure: with the check folded into the prediction pass, a folder of unreadable files
    must still end in the "no readable images among ..." ValueError naming what was given,
    not in an empty batch reaching the engine."""
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"not a png")
    (folder / "b.png").write_bytes(b"")
    with pytest.warns(UserWarning, match="skipping unreadable image"), \
            pytest.raises(ValueError, match=f"no readable images among {folder}"):
        predict_paths(trained[0], [folder], device="cpu", engine="onnxruntime")


def _refuse_to_build(*args, **kwargs):
    raise AssertionError("the torch model was rebuilt")


def test_warm_cache_never_builds_the_torch_model(run_copy, trained, monkeypatch):
    """Failure: predict --engine onnxruntime rebuilt the torch model from model.pt (~0.3 s)
    and unpickled all its weights (~50 ms) although the cached export was run instead. With
    a loadable export for model.pt's hash, building the model or reading the whole
    checkpoint now fails the test; the rows are those of the torch engine."""
    images = sorted(trained[1].rglob("*.png"))
    expected = _proba(predict_paths(run_copy, images, device="cpu", engine="torch"))
    monkeypatch.setattr(qclassify.inference, "_rebuild_model", _refuse_to_build)
    monkeypatch.setattr(RunFolder, "read_checkpoint", _refuse_to_build)
    rows = predict_paths(run_copy, images, device="cpu", engine="onnxruntime")
    np.testing.assert_allclose(_proba(rows), expected, atol=TOLERANCE, rtol=0)


def test_changed_checkpoint_settings_are_never_read_from_the_cache(run_copy, trained):
    """Attack: model.pt replaced by one with other class names while RUN/.cache holds the
    old checkpoint's settings; they are keyed by model.pt's sha256, so the new names are
    printed (and the new model exported and run)."""
    checkpoint = torch.load(run_copy / "model.pt", weights_only=True)
    checkpoint["class_names"] = ["healthy", "stenosis"]
    torch.save(checkpoint, run_copy / "model.pt")
    images = sorted(trained[1].rglob("*.png"))[:2]
    rows = predict_paths(run_copy, images, device="cpu", engine="onnxruntime")
    assert list(rows[0]) == ["path", "predicted_class", "p_healthy", "p_stenosis"]


def test_cold_cache_still_builds_and_exports(run_copy, trained):
    """Failure: a lazily built model must still be built, and exported, when RUN/.cache is
    empty: the first onnxruntime prediction equals torch's."""
    shutil.rmtree(run_copy / ".cache")
    images = sorted(trained[1].rglob("*.png"))
    rows = predict_paths(run_copy, images, device="cpu", engine="onnxruntime")
    expected = _proba(predict_paths(run_copy, images, device="cpu", engine="torch"))
    np.testing.assert_allclose(_proba(rows), expected, atol=TOLERANCE, rtol=0)
    assert len(list((run_copy / ".cache").glob("*.onnx"))) == 1


def _ensemble_of(run: Path, root: Path) -> Path:
    """A finished two-seed ensemble folder made of copies of `run`, the second member's
    head shifted so that the mean differs from either member."""
    for seed in (0, 1):
        shutil.copytree(run, root / f"seed-{seed}", ignore=shutil.ignore_patterns(".cache"))
    checkpoint = torch.load(root / "seed-1" / "model.pt", weights_only=True)
    checkpoint["state_dict"]["head.bias"] += torch.tensor([0.5, -0.5])
    torch.save(checkpoint, root / "seed-1" / "model.pt")
    config = json.loads((run / "config.json").read_text())
    config["ensemble"] = {"seeds": [0, 1], "complete": True}
    (root / "config.json").write_text(json.dumps(config))
    return root


def test_ensemble_predicts_members_mean_without_rebuilding(trained, tmp_path, monkeypatch):
    """Failure: a seed ensemble (RUN/seed-<k>/) with a warm cache rebuilt every member's
    torch model. Both engines still give the mean of the members' own probabilities, and
    the second onnxruntime call builds no model."""
    ensemble = _ensemble_of(trained[0], tmp_path / "ensemble")
    images = sorted(trained[1].rglob("*.png"))
    members = [_proba(predict_paths(ensemble / f"seed-{seed}", images, device="cpu",
                                    engine="torch")) for seed in (0, 1)]
    oracle = np.mean(members, axis=0)
    for engine in ENGINES:  # the first onnxruntime call exports the averaged graph
        rows = predict_any(ensemble, images, device="cpu", engine=engine)
        np.testing.assert_allclose(_proba(rows), oracle, atol=TOLERANCE, rtol=0)
    monkeypatch.setattr(qclassify.inference, "_rebuild_model", _refuse_to_build)
    rows = predict_any(ensemble, images, device="cpu", engine="onnxruntime")
    np.testing.assert_allclose(_proba(rows), oracle, atol=TOLERANCE, rtol=0)


def _test_images(folder: Path) -> list[Path]:
    """8-bit L, RGB and 16-bit PNGs, at the model's size and at other sizes (resized), and a
    DICOM file when the reader is installed."""
    images = [_write_png(folder / "l.png", 1, (40, 36)),
              _write_png(folder / "l-same.png", 2),
              _write_png(folder / "rgb.png", 3, (24, 30, 3)),
              _write_png(folder / "sixteen.png", 4, (36, 40), np.uint16)]
    with Image.open(images[-1]) as image:
        assert image.mode.startswith("I;16")  # a real 16-bit file, not clipped to 8 bits
    try:
        import diffaug.medical  # noqa: F401 - the DICOM reader of qclassify[dicom]
        import pydicom  # noqa: F401
    except ImportError:
        return images
    pixels = np.random.default_rng(3).integers(0, 4096, (40, 36)).astype(np.uint16)
    return [*images, write_dicom(folder / "scan.dcm", pixels, window=FULL_12_BIT_WINDOW,
                                 rescale=CT_RESCALE)]


def test_batch_preprocessing_equals_the_per_image_transforms(tmp_path):
    """Failure: the batch path (read + resize per image, channels and normalisation per
    batch) must give the network the tensors of `ImageDataset`'s per-image transforms (what
    training, evaluation and yesterday's predict use), for 8-bit grayscale, RGB, 16-bit and
    DICOM inputs, resized or not, with and without a window."""
    images = _test_images(tmp_path)
    for window in (None, (1000.0, 3000.0)):
        dataset = ImageDataset(images, None, SIZE, window=window)
        expected = torch.stack([dataset[i][0] for i in range(len(images))])
        batch = normalise_batch([read_resized(ImageRef(p), SIZE, window=window)
                                 for p in images])
        assert batch.shape == expected.shape and batch.dtype == torch.float32
        np.testing.assert_allclose(batch.numpy(), expected.numpy(),
                                   atol=PREPROCESS_TOLERANCE, rtol=0)


@pytest.mark.parametrize(("dtype", "mode_shape"), [(np.uint8, (16, 16)), (np.uint8, (16, 16, 3)),
                                                   (np.uint16, (256, 256))])
def test_pixel_tables_give_the_float64_formulas_values(tmp_path, dtype, mode_shape):
    """Failure: 8- and 16-bit pixels are now scaled by table look-up (decoding is on
    prediction's critical path); every possible value must read exactly as the float64
    formula v / (2**bits - 1) rounded to float32 did, or training numerics would change."""
    from qclassify.images import read_image

    values = np.arange(np.iinfo(dtype).max + 1)
    pixels = np.resize(values, mode_shape).astype(dtype)
    path = tmp_path / "all-values.png"
    Image.fromarray(pixels).save(path)
    expected = (pixels.astype(np.float64) / np.iinfo(dtype).max).astype(np.float32)
    image = read_image(path)
    expected = expected if expected.ndim == 2 else expected.transpose(2, 0, 1)
    np.testing.assert_array_equal(image.numpy().squeeze(), expected)


def test_listing_walks_folders_as_rglob_did(tmp_path):
    """Failure: the faster listing (one scandir per folder instead of a stat per file) must
    list what `rglob` + `is_file` listed: nested images, links to files, no dot-entries, no
    files behind a link to a folder (which could loop), and only the folder's own files
    without `recursive`."""
    from qclassify.images import list_images

    root = tmp_path / "images"
    for relative in ("a.png", "sub/b.PNG", "sub/deep/c.jpg", ".hidden/d.png", "sub/.e.png",
                     "sub/notes.txt", "outside/f.png"):
        target = root / relative if not relative.startswith("outside") else tmp_path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"not decoded by listing")
    (root / "link.png").symlink_to(root / "a.png")
    (root / "linked-folder").symlink_to(tmp_path / "outside")
    (root / "dir.png").mkdir()
    oracle = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in
                    (".png", ".jpg") and not any(part.startswith(".")
                                                 for part in p.relative_to(root).parts))
    assert list_images(root, recursive=True) == oracle
    assert [p.relative_to(root).as_posix() for p in oracle] == [
        "a.png", "link.png", "sub/b.PNG", "sub/deep/c.jpg"]
    assert list_images(root) == [root / "a.png", root / "link.png"]
