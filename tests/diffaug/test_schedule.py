"""The noise schedule (eq. 2) and forward step (eq. 1).

Reference implementation: diffusers' linear ``DDPMScheduler`` and its ``add_noise`` (which compute
in float32, hence the tolerances). Analytic oracles: zero betas give x0 back; the noise variance
``1 - abar[t]`` grows with t.
"""

from __future__ import annotations

import numpy as np
import pytest
from diffaug import NoiseSchedule, forward_diffuse

FLOAT32_ATOL = 1e-6  # diffusers keeps betas and alphas_cumprod in float32
SCHEDULES = [(5, 1e-4, 0.02), (10, 1e-3, 0.05), (1, 1e-4, 0.02), (1000, 1e-4, 0.02)]


def _diffusers_scheduler(timesteps: int, beta_start: float, beta_end: float):
    pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    return diffusers.DDPMScheduler(num_train_timesteps=timesteps, beta_start=beta_start,
                                   beta_end=beta_end, beta_schedule="linear")


@pytest.mark.parametrize(("timesteps", "beta_start", "beta_end"), SCHEDULES)
def test_schedule_matches_diffusers(timesteps, beta_start, beta_end):
    """Reference implementation: betas and alphas_cumprod equal DDPMScheduler's, 0-indexed."""
    reference = _diffusers_scheduler(timesteps, beta_start, beta_end)
    schedule = NoiseSchedule.linear(timesteps, beta_start, beta_end)
    assert schedule.timesteps == timesteps
    assert schedule.betas.dtype == schedule.alphas_cumprod.dtype == np.float64
    np.testing.assert_allclose(schedule.betas, reference.betas.numpy(), rtol=0, atol=FLOAT32_ATOL)
    np.testing.assert_allclose(schedule.alphas_cumprod, reference.alphas_cumprod.numpy(),
                               rtol=0, atol=FLOAT32_ATOL)


@pytest.mark.parametrize(("timesteps", "beta_start", "beta_end"), SCHEDULES[:2])
@pytest.mark.parametrize("shape", [(3, 8, 8), (2, 6, 6, 3)])
def test_forward_diffuse_matches_add_noise(timesteps, beta_start, beta_end, shape):
    """Reference implementation: x_t equals add_noise for the same x0, noise and per-sample t."""
    reference = _diffusers_scheduler(timesteps, beta_start, beta_end)
    import torch

    rng = np.random.default_rng(7)
    x0 = rng.uniform(-1, 1, shape)
    noise = rng.standard_normal(shape)
    t = rng.integers(timesteps, size=shape[0])
    expected = reference.add_noise(torch.from_numpy(x0), torch.from_numpy(noise),
                                   torch.from_numpy(t)).numpy()
    schedule = NoiseSchedule.linear(timesteps, beta_start, beta_end)
    np.testing.assert_allclose(forward_diffuse(x0, t, noise, schedule), expected, rtol=0,
                               atol=FLOAT32_ATOL)
    for index in range(shape[0]):  # one scalar t per image gives the same rows
        np.testing.assert_allclose(forward_diffuse(x0[index], int(t[index]), noise[index],
                                                   schedule), expected[index], rtol=0,
                                   atol=FLOAT32_ATOL)


def test_eq2_by_hand():
    """Analytic oracle: eq. 2 with s = 1 … T written out for the paper's T = 5."""
    betas = [1e-4 + (s - 1) / 4 * (0.02 - 1e-4) for s in range(1, 6)]
    schedule = NoiseSchedule.linear()
    np.testing.assert_allclose(schedule.betas, betas, rtol=1e-12, atol=0)
    np.testing.assert_allclose(schedule.alphas_cumprod, np.cumprod([1 - b for b in betas]),
                               rtol=1e-12, atol=0)


def test_zero_betas_return_x0():
    """Analytic oracle: with abar = 1 the forward step returns x0 whatever the noise."""
    schedule = NoiseSchedule.linear(timesteps=3, beta_start=0.0, beta_end=0.0)
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-1, 1, (4, 4))
    np.testing.assert_allclose(forward_diffuse(x0, 2, rng.standard_normal((4, 4)), schedule), x0,
                               rtol=0, atol=1e-15)


def test_noise_level_grows_with_t():
    """Analytic oracle: the noise term has variance 1 - abar[t], strictly increasing in t."""
    schedule = NoiseSchedule.linear()
    zeros, noise = np.zeros(10_000), np.random.default_rng(1).standard_normal(10_000)
    stds = [forward_diffuse(zeros, t, noise, schedule).std() for t in range(schedule.timesteps)]
    assert all(later > earlier for earlier, later in zip(stds, stds[1:], strict=False))
    np.testing.assert_allclose(stds, np.sqrt(1 - schedule.alphas_cumprod) * noise.std(),
                               rtol=1e-12, atol=0)


def test_schedule_arrays_are_read_only():
    """Contract: a schedule cannot be changed behind the back of the code using it."""
    with pytest.raises(ValueError, match="read-only"):
        NoiseSchedule.linear().betas[0] = 0.5


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"timesteps": 0}, "timesteps"),
    ({"timesteps": 2.5}, "timesteps"),
    ({"beta_start": 0.03}, "beta_start <= beta_end"),
    ({"beta_start": -0.1}, "0 <= beta_start"),
    ({"beta_end": 1.0}, "beta_end < 1"),
])
def test_linear_rejects_bad_parameters(kwargs, message):
    """Contract: bad schedule parameters raise a ValueError that names them."""
    with pytest.raises(ValueError, match=message):
        NoiseSchedule.linear(**kwargs)


@pytest.mark.parametrize(("t", "noise_shape", "message"), [
    (5, (4, 4), "t must lie in"),
    (-1, (4, 4), "t must lie in"),
    (1.5, (4, 4), "integer"),
    (0, (4, 5), "shape"),
    (np.array([0, 1, 2]), (4, 4), "one t per sample"),
])
def test_forward_diffuse_rejects_bad_arguments(t, noise_shape, message):
    """Contract: out-of-range t, mismatched noise or per-sample t raise a ValueError."""
    with pytest.raises(ValueError, match=message):
        forward_diffuse(np.zeros((4, 4)), t, np.zeros(noise_shape), NoiseSchedule.linear())
