"""DICOM and NIfTI reading (diffaug.medical) and synthetic DICOM/NIfTI writing (diffaug balance).

Torch-free. Reference implementation: pydicom's apply_modality_lut/apply_voi_lut are the oracle
for display intensities; synthetic files are re-read with pydicom/nibabel.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
nibabel = pytest.importorskip("nibabel")

from dicom_files import CT_RESCALE, write_dicom  # noqa: E402
from diffaug import balance_folder  # noqa: E402
from diffaug.io import read_manifest, sha256_file  # noqa: E402
from diffaug.medical import (  # noqa: E402
    frame_count,
    is_medical,
    list_samples,
    read_stored,
    read_unit,
)
from pydicom.pixels import apply_modality_lut, apply_voi_lut  # noqa: E402
from pydicom.uid import UID, ExplicitVRLittleEndian  # noqa: E402

ATOL = 1e-6  # float32 intensities against the float64 oracle


def ct_pixels(seed: int = 0, shape: tuple[int, ...] = (16, 16)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4096, shape, dtype=np.uint16)


def oracle_unit(path: Path, frame: int | None = None) -> np.ndarray:
    """pydicom's modality LUT and first window, mapped from the window's [0, 2^b - 1] range
    (rescaled as pydicom does) to [0, 1]."""
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array if frame is None else ds.pixel_array[frame]
    values = apply_voi_lut(apply_modality_lut(pixels, ds), ds)
    bounds = apply_voi_lut(apply_modality_lut(np.array([0, 2 ** ds.BitsStored - 1]), ds), ds)
    return (values - bounds.min()) / (bounds.max() - bounds.min())


def class_folders(root: Path, writer, counts: dict[str, int]) -> Path:
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for index in range(count):
            writer(root / name, index)
    return root


def test_detection_by_extension_and_preamble(tmp_path):
    """Reference: an extension-less DICOM file is found by its preamble and DICM word, and
    text files or PNGs are not taken for medical files."""
    dicom = write_dicom(tmp_path / "IM0001", ct_pixels())
    (tmp_path / "README").write_text("x" * 200)
    assert is_medical(dicom) and not is_medical(tmp_path / "README")
    assert is_medical(tmp_path / "a.nii.gz") and is_medical(tmp_path / "b.DCM")
    assert not is_medical(tmp_path / "c.png")


def test_ct_window_and_rescale_match_pydicom(tmp_path):
    """Reference implementation: a 12-bit CT-like file with rescale slope/intercept and a window
    reads as pydicom's apply_modality_lut + apply_voi_lut, scaled to [0, 1]."""
    path = write_dicom(tmp_path / "ct.dcm", ct_pixels(), window=(40.0, 400.0), rescale=CT_RESCALE)
    unit = read_unit(path)
    assert unit.dtype == np.float32 and unit.min() >= 0 and unit.max() <= 1
    np.testing.assert_allclose(unit, oracle_unit(path), atol=ATOL)


def test_window_override_replaces_the_files_window(tmp_path):
    """Reference implementation: window=(C, W) equals pydicom's windowing with that window."""
    path = write_dicom(tmp_path / "ct.dcm", ct_pixels(), window=(40.0, 400.0), rescale=CT_RESCALE)
    other = write_dicom(tmp_path / "other.dcm", ct_pixels(), window=(300.0, 1500.0),
                        rescale=CT_RESCALE)
    np.testing.assert_allclose(read_unit(path, window=(300.0, 1500.0)), oracle_unit(other),
                               atol=ATOL)


def test_no_window_scales_by_the_stored_bit_range(tmp_path):
    """Analytic oracle: without a window, the modality values of [0, 4095] map to [0, 1]."""
    pixels = ct_pixels()
    path = write_dicom(tmp_path / "ct.dcm", pixels, rescale=(2.0, -1024.0))
    np.testing.assert_allclose(read_unit(path), pixels / 4095.0, atol=ATOL)


def test_monochrome1_is_inverted(tmp_path):
    """Analytic oracle: MONOCHROME1 (white is 0) reads as 1 - the MONOCHROME2 intensities."""
    pixels = ct_pixels()
    mono1 = write_dicom(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1")
    mono2 = write_dicom(tmp_path / "m2.dcm", pixels)
    np.testing.assert_allclose(read_unit(mono1), 1.0 - read_unit(mono2), atol=ATOL)


def test_signed_int16_with_window(tmp_path):
    """Reference implementation: signed pixel data through pydicom's LUTs, window range to
    [0, 1] (pydicom's signed output range)."""
    pixels = np.random.default_rng(1).integers(-2000, 2000, (16, 16)).astype(np.int16)
    path = write_dicom(tmp_path / "s.dcm", pixels, bits_stored=16, window=(0.0, 1000.0))
    ds = pydicom.dcmread(path)
    expected = (apply_voi_lut(pixels, ds) + 32768.0) / 65535.0
    np.testing.assert_allclose(read_unit(path), expected, atol=ATOL)


def test_multi_frame_middle_and_all(tmp_path):
    """frames="middle" is one sample (frame F // 2); frames="all" one per frame, each read as
    the oracle reads that frame."""
    path = write_dicom(tmp_path / "mf.dcm", ct_pixels(shape=(5, 8, 8)), window=(2048, 4096))
    assert frame_count(path) == 5
    assert list_samples(path) == [(path, 2)]
    assert list_samples(path, "all") == [(path, k) for k in range(5)]
    for k in range(5):
        np.testing.assert_allclose(read_unit(path, frame=k), oracle_unit(path, k), atol=ATOL)
    np.testing.assert_array_equal(read_unit(path), read_unit(path, frame=2))


def test_bundled_ct_small_and_compressed_files():
    """Reference implementation on pydicom's bundled files (no network): CT_small (signed,
    rescaled) and compressed transfer syntaxes, through pydicom's pixel handlers."""
    from pydicom.data import get_testdata_file

    unit = read_unit(get_testdata_file("CT_small.dcm"))
    assert unit.shape == (128, 128) and 0 <= unit.min() < unit.max() <= 1
    for name in ("MR_small_RLE.dcm", "JPEG2000.dcm"):
        path = get_testdata_file(name)
        try:
            assert pydicom.dcmread(path).pixel_array.size
        except RuntimeError:
            pytest.skip(f"no pixel handler for {name}")
        assert 0 <= read_unit(path).min() <= read_unit(path).max() <= 1


def test_nifti_volume_slices(tmp_path):
    """NIfTI via nibabel: axis 2 slices, the volume's min-max to [0, 1] (get_fdata oracle)."""
    volume = np.random.default_rng(2).integers(0, 1000, (8, 6, 3)).astype(np.int16)
    path = tmp_path / "v.nii.gz"
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), path)
    data = nibabel.load(path).get_fdata()
    expected = (data[:, :, 1] - data.min()) / (data.max() - data.min())
    np.testing.assert_allclose(read_unit(path), expected, atol=ATOL)
    assert [k for _, k in list_samples(path, "all")] == [0, 1, 2]


def test_read_stored_uses_the_bit_range(tmp_path):
    """Stored values and BitsStored's range are what balance diffuses."""
    path = write_dicom(tmp_path / "ct.dcm", ct_pixels(), rescale=CT_RESCALE)
    stored = read_stored(path)
    assert stored.intensity_range == (0.0, 4095.0) and stored.channel_axis is None


def _dicom_dataset(root: Path) -> Path:
    def writer(folder: Path, index: int) -> None:
        write_dicom(folder / f"im{index}.dcm", ct_pixels(index), window=(40.0, 400.0),
                    rescale=CT_RESCALE)
    return class_folders(root, writer, {"normal": 6, "rare": 2})


def test_balance_writes_derived_dicom(tmp_path):
    """Synthetic DICOMs re-read by pydicom: valid, unique UIDs, DERIVED\\SECONDARY, the source
    referenced, the source's pixel attributes, rescale and window; Explicit VR LE."""
    data = _dicom_dataset(tmp_path / "in")
    report = balance_folder(data, tmp_path / "out", ratio=1.0, seed=3)
    rows = read_manifest(report.manifest)
    assert len(rows) == 4 and all(row.path.endswith(".dcm") for row in rows)
    uids = set()
    for row in rows:
        synthetic = pydicom.dcmread(tmp_path / "out" / row.path)
        source = pydicom.dcmread(data / row.source)
        assert sha256_file(tmp_path / "out" / row.path) == row.sha256
        assert synthetic.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        for uid in (synthetic.SOPInstanceUID, synthetic.SeriesInstanceUID):
            assert UID(uid).is_valid
        assert synthetic.SOPInstanceUID != source.SOPInstanceUID
        assert synthetic.SeriesInstanceUID != source.SeriesInstanceUID
        uids.add(synthetic.SOPInstanceUID)
        assert list(synthetic.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert f"t={row.t}" in synthetic.DerivationDescription
        assert "diffaug" in synthetic.DerivationDescription
        reference = synthetic.SourceImageSequence[0]
        assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert reference.ReferencedSOPClassUID == source.SOPClassUID
        for keyword in ("BitsStored", "BitsAllocated", "PixelRepresentation",
                        "PhotometricInterpretation", "RescaleSlope", "RescaleIntercept",
                        "WindowCenter", "WindowWidth", "StudyInstanceUID", "PatientID"):
            assert synthetic[keyword].value == source[keyword].value, keyword
        assert synthetic.pixel_array.dtype == source.pixel_array.dtype
        assert synthetic.pixel_array.max() <= 4095
    assert len(uids) == len(rows)


def test_balance_dicom_rerun_is_byte_identical(tmp_path):
    """Determinism: the same seed gives the same bytes (UIDs derived from seed and source)."""
    data = _dicom_dataset(tmp_path / "in")
    first = read_manifest(balance_folder(data, tmp_path / "a", ratio=1.0, seed=3).manifest)
    second = read_manifest(balance_folder(data, tmp_path / "b", ratio=1.0, seed=3).manifest)
    assert first == second
    other = read_manifest(balance_folder(data, tmp_path / "c", ratio=1.0, seed=4).manifest)
    assert {row.sha256 for row in other}.isdisjoint(row.sha256 for row in first)


def test_balance_multi_frame_and_compressed_dicom(tmp_path):
    """Multi-frame sources keep every frame (each its own noise); a compressed bundled source
    is written uncompressed with its photometric interpretation."""
    from pydicom.data import get_testdata_file

    def writer(folder: Path, index: int) -> None:
        write_dicom(folder / f"mf{index}.dcm", ct_pixels(index, (3, 8, 8)))
    data = class_folders(tmp_path / "in", writer, {"normal": 4, "rare": 1})
    report = balance_folder(data, tmp_path / "out", ratio=1.0, seed=0)
    synthetic = pydicom.dcmread(tmp_path / "out" / read_manifest(report.manifest)[0].path)
    assert synthetic.NumberOfFrames == 3 and synthetic.pixel_array.shape == (3, 8, 8)
    frames = synthetic.pixel_array.astype(float)
    assert not np.array_equal(frames[0] - ct_pixels(1, (3, 8, 8))[0],
                              frames[1] - ct_pixels(1, (3, 8, 8))[1])

    rle = get_testdata_file("MR_small_RLE.dcm")
    (tmp_path / "in2" / "a").mkdir(parents=True)
    (tmp_path / "in2" / "b").mkdir()
    for k in range(3):
        (tmp_path / "in2" / "a" / f"x{k}.dcm").write_bytes(Path(rle).read_bytes())
    (tmp_path / "in2" / "b" / "y.dcm").write_bytes(Path(rle).read_bytes())
    report = balance_folder(tmp_path / "in2", tmp_path / "out2", ratio=1.0, seed=0)
    row = read_manifest(report.manifest)[0]
    synthetic = pydicom.dcmread(tmp_path / "out2" / row.path)
    assert synthetic.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert synthetic.pixel_array.shape == pydicom.dcmread(rle).pixel_array.shape


def test_balance_writes_nifti_with_the_source_affine(tmp_path):
    """NIfTI sources give .nii.gz files with the source's affine and scaling; byte-identical
    reruns (gzip without a timestamp)."""
    affine = np.diag([0.5, 0.7, 2.0, 1.0])

    def writer(folder: Path, index: int) -> None:
        image = nibabel.Nifti1Image(ct_pixels(index, (8, 8, 2)).astype(np.int16), affine)
        image.header.set_slope_inter(2.0, -10.0)
        nibabel.save(image, folder / f"v{index}.nii.gz")
    data = class_folders(tmp_path / "in", writer, {"normal": 4, "rare": 1})
    first = read_manifest(balance_folder(data, tmp_path / "a", ratio=1.0, seed=0).manifest)
    second = read_manifest(balance_folder(data, tmp_path / "b", ratio=1.0, seed=0).manifest)
    assert first == second and first[0].path.endswith(".nii.gz")
    synthetic = nibabel.load(tmp_path / "a" / first[0].path)
    np.testing.assert_allclose(synthetic.affine, affine)
    assert (synthetic.dataobj.slope, synthetic.dataobj.inter) == (2.0, -10.0)
    assert synthetic.get_data_dtype() == np.int16
    gzip.decompress((tmp_path / "a" / first[0].path).read_bytes())  # a valid gzip stream
