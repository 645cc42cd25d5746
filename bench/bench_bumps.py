"""Benchmarks of the bump study, each comparison measured within one run (the machines are shared).

    python bench/bench_bumps.py [--config config.yaml] [--steps 100] [--packed K] [--figure-set] [--json OUT]

1. Training throughput: the pipeline's train_run vs a bare PyTorch loop (same model, batch,
   optimiser, loss, and the config's precision, compile mode, tf32, fused_optimizer and
   channels_last, listed under training.settings), interleaved in rounds so load changes hit both
   alike. With compile on, one untimed warm-up step compiles first, so neither side's time
   includes compilation (compiled code is reused within the process).
   Also the FLOPs of one step's forward and backward (FlopCounterMode), images/s, achieved
   TFLOP/s and the fraction of the device's dense bf16 peak (known GPUs, or --peak-tflops).
1a. The EMA update of the config's model: diffusers' EMAModel loop vs ForeachEMA's foreach form
   (the trainer's on CUDA: the same arithmetic in three foreach operations), ms per update and
   operations dispatched.
1b. (--packed K) K independent same-shaped models trained in one process, one step of each in
   turn, and the same K models stacked into one vmapped module (diffcomp.packing: one batched
   forward, backward, AdamW and EMA step for all K), vs one model alone (bare loops, interleaved):
   aggregate steps/s = K * steps / time; and the sampling time of one checkpoint (load the
   weights, sample the configured number of labels with the configured sampler and
   sampling.precision), per model and for all K.
2. Sampling: DDIM-k vs the full DDPM chain for the same model and labels.
3. Label prediction (Algorithm 1) throughput, images/s.
4. Evaluation per checkpoint: the first UMAP fit in a fresh process (numba compile or cache)
   and later fits.
5. (--figure-set) the quick figure set's wall time: `snakemake --cores 2` in a fresh folder.

--flops only counts (no timing): what one run of the config costs in FLOPs (FlopCounterMode), its
training and the sampling of its kept checkpoints, and their ratio; and the operations one eager
training step dispatches (about one kernel launch each on a GPU), for one model and K stacked.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from diffusers.training_utils import EMAModel  # noqa: E402

from diffcomp.bumps.config import dataset_specs  # noqa: E402
from diffcomp.bumps.data import BumpDataset, render, tile  # noqa: E402
from diffcomp.bumps.evaluate import predict_positions  # noqa: E402
from diffcomp.bumps.model import (  # noqa: E402
    DEFAULT_ATTENTION_HEAD_DIM,
    BumpDenoiser,
    noise_scheduler,
    render_torch,
    sampling_scheduler,
)
from diffcomp.bumps.sample import generate  # noqa: E402
from diffcomp.bumps.train import RUNTIME_KEYS, resolve_device, semantic_config, train_pack, train_run  # noqa: E402
from diffcomp.config import ConfigError, load_config, validate_config  # noqa: E402
from diffcomp.diffusion import inference_steps  # noqa: E402
from diffcomp.ema import ForeachEMA  # noqa: E402
from diffcomp.io import write_csv  # noqa: E402
from diffcomp.packing import StackedModels, pack_training  # noqa: E402
from diffcomp.training import (  # noqa: E402
    apply_tf32,
    checkpoint_steps,
    compile_options,
    gpu_settings,
    make_optimizer,
    synchronize,
    uses_cuda_graphs,
)


def training_settings(training: dict, device: torch.device) -> dict:
    """The speed-relevant training settings as the trainer applies them on ``device``."""
    options = compile_options(training, device)
    return {
        "precision": training["precision"],
        "compile": options["mode"] if options is not None else "none",
        **gpu_settings(training, device),
        # the pipeline's whole-step graph (its bare loop stays eager); on a CPU the step runs eagerly
        "cuda_graph": bool(training.get("cuda_graph", False)) and device.type == "cuda",
    }


class BareTrainer:
    """The minimal training loop doing the same arithmetic as the pipeline: render, noise, predict
    (same precision, compile mode, TF32, fused AdamW and channels-last setting, applied by the
    trainer's own functions), (Min-SNR-weighted) MSE, AdamW, EMA when configured; no logging,
    checkpoints, schedules or resumable RNG streams."""

    def __init__(self, section: dict, labels: np.ndarray, device: torch.device, seed: int = 0):
        training = section["training"]
        self.section, self.device = section, device
        settings = gpu_settings(training, device)
        apply_tf32(settings["tf32"])
        torch.manual_seed(seed)
        self.model = BumpDenoiser.from_config(section).to(device)
        if settings["channels_last"]:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self.model.parameters(), training, settings)
        self.train_labels = torch.from_numpy(np.array(labels)).to(device)  # a writable copy
        self.sigma = tuple(np.broadcast_to(section["bench_sigma"], 2).tolist())
        self.alphas = noise_scheduler(section).alphas_cumprod.to(device)
        self.gamma = training["snr_gamma"]
        self.ema = ForeachEMA(self.model.parameters(), decay=training["ema_decay"]) if training["ema_decay"] else None
        options = compile_options(training, device)
        self.forward = torch.compile(self.model, **options) if options is not None else self.model
        self.cuda_graphs = uses_cuda_graphs(options)
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=training["precision"] == "bf16")
        self.loss = None

    def step(self) -> None:
        device, batch = self.device, self.section["training"]["batch_size"]
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        y = self.train_labels[torch.randint(len(self.train_labels), (batch,), device=device)]
        clean = render_torch(y, self.section["image_size"], self.sigma) * 2 - 1
        noise = torch.randn_like(clean)
        t = torch.randint(len(self.alphas), (batch,), device=device)
        a = self.alphas[t].view(-1, 1, 1, 1)
        with self.autocast:
            predicted = self.forward(a.sqrt() * clean + (1 - a).sqrt() * noise, t, y).float()
        if self.gamma is None:
            loss = F.mse_loss(predicted, noise)
        else:
            snr = a.flatten() / (1 - a.flatten())
            per_sample = F.mse_loss(predicted, noise, reduction="none").mean(dim=(1, 2, 3))
            loss = (per_sample * torch.clamp(snr, max=self.gamma) / snr).mean()
        self.update(loss)

    def update(self, loss: torch.Tensor) -> None:
        """Backward, AdamW step and EMA step, as the trainer does them."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.ema is not None:
            self.ema.step(self.model.parameters())
        self.loss = loss.detach()


class StackedTrainer(BareTrainer):
    """K bump models of one shape trained as one stacked, vmapped module (diffcomp.packing): one
    optimiser and one EMA over the stacked parameters, each model with its own batch; the same
    per-model arithmetic as K BareTrainers."""

    def __init__(self, section: dict, labels: np.ndarray, device: torch.device, k: int):
        super().__init__(section, labels, device, seed=0)
        # as the workflow's pack trainer: channels-last (a 4-D layout) does not apply to 5-D stacked weights
        training = pack_training(section["training"], logging.getLogger("bench"))
        settings = gpu_settings(training, device)
        models = []
        for seed in range(k):
            torch.manual_seed(seed)
            models.append(BumpDenoiser.from_config(section).to(device))
        self.k = k
        self.model = StackedModels(models).to(device)
        if settings["channels_last"]:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self.model.parameters(), training, settings)
        self.ema = ForeachEMA(self.model.parameters(), decay=training["ema_decay"]) if training["ema_decay"] else None
        options = compile_options(training, device)
        self.forward = torch.compile(self.model, **options) if options is not None else self.model

    def step(self) -> None:
        device, batch, k = self.device, self.section["training"]["batch_size"], self.k
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        y = self.train_labels[torch.randint(len(self.train_labels), (k * batch,), device=device)]
        clean = render_torch(y, self.section["image_size"], self.sigma) * 2 - 1
        noise = torch.randn_like(clean)
        t = torch.randint(len(self.alphas), (k * batch,), device=device)
        a = self.alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * clean + (1 - a).sqrt() * noise
        with self.autocast:
            predicted = self.forward(
                noisy.view(k, batch, *noisy.shape[1:]), t.view(k, batch), y.view(k, batch, 2)
            ).float()
        per_sample = F.mse_loss(predicted.flatten(0, 1), noise, reduction="none").mean(dim=(1, 2, 3))
        if self.gamma is not None:
            snr = a.flatten() / (1 - a.flatten())
            per_sample = per_sample * torch.clamp(snr, max=self.gamma) / snr
        self.update(per_sample.view(k, batch).mean(dim=1).sum())  # each model's mean loss; disjoint gradients


def bare_loop_seconds(trainers: list[BareTrainer], steps: int, device: torch.device) -> float:
    """Seconds for ``steps`` rounds of one step of each trainer (set-up excluded, lazy compile included)."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        for trainer in trainers:
            trainer.step()
    for trainer in trainers:
        trainer.loss.item()
    synchronize(device)
    return time.perf_counter() - start


def warm_up(section: dict, labels: np.ndarray, device: torch.device, k: int = 0) -> None:
    """One untimed step of a single (and a K-stacked) model: with a compile mode on, torch.compile
    compiles once per process and shape, so no timed side pays for it (the others reuse it)."""
    if compile_options(section["training"], device) is None:
        return
    BareTrainer(section, labels, device).step()
    if k:
        StackedTrainer(section, labels, device, k).step()


# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets, by a substring of
# torch.cuda.get_device_name(); --peak-tflops overrides (other GPUs, clocks, or a CPU).
BF16_PEAK_TFLOPS = {"H200": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "A10G": 125.0}


def bf16_peak_tflops(device: torch.device, override: float | None = None) -> float | None:
    """The device's dense bf16 peak in TFLOP/s: ``override``, else looked up by name (None if unknown)."""
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None)


def training_flops(section: dict, labels: np.ndarray, device: torch.device) -> float:
    """FLOPs of one training step's forward and backward (torch's FlopCounterMode: matmuls,
    convolutions and attention; the optimiser, norms and elementwise work are not counted, as in
    the usual model-FLOPs utilisation)."""
    from torch.utils.flop_counter import FlopCounterMode

    training = {**section["training"], "compile": False}  # count the eager graph's operations
    trainer = BareTrainer({**section, "training": training}, labels, device)
    with FlopCounterMode(display=False) as counter:
        trainer.step()
    return float(counter.get_total_flops())


def sampling_flops_per_image(section: dict, device: torch.device) -> float:
    """FLOPs of one denoiser forward pass for one image (counted like training_flops)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = BumpDenoiser.from_config(section).to(device).eval()
    size = section["image_size"]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(
            torch.zeros(1, 1, size, size, device=device),
            torch.zeros(1, dtype=torch.long, device=device),
            torch.full((1, 2), size / 2, device=device),
        )
    return float(counter.get_total_flops())


def flop_budget(section: dict, spec: dict, labels: np.ndarray, device: torch.device) -> dict:
    """What one run of the config costs in FLOPs: its training, and the sampling of its kept
    checkpoints (each: the configured samples, one forward pass per sampler step, with the
    hole samples when ``spec`` has holes), so the two can be weighed before anything is timed."""
    training, sampling = section["training"], section["sampling"]
    per_step = training_flops(section, labels, device)
    checkpoints = len(checkpoint_steps(training["steps"], training["checkpoint_every"]))
    samples = sampling["num_samples"] + sampling["num_samples_offgrid"]
    samples += sampling["num_samples_ood"] if spec.get("holes") else 0
    steps = inference_steps(section["diffusion"], sampling)
    per_checkpoint = sampling_flops_per_image(section, device) * samples * steps
    train_total = per_step * training["steps"]
    return {
        "training_tflop_per_step": per_step / 1e12,
        "training_pflop_per_run": train_total / 1e15,
        "checkpoints": checkpoints,
        "samples_per_checkpoint": samples,
        "sampler_steps": steps,
        "sampling_tflop_per_checkpoint": per_checkpoint / 1e12,
        "sampling_pflop_per_run": per_checkpoint * checkpoints / 1e15,
        "sampling_over_training": per_checkpoint * checkpoints / train_total,
    }


def rates(flops_per_step: float, batch_size: int, steps_per_s: float, peak: float | None) -> dict:
    """Images/s, achieved TFLOP/s and the fraction of the device's bf16 peak at ``steps_per_s``
    (shared with bench_relational.py)."""
    achieved = flops_per_step * steps_per_s / 1e12
    return {
        "flops_per_step": flops_per_step,
        "images_per_s": steps_per_s * batch_size,
        "achieved_tflops": achieved,
        "bf16_peak_tflops": peak,
        "fraction_of_bf16_peak": achieved / peak if peak else None,
    }


def utilisation(section: dict, labels: np.ndarray, device: torch.device, steps_per_s: float, peak) -> dict:
    """:func:`rates` of the bump model's training step at ``steps_per_s``."""
    return rates(training_flops(section, labels, device), section["training"]["batch_size"], steps_per_s, peak)


def bench_data(section: dict, spec: dict) -> tuple[dict, object, np.ndarray]:
    """The bench's dataset: the section with the dataset's spread (``bench_sigma``, which the bare
    trainers render with), its label table, and its training labels (float32, (N, 2))."""
    dataset = BumpDataset.from_config(spec, section["image_size"])
    table = dataset.labels()
    labels = table.loc[table.split == "train", ["mu_x", "mu_y"]].to_numpy(np.float32)
    return {**section, "bench_sigma": list(dataset.sigma)}, table, labels


def bench_training(section, spec, steps, rounds, tmp: Path, peak_tflops: float | None = None, bare_loop=True) -> dict:
    """Pipeline vs bare loop, alternating rounds; the pipeline includes EMA, logging and checkpoints.
    ``bare_loop`` False times the pipeline alone (for settings the bare loop does not have, such as
    the whole-step CUDA graph, whose comparison is the eager setting's own bench)."""
    device = resolve_device(section["training"]["device"])
    torch.set_num_threads(section["training"]["threads"])
    section, table, labels = bench_data(section, spec)
    tmp.mkdir(parents=True, exist_ok=True)
    write_csv(tmp / "labels.csv", table)
    warm_up(section, labels, device)
    pipeline, bare = [], []
    for r in range(rounds):
        run_section = copy.deepcopy(section)
        # one checkpoint at the end, as in a real run with checkpoint_every >> log_every
        run_section["training"].update(steps=steps, checkpoint_every=steps)
        run = semantic_config(run_section, spec, seed=r)
        runtime = {k: run_section["training"][k] for k in RUNTIME_KEYS}
        summary = train_run(run, runtime, tmp / "labels.csv", tmp / f"round{r}" / "train")
        pipeline.append(summary["seconds_this_job"])
        if bare_loop:
            bare.append(bare_loop_seconds([BareTrainer(section, labels, device)], steps, device))
    p = float(np.median(pipeline))
    b = float(np.median(bare)) if bare else None
    return {
        "device": str(device),
        "settings": training_settings(section["training"], device),
        "attention_head_dim": section["model"].get("attention_head_dim", DEFAULT_ATTENTION_HEAD_DIM),
        "steps": steps,
        "rounds": rounds,
        "pipeline_steps_per_s": steps / p,
        "bare_steps_per_s": steps / b if b else None,
        "pipeline_vs_bare": b / p if b else None,
        # of the pipeline's rate
        **utilisation(section, labels, device, steps / p, bf16_peak_tflops(device, peak_tflops)),
    }


def dispatched_operations(run) -> int:
    """How many ATen operations ``run()`` dispatches: on a GPU, eagerly, about one kernel launch
    each (views and metadata queries included, so an upper bound)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.count += 1
            return func(*args, **(kwargs or {}))

    with Count():
        run()
    return Count.count


def operation_counts(section: dict, labels: np.ndarray, device: torch.device, k: int = 4) -> dict:
    """Operations one eager training step dispatches, as on CUDA: AdamW in its foreach form (the
    default there) and the trainer's EMA in its (ForeachEMA); for one model, and for K models
    stacked into one vmapped module (diffcomp.packing), which should dispatch about as many for K
    times the work. Eager PyTorch spends microseconds of host time per operation, so this bounds
    an eager step from below whatever the GPU; a CUDA graph replays them without the host."""
    # at batch 4: the operations do not depend on the batch size, the memory does
    training = {**section["training"], "compile": False, "batch_size": 4}
    out = {"batch_size_counted_at": 4}
    for name, trainer in (
        ("one_model", BareTrainer({**section, "training": training}, labels, device)),
        (f"stacked_{k}", StackedTrainer({**section, "training": training}, labels, device, k)),
    ):
        parameters = list(trainer.model.parameters())
        trainer.optimizer = torch.optim.AdamW(
            parameters, lr=training["learning_rate"], weight_decay=training["weight_decay"], foreach=True
        )
        if trainer.ema is not None:
            trainer.ema = ForeachEMA(parameters, decay=training["ema_decay"], foreach_update=True)
        trainer.step()  # AdamW creates its state in its first step
        total = dispatched_operations(trainer.step)
        optimizer = dispatched_operations(trainer.optimizer.step)
        ema, loop = 0, 0
        if trainer.ema is not None:
            ema = dispatched_operations(lambda t=trainer, ps=parameters: t.ema.step(ps))
            # what EMAModel's default (per-tensor) update would dispatch instead
            per_tensor = ForeachEMA(parameters, decay=training["ema_decay"], foreach_update=False)
            loop = dispatched_operations(lambda e=per_tensor, ps=parameters: e.step(ps))
        out[name] = {
            "tensors": len(parameters),
            "step": total,
            "batch_forward_loss_backward": total - optimizer - ema,
            "adamw_foreach": optimizer,
            "ema": ema,
            "ema_as_per_tensor_loop": loop,
        }
    return out


def bench_ema(section: dict, steps: int = 20, rounds: int = 3) -> dict:
    """One EMA update of the config's model: diffusers' EMAModel (a Python loop, three operations
    per tensor) vs ForeachEMA (the same arithmetic in three foreach operations), alternating rounds;
    and the operations each dispatches per update (each one kernel launch on a GPU)."""
    device = resolve_device(section["training"]["device"])
    parameters = list(BumpDenoiser.from_config(section).to(device).parameters())
    decay = section["training"]["ema_decay"] or 0.999  # a config without EMA still gets its model's timed
    emas = {
        "per_tensor": EMAModel(parameters, decay=decay),
        "foreach": ForeachEMA(parameters, decay=decay, foreach_update=True),
    }
    seconds = {name: [] for name in emas}
    for r in range(rounds):
        for name in emas if r % 2 == 0 else list(emas)[::-1]:
            synchronize(device)
            start = time.perf_counter()
            for _ in range(steps):
                emas[name].step(parameters)
            synchronize(device)
            seconds[name].append((time.perf_counter() - start) / steps)
    out = {"tensors": len(parameters)}
    for name, ema in emas.items():
        out[f"{name}_ms"] = 1e3 * float(np.median(seconds[name]))
        out[f"{name}_operations"] = dispatched_operations(lambda ema=ema: ema.step(parameters))
    out["per_tensor_over_foreach"] = out["per_tensor_ms"] / out["foreach_ms"]
    return out


def bench_pipeline_pack(section, spec, table, labels, steps: int, rounds: int, k: int, tmp: Path, peak) -> dict:
    """The workflow's own trainers: one run (train_run) vs a pack of K runs (train_pack, the rule
    bumps_train_pack's function), alternating rounds, each with the config's settings (so with
    cuda_graph on, the pack's whole step is one graph) and one checkpoint at the end. This is the
    number that says whether packing pays: model-steps/s aggregated over the pack. ``section``,
    ``table`` and ``labels``: :func:`bench_data`'s."""
    device = resolve_device(section["training"]["device"])
    tmp.mkdir(parents=True, exist_ok=True)
    write_csv(tmp / "labels.csv", table)
    run_section = copy.deepcopy(section)
    run_section["training"].update(steps=steps, checkpoint_every=steps)
    runs = [semantic_config(run_section, spec, seed=i) for i in range(k)]
    runtime = {key: run_section["training"][key] for key in RUNTIME_KEYS}
    single, pack = [], []
    for r in range(rounds):
        jobs = [
            lambda r=r: single.append(
                train_run(runs[0], runtime, tmp / "labels.csv", tmp / f"single{r}" / "train")["seconds_this_job"]
            ),
            lambda r=r: pack.append(
                train_pack(runs, runtime, [tmp / "labels.csv"] * k, tmp / f"pack{r}" / "train")["seconds_this_job"]
            ),
        ]
        for job in jobs if r % 2 == 0 else jobs[::-1]:
            job()
    one, many = float(np.median(single)), float(np.median(pack))
    aggregate = k * steps / many
    pack_rates = utilisation(section, labels, device, aggregate, peak)  # per model-step, times the aggregate rate
    return {
        "pipeline_one_run_steps_per_s": steps / one,
        "pipeline_pack_aggregate_steps_per_s": aggregate,
        "pipeline_pack_over_one": aggregate / (steps / one),
        "pipeline_pack_images_per_s": pack_rates["images_per_s"],
        "pipeline_pack_achieved_tflops": pack_rates["achieved_tflops"],
        "pipeline_pack_fraction_of_bf16_peak": pack_rates["fraction_of_bf16_peak"],
    }


def bench_packed(section, spec, steps: int, rounds: int, k: int, tmp: Path, peak=None, bare_loop=True) -> dict:
    """K same-shaped models stepped in turn in one process and stacked into one vmapped model, vs
    one model alone (bare loops, alternating rounds, fresh models each round; skipped when
    ``bare_loop`` is False); the workflow's own pack trainer vs its single-run trainer
    (:func:`bench_pipeline_pack`); then one checkpoint's sampling for each of the K models."""
    device = resolve_device(section["training"]["device"])
    torch.set_num_threads(section["training"]["threads"])
    section, table, labels = bench_data(section, spec)
    out = {
        "device": str(device),
        "settings": training_settings(section["training"], device),
        "models": k,
        "steps": steps,
        "rounds": rounds,
    }
    if bare_loop:
        warm_up(section, labels, device, k)
        single, packed, stacked = [], [], []
        for r in range(rounds):
            jobs = [
                lambda: single.append(bare_loop_seconds([BareTrainer(section, labels, device)], steps, device)),
                lambda: packed.append(
                    bare_loop_seconds([BareTrainer(section, labels, device, seed=i) for i in range(k)], steps, device)
                ),
                lambda: stacked.append(bare_loop_seconds([StackedTrainer(section, labels, device, k)], steps, device)),
            ]
            for job in jobs if r % 2 == 0 else jobs[::-1]:
                job()
        one, many, vmapped = float(np.median(single)), float(np.median(packed)), float(np.median(stacked))
        out.update(
            one_model_steps_per_s=steps / one,
            packed_aggregate_steps_per_s=k * steps / many,
            packed_over_one=(k * steps / many) / (steps / one),
            stacked_aggregate_steps_per_s=k * steps / vmapped,
            stacked_over_one=(k * steps / vmapped) / (steps / one),
        )
    out.update(bench_pipeline_pack(section, spec, table, labels, steps, rounds, k, tmp, peak))

    # One checkpoint's sampling per model, as the sampling job does it: load the weights into an
    # eager model, then sample num_samples (+ num_samples_ood) + num_samples_offgrid labels with
    # the configured sampler and precision (sampling.precision; the trainers above already applied
    # the run's tf32).
    sampling = section["sampling"]
    n = sampling["num_samples"] + sampling["num_samples_offgrid"]
    n += sampling["num_samples_ood"] if len(table.split.unique()) > 1 else 0
    sample_labels = np.random.default_rng(0).uniform(0, section["image_size"], (n, 2)).astype(np.float32)
    sampler = BumpDenoiser.from_config(section).to(device)
    hidden = sampler.hidden_module(section["model"]["hidden_layer"])
    weights = [BareTrainer(section, labels, device, seed=i).model.state_dict() for i in range(k)]
    synchronize(device)
    start = time.perf_counter()
    for state in weights:
        sampler.load_state_dict(state)
        generate(
            sampler,
            sampling_scheduler(section["diffusion"], sampling["sampler"]),
            sample_labels,
            num_inference_steps=inference_steps(section["diffusion"], sampling),
            batch_size=sampling["batch_size"],
            seed=0,
            hidden=hidden,
            activation_step=sampling["activation_step"],
            device=device,
            precision=sampling["precision"],
        )
    synchronize(device)
    seconds = time.perf_counter() - start
    out.update(
        samples_per_checkpoint=n,
        sampler=f"{sampling['sampler']}-{inference_steps(section['diffusion'], sampling)}",
        sample_precision=sampling["precision"],
        sample_seconds_per_checkpoint_per_model=seconds / k,
        sample_seconds_per_checkpoint_all_models=seconds,
    )
    return out


def bench_sampling(section, n: int, ddim_steps: int) -> dict:
    device = resolve_device(section["training"]["device"])
    model = BumpDenoiser.from_config(section).to(device)
    hidden = model.hidden_module(section["model"]["hidden_layer"])
    labels = np.random.default_rng(0).uniform(0, section["image_size"], (n, 2)).astype(np.float32)
    out = {}
    for sampler, k in (("ddim", ddim_steps), ("ddpm", section["diffusion"]["num_train_timesteps"])):
        start = time.perf_counter()
        generate(
            model,
            sampling_scheduler(section["diffusion"], sampler),
            labels,
            num_inference_steps=k,
            batch_size=n,
            seed=0,
            hidden=hidden,
            activation_step=-1,
            device=device,
        )
        out[f"{sampler}_{k}_seconds"] = time.perf_counter() - start
    out["samples"] = n
    ddim_key = next(key for key in out if key.startswith("ddim"))
    ddpm_key = next(key for key in out if key.startswith("ddpm"))
    out["ddpm_over_ddim"] = out[ddpm_key] / out[ddim_key]
    return out


def bench_prediction(size: int) -> dict:
    labels = tile(0.1, 0.1, size)
    images = render(labels, size, 1.0)
    start = time.perf_counter()
    predict_positions(images)
    seconds = time.perf_counter() - start
    return {"images": len(images), "seconds": seconds, "images_per_s": len(images) / seconds}


EVAL_SNIPPET = """
import time, numpy as np, sys, warnings
warnings.filterwarnings("ignore")
t0 = time.perf_counter()
from diffcomp.representation import umap_r2
n, d = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
x, y = rng.normal(size=(n, d)).astype(np.float32), rng.uniform(0, 32, (n, 2))
t1 = time.perf_counter(); umap_r2(x, y, seed=0); t2 = time.perf_counter(); umap_r2(x, y, seed=1)
print(t2 - t1, time.perf_counter() - t2)
"""


def bench_evaluation(n: int, d: int) -> dict:
    """First and second UMAP+R^2 fit in fresh processes (the second process hits numba's cache)."""
    runs = []
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-c", EVAL_SNIPPET, str(n), str(d)], capture_output=True, text=True, check=True, cwd=REPO
        )
        runs.append([float(v) for v in out.stdout.split()])
    return {
        "points": n,
        "dims": d,
        "first_fit_process1_s": runs[0][0],
        "later_fit_s": runs[0][1],
        "first_fit_process2_s": runs[1][0],
    }


def bench_figure_set(config: Path) -> dict:
    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        subprocess.run(
            [
                str(Path(sys.executable).with_name("snakemake")),
                "--snakefile",
                str(REPO / "Snakefile"),
                "--configfile",
                str(config.resolve()),
                "--directory",
                work,
                "--cores",
                "2",
                "--quiet",
            ],
            check=True,
        )
        return {"config": str(config), "wall_seconds": time.perf_counter() - start}


SET_HELP = (
    "override a bumps.training key for this bench, e.g. --set compile=reduce-overhead --set precision=bf16, "
    "or another bumps key by its dotted path, e.g. --set model.attention_head_dim=64 "
    "(YAML values; the config is validated again)"
)


def bench_section(config_path: Path, overrides: list[str], dataset: str | None = None) -> tuple[dict, dict]:
    """The validated bumps section of ``config_path`` with ``--set KEY=VALUE`` overrides (a plain
    key is a training key, a dotted one a path below bumps: model.attention_head_dim), and the
    spec of ``dataset`` (default: the config's first). Raises ValueError or ConfigError."""
    config = load_config(config_path)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE with KEY a bumps.training key or a dotted bumps path")
        *parents, leaf = key.split(".") if "." in key else ["training", key]
        target = config["bumps"]
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = yaml.safe_load(value)
    try:
        section = validate_config(config)["bumps"]
    except ConfigError as err:
        raise ConfigError(f"--set: {err}") from None
    specs = dataset_specs(section)
    name = dataset or next(iter(specs))
    if name not in specs:
        raise ValueError(f"--dataset {name!r}: the config's datasets are {', '.join(specs)}")
    return section, {"image_size": section["image_size"], **specs[name]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "config.yaml")
    parser.add_argument("--dataset", default=None, help="dataset of the config to train on (default: first)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument(
        "--packed",
        type=int,
        metavar="K",
        help="also train K same-shaped models in one process, one step each in turn, and time their sampling",
    )
    parser.add_argument("--figure-set", action="store_true", help="also time the whole quick figure set")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=SET_HELP,
    )
    parser.add_argument("--training-only", action="store_true", help="skip the sampling and evaluation benches")
    parser.add_argument(
        "--no-bare",
        action="store_true",
        help="time the workflow's trainers only, no bare loops (e.g. for cuda_graph, which the bare loop lacks)",
    )
    parser.add_argument(
        "--flops",
        action="store_true",
        help="only count one run's FLOPs (training, and sampling its checkpoints) and a step's operations; "
        "times nothing",
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        help="the device's dense bf16 peak in TFLOP/s for fraction_of_bf16_peak (default: looked up for known GPUs)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    try:
        section, spec = bench_section(args.config, args.set, args.dataset)
    except (ConfigError, ValueError) as err:
        parser.error(str(err))
    results = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}", "torch": torch.__version__}
    if args.flops:
        device = resolve_device(section["training"]["device"])
        section, _, labels = bench_data(section, spec)
        results["flops"] = {"dataset": spec["name"], **flop_budget(section, spec, labels, device)}
        results["operations"] = operation_counts(section, labels, device, args.packed or 4)
        print(json.dumps(results, indent=2))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results["ema"] = bench_ema(section)
        results["training"] = bench_training(
            section, spec, args.steps, args.rounds, tmp / "single", args.peak_tflops, bare_loop=not args.no_bare
        )
        if args.packed:
            peak = bf16_peak_tflops(resolve_device(section["training"]["device"]), args.peak_tflops)
            results["packed"] = bench_packed(
                section, spec, args.steps, args.rounds, args.packed, tmp / "packed", peak, bare_loop=not args.no_bare
            )
    if not args.training_only:
        results["sampling"] = bench_sampling(section, args.samples, section["sampling"]["num_inference_steps"])
        results["prediction"] = bench_prediction(32)
        results["evaluation"] = bench_evaluation(section["sampling"]["num_samples"], 2048)
    if args.figure_set:
        results["figure_set"] = bench_figure_set(args.config)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
