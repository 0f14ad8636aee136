"""FID numerics (`diffaug.fid.frechet`) and the FID pipeline on .npz statistics (`diffaug.fid`),
without the Inception network (KID: test_kid.py).

Kinds: reference implementation (`scipy.linalg.sqrtm`, pytorch-fid's
`calculate_frechet_distance`), analytic oracles (equal covariances give ||mu1 - mu2||²),
contract tests (statistics files, permissions) and CLI tests on .npz statistics, which need no
torch.
"""

from __future__ import annotations

import os
import stat
import sys
import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from diffaug.cli import main
from diffaug.fid import FID_DIMS, compute_fid, save_fid_stats
from diffaug.fid.frechet import (
    FeatureStatistics,
    frechet_distance,
    frechet_distance_between,
    trace_sqrt_product,
    trace_sqrt_product_from_features,
)
from scipy import linalg

SQRTM_RTOL = 1e-7  # full-rank pairs: both routes are backward stable, sqrtm a little less so
SINGULAR_RTOL = 1e-6  # rank-deficient pairs: sqrtm's square roots of rounding-noise eigenvalues
EXACT_RTOL = 1e-10  # the same formula evaluated in a different order
PYTORCH_FID_RTOL = 1e-5  # pytorch-fid adds 1e-6 to the diagonals when sqrtm is not finite


def random_covariance(rng: np.random.Generator, dims: int, samples: int) -> np.ndarray:
    """Sample covariance of `samples` correlated Gaussian vectors (singular if samples <= dims)."""
    mixing = rng.standard_normal((dims, dims)) / np.sqrt(dims)
    return np.cov(rng.standard_normal((samples, dims)) @ mixing, rowvar=False)


def sqrtm_trace(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    return float(np.trace(linalg.sqrtm(sigma1 @ sigma2)).real)


@pytest.mark.parametrize(("dims", "seed"), [(2, 0), (16, 1), (64, 2), (200, 3)])
def test_trace_sqrt_product_matches_sqrtm(dims: int, seed: int) -> None:
    """Reference implementation: scipy's sqrtm on random full-rank covariance pairs."""
    rng = np.random.default_rng(seed)
    sigma1 = random_covariance(rng, dims, 3 * dims + 10)
    sigma2 = random_covariance(rng, dims, 2 * dims + 10)
    expected = sqrtm_trace(sigma1, sigma2)
    assert trace_sqrt_product(sigma1, sigma2) == pytest.approx(expected, rel=SQRTM_RTOL)
    assert trace_sqrt_product(sigma2, sigma1) == pytest.approx(expected, rel=SQRTM_RTOL)


@pytest.mark.parametrize(("n1", "n2", "dims"), [(12, 30, 64), (40, 25, 128), (90, 300, 100)])
def test_trace_from_features_matches_sqrtm(n1: int, n2: int, dims: int) -> None:
    """Reference implementation: the nuclear-norm route and the eigen route agree with sqrtm,
    on singular covariances (the small-set case) as on full-rank ones."""
    rng = np.random.default_rng(n1 + n2)
    features1 = rng.standard_normal((n1, dims)) * rng.uniform(0.1, 2, dims)
    features2 = rng.standard_normal((n2, dims)) + 0.3
    sigma1, sigma2 = np.cov(features1, rowvar=False), np.cov(features2, rowvar=False)
    expected = sqrtm_trace(sigma1, sigma2)
    from_features = trace_sqrt_product_from_features(features1, features2)
    assert from_features == pytest.approx(expected, rel=SINGULAR_RTOL)
    assert trace_sqrt_product(sigma1, sigma2) == pytest.approx(from_features, rel=SINGULAR_RTOL)


def test_equal_covariances_give_squared_mean_distance() -> None:
    """Analytic oracle (pytorch-fid's own test): with sigma1 = sigma2, FID = ||mu1 - mu2||²."""
    rng = np.random.default_rng(4)
    sigma = random_covariance(rng, 50, 20)  # singular, like a small minority class
    mu1, mu2 = rng.standard_normal(50), rng.standard_normal(50)
    expected = float(np.sum((mu1 - mu2) ** 2))
    tolerance = SINGULAR_RTOL * np.trace(sigma)  # the trace terms cancel to rounding
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(expected, abs=tolerance)
    assert frechet_distance(mu1, sigma, mu1, sigma) == pytest.approx(0, abs=tolerance)


@pytest.mark.parametrize(
    ("n1", "n2", "dims"),
    [
        (300, 400, 64),
        (42, 114, 192),
        # 768 = pytorch-fid's third block; scipy's sqrtm at 2048 (what this module avoids) takes
        # minutes on a CI core, so 2048 is covered by the commuting-covariance oracle below.
        (42, 114, 768),
    ],
)
def test_frechet_distance_matches_pytorch_fid(n1: int, n2: int, dims: int) -> None:
    """Reference implementation: pytorch-fid's calculate_frechet_distance on the statistics of
    random features, full rank and the small-set case (BreastMNIST test: 42 vs 114)."""
    fid_score = pytest.importorskip("pytorch_fid.fid_score")
    rng = np.random.default_rng(dims)
    real = FeatureStatistics.from_features(np.abs(rng.standard_normal((n1, dims))))
    other = FeatureStatistics.from_features(np.abs(rng.standard_normal((n2, dims)) + 0.2))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", DeprecationWarning)  # sqrtm's `disp` in recent scipy
        expected = fid_score.calculate_frechet_distance(real.mu, real.sigma, other.mu, other.sigma)
    ours = frechet_distance(real.mu, real.sigma, other.mu, other.sigma)
    assert ours == pytest.approx(expected, rel=PYTORCH_FID_RTOL)
    assert frechet_distance_between(real, other) == pytest.approx(expected, rel=PYTORCH_FID_RTOL)


def test_commuting_2048_covariances_have_known_trace_term() -> None:
    """Analytic oracle at pool3 size: for S1 = Q diag(a) Qᵀ and S2 = Q diag(b) Qᵀ,
    tr sqrt(S1 S2) = sum sqrt(a b); some a are zero, as in a small set's covariance."""
    rng = np.random.default_rng(12)
    dims = 2048
    basis, _ = np.linalg.qr(rng.standard_normal((dims, dims)))
    a = np.where(rng.random(dims) < 0.5, 0.0, rng.uniform(0.01, 3, dims))
    b = rng.uniform(0.01, 3, dims)
    sigma1, sigma2 = (basis * a) @ basis.T, (basis * b) @ basis.T
    mu1, mu2 = rng.standard_normal(dims), rng.standard_normal(dims)
    expected = np.sum((mu1 - mu2) ** 2) + a.sum() + b.sum() - 2 * np.sqrt(a * b).sum()
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=SINGULAR_RTOL)


def test_feature_route_equals_statistics_route() -> None:
    """Same quantity, two formulas: FID from features (nuclear norm) vs from mu/sigma."""
    rng = np.random.default_rng(5)
    real = FeatureStatistics.from_features(rng.standard_normal((20, 30)))
    other = FeatureStatistics.from_features(rng.standard_normal((25, 30)) + 0.5)
    assert real.features is not None and 20 * 25 * (30 + 20) <= 30**3  # the feature route runs
    by_statistics = frechet_distance(real.mu, real.sigma, other.mu, other.sigma)
    assert frechet_distance_between(real, other) == pytest.approx(by_statistics, rel=SINGULAR_RTOL)


def test_mismatched_dimensions_are_a_clear_error() -> None:
    rng = np.random.default_rng(6)
    real = FeatureStatistics.from_features(rng.standard_normal((5, 3)))
    other = FeatureStatistics.from_features(rng.standard_normal((5, 4)))
    with pytest.raises(ValueError, match="same --dims"):
        frechet_distance_between(real, other)


def test_statistics_round_trip_like_pytorch_fid(tmp_path) -> None:
    """Contract: the .npz holds `mu` and `sigma` (pytorch-fid's keys), ".npz" is appended like
    np.savez_compressed does, and an existing file is never overwritten."""
    stats = FeatureStatistics.from_features(np.random.default_rng(10).standard_normal((6, 3)))
    written = stats.save(tmp_path / "real")
    assert written == tmp_path / "real.npz"
    with np.load(written) as raw:
        np.testing.assert_array_equal(raw["mu"], stats.mu)
        np.testing.assert_array_equal(raw["sigma"], stats.sigma)
    loaded = FeatureStatistics.load(written)
    assert loaded.features is None
    with pytest.raises(ValueError, match="already exists"):
        stats.save(written)
    with pytest.raises(ValueError, match="already exists"):
        save_fid_stats(tmp_path / "anything", written)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["real.npz"]  # no temporary left


def test_statistics_file_respects_the_umask(tmp_path) -> None:
    """Contract: the .npz gets the permissions `open(path, "xb")` gives a new file (0o666 less
    the umask), not mkstemp's private 0o600."""
    stats = FeatureStatistics.from_features(np.random.default_rng(10).standard_normal((6, 3)))
    previous = os.umask(0o022)
    try:
        written = stats.save(tmp_path / "real.npz")
        with open(tmp_path / "reference", "xb"):
            pass
    finally:
        os.umask(previous)
    assert stat.S_IMODE(written.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "reference").stat().st_mode) == 0o644


def _two_statistics_files(tmp_path):
    rng = np.random.default_rng(11)
    paths = []
    for name, shift in (("real.npz", 0.0), ("other.npz", 1.0)):
        stats = FeatureStatistics.from_features(rng.standard_normal((40, 8)) + shift)
        paths.append(stats.save(tmp_path / name))
    return paths


def test_compute_fid_on_statistics_files_needs_no_network(tmp_path, monkeypatch) -> None:
    """Two .npz inputs: FID of the stored statistics, no torch or weights needed."""
    real, other = _two_statistics_files(tmp_path)
    monkeypatch.setitem(sys.modules, "torch", None)  # any torch import would now fail
    report = compute_fid(real, other)
    a, b = FeatureStatistics.load(real), FeatureStatistics.load(other)
    assert report.fid == pytest.approx(frechet_distance(a.mu, a.sigma, b.mu, b.sigma), rel=EXACT_RTOL)
    assert (report.n_real, report.n_other, report.kid) == (None, None, None)
    with pytest.raises(ValueError, match="KID needs images"):
        compute_fid(real, other, kid=True)


def test_fid_dims_are_pytorch_fids() -> None:
    """Contract: the CLI's --dims choices are InceptionV3.BLOCK_INDEX_BY_DIM's keys."""
    inception = pytest.importorskip("pytorch_fid.inception")
    assert tuple(inception.InceptionV3.BLOCK_INDEX_BY_DIM) == FID_DIMS


def test_cli_fid_on_statistics_files(tmp_path) -> None:
    """CLI: `diffaug fid A.npz B.npz` prints the library's FID."""
    real, other = _two_statistics_files(tmp_path)
    result = CliRunner().invoke(main, ["fid", str(real), str(other)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    printed = float(result.output.split("FID:")[1].split()[0])
    assert printed == pytest.approx(compute_fid(real, other).fid, rel=EXACT_RTOL)


@pytest.mark.parametrize(
    ("arguments", "exit_code", "message"),
    [
        (["missing.npz", "other.npz"], 2, "no such statistics file"),
        (["real.npz", "other.npz", "--kid"], 2, "KID needs images"),
        (["images", "other.npz"], 1, "pip install 'diffaug[fid]'"),
    ],
)
def test_cli_fid_errors_are_one_line(tmp_path, monkeypatch, arguments, exit_code, message) -> None:
    """CLI: bad inputs and a missing `fid` extra end in one line, no traceback."""
    _two_statistics_files(tmp_path)
    (tmp_path / "images").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "pytorch_fid", None)  # as if the extra were not installed
    monkeypatch.setitem(sys.modules, "pytorch_fid.inception", None)
    result = CliRunner().invoke(main, ["fid", *arguments])
    assert result.exit_code == exit_code
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_cli_fid_rejects_unknown_dims(tmp_path) -> None:
    """CLI: --dims offers pytorch-fid's choices only (a click usage error, exit 2)."""
    real, other = _two_statistics_files(tmp_path)
    result = CliRunner().invoke(main, ["fid", str(real), str(other), "--dims", "100"])
    assert result.exit_code == 2
    assert "--dims" in result.output and "Traceback" not in result.output


def test_cli_balance_fid_without_extra_fails_before_work(class_folders, tmp_path,
                                                         monkeypatch) -> None:
    """CLI: `balance --fid` without the fid extra says how to install it, exit 1, and writes
    nothing."""
    monkeypatch.setitem(sys.modules, "pytorch_fid", None)
    monkeypatch.setitem(sys.modules, "pytorch_fid.inception", None)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["balance", str(class_folders({"a": 4, "b": 2})), str(out),
                                       "--ratio", "1", "--fid", "--quiet"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: diffaug fid needs the fid extra: pip install 'diffaug[fid]'"
    assert not out.exists()


def test_cli_fid_has_help() -> None:
    """CLI: the command documents pytorch-fid's options."""
    result = CliRunner().invoke(main, ["fid", "--help"], catch_exceptions=False)
    assert result.exit_code == 0
    for option in ("--batch-size", "--device", "--dims", "--num-workers", "--save-stats",
                   "--recursive", "--kid", "--quiet"):
        assert option in result.output
