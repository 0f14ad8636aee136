"""tools/demo/make_demo_data.py --format dicom: XA-like 12-bit DICOM files re-read by pydicom
(valid unique UIDs, several images per PatientID, the generator's pixels), byte-identical for
the same seed; run_demo.py passes the format on and groups balance and compare by PatientID.
Torch-free; skipped without pydicom."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import make_demo_data as demo  # tools/demo/ is on pytest's pythonpath (root pyproject.toml)
import numpy as np
import pytest
import run_demo
from click.testing import CliRunner

pydicom = pytest.importorskip("pydicom")

SIZE = 32
COUNTS = {"train": (6, 3), "val": (3, 1), "test": (2, 2)}


def _make(out: Path, seed: int = 0) -> dict:
    return demo.make_demo_dataset(out, size=SIZE, counts=COUNTS, seed=seed, image_format="dicom")


def _hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_dicom_files_reread_with_valid_unique_uids_and_12_bit_pixels(tmp_path):
    """Contract: every image is a .dcm that pydicom reads back as XA, 12-bit MONOCHROME2 with a
    window, unique valid SOP Instance UIDs, patients shared by several images of one split, and
    the generator's pixels rescaled from 8 to 12 bits."""
    record = _make(tmp_path / "demo")
    root = tmp_path / "demo"
    assert record["options"]["format"] == "dicom"
    assert not list(root.rglob("*.png"))
    instance_uids, patients = [], Counter()
    patient_splits: dict[str, set[str]] = {}
    for entry in record["images"]:
        ds = pydicom.dcmread(root / entry["path"])
        assert entry["path"].endswith(".dcm")
        assert (ds.Modality, ds.BitsStored, ds.BitsAllocated) == ("XA", 12, 16)
        assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.PixelRepresentation == 0
        assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (2048.0, 4096.0)
        for uid in (ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID,
                    ds.file_meta.MediaStorageSOPInstanceUID):
            assert pydicom.uid.UID(uid).is_valid, uid
        instance_uids.append(ds.SOPInstanceUID)
        patients[ds.PatientID] += 1
        patient_splits.setdefault(ds.PatientID, set()).add(entry["split"])
        pixels = ds.pixel_array
        expected = demo.generate_image(0, entry["split"], entry["index"],
                                       stenosis=entry["class"] == "stenosis", size=SIZE).pixels
        np.testing.assert_array_equal(pixels, np.rint(expected.astype(float) * 4095 / 255).astype(np.uint16))
        assert pixels.max() <= 4095
    assert len(set(instance_uids)) == len(instance_uids)
    assert max(patients.values()) == demo.IMAGES_PER_PATIENT
    assert all(len(splits) == 1 for splits in patient_splits.values())


def test_same_seed_same_bytes_other_seed_other_uids(tmp_path):
    """Same-seed rederivation: two DICOM runs are byte-identical (UIDs are derived from the
    seed and the image, not drawn at random); another seed gives other files."""
    _make(tmp_path / "a")
    _make(tmp_path / "b")
    _make(tmp_path / "c", seed=1)
    assert _hashes(tmp_path / "a") == _hashes(tmp_path / "b")
    first = pydicom.dcmread(next((tmp_path / "a").rglob("*.dcm")))
    other = pydicom.dcmread(tmp_path / "c" / next((tmp_path / "a").rglob("*.dcm")).relative_to(
        tmp_path / "a"))
    assert first.SOPInstanceUID != other.SOPInstanceUID


def test_cli_format_option_and_png_default(tmp_path):
    """CLI: --format dicom writes .dcm files; without it the images stay PNG."""
    args = ["--size", str(SIZE), "--train", "2", "1", "--val", "1", "1", "--test", "1", "1",
            "--quiet"]
    result = CliRunner().invoke(demo.main, [str(tmp_path / "d"), "--format", "dicom", *args])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "d").rglob("*.dcm"))) == 7
    result = CliRunner().invoke(demo.main, [str(tmp_path / "p"), *args])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "p").rglob("*.png"))) == 7


def test_run_demo_passes_the_format_and_groups_by_patient():
    """run_demo --format dicom: the data step asks for DICOM, balance and compare get
    --group-by PatientID; the PNG demo's commands are unchanged."""
    dicom = run_demo.DemoOptions(out=Path("demo"), image_format="dicom")
    png = run_demo.DemoOptions(out=Path("demo"))

    def command(step) -> str:
        return " ".join(step.shown)

    assert "--format dicom" in command(run_demo.generate_step(dicom))
    assert "--format" not in command(run_demo.generate_step(png))
    for make_step in (run_demo.balance_step, run_demo.compare_step):
        assert "--group-by PatientID" in command(make_step(dicom))
        assert "--group-by" not in command(make_step(png))
