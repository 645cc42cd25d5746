"""Diffusion pieces shared by every study: noise schedules, the epsilon loss, the samplers.

Both studies train a denoiser ``forward(noisy, timesteps, condition) -> predicted noise`` with
diffusers' DDPMScheduler noise and the epsilon-prediction MSE (optionally Min-SNR weighted),
and generate with DDIM or the full DDPM chain.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.training_utils import compute_snr


def ddpm_scheduler(diffusion: dict) -> DDPMScheduler:
    """The training noise schedule of a config's ``diffusion`` section."""
    return DDPMScheduler(
        num_train_timesteps=diffusion["num_train_timesteps"],
        beta_schedule=diffusion["beta_schedule"],
        prediction_type="epsilon",
        clip_sample=True,
    )


def sampling_scheduler(diffusion: dict, sampler: str):
    """The scheduler used for generation: DDIM (few steps) or the full DDPM chain."""
    train = ddpm_scheduler(diffusion)
    if sampler == "ddim":
        return DDIMScheduler.from_config(train.config)
    return train


def inference_steps(diffusion: dict, sampling: dict) -> int:
    """Denoising steps per sample: the DDIM step count, or every training timestep for DDPM."""
    if sampling["sampler"] == "ddim":
        return sampling["num_inference_steps"]
    return diffusion["num_train_timesteps"]


def unet_block_types(levels: int, attention_levels, attention_block: str, plain_block: str = "DownBlock2D"):
    """diffusers down/up block type names for a UNet with attention blocks at ``attention_levels``."""
    bad = [level for level in attention_levels if level >= levels]
    if bad:
        raise ValueError(f"attention levels {bad} do not exist in a {levels}-level UNet")
    down = [(attention_block if k in attention_levels else plain_block) for k in range(levels)]
    return tuple(down), tuple(b.replace("Down", "Up") for b in reversed(down))


class EpsilonLoss:
    """DDPM training loss: noise a clean batch at random timesteps, regress the noise.

    ``snr_gamma`` switches on Min-SNR weighting (Hang et al. 2023, as in diffusers' example
    training scripts): it caps the weight of low-noise timesteps so the easy steps stop
    dominating the gradient. The per-timestep weights are computed once, not in every step.
    """

    def __init__(self, scheduler: DDPMScheduler, snr_gamma: float | None, device: torch.device):
        self.num_timesteps = scheduler.config.num_train_timesteps
        self.alphas_cumprod = scheduler.alphas_cumprod.to(device)
        self.snr_gamma = snr_gamma
        self.snr_by_timestep = compute_snr(scheduler, torch.arange(self.num_timesteps)).to(device)

    def noised(self, clean: torch.Tensor, generator: torch.Generator):
        """(noisy, noise, timesteps): ``clean`` noised at timesteps drawn after the noise."""
        noise = torch.randn(clean.shape, generator=generator, device=clean.device)
        timesteps = torch.randint(self.num_timesteps, (len(clean),), generator=generator, device=clean.device)
        a = self.alphas_cumprod[timesteps].view(-1, *([1] * (clean.dim() - 1)))
        noisy = a.sqrt() * clean + (1 - a).sqrt() * noise  # DDPMScheduler.add_noise, without its per-call copies
        return noisy, noise, timesteps

    def regression(self, predicted: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The (Min-SNR weighted) MSE between the predicted and the true noise."""
        if self.snr_gamma is None:
            return F.mse_loss(predicted.float(), noise)
        snr = self.snr_by_timestep[timesteps]
        weights = torch.clamp(snr, max=self.snr_gamma) / snr
        per_sample = F.mse_loss(predicted.float(), noise, reduction="none").flatten(1).mean(dim=1)
        return (per_sample * weights).mean()

    def clean_estimate(self, noisy: torch.Tensor, predicted: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x0_hat = (x_t - sqrt(1 - a_t) eps_hat) / sqrt(a_t): the clean image the prediction implies."""
        a = self.alphas_cumprod[timesteps].view(-1, *([1] * (noisy.dim() - 1)))
        return (noisy - (1 - a).sqrt() * predicted.float()) / a.sqrt()

    def __call__(self, forward: Callable, clean: torch.Tensor, condition, generator: torch.Generator) -> torch.Tensor:
        noisy, noise, timesteps = self.noised(clean, generator)
        return self.regression(forward(noisy, timesteps, condition), noise, timesteps)
