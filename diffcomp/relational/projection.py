"""Projections of the caption's token states before the UNet's cross-attention (Zarei et al. 2024).

A small module between the frozen text encoder and the UNet, trained with the ordinary denoising
loss while everything else stays frozen. Every variant starts as the identity map, so a
fine-tuning run starts from exactly its base model's outputs:

- ``linear``: e' = W e, W initialised to the identity;
- ``linear_skip``: e' = e + W e, W (and its bias) initialised to zero;
- ``mlp_skip``: e' = e + MLP(e), the MLP's last layer initialised to zero;
- ``window`` (WiCLP): e'_i = e_i + sum_{k=-w..w} W_k e_{i+k} + b, a 1-D convolution over the
  token axis with "same" zero padding, window 2w + 1, zero-initialised (the paper: w = 2).

``early_steps_above``: apply the projection only at timesteps above this value (the early,
noisy part of the reverse chain, where the layout is decided), the original states after.
"""

from __future__ import annotations

import torch
from torch import nn

PROJECTIONS = ("linear", "linear_skip", "mlp_skip", "window")


class TextProjection(nn.Module):
    def __init__(
        self,
        kind: str,
        width: int,
        *,
        window: int = 2,
        hidden: int | None = None,
        early_steps_above: int | None = None,
    ):
        super().__init__()
        if kind not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {kind!r}")
        self.kind = kind
        self.early_steps_above = early_steps_above
        if kind == "linear":
            self.map = nn.Linear(width, width, bias=False)
            with torch.no_grad():
                self.map.weight.copy_(torch.eye(width))
        elif kind == "linear_skip":
            self.map = nn.Linear(width, width)
            nn.init.zeros_(self.map.weight)
            nn.init.zeros_(self.map.bias)
        elif kind == "mlp_skip":
            hidden = hidden or 4 * width
            self.map = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
            nn.init.zeros_(self.map[-1].weight)
            nn.init.zeros_(self.map[-1].bias)
        else:
            if window < 0:
                raise ValueError(f"window half-width must be >= 0, got {window}")
            self.map = nn.Conv1d(width, width, kernel_size=2 * window + 1, padding=window)
            nn.init.zeros_(self.map.weight)
            nn.init.zeros_(self.map.bias)

    def project(self, states: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, L, D), ignoring timesteps."""
        if self.kind == "linear":
            return self.map(states)
        if self.kind == "window":
            return states + self.map(states.transpose(1, 2)).transpose(1, 2)
        return states + self.map(states)

    def forward(self, states: torch.Tensor, timesteps: torch.Tensor | None = None) -> torch.Tensor:
        projected = self.project(states)
        if self.early_steps_above is None or timesteps is None:
            return projected
        early = (timesteps > self.early_steps_above).view(-1, *([1] * (states.dim() - 1)))
        return torch.where(early, projected, states)
