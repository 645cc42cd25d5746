"""The text-conditioned denoiser of the relational study (Chang et al. 2024).

A diffusers ``UNet2DConditionModel`` on 2S x S images (icon ``top`` stacked above icon
``bottom``), cross-attending to the caption's token states. Two details matter for the study:

- **Image position embedding.** A learned or fixed 2-D sinusoidal embedding is added to the
  feature map right after the input convolution (``pos_emb``: ``learned`` | ``sinusoidal`` |
  ``none``). Without it a convolutional UNet has little to tell "top" from "bottom" by; the
  paper's ablation removes it and test accuracy collapses. The learned embedding starts at zero,
  so at step 0 a model with it computes exactly what one without it does.
- **The image border.** diffusers' convolutions pad with zeros, and the canvas is white (+1):
  every convolution near the top or the bottom edge sees the border, and the mid-block's
  receptive field covers the whole image, so a UNet knows where it is without any position
  embedding. ``vertical_padding: circular`` pads every convolution circularly along the
  relation's (vertical) axis instead: the image wraps from bottom to top and no layer sees a
  border there. With ``pos_emb: none`` as well, the whole model commutes with rolling the image
  by half its height (which swaps the two icons): it then cannot tell top from bottom at all,
  and each caption's samples are as likely swapped as right.
- **Text states.** A frozen encoder's states are computed once per distinct caption outside the
  model (diffcomp.relational.text caches them) and passed in as the condition; a trainable
  encoder (``t5-scratch`` with ``trainable: true``) is a submodule, trained with the UNet, and
  the condition is then the token ids. When the encoder's width differs from the cross-attention
  width, the UNet's own ``encoder_hid_proj`` (``encoder_hid_dim_type="text_proj"``) maps it.
- **Text position embedding.** Cross-attention is invariant to the order of the tokens it reads:
  "a star is on top of a heart." and "a heart is on top of a star." differ to it only by what the
  token states carry about their place in the sentence, and a frozen random T5 (relative
  positions only, one layer) carries almost nothing. ``text_pos_emb`` adds a fixed 1-D sinusoidal
  (or a learned, zero-initialised) embedding of each token's index to the token states before
  the cross-attention reads them; ``none`` reads the encoder's states as they are.
"""

from __future__ import annotations

import math

import torch
from diffusers import UNet2DConditionModel
from torch import nn

from diffcomp.diffusion import unet_block_types

POS_EMBEDDINGS = ("sinusoidal", "learned", "none")


def sinusoidal_1d(channels: int, length: int) -> torch.Tensor:
    """Fixed 1-D sinusoidal embedding (1, L, C) of token indices 0..L-1 (sines, then cosines)."""
    if channels % 2:
        raise ValueError(f"a 1-D sinusoidal embedding needs an even channel count, got {channels}")
    half = channels // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float64) / half)
    angles = torch.arange(length, dtype=torch.float64)[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).unsqueeze(0).float()


class TextPosition(nn.Module):
    """Adds an embedding of each token's index to token states (B, L, C)."""

    def __init__(self, kind: str, channels: int, length: int):
        super().__init__()
        self.kind = kind
        if kind == "learned":
            self.position = nn.Parameter(torch.zeros(1, length, channels))
        elif kind == "sinusoidal":
            self.register_buffer("position", sinusoidal_1d(channels, length), persistent=False)
        else:
            raise ValueError(f"text_pos_emb must be one of {POS_EMBEDDINGS}, got {kind!r}")

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        length = states.shape[-2]
        if length > self.position.shape[1]:
            raise ValueError(f"{length} tokens, but the text position embedding has {self.position.shape[1]}")
        return states + self.position[:, :length].to(states.dtype)


def sinusoidal_2d(channels: int, height: int, width: int) -> torch.Tensor:
    """Fixed 2-D sinusoidal embedding (1, C, H, W): half the channels encode the row, half the column."""
    if channels % 4:
        raise ValueError(f"a 2-D sinusoidal embedding needs a channel count divisible by 4, got {channels}")
    quarter = channels // 4
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(quarter, dtype=torch.float64) / quarter)

    def encode(positions: torch.Tensor) -> torch.Tensor:  # (P,) -> (2 * quarter, P)
        angles = freqs[:, None] * positions[None, :].double()
        return torch.cat([angles.sin(), angles.cos()])

    rows = encode(torch.arange(height))[:, :, None].expand(-1, height, width)
    cols = encode(torch.arange(width))[:, None, :].expand(-1, height, width)
    return torch.cat([rows, cols]).unsqueeze(0).float()


class InputWithPosition(nn.Module):
    """The UNet's input convolution followed by the image position embedding."""

    def __init__(self, conv: nn.Conv2d, kind: str, height: int, width: int):
        super().__init__()
        self.conv = conv
        self.kind = kind
        channels = conv.out_channels
        if kind == "learned":
            self.position = nn.Parameter(torch.zeros(1, channels, height, width))
        elif kind == "sinusoidal":
            self.register_buffer("position", sinusoidal_2d(channels, height, width), persistent=False)
        else:
            raise ValueError(f"pos_emb must be one of {POS_EMBEDDINGS}, got {kind!r}")

    @property
    def in_channels(self) -> int:  # diffusers reads conv_in.in_channels
        return self.conv.in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.position.to(x.dtype)


VERTICAL_PADDINGS = ("zeros", "circular")


def _pad_rows_circularly(conv: nn.Conv2d, args):
    """Forward pre-hook: the input padded circularly along its height by the convolution's own
    vertical padding (which :func:`wrap_vertically` set to 0); its width stays zero-padded."""
    (x, *rest) = args
    return (nn.functional.pad(x, (0, 0, conv.wrapped_rows, conv.wrapped_rows), mode="circular"), *rest)


def wrap_vertically(module: nn.Module) -> nn.Module:
    """Make every 2-D convolution of ``module`` pad circularly along the height, zeros along the
    width: the same weights and state_dict keys, no border along the relation's axis."""
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d) and conv.padding[0] > 0:
            if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
                raise ValueError(f"cannot wrap a convolution padded with {conv.padding_mode!r} {conv.padding!r}")
            conv.wrapped_rows = conv.padding[0]
            conv.padding = (0, conv.padding[1])
            conv.register_forward_pre_hook(_pad_rows_circularly)
    return module


class RelationalDenoiser(nn.Module):
    def __init__(
        self,
        icon_size: int,
        text_hidden_size: int,
        block_out_channels=(64, 256, 1024),
        layers_per_block: int = 2,
        cross_attention_levels=(0, 1, 2),
        cross_attention_dim: int = 128,
        attention_head_dim: int = 8,
        norm_num_groups: int = 32,
        pos_emb: str = "sinusoidal",
        vertical_padding: str = "zeros",
        text_pos_emb: str = "none",
        text_length: int = 16,
        text_encoder: nn.Module | None = None,
        projection: nn.Module | None = None,
    ):
        super().__init__()
        down, up = unet_block_types(len(block_out_channels), cross_attention_levels, "CrossAttnDownBlock2D")
        self.icon_size = icon_size
        self.image_shape = (2 * icon_size, icon_size)
        project_text = text_hidden_size != cross_attention_dim
        self.unet = UNet2DConditionModel(
            sample_size=self.image_shape,
            in_channels=1,
            out_channels=1,
            down_block_types=down,
            up_block_types=up,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            cross_attention_dim=cross_attention_dim,
            attention_head_dim=attention_head_dim,
            norm_num_groups=norm_num_groups,
            encoder_hid_dim=text_hidden_size if project_text else None,
            encoder_hid_dim_type="text_proj" if project_text else None,
        )
        if vertical_padding not in VERTICAL_PADDINGS:
            raise ValueError(f"vertical_padding must be one of {VERTICAL_PADDINGS}, got {vertical_padding!r}")
        self.vertical_padding = vertical_padding
        if vertical_padding == "circular":
            wrap_vertically(self.unet)
        self.pos_emb = pos_emb
        if pos_emb != "none":
            self.unet.conv_in = InputWithPosition(self.unet.conv_in, pos_emb, *self.image_shape)
        self.text_position = None
        if text_pos_emb != "none":
            self.text_position = TextPosition(text_pos_emb, text_hidden_size, text_length)
        # Only a trainable encoder is part of the model (and of its checkpoints).
        self.text_encoder = text_encoder
        # An optional projection of the token states (diffcomp.relational.projection), applied
        # between the encoder and the cross-attention.
        self.projection = projection

    @classmethod
    def from_config(cls, run: dict, text_hidden_size: int, text_encoder: nn.Module | None = None):
        model = run["model"]
        return cls(
            icon_size=run["icon_size"],
            text_hidden_size=text_hidden_size,
            block_out_channels=model["block_out_channels"],
            layers_per_block=model["layers_per_block"],
            cross_attention_levels=model["cross_attention_levels"],
            cross_attention_dim=model["cross_attention_dim"],
            attention_head_dim=model["attention_head_dim"],
            norm_num_groups=model["norm_num_groups"],
            pos_emb=model["pos_emb"],
            vertical_padding=model["vertical_padding"],
            text_pos_emb=model["text_pos_emb"],
            text_length=run["text_encoder"]["max_length"],
            text_encoder=text_encoder,
        )

    def text_states(self, condition) -> tuple[torch.Tensor, torch.Tensor]:
        """(token states, attention mask) from the condition: states already, or token ids for the encoder."""
        tokens, mask = condition
        if self.text_encoder is not None:
            return self.text_encoder(tokens, mask), mask
        return tokens, mask

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, condition) -> torch.Tensor:
        states, mask = self.text_states(condition)
        if self.text_position is not None:
            states = self.text_position(states)
        if self.projection is not None:
            states = self.projection(states, timesteps)
        return self.unet(noisy, timesteps, encoder_hidden_states=states, encoder_attention_mask=mask).sample
