"""K same-shaped models as one module: parameters stacked on a leading axis, the forward vmapped.

The paper-scale sweeps are hundreds of small models, each far too small to fill a GPU. Stacking K
of them (``torch.func.stack_module_state``) and calling them through ``torch.vmap`` over
``torch.func.functional_call`` runs the K forwards and backwards as batched kernels: one launch
per layer for all K models instead of K. AdamW and EMA are elementwise, so one optimiser over the
stacked parameters updates each model exactly as its own optimiser would (up to the batched
kernels' rounding), and the sum of the K models' losses gives each model its own gradient.

Three details make diffusers' UNets vmappable in torch 2.13:

- ``nn.GroupNorm``'s functional form asks its input for its memory format, which a vmapped
  tensor cannot answer ("NYI: querying is_contiguous inside of vmap"); :class:`VmapGroupNorm`
  calls the same kernel (``aten.native_group_norm``) directly, and :func:`vmappable` swaps it in.
- Under bf16 autocast, the batching rules of convolutions, linear layers and norms return
  float32 where the unbatched layers return bf16 (a bias or a norm's weight is applied after the
  bf16 part); :func:`vmappable` makes each layer compute in the type it has outside vmap
  (:class:`VmapAutocastLayer`, :class:`VmapLayerNorm`, :class:`VmapGroupNorm`).
- On the CPU, scaled-dot-product attention has no vmap batching rule (PyTorch falls back to a
  per-model loop, with a warning); on a GPU this is what a benchmark has to measure.

The workflow trains packs with ``bumps.pack_size`` (diffcomp.bumps.train.train_pack) and
``relational.pack_size`` (diffcomp.relational.train.train_relational_pack); a pack's snapshots
hold the stacked weights, its train.json the models' state keys, and :func:`unpack_run` writes
one run's ``train/`` folder from them. ``bench/bench_bumps.py --packed K`` measures a pack
against K models stepped in turn and one model alone.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.func import functional_call, stack_module_state

from diffcomp.io import write_csv, write_json
from diffcomp.training import read_snapshots, training_generators


@functools.cache
def autocast_runs_in_float32(op: str, device_type: str) -> bool:
    """Whether autocast on ``device_type`` casts ``aten::{op}`` (group_norm, layer_norm) to float32
    (CUDA's fp32 list; the CPU's autocast leaves them alone), read from the dispatcher's autocast
    registrations."""
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"aten::{op}", f"Autocast{device_type.upper()}")


def _norm_input(x: torch.Tensor, op: str) -> torch.Tensor:
    """A norm's input as autocast hands it to ``aten::{op}`` outside vmap: float32 where autocast
    has a float32 rule for it (CUDA's group_norm and layer_norm), else as it is."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type) and autocast_runs_in_float32(op, device_type):
        return x.float()
    return x


class VmapGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` through ``aten.native_group_norm``: the same kernel, callable under vmap,
    returning the type ``nn.GroupNorm`` returns outside it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # autocast has a rule for group_norm (float32 on CUDA) but none for native_group_norm: without
        # this, a packed bf16 model would normalise in bf16 where its single run normalises in float32
        x = _norm_input(x, "group_norm")
        n, c = x.shape[:2]
        out, _, _ = torch.ops.aten.native_group_norm(
            x.contiguous(), self.weight, self.bias, n, c, x[0, 0].numel(), self.num_groups, self.eps
        )
        # the kernel returns its input's type; under vmap the batching rule applies the (float32)
        # weight and bias after it, which would make a bf16 input's result float32
        return out.to(x.dtype)


def _autocast_type(x: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast computes in on ``x``'s device, or None where autocast is off."""
    device_type = x.device.type
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


class VmapAutocastLayer(nn.Module):
    """Convolutions and linear layers (mixed into their classes by :func:`vmappable`) that compute
    under vmap in the type autocast gives them outside it.

    Outside vmap, autocast casts a convolution's or a linear layer's input, weight and bias to
    bf16 and the result is bf16. Under vmap over stacked weights, the batching rules split the
    operation: for a linear layer the matrix product runs in bf16 but the bias is added in
    float32, and on the CPU the convolution skips autocast altogether (torch 2.13), so every layer
    of a bf16 pack returned float32: the pack ran at another precision than the single runs it
    stands for, its activations float32 (twice the bytes of bf16). Casting input, weight and bias to
    autocast's type first makes the whole operation run in it. Without autocast this is the
    plain module's forward.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = _autocast_type(x)
        if dtype is None:
            return super().forward(x)
        bias = None if self.bias is None else self.bias.to(dtype)
        weight = self.weight.to(dtype)
        if isinstance(self, nn.Linear):
            return nn.functional.linear(x.to(dtype), weight, bias)
        return self._conv_forward(x.to(dtype), weight, bias)


class VmapLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` (mixed into its class by :func:`vmappable`) that returns under vmap the type
    it returns outside it: its batching rule applies the (float32) weight and bias after the
    normalisation, which made a bf16 input's result float32 (the CPU's autocast has no rule for
    layer_norm); under CUDA's rule (float32) the input is cast first, as autocast would."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _norm_input(x, "layer_norm")
        return super().forward(x).to(x.dtype)


class VmapConv1d(VmapAutocastLayer, nn.Conv1d):
    pass


class VmapConv2d(VmapAutocastLayer, nn.Conv2d):
    pass


class VmapLinear(VmapAutocastLayer, nn.Linear):
    pass


# What vmappable swaps each layer's class for (none adds state, so the parameters stay as they are).
_VMAP_CLASSES = {
    nn.GroupNorm: VmapGroupNorm,
    nn.LayerNorm: VmapLayerNorm,
    nn.Conv1d: VmapConv1d,
    nn.Conv2d: VmapConv2d,
    nn.Linear: VmapLinear,
}


def vmappable(model: nn.Module) -> nn.Module:
    """Make ``model`` (in place) compute under vmap as it does outside it, by swapping the class of
    every ``nn.GroupNorm`` (:class:`VmapGroupNorm`), ``nn.LayerNorm`` (:class:`VmapLayerNorm`),
    ``nn.Conv1d``, ``nn.Conv2d`` and ``nn.Linear`` (:class:`VmapAutocastLayer`); their parameters
    stay the same objects, frozen ones frozen."""
    for module in model.modules():
        if type(module) in _VMAP_CLASSES:
            module.__class__ = _VMAP_CLASSES[type(module)]
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
        # frozen parameters stay frozen (e.g. the base model under a trained text projection)
        trained = {name: p.requires_grad for name, p in models[0].named_parameters()}
        for name, value in params.items():
            self.register_parameter(
                stacked_key(name), nn.Parameter(value.detach().clone(), requires_grad=trained[name])
            )
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


def clip_grad_norm_per_model(parameters, max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_`` for each model of a stack: model k's gradients (index k of every stacked
    parameter) are scaled to a total norm of at most ``max_norm``, as its own run would clip them.
    Returns the K norms before clipping. No host synchronisation (it may run inside a CUDA graph)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(0)
    squares = torch.stack([g.detach().float().flatten(1).pow(2).sum(dim=1) for g in grads]).sum(dim=0)
    norms = squares.sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)  # torch.nn.utils.clip_grad_norm_'s coefficient
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.dim() - 1))).to(g.dtype))
    return norms


def pack_generators(seeds, device: torch.device):
    """Each run's (data, noise) generators, seeded as the shared trainer seeds a single run's, and
    all of them by name (TrainingTask.generators: saved and restored with the pack's state)."""
    data_rngs, noise_rngs = zip(*(training_generators(seed, device) for seed in seeds), strict=True)
    named = {f"data{k}": g for k, g in enumerate(data_rngs)}
    named.update({f"noise{k}": g for k, g in enumerate(noise_rngs)})
    return data_rngs, noise_rngs, named


def packed_epsilon_losses(epsilon_loss, forward, cleans, condition, noise_rngs) -> torch.Tensor:
    """The K runs' epsilon losses (K,): run k's clean batch noised at timesteps drawn from its own
    noise generator (as its single run draws them), all K denoised in one stacked ``forward`` with
    the stacked ``condition``. The trainer optimises their sum (TrainingTask.loss_parts)."""
    noised = [epsilon_loss.noised(clean, g) for clean, g in zip(cleans, noise_rngs, strict=True)]
    noisy, timesteps = torch.stack([x for x, _, _ in noised]), torch.stack([t for _, _, t in noised])
    predicted = forward(noisy, timesteps, condition)
    return torch.stack([epsilon_loss.regression(predicted[k], noise, t) for k, (_, noise, t) in enumerate(noised)])


def pack_definition(runs: list[dict], shared_keys) -> dict:
    """What determines a pack's weights: its runs, in order (the pack's seed is its first run's).
    The runs must agree on ``shared_keys`` (a missing key counts as None)."""
    if not runs:
        raise ValueError("a pack needs at least one run")
    for key in shared_keys:
        if any(r.get(key) != runs[0].get(key) for r in runs):
            raise ValueError(f"the runs of a pack must share their {key} settings")
    return {"pack": runs, "seed": runs[0]["seed"]}


def pack_training(training: dict, log) -> dict:
    """The training keys of a pack: channels-last (a 4-D memory format) cannot apply to 5-D stacked weights."""
    if training["channels_last"]:
        log.warning("training.channels_last does not apply to a pack of stacked models; ignored")
        return {**training, "channels_last": False}
    return training


def unpack_snapshots(pack_train_dir, index: int, names: list[str], out_dir) -> list[Path]:
    """Write run ``index`` of a finished pack as a single run's train/ folder: its weights (the model
    state keys ``names``) of every snapshot, its loss.csv (step, its own loss, lr: the pack's column
    ``loss_{index}``) and train.json (the pack's summary with the run's name and position).
    Assembled in a temporary folder and renamed onto ``out_dir``; returns the snapshot files."""
    pack_train_dir, out_dir = Path(pack_train_dir), Path(out_dir)
    summary = json.loads((pack_train_dir / "train.json").read_text())
    members = summary.get("pack", [])
    if not 0 <= index < len(members):
        raise ValueError(f"{pack_train_dir}: no run {index} in a pack of {len(members)}")
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "snapshots").mkdir(parents=True)
    written = []
    for _, path in read_snapshots(pack_train_dir):
        try:
            stacked = load_file(str(path))
            weights = {name: stacked[stacked_key(name)][index].contiguous() for name in names}
        except Exception as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ValueError(f"pack snapshot {path} is corrupt or not this run's model: {err!r}") from None
        save_file(weights, str(tmp / "snapshots" / path.name))
        written.append(out_dir / "snapshots" / path.name)
    try:
        losses = pd.read_csv(pack_train_dir / "loss.csv")
        own = losses[["step", f"loss_{index}", "lr"]].rename(columns={f"loss_{index}": "loss"})
    except (OSError, ValueError, KeyError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(f"{pack_train_dir}/loss.csv: no loss column of run {index} ({err!r})") from None
    write_csv(tmp / "loss.csv", own)
    run_summary = {k: v for k, v in summary.items() if k != "state_keys"}
    run_summary["final_loss"] = float(own["loss"].iloc[-1])
    write_json(tmp / "train.json", {**run_summary, "run": members[index], "pack_index": index})
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return written


def unpack_run(pack_train_dir, index: int, out_dir) -> list[Path]:
    """Write run ``index`` of a finished pack (of either study) as a single run's train/ folder
    (:func:`unpack_snapshots`), its weights named by the model state keys the pack recorded in its
    train.json; no model is built, so an unpack job needs neither diffusers nor the run's config."""
    try:
        summary = json.loads((Path(pack_train_dir) / "train.json").read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{pack_train_dir}/train.json: not a finished pack ({err!r})") from None
    if not isinstance(summary, dict) or "state_keys" not in summary:
        raise ValueError(
            f"{pack_train_dir}/train.json records no model state keys (a pack trained before packs "
            f"recorded them): delete {pack_train_dir} and run the workflow again to retrain the pack"
        )
    return unpack_snapshots(pack_train_dir, index, summary["state_keys"], out_dir)
