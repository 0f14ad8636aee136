"""Adversarial checks of the fast `qclassify predict` path: one decode per image (unreadable
files found by the decode that feeds the batch), batch-level preprocessing equal to the
per-image transforms, and no torch model built when a cached ONNX export can run.

Each test reproduces one failure and fails without its guard. Everything is generated in
tmp_path; one tiny run (1 epoch, 32 px, CPU) is trained per module, its ONNX export cached,
and copied before anything is written into it.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import qclassify.images  # noqa: E402
import qclassify.inference  # noqa: E402
from qclassify.config import TrainConfig  # noqa: E402
from qclassify.ensemble_run import predict_any  # noqa: E402
from qclassify.images import ImageDataset, ImageRef, normalise_batch, read_resized  # noqa: E402
from qclassify.inference import predict_paths  # noqa: E402
from qclassify.runfolder import RunFolder  # noqa: E402
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
    base = tmp_path_factory.mktemp("predict-speed")
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


def _write_dicom(path: Path) -> Path:
    """A 12-bit DICOM with a window and a CT-like rescale."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(path)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    pixels = np.random.default_rng(3).integers(0, 4096, (40, 36)).astype(np.uint16)
    ds.set_pixel_data(pixels, "MONOCHROME2", 12, generate_instance_uid=False)
    ds.WindowCenter, ds.WindowWidth = 2048.0, 4096.0
    ds.RescaleSlope, ds.RescaleIntercept = 1.0, -1024.0
    ds.save_as(path, enforce_file_format=True)
    return path


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
    return [*images, _write_dicom(folder / "scan.dcm")]


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
