"""Training of the conditional DDPM on a bump dataset, on the shared trainer (diffcomp.training).

The bump study supplies the model (:class:`BumpDenoiser`), a batch function (labels drawn from
the training labels, images rendered from them on the device) and the epsilon loss; checkpoints,
resume, EMA, the NaN and time-limit stops are the shared trainer's. Layout of one run
(``run_dir`` = results/bumps/runs/{dataset}/seed{seed}): resume states in
``run_dir/.state/{fingerprint}/``, the finished run in ``run_dir/train/``.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F  # noqa: F401 (the module the loss calls; tests patch F.mse_loss through it)

from diffcomp.bumps.config import semantic_config  # noqa: F401 (re-exported)
from diffcomp.bumps.data import BumpDataset, read_labels
from diffcomp.bumps.model import BumpDenoiser, render_torch
from diffcomp.diffusion import EpsilonLoss, ddpm_scheduler
from diffcomp.packing import (
    StackedModels,
    pack_definition,
    pack_generators,
    pack_training,
    packed_epsilon_losses,
)

# The shared trainer's names, re-exported: the rule scripts and tests import them from here.
from diffcomp.training import (  # noqa: F401
    EXIT_TIME_LIMIT,
    RUNTIME_KEYS,
    NonFiniteLoss,
    RunPaths,
    TrainingInterrupted,
    TrainingTask,
    checkpoint_steps,
    fingerprint,
    load_snapshot,
    read_snapshots,
    resolve_device,
    train,
    training_generators,
)

log = logging.getLogger("diffcomp.train")


def train_run(run: dict, runtime: dict, labels_csv, out_dir, *, stop_after_step: int | None = None) -> dict:
    """Train one (dataset, seed) run to ``training.steps`` and write the finished run to ``out_dir``.

    ``run`` is :func:`semantic_config` (what determines the weights); ``runtime`` holds the
    training keys in RUNTIME_KEYS (device, threads, logging, stop margin). ``stop_after_step``
    simulates a time limit (tests): save a state and stop after that step.
    Returns the summary written to train.json.
    """
    training = {**run["training"], **{k: runtime[k] for k in RUNTIME_KEYS}}
    dataset = BumpDataset.from_config(run["dataset"], run["image_size"])
    table = read_labels(labels_csv)
    train_labels_np = table.loc[table["split"] == "train", ["mu_x", "mu_y"]].to_numpy(np.float32)
    if len(train_labels_np) == 0:
        raise ValueError(f"{labels_csv}: no training labels")

    def build(device: torch.device) -> TrainingTask:
        model = BumpDenoiser.from_config(run).to(device)
        train_labels = torch.from_numpy(train_labels_np).to(device)
        batch_size = training["batch_size"]

        def next_batch(generator: torch.Generator):
            # labels drawn from the training set; images rendered from them on the device
            labels = train_labels[torch.randint(len(train_labels), (batch_size,), generator=generator, device=device)]
            return render_torch(labels, dataset.size, dataset.sigma) * 2.0 - 1.0, labels

        epsilon_loss = EpsilonLoss(ddpm_scheduler(run["diffusion"]), training["snr_gamma"], device)

        def loss(forward, batch, generator):
            clean, labels = batch
            return epsilon_loss(forward, clean, labels, generator)

        return TrainingTask(
            name=dataset.name,
            model=model,
            next_batch=next_batch,
            loss=loss,
            summary={"dataset": dataset.name},
            capturable=True,  # batches are drawn and rendered on the device (training.cuda_graph)
        )

    return train(build, run, training, out_dir, stop_after_step=stop_after_step)


# --------------------------------------------------------------------------------------------
# Packs: K runs trained as one stacked model in one job
# --------------------------------------------------------------------------------------------
# What the runs of a pack must share: the stacked models' shape and the trainer's settings.
PACK_SHARED_KEYS = ("model", "image_size", "diffusion", "training")


def train_pack(runs: list[dict], runtime: dict, labels_csvs, out_dir, *, stop_after_step: int | None = None) -> dict:
    """Train K runs of one model shape as one stacked, vmapped model (diffcomp.packing) in one job.

    Each run keeps what it would have alone: its initial weights (seeded by its seed), its data
    and noise generators (seeded as the shared trainer seeds a single run's, saved and restored
    with the pack's state) and so its batches, noise and timesteps; the summed loss gives each
    model its own gradient, and AdamW and EMA are elementwise. So a packed run differs from its
    single run only by the batched kernels' rounding. ``out_dir`` gets the stacked snapshots;
    diffcomp.packing.unpack_run writes one run's train/ folder from them.
    """
    pack = pack_definition(runs, PACK_SHARED_KEYS)
    training = pack_training({**runs[0]["training"], **{k: runtime[k] for k in RUNTIME_KEYS}}, log)
    datasets = [BumpDataset.from_config(r["dataset"], r["image_size"]) for r in runs]
    labels_np = []
    for path in labels_csvs:
        table = read_labels(path)
        labels_np.append(table.loc[table["split"] == "train", ["mu_x", "mu_y"]].to_numpy(np.float32))
        if len(labels_np[-1]) == 0:
            raise ValueError(f"{path}: no training labels")
    if len(labels_np) != len(runs):
        raise ValueError(f"{len(runs)} runs but {len(labels_np)} label files")

    def build(device: torch.device) -> TrainingTask:
        models = []
        for run in runs:
            torch.manual_seed(run["seed"])  # the initial weights a single run of this seed gets
            models.append(BumpDenoiser.from_config(run).to(device))
        model = StackedModels(models)
        train_labels = [torch.from_numpy(labels).to(device) for labels in labels_np]
        data_rngs, noise_rngs, generators = pack_generators([r["seed"] for r in runs], device)
        batch_size = training["batch_size"]
        epsilon_loss = EpsilonLoss(ddpm_scheduler(runs[0]["diffusion"]), training["snr_gamma"], device)

        def next_batch(_generator):
            batches = []
            for dataset, labels, generator in zip(datasets, train_labels, data_rngs, strict=True):
                drawn = labels[torch.randint(len(labels), (batch_size,), generator=generator, device=device)]
                batches.append((render_torch(drawn, dataset.size, dataset.sigma) * 2.0 - 1.0, drawn))
            return batches

        def loss(forward, batches, _generator):
            cleans = [clean for clean, _ in batches]
            labels = torch.stack([labels for _, labels in batches])
            return packed_epsilon_losses(epsilon_loss, forward, cleans, labels, noise_rngs)

        names = [f"{d.name}_seed{r['seed']}" for d, r in zip(datasets, runs, strict=True)]
        return TrainingTask(
            name=f"pack of {len(runs)} ({', '.join(names)})",
            model=model,
            next_batch=next_batch,
            loss=loss,
            # the runs' model state keys: what unpacking needs to name each run's weights
            summary={"pack": names, "state_keys": model.state_keys},
            generators=generators,
            loss_parts=len(runs),
            capturable=True,
        )

    return train(build, pack, training, out_dir, stop_after_step=stop_after_step)
