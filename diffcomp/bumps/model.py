"""The conditional denoiser: a diffusers UNet2DModel conditioned on the bump position (mu_x, mu_y).

Conditioning: each coordinate gets a sinusoidal encoding (diffusers' ``get_timestep_embedding``,
labels rescaled to [0, 1000] so fractional positions are resolved like timesteps are); the two
encodings are concatenated and mapped by a small MLP to the width of the timestep embedding, and
the UNet adds it to that embedding (``class_embed_type="identity"``). A linear map of the
concatenation [enc(t), enc(mu_x), enc(mu_y)] is exactly such a sum, so this is the paper's
"concatenation of sinusoidal encodings", and every ResNet block sees it through the time
embedding path.
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.models.embeddings import get_timestep_embedding
from torch import nn

from diffcomp.diffusion import ddpm_scheduler, sampling_scheduler, unet_block_types  # noqa: F401 (re-exported)

# Channels per self-attention head when bumps.model.attention_head_dim is absent (diffusers'
# UNet2DModel default): 16 heads of width 8 at 128 channels, 32 at 256.
DEFAULT_ATTENTION_HEAD_DIM = 8


class BumpDenoiser(nn.Module):
    def __init__(
        self,
        image_size: int,
        block_out_channels=(64, 128, 256),
        layers_per_block: int = 2,
        attention_levels=(1, 2),
        norm_num_groups: int = 32,
        label_encoding_dim: int = 64,
        attention_head_dim: int = DEFAULT_ATTENTION_HEAD_DIM,
    ):
        super().__init__()
        down, up = unet_block_types(len(block_out_channels), attention_levels, "AttnDownBlock2D")
        time_embed_dim = block_out_channels[0] * 4  # UNet2DModel's own default width
        self.image_size = image_size
        self.label_encoding_dim = label_encoding_dim
        self.label_scale = 1000.0 / image_size
        self.unet = UNet2DModel(
            sample_size=image_size,
            in_channels=1,
            out_channels=1,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            down_block_types=down,
            up_block_types=up,
            norm_num_groups=norm_num_groups,
            attention_head_dim=attention_head_dim,
            class_embed_type="identity",
        )
        self.label_projection = nn.Sequential(
            nn.Linear(2 * label_encoding_dim, time_embed_dim),
            nn.SiLU(),
            nn.Linear(time_embed_dim, time_embed_dim),
        )

    @classmethod
    def from_config(cls, section: dict) -> BumpDenoiser:
        model = section["model"]
        return cls(
            image_size=section["image_size"],
            block_out_channels=model["block_out_channels"],
            layers_per_block=model["layers_per_block"],
            attention_levels=model["attention_levels"],
            norm_num_groups=model["norm_num_groups"],
            label_encoding_dim=model["label_encoding_dim"],
            # absent = 8: the key came later, and runs configured without it keep their fingerprints
            attention_head_dim=model.get("attention_head_dim", DEFAULT_ATTENTION_HEAD_DIM),
        )

    def encode_labels(self, labels: torch.Tensor) -> torch.Tensor:
        scaled = labels.float() * self.label_scale
        enc = [
            get_timestep_embedding(scaled[:, k], self.label_encoding_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
            for k in range(2)
        ]
        return self.label_projection(torch.cat(enc, dim=1))

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.unet(noisy, timesteps, class_labels=self.encode_labels(labels)).sample

    def hidden_module(self, name: str | None) -> nn.Module:
        """The module whose output the UMAP analysis records (default: the last encoder block)."""
        if name is None:
            return self.unet.down_blocks[-1]
        try:
            return self.unet.get_submodule(name)
        except AttributeError as err:
            raise ValueError(f"model.hidden_layer {name!r} is not a module of the UNet: {err}") from None


def noise_scheduler(section: dict) -> DDPMScheduler:
    """The training noise schedule from a config section (or run) holding ``diffusion``."""
    return ddpm_scheduler(section["diffusion"])


def hook_activations(module: nn.Module, store: list, active: list):
    """Register a forward hook appending the module's (first) output to ``store`` while ``active[0]``."""

    def hook(_module, _inputs, output):
        if active[0]:
            hidden = output[0] if isinstance(output, tuple) else output
            store.append(hidden.detach().float().flatten(1).cpu())

    return module.register_forward_hook(hook)


def render_torch(labels: torch.Tensor, size: int, sigma: tuple[float, float]) -> torch.Tensor:
    """``diffcomp.bumps.render`` on the training device: (B, 2) labels -> (B, 1, S, S) in [0, 1]."""
    coords = torch.arange(1, size + 1, device=labels.device, dtype=torch.float32)
    gx = torch.exp(-((coords[None, :] - labels[:, :1]) ** 2) / (4.0 * sigma[0] ** 2))
    gy = torch.exp(-((coords[None, :] - labels[:, 1:]) ** 2) / (4.0 * sigma[1] ** 2))
    return (1.0 - gy[:, :, None] * gx[:, None, :]).unsqueeze(1)
