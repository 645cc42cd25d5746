"""Training of the conditional DDPM on a bump dataset, on the shared trainer (diffcomp.training).

The bump study supplies the model (:class:`BumpDenoiser`), a batch function (labels drawn from
the training labels, images rendered from them on the device) and the epsilon loss; checkpoints,
resume, EMA, the NaN and time-limit stops are the shared trainer's. Layout of one run
(``run_dir`` = results/bumps/runs/{dataset}/seed{seed}): resume states in
``run_dir/.state/{fingerprint}/``, the finished run in ``run_dir/train/``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F  # noqa: F401 (the module the loss calls; tests patch F.mse_loss through it)

from diffcomp.bumps.config import semantic_config  # noqa: F401 (re-exported)
from diffcomp.bumps.data import BumpDataset, read_labels
from diffcomp.bumps.model import BumpDenoiser, render_torch
from diffcomp.diffusion import EpsilonLoss, ddpm_scheduler

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
)


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
            name=dataset.name, model=model, next_batch=next_batch, loss=loss, summary={"dataset": dataset.name}
        )

    return train(build, run, training, out_dir, stop_after_step=stop_after_step)
