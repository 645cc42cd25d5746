"""The shared diffusion math and the bump renderer against independent references.

The references are diffusers' own ``DDPMScheduler.add_noise``, the squaredcos_cap_v2 schedule and
the Min-SNR weights written out in float64 numpy, and the numpy renderer (checked by hand in
test_bumps_data.py). Each tolerance is a few times the difference measured on this CPU (noted
beside it), far below what a wrong schedule, weight or axis would give.
"""

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from diffcomp.bumps.data import render
from diffcomp.bumps.model import render_torch
from diffcomp.diffusion import EpsilonLoss, ddpm_scheduler

T = 100
SNR_GAMMA = 5.0


def cosine_alphas_cumprod(steps: int) -> np.ndarray:
    """alpha_bar_t of the squaredcos_cap_v2 schedule (Nichol & Dhariwal 2021), in float64."""

    def f(t):
        return np.cos((t / steps + 0.008) / 1.008 * np.pi / 2) ** 2

    betas = np.minimum(1 - f(np.arange(1, steps + 1)) / f(np.arange(steps)), 0.999)
    return np.cumprod(1 - betas)


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(6, 1, 8, 8, generator=generator) * 2 - 1
    loss = EpsilonLoss(
        ddpm_scheduler({"num_train_timesteps": T, "beta_schedule": "squaredcos_cap_v2"}), SNR_GAMMA, "cpu"
    )
    noisy, noise, timesteps = loss.noised(clean, torch.Generator().manual_seed(1))
    predicted = torch.randn(6, 1, 8, 8, generator=generator)
    return loss, clean, noisy, noise, timesteps, predicted


def test_schedule_is_the_cosine_schedule():
    scheduler = ddpm_scheduler({"num_train_timesteps": T, "beta_schedule": "squaredcos_cap_v2"})
    # measured: 1.0e-7 (float32 storage)
    np.testing.assert_allclose(scheduler.alphas_cumprod.double().numpy(), cosine_alphas_cumprod(T), rtol=0, atol=5e-7)


def test_noised_equals_diffusers_add_noise_and_the_formula(batch):
    loss, clean, noisy, noise, timesteps, _ = batch
    assert timesteps.unique().numel() > 3  # several noise levels in the batch
    reference = DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2").add_noise(
        clean, noise, timesteps
    )
    torch.testing.assert_close(noisy, reference, rtol=0, atol=1e-6)  # measured: 0.0
    a = cosine_alphas_cumprod(T)[timesteps.numpy()][:, None, None, None]
    by_hand = np.sqrt(a) * clean.double().numpy() + np.sqrt(1 - a) * noise.double().numpy()
    np.testing.assert_allclose(noisy.double().numpy(), by_hand, rtol=0, atol=1e-6)  # measured: 2.0e-7


def test_clean_estimate_is_the_formula(batch):
    loss, _, noisy, _, timesteps, predicted = batch
    a = cosine_alphas_cumprod(T)[timesteps.numpy()][:, None, None, None]
    by_hand = (noisy.double().numpy() - np.sqrt(1 - a) * predicted.double().numpy()) / np.sqrt(a)
    estimate = loss.clean_estimate(noisy, predicted, timesteps).double().numpy()
    np.testing.assert_allclose(estimate, by_hand, rtol=1e-6, atol=1e-6)  # measured: 2.2e-7 relative


def test_min_snr_weighting_is_the_formula(batch):
    """Min-SNR-gamma (Hang et al. 2023) for epsilon prediction: weight min(SNR_t, gamma) / SNR_t
    per sample, SNR_t = alpha_bar_t / (1 - alpha_bar_t)."""
    loss, _, _, noise, timesteps, predicted = batch
    a = cosine_alphas_cumprod(T)
    snr = a / (1 - a)
    weights = np.minimum(snr, SNR_GAMMA) / snr
    assert 0 < weights[timesteps.numpy()].min() < 0.5 and weights[timesteps.numpy()].max() == 1.0  # both regimes
    per_sample = ((predicted.double() - noise.double()) ** 2).flatten(1).mean(1).numpy()
    expected = (per_sample * weights[timesteps.numpy()]).mean()
    assert loss.regression(predicted, noise, timesteps).item() == pytest.approx(
        expected, rel=1e-6
    )  # measured: 4e-8 abs
    # without gamma: the plain MSE
    plain = EpsilonLoss(ddpm_scheduler({"num_train_timesteps": T, "beta_schedule": "squaredcos_cap_v2"}), None, "cpu")
    assert plain.regression(predicted, noise, timesteps).item() == pytest.approx(per_sample.mean(), rel=1e-6)


@pytest.mark.parametrize("sigma", [(1.0, 2.5), (0.7, 0.7)])
def test_render_torch_equals_the_numpy_renderer(sigma):
    """The training batches of the bump study (render_torch) are the images the numpy renderer
    draws; labels and spreads differ in x and y, so a swapped axis fails."""
    labels = np.array([[3.2, 11.7], [0.0, 16.0], [8.5, 2.25]])
    expected = render(labels, 16, sigma)
    got = render_torch(torch.tensor(labels, dtype=torch.float32), 16, sigma)[:, 0].numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)  # measured: 1.8e-7
    swapped = render(labels[:, ::-1], 16, sigma[::-1])
    assert np.abs(got - swapped).max() > 0.5
