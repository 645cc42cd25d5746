"""Sampling at every kept checkpoint of a run, recording a hidden layer's activations.

``sampling.precision`` bf16 runs the reverse chain's UNet forward passes under
``torch.autocast(bfloat16)`` (on any device); the scheduler arithmetic, the noise and the returned
images stay float32. The job also applies the run's ``training.tf32`` and the config's
``training.channels_last`` the way training does (CUDA only; tf32 unset = PyTorch's defaults).
fp32 with tf32 unset is the eager float32 chain.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from diffcomp.bumps.data import read_labels
from diffcomp.bumps.model import BumpDenoiser, hook_activations, sampling_scheduler
from diffcomp.diffusion import inference_steps
from diffcomp.training import apply_tf32, gpu_settings, resolve_device, sample_checkpoints

log = logging.getLogger("diffcomp.sample")

SAMPLING_PRECISIONS = ("fp32", "bf16")


def forward_precision(precision: str, device: torch.device):
    """The context the sampler's forward passes run in: none for fp32, bf16 autocast for bf16."""
    if precision not in SAMPLING_PRECISIONS:
        raise ValueError(f"sampling.precision must be one of {SAMPLING_PRECISIONS}, not {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def sampling_labels(table: pd.DataFrame, num_train: int, num_ood: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels to condition on: drawn from the training labels, plus held-out labels if there is a hole.

    Drawn without replacement while there are enough labels. The same labels are used at every
    checkpoint of a run so that checkpoints differ only by the weights.
    """
    rng = np.random.default_rng(seed)
    parts, splits = [], []
    for split, count in (("train", num_train), ("ood", num_ood)):
        pool = table.loc[table["split"] == split, ["mu_x", "mu_y"]].to_numpy(np.float32)
        if len(pool) == 0:
            continue
        chosen = rng.choice(len(pool), size=count, replace=count > len(pool))
        parts.append(pool[chosen])
        splits += [split] * count
    return np.concatenate(parts), np.array(splits)


def offgrid_labels(size: int, count: int, margin: float, seed: int) -> np.ndarray:
    """``count`` labels uniform in [margin, size - margin]^2 (float32), the same for every run."""
    if count and not 0 <= margin < size / 2:
        raise ValueError(f"sampling.offgrid_margin = {margin} leaves no interior in a label space of size {size}")
    return np.random.default_rng(seed).uniform(margin, size - margin, (count, 2)).astype(np.float32)


@torch.no_grad()
def generate(
    model: BumpDenoiser,
    scheduler,
    labels: np.ndarray,
    *,
    num_inference_steps: int,
    batch_size: int,
    seed: int,
    hidden: torch.nn.Module,
    activation_step: int,
    device: torch.device,
    precision: str = "fp32",
) -> tuple[np.ndarray, np.ndarray]:
    """Run the reverse chain for every label; returns images in [0, 1] (N, S, S) and activations (N, D).

    ``precision`` "bf16": the model's forward passes under bf16 autocast; its output is cast back to
    float32 before the scheduler step, so the chain's state, its noise and the images stay float32.
    """
    autocast = forward_precision(precision, device)
    model.eval()
    size = model.image_size
    scheduler.set_timesteps(num_inference_steps)
    timesteps = scheduler.timesteps
    record_at = timesteps[activation_step].item()
    generator = torch.Generator(device=device).manual_seed(seed)
    images, activations = [], []
    store, active = [], [False]
    handle = hook_activations(hidden, store, active)
    try:
        for start in range(0, len(labels), batch_size):
            batch = torch.from_numpy(labels[start : start + batch_size]).to(device)
            x = torch.randn((len(batch), 1, size, size), generator=generator, device=device)
            for t in timesteps:
                active[0] = t.item() == record_at
                with autocast:
                    eps = model(x, t.expand(len(batch)).to(device), batch)
                # (a no-op in fp32; under bf16 the scheduler, and the noise it draws, stay float32)
                x = scheduler.step(eps.float(), t, x, generator=generator).prev_sample
            active[0] = False
            images.append(((x.clamp(-1, 1) + 1) / 2).squeeze(1).float().cpu().numpy())
            activations.append(store.pop().numpy())
    finally:
        handle.remove()
    return np.concatenate(images), np.concatenate(activations)


def sample_run(run: dict, sampling: dict, runtime: dict, labels_csv, train_dir, out_dir) -> list[Path]:
    """Sample every checkpoint of a finished run into ``out_dir/step{N}.npz``; returns the files written.

    ``run`` is the run's definition (diffcomp.bumps.train.semantic_config; its ``training.tf32`` is
    applied on CUDA), ``sampling`` the config's sampling section (``precision``: see
    :func:`generate`), ``runtime`` its device/threads (and ``channels_last``, applied on CUDA).
    Each file holds images (float16, [0, 1]), labels (float32), split ('train'/'ood'/'offgrid') and
    the hidden-layer activations (float16).
    """
    device = resolve_device(runtime["device"])
    torch.set_num_threads(runtime["threads"])
    # the run's TF32 setting and the config's channels-last weights, as training applies them
    # (CUDA only; tf32 unset = PyTorch's defaults)
    settings = gpu_settings(
        {"tf32": run["training"].get("tf32"), "channels_last": runtime.get("channels_last")}, device
    )
    tf32 = settings["tf32"]
    apply_tf32(tf32)
    precision = sampling.get("precision", "fp32")
    log.info("sampling on %s: precision %s, tf32 %s", device, precision, "unset" if tf32 is None else tf32)
    table = read_labels(labels_csv)
    seed = run["seed"]
    labels, splits = sampling_labels(table, sampling["num_samples"], sampling["num_samples_ood"], seed)
    # off-grid labels after the others: the training and hole samples keep their noise
    offgrid = offgrid_labels(
        run["image_size"], sampling["num_samples_offgrid"], sampling["offgrid_margin"], sampling["offgrid_seed"]
    )
    labels = np.concatenate([labels, offgrid])
    splits = np.concatenate([splits, np.full(len(offgrid), "offgrid")])
    model = BumpDenoiser.from_config(run).to(device)
    if settings["channels_last"]:
        model.to(memory_format=torch.channels_last)  # snapshots load into it in place, keeping the layout
    hidden = model.hidden_module(run["model"]["hidden_layer"])

    def sample(step: int) -> dict:
        images, activations = generate(
            model,
            sampling_scheduler(run["diffusion"], sampling["sampler"]),
            labels,
            num_inference_steps=inference_steps(run["diffusion"], sampling),
            batch_size=sampling["batch_size"],
            # the same noise at every checkpoint: differences come from the weights alone
            seed=seed * 1_000_003 + 7,
            hidden=hidden,
            activation_step=sampling["activation_step"],
            device=device,
            precision=precision,
        )
        return {
            "images": images.astype(np.float16),
            "labels": labels,
            "split": splits,
            "activations": activations.astype(np.float16),
        }

    return sample_checkpoints(model, train_dir, out_dir, sample)
