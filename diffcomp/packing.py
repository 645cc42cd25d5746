"""K same-shaped models as one module: parameters stacked on a leading axis, the forward vmapped.

The paper-scale sweeps are hundreds of small models, each far too small to fill a GPU. Stacking K
of them (``torch.func.stack_module_state``) and calling them through ``torch.vmap`` over
``torch.func.functional_call`` runs the K forwards and backwards as batched kernels: one launch
per layer for all K models instead of K. AdamW and EMA are elementwise, so one optimiser over the
stacked parameters updates each model exactly as its own optimiser would (up to the batched
kernels' rounding), and the sum of the K models' losses gives each model its own gradient.

Two details make diffusers' UNets vmappable in torch 2.13:

- ``nn.GroupNorm``'s functional form asks its input for its memory format, which a vmapped
  tensor cannot answer ("NYI: querying is_contiguous inside of vmap"); :class:`VmapGroupNorm`
  calls the same kernel (``aten.native_group_norm``) directly, and :func:`vmappable` swaps it in.
- On the CPU, scaled-dot-product attention has no vmap batching rule (PyTorch falls back to a
  per-model loop, with a warning); on a GPU this is what a benchmark has to measure.

Not used by the workflow yet: ``bench/bench_bumps.py --packed K`` measures it against K models
stepped in turn and one model alone.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, stack_module_state


class VmapGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` through ``aten.native_group_norm``: the same kernel, callable under vmap."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        out, _, _ = torch.ops.aten.native_group_norm(
            x.contiguous(), self.weight, self.bias, n, c, x[0, 0].numel(), self.num_groups, self.eps
        )
        return out


def vmappable(model: nn.Module) -> nn.Module:
    """Swap every ``nn.GroupNorm`` of ``model`` (in place) for a :class:`VmapGroupNorm` with its weights."""
    for name, child in model.named_children():
        if type(child) is nn.GroupNorm:
            swapped = VmapGroupNorm(child.num_groups, child.num_channels, child.eps, child.affine)
            swapped.load_state_dict(child.state_dict())
            setattr(model, name, swapped.to(next(child.parameters(), torch.empty(0)).device))
        else:
            vmappable(child)
    return model


def stacked_key(name: str) -> str:
    """A model's parameter or buffer name as StackedModels registers it (names may not contain dots)."""
    return name.replace(".", "__")


class StackedModels(nn.Module):
    """K models of one architecture as one module; ``forward(*args)`` takes and returns tensors with a
    leading model axis of size K (``args[i][k]`` goes to model k)."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        if not models:
            raise ValueError("StackedModels needs at least one model")
        shapes = {tuple((n, tuple(p.shape)) for n, p in m.state_dict().items()) for m in models}
        if len(shapes) != 1:
            raise ValueError(
                "StackedModels needs models of one architecture (their state_dicts differ in keys or shapes)"
            )
        models = [vmappable(m) for m in models]
        params, buffers = stack_module_state(models)
        self.count = len(models)
        self.param_names, self.buffer_names = list(params), list(buffers)
        for name, value in params.items():
            self.register_parameter(stacked_key(name), nn.Parameter(value.detach().clone()))
        for name, value in buffers.items():
            self.register_buffer(stacked_key(name), value.detach().clone())
        self.state_keys = list(models[0].state_dict())  # without non-persistent buffers
        # the architecture, without memory: functional_call supplies every tensor
        self.template = [copy.deepcopy(models[0]).to("meta")]  # a list: not a registered submodule

    def _tensors(self) -> tuple[dict, dict]:
        params = {name: getattr(self, stacked_key(name)) for name in self.param_names}
        buffers = {name: getattr(self, stacked_key(name)) for name in self.buffer_names}
        return params, buffers

    def forward(self, *args):
        template = self.template[0]

        def one(params, buffers, *model_args):
            return functional_call(template, (params, buffers), model_args)

        return torch.vmap(one)(*self._tensors(), *args)

    def model_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Model k's weights under its own names (what ``model.load_state_dict`` takes)."""
        if not 0 <= k < self.count:
            raise IndexError(f"model {k} of {self.count}")
        params, buffers = self._tensors()
        tensors = {**params, **buffers}
        return {name: tensors[name][k].detach().clone() for name in self.state_keys}
