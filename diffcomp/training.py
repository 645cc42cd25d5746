"""The training loop every study shares, with atomic, resumable checkpoints.

A study hands :func:`train` a builder that makes a :class:`TrainingTask`: the model (its whole
``state_dict`` is checkpointed; parameters with ``requires_grad`` are optimised), a batch
function and a loss. Everything else lives here once: optimiser and LR schedule, EMA, precision,
compile, RNG streams, checkpoints, resume, the NaN stop, the SLURM time-limit stop, and the
publication of a finished run.

Layout of one run (``out_dir`` is the run's declared output, e.g. results/bumps/runs/{dataset}/seed{seed}/train):

- ``out_dir/../.state/{fingerprint}/`` (not a Snakemake output, so a failed or killed job keeps it):
  ``state_step{N}.pt`` full resume states (model, optimiser, LR schedule, EMA, every RNG, loss
  history) and ``snapshots/step{N}.safetensors`` the weights sampled at each checkpoint. The
  fingerprint hashes everything that changes the numbers, so a changed config never resumes a
  stale state.
- ``out_dir/`` (written only when training finishes): the snapshots (hard links), ``loss.csv``
  and ``train.json``.

A restarted job resumes from the newest state that loads and matches; the result is bit-identical
to an uninterrupted run on the CPU (tests/test_bumps_train.py and tests/test_relational_train.py
kill runs and compare).

GPU options (training keys, see diffcomp/schemas/common.schema.yaml): ``compile`` (a torch.compile
mode), ``tf32``, ``fused_optimizer``, ``channels_last`` and ``cuda_graph`` (the whole step captured
in one CUDA graph and replayed, diffcomp.graphed_step). Their defaults reproduce eager float32
arithmetic with the default AdamW; the last four act only on a CUDA device (on a CPU,
``cuda_graph`` runs the same step code eagerly, bit-identical to the default, its first step
audited for what a graph would get wrong: diffcomp.graphed_step.CaptureAudit). Switched on, none
of them (nor bf16) is bit-identical to the eager float32 default on a GPU, and a resumed run on a
GPU is not guaranteed to be bit-identical to an uninterrupted one (kernel choices, autotuning and
CUDA graphs may differ between processes). With ``compile`` set, every job first compares one
batch's compiled gradients with the eager model's and stops if they disagree
(:func:`check_compiled_gradients`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from diffcomp.errors import EXIT_TIME_LIMIT, TrainingInterrupted  # noqa: F401 (re-exported)
from diffcomp.io import atomic_path, write_csv, write_json
from diffcomp.runtime_keys import RUNTIME_KEYS  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from diffcomp.ema import ForeachEMA

log = logging.getLogger("diffcomp.train")


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or inf."""


@dataclass
class TrainingTask:
    """What a study trains.

    ``next_batch(generator)`` draws one batch with the data generator; ``loss(forward, batch,
    generator)`` returns the scalar loss, drawing noise and timesteps from the noise generator and
    calling ``forward`` (the model under autocast/compile) for predictions.

    ``loss_parts`` K > 0: ``loss`` returns K losses (one per model of a pack) instead of a scalar;
    their sum is optimised, and loss.csv gets a column ``loss_{k}`` for each next to the total.

    ``capturable``: the task declares that ``next_batch`` and ``loss`` run entirely on the
    training device, without host synchronisation (no ``.item()``, no CPU tensors or CPU-side
    randomness, no data-dependent shapes or Python branches on tensor values) and drawing only from
    the trainer's and its own ``generators``, so ``training.cuda_graph`` may capture them in a CUDA
    graph. Undeclared tasks are refused with ``cuda_graph`` on.
    """

    name: str  # for logs and messages, e.g. the dataset "inc0.5_sig1" (the seed is added)
    model: torch.nn.Module
    next_batch: Callable[[torch.Generator], Any]
    loss: Callable[[Callable, Any, torch.Generator], torch.Tensor]
    summary: dict = field(default_factory=dict)  # extra train.json entries
    max_grad_norm: float | None = None  # clip the gradient norm of the trained parameters
    # clips the trained parameters' gradients instead (e.g. per model of a pack); no host sync
    clip_gradients: Callable[[list[torch.Tensor]], Any] | None = None
    # the task's own generators (e.g. one per model of a pack), saved and restored with the state
    generators: dict[str, torch.Generator] = field(default_factory=dict)
    capturable: bool = False  # next_batch and loss can be captured in a CUDA graph (see above)
    loss_parts: int = 0  # loss returns this many losses, summed for the gradient (a pack's runs)

    def batch_loss(self, forward: Callable, data_rng: torch.Generator, noise_rng: torch.Generator):
        """Draw the next batch and return (the loss to optimise, the losses as logged): for a task
        with ``loss_parts`` the parts' sum and the K parts, else the scalar loss twice."""
        losses = self.loss(forward, self.next_batch(data_rng), noise_rng)
        return (losses.sum() if self.loss_parts else losses), losses


# Semantic training keys added after runs existed: left out of the fingerprint at these values (their
# "unset" meaning), so existing runs keep their fingerprints and resume states.
UNSET_TRAINING_KEYS = {"tf32": None}


def _canonical(value, in_training: bool = False):
    if isinstance(value, dict):
        return {
            k: _canonical(v, k == "training")
            for k, v in value.items()
            if not (in_training and k in UNSET_TRAINING_KEYS and v == UNSET_TRAINING_KEYS[k])
        }
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def fingerprint(semantic: dict) -> str:
    """A short hash of everything that determines a run's weights (unset newer keys left out)."""
    return hashlib.sha256(json.dumps(_canonical(semantic), sort_keys=True).encode()).hexdigest()[:16]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"training.device is {name!r} but CUDA is not available on this machine")
    return torch.device(name)


# --------------------------------------------------------------------------------------------
# GPU options: compile mode, TF32, fused AdamW, channels-last weights
# --------------------------------------------------------------------------------------------
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Modes that capture CUDA graphs, and what each becomes on a device without them.
_WITHOUT_CUDA_GRAPHS = {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}


def compile_mode(value) -> str:
    """``training.compile`` as a mode name: false/None -> "none", true -> "default", a mode name as is."""
    if value is None or value is False:
        return "none"
    if value is True:
        return "default"
    if value not in COMPILE_MODES:
        raise ValueError(f"training.compile: {value!r} is not one of false, true, {', '.join(COMPILE_MODES)}")
    return value


def compile_options(cfg: dict, device: torch.device) -> dict | None:
    """Keyword arguments for ``torch.compile`` of the training forward pass, or None for eager.

    CUDA graphs need a CUDA device: elsewhere reduce-overhead becomes default and max-autotune
    becomes max-autotune-no-cudagraphs, with a warning.
    """
    mode = compile_mode(cfg.get("compile", False))
    if mode == "none":
        return None
    if device.type != "cuda" and mode in _WITHOUT_CUDA_GRAPHS:
        fallback = _WITHOUT_CUDA_GRAPHS[mode]
        log.warning(
            "training.compile is %r, which uses CUDA graphs, but the device is %s: compiling with mode %r",
            mode,
            device,
            fallback,
        )
        mode = fallback
    return {"mode": mode}


def uses_cuda_graphs(options: dict | None) -> bool:
    """Whether ``compile_options``' result captures CUDA graphs (it only keeps such modes on CUDA)."""
    return options is not None and options["mode"] in _WITHOUT_CUDA_GRAPHS


def check_cuda_graph(cfg: dict, task: TrainingTask | None = None) -> bool:
    """Whether ``training.cuda_graph`` is on; raises ValueError when it cannot be honoured.

    Device-independent, so a configuration that would fail on a GPU fails on a CPU too, before
    any training work: a ``compile`` mode that captures CUDA graphs itself (reduce-overhead,
    max-autotune) cannot run inside a captured step, and a ``task`` must declare itself
    ``capturable``.
    """
    if not cfg.get("cuda_graph", False):
        return False
    mode = compile_mode(cfg.get("compile", False))
    if mode in _WITHOUT_CUDA_GRAPHS:
        raise ValueError(
            f"training.cuda_graph: true cannot be combined with training.compile: {mode}, which captures CUDA "
            f"graphs of its own; use compile {_WITHOUT_CUDA_GRAPHS[mode]!r} (or none) with cuda_graph, or set "
            "training.cuda_graph: false"
        )
    if task is not None and not task.capturable:
        raise ValueError(
            f"training.cuda_graph: true, but the training step of {task.name} is not declared capturable in a "
            "CUDA graph (its batches or loss may need the host); set training.cuda_graph: false for it"
        )
    return True


class CompiledGradientMismatch(RuntimeError):
    """torch.compile's gradients disagree with the eager model's on the same batch."""


# What the compiled step's gradients may differ from eager ones by, over all trained tensors
# together (||g_compiled - g_eager|| / ||g_eager||): reordered float32 sums differ by about 1e-6,
# bf16 and TF32 arithmetic by about 1e-2 (expected, not measured here); a broken backward by about 1.
COMPILED_GRADIENT_TOLERANCE = 0.1
# A tensor whose eager gradient is at least this fraction of the median tensor's must not get an
# all-zero compiled one (smaller eager gradients can be rounding noise, e.g. attention key biases,
# whose true gradient is zero).
DEAD_GRADIENT_FLOOR = 1e-3


def gradient_disagreements(names: list[str], eager: list, compiled: list, tolerance: float) -> list[str]:
    """What is wrong with ``compiled`` gradients against ``eager`` ones of the same tensors (None =
    no gradient): their joint relative difference above ``tolerance``, and every tensor whose
    compiled gradient is all zeros where its eager one is significant. Empty when they agree."""

    def dense(gradients):
        return [torch.zeros(()) if g is None else g.detach().float().cpu() for g in gradients]

    eager, compiled = dense(eager), dense(compiled)
    eager_norms = torch.stack([g.norm() for g in eager])
    squared_difference = sum((c - e).pow(2).sum() for c, e in zip(compiled, eager, strict=True))
    relative = (squared_difference.sqrt() / eager_norms.norm()).item() if eager_norms.norm() > 0 else 0.0
    problems = []
    if relative > tolerance:
        problems.append(f"all gradients together differ by {relative:.2g} (relative; tolerance {tolerance})")
    floor = DEAD_GRADIENT_FLOOR * eager_norms.median().item()
    dead = [
        name
        for name, e, c, norm in zip(names, eager, compiled, eager_norms.tolist(), strict=True)
        if norm > floor and not c.any()
    ]
    if dead:
        shown = ", ".join(dead[:5]) + (f" and {len(dead) - 5} more" if len(dead) > 5 else "")
        counted = "1 tensor gets" if len(dead) == 1 else f"{len(dead)} tensors get"
        problems.append(f"{counted} an all-zero gradient: {shown}")
    return problems


def check_compiled_gradients(task, eager_forward, compiled_forward, parameters, names, generators, mode) -> None:
    """Compare one batch's gradients through ``compiled_forward`` (torch.compile) with those through
    ``eager_forward``, and raise CompiledGradientMismatch if they disagree (gradient_disagreements).

    Found on a CPU with torch 2.13: inductor's backward of the quick bump model gave 67-68 of its
    118 tensors a zero gradient (the levels below the first), and such a run trains on, its loss
    plausible. So a job with ``training.compile`` checks before its first step. The batch, noise
    and timesteps come from the run's own generators, whose states (and torch's global ones) are
    restored afterwards, so the run computes what it would without the check; the gradients are
    returned by autograd.grad, so no ``.grad`` is touched.
    """
    states = [g.get_state() for g in generators]
    data_rng, noise_rng = generators[0], generators[1]
    cuda_devices = sorted({p.device.index or 0 for p in parameters if p.device.type == "cuda"})

    def gradients(forward):
        for generator, state in zip(generators, states, strict=True):
            generator.set_state(state)
        loss, _ = task.batch_loss(forward, data_rng, noise_rng)
        return torch.autograd.grad(loss, parameters, allow_unused=True)

    # torch's global generators too (a trained text encoder's dropout draws from them)
    with torch.random.fork_rng(devices=cuda_devices):
        try:
            eager = gradients(eager_forward)
            torch.compiler.cudagraph_mark_step_begin()  # (a no-op unless the mode captures CUDA graphs)
            compiled = gradients(compiled_forward)
        finally:
            for generator, state in zip(generators, states, strict=True):
                generator.set_state(state)
    problems = gradient_disagreements(names, eager, compiled, COMPILED_GRADIENT_TOLERANCE)
    if problems:
        raise CompiledGradientMismatch(
            f"{task.name}: training.compile {mode!r} computes other gradients than the eager model on the same "
            f"batch: {'; '.join(problems)}. This is a torch.compile (inductor) bug for this model on this device "
            f"and PyTorch {torch.__version__}; set training.compile: none. No training step ran."
        )
    log.info("training.compile %r: one batch's gradients agree with the eager model's", mode)


def gpu_settings(cfg: dict, device: torch.device) -> dict:
    """The effective TF32, fused-AdamW and channels-last settings of a job on ``device``.

    They act only on CUDA; elsewhere a requested one is reported (info) and ignored, so a CPU run
    computes exactly what it computed before these keys existed. ``tf32`` None = leave PyTorch's
    settings alone.
    """
    requested = {
        "tf32": cfg.get("tf32"),
        "fused_optimizer": bool(cfg.get("fused_optimizer", False)),
        "channels_last": bool(cfg.get("channels_last", False)),
    }
    if device.type == "cuda":
        return requested
    ignored = [k for k, v in requested.items() if v]
    if ignored:
        log.info("training.%s: only used on a CUDA device; ignored on %s", ", training.".join(ignored), device)
    return {"tf32": None, "fused_optimizer": False, "channels_last": False}


def apply_tf32(tf32: bool | None) -> None:
    """Set TF32 for CUDA matmuls and cuDNN convolutions (process-wide); None leaves them as they are.

    The legacy flags are set on purpose: PyTorch mirrors them into the newer fp32_precision API,
    so code reading either API sees the setting (setting the new API makes reads of the old raise).
    """
    if tf32 is None:
        return
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


@contextlib.contextmanager
def preserved_tf32():
    """Put the process-wide TF32 flags back as they were on exit (apply_tf32 sets them for the
    whole process, and ``tf32`` unset leaves whatever an earlier run in the process set)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def make_optimizer(parameters, cfg: dict, settings: dict, *, capturable: bool = False) -> torch.optim.AdamW:
    """AdamW of the trained parameters; the fused CUDA kernel if ``settings`` asks for it, and
    ``capturable`` (step counters and bias corrections on the device) for a CUDA-graphed step.

    Otherwise the multi-tensor (foreach) implementation, on every device: PyTorch's default on
    CUDA, and on a CPU a third faster per update than the per-tensor loop it would pick there, with
    bit-identical parameters (tests/test_training_gpu_options.py), so cached runs stay valid.
    """
    extra = {"fused": True} if settings["fused_optimizer"] else {"foreach": True}
    if capturable:
        extra["capturable"] = True
    return torch.optim.AdamW(parameters, lr=cfg["learning_rate"], weight_decay=cfg["weight_decay"], **extra)


_OPTIMIZER_IMPLEMENTATION = ("fused", "foreach", "capturable")


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Load a saved optimiser state but keep this job's implementation (fused/foreach).

    ``Optimizer.load_state_dict`` takes the saved parameter groups' flags too, so a run resumed
    with another ``fused_optimizer`` setting would silently keep the old one; the ``step`` counters
    are moved to where the kept implementation expects them (the parameter's device for fused).
    """
    keep = [{k: group[k] for k in _OPTIMIZER_IMPLEMENTATION if k in group} for group in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for group, flags in zip(optimizer.param_groups, keep, strict=True):
        group.update(flags)
        on_device = bool(group.get("fused")) or bool(group.get("capturable"))
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            step = state.get("step")
            if isinstance(step, torch.Tensor):
                state["step"] = step.to(p.device if on_device else "cpu", torch.float32)


def training_generators(seed: int, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """A run's two generators, seeded from its seed: batch composition, and noise/timesteps."""
    return (
        torch.Generator(device=device).manual_seed(seed * 1_000_003 + 1),
        torch.Generator(device=device).manual_seed(seed * 1_000_003 + 2),
    )


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timing); nothing to wait for on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def checkpoint_steps(total: int, every: int) -> list[int]:
    """The steps at which weights are kept for sampling: every ``every`` steps and the last one."""
    steps = list(range(every, total + 1, every))
    if not steps or steps[-1] != total:
        steps.append(total)
    return steps


# --------------------------------------------------------------------------------------------
# Stopping before a time limit
# --------------------------------------------------------------------------------------------
def slurm_end_time() -> float | None:
    """Epoch seconds at which SLURM ends this job, if running under SLURM."""
    if os.environ.get("SLURM_JOB_END_TIME"):
        return float(os.environ["SLURM_JOB_END_TIME"])
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id or not shutil.which("squeue"):
        return None
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%e"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
        if out in ("", "Unknown", "NONE"):  # a job without a time limit
            return None
        return datetime.fromisoformat(out).timestamp()
    except (subprocess.SubprocessError, ValueError, OSError) as err:
        log.warning("could not read the SLURM end time of job %s: %s", job_id, err)
        return None


class StopWatch:
    """Decides when to checkpoint and stop: on SIGTERM/SIGUSR1 or shortly before the job's end time."""

    def __init__(self, margin_seconds: float, deadline: float | None):
        self.deadline = deadline
        self.margin = margin_seconds
        if deadline is not None and deadline - time.time() <= margin_seconds:
            log.warning(
                "only %.0f s left in this job but training.stop_margin_seconds is %.0f: it will stop after one "
                "step; give the job more runtime or lower the margin",
                deadline - time.time(),
                margin_seconds,
            )
        self.signal_received: int | None = None
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, _frame):
        self.signal_received = signum

    def reason(self) -> str | None:
        if self.signal_received is not None:
            return f"received {signal.Signals(self.signal_received).name}"
        if self.deadline is not None and time.time() + self.margin >= self.deadline:
            return f"within {self.margin:.0f} s of the job's end time"
        return None


# --------------------------------------------------------------------------------------------
# Resume states and snapshots
# --------------------------------------------------------------------------------------------
def _state_path(state_dir: Path, step: int) -> Path:
    return state_dir / f"state_step{step:09d}.pt"


def _snapshot_path(state_dir: Path, step: int) -> Path:
    return state_dir / "snapshots" / f"step{step:09d}.safetensors"


def load_latest_state(state_dir: Path, expected_fingerprint: str) -> dict | None:
    """The newest resume state that loads and belongs to this config; corrupt ones are reported and skipped."""
    for path in sorted(state_dir.glob("state_step*.pt"), reverse=True):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if state.get("fingerprint") != expected_fingerprint:
                raise ValueError(f"fingerprint {state.get('fingerprint')} != {expected_fingerprint}")
            snapshots = [_snapshot_path(state_dir, s) for s in state["snapshot_steps"]]
            missing = [str(p) for p in snapshots if not p.exists()]
            if missing:
                raise FileNotFoundError(f"snapshots missing: {missing}")
            return state
        except Exception as err:  # noqa: BLE001 - any unreadable state is skipped, loudly
            log.warning("skipping unusable checkpoint %s: %s: %s", path, type(err).__name__, err)
    return None


def save_state(state_dir: Path, state: dict, keep: int) -> None:
    path = _state_path(state_dir, state["step"])
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    for old in sorted(state_dir.glob("state_step*.pt"), reverse=True)[keep:]:
        old.unlink(missing_ok=True)


def save_snapshot(state_dir: Path, step: int, weights: dict[str, torch.Tensor]) -> None:
    path = _snapshot_path(state_dir, step)
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp))


def load_snapshot(path, model: torch.nn.Module) -> torch.nn.Module:
    """Load a snapshot's weights into ``model``; a corrupt file or another model's weights is a ValueError."""
    try:
        weights = load_file(str(path))
    except Exception as err:  # safetensors raises several types for truncated or garbled files
        raise ValueError(f"checkpoint {path} is corrupt or unreadable: {err}") from None
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {path} does not match the configured model (missing {len(missing)} tensors, "
            f"unexpected {len(unexpected)}); was it trained with another model config?"
        )
    return model


def read_snapshots(train_dir) -> list[tuple[int, Path]]:
    """(step, path) of every kept snapshot of a finished run, by step."""
    paths = sorted(Path(train_dir, "snapshots").glob("step*.safetensors"))
    if not paths:
        raise ValueError(f"{train_dir}: no snapshots; is this a finished training run?")
    return [(int(p.stem.removeprefix("step")), p) for p in paths]


def sample_checkpoints(model: torch.nn.Module, train_dir, out_dir, sample) -> list[Path]:
    """Load every kept snapshot of a finished run into ``model`` and write ``sample(step)``'s arrays
    to ``out_dir/step{N}.npz`` (atomically, compressed). Returns the files written, by step."""
    import numpy as np

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for step, path in read_snapshots(train_dir):
        load_snapshot(path, model)
        arrays = sample(step)
        target = out_dir / f"step{step:09d}.npz"
        with atomic_path(target) as tmp:
            np.savez_compressed(tmp, **arrays, step=np.int64(step))
        written.append(target)
        log.info("step %d: %d samples -> %s", step, len(arrays["images"]), target)
    return written


def state_folder(out_dir, run_fingerprint: str) -> Path:
    """Where the resume states of the run with this fingerprint and declared output live (not an
    output itself, so a failed job keeps them)."""
    return Path(out_dir).parent / ".state" / run_fingerprint


@dataclass
class RunPaths:
    out_dir: Path  # declared output (finished run)
    state_dir: Path  # resume states, survives failures

    @classmethod
    def for_run(cls, out_dir, semantic: dict) -> RunPaths:
        out_dir = Path(out_dir)
        return cls(out_dir=out_dir, state_dir=state_folder(out_dir, fingerprint(semantic)))


def loss_columns(parts: int) -> list[str]:
    """loss.csv's columns: step, the (total) loss, the learning rate, and each part's loss."""
    return ["step", "loss", "lr", *(f"loss_{k}" for k in range(parts))]


def publish_run(paths: RunPaths, snapshot_steps, loss_history, summary, parts: int = 0) -> None:
    """Assemble the finished run in a temporary folder, then rename it onto the declared output."""
    tmp = paths.out_dir.with_name(paths.out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "snapshots").mkdir(parents=True)
    for s in snapshot_steps:
        os.link(_snapshot_path(paths.state_dir, s), tmp / "snapshots" / f"step{s:09d}.safetensors")
    write_csv(tmp / "loss.csv", pd.DataFrame(loss_history, columns=loss_columns(parts)))
    write_json(tmp / "train.json", summary)
    shutil.rmtree(paths.out_dir, ignore_errors=True)
    os.replace(tmp, paths.out_dir)


# --------------------------------------------------------------------------------------------
# The training loop
# --------------------------------------------------------------------------------------------
@dataclass(eq=False)
class TrainingState:
    """What one job trains and how far it has got: the task (its model), the trained parameters
    and what updates them, the run's random streams, and the loop's counters. A resume state is
    this, saved (:meth:`state_dict`) and loaded back (:meth:`load_state_dict`)."""

    task: TrainingTask
    seed: int
    fingerprint: str  # of the run's definition: names the state folder; only this run's states load
    parameters: list[torch.nn.Parameter]  # the trained ones (requires_grad), in the model's order
    optimizer: torch.optim.Optimizer
    lr_schedule: torch.optim.lr_scheduler.LRScheduler
    ema: ForeachEMA | None  # of the trained parameters; None when training.ema_decay is 0
    data_rng: torch.Generator  # batch composition
    noise_rng: torch.Generator  # noise and timesteps
    running_loss: torch.Tensor  # summed since the last loss.csv row (each part's, for a task with loss_parts)
    step: int = 0  # optimisation steps done
    loss_history: list[list] = field(default_factory=list)  # loss.csv's rows so far
    snapshot_steps: list[int] = field(default_factory=list)  # the steps whose sampling weights are saved

    @property
    def model(self) -> torch.nn.Module:
        return self.task.model

    @property
    def generators(self) -> list[torch.Generator]:
        """Every generator a training step draws from besides torch's global ones."""
        return [self.data_rng, self.noise_rng, *self.task.generators.values()]

    def state_dict(self) -> dict:
        """The resume state: everything a retry needs to continue bit-identically (on a CPU)."""
        return {
            "fingerprint": self.fingerprint,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_schedule": self.lr_schedule.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "data_rng": self.data_rng.get_state(),
            "noise_rng": self.noise_rng.get_state(),
            "task_rngs": {name: generator.get_state() for name, generator in self.task.generators.items()},
            # torch's global generator too (a trained text encoder's dropout draws from it)
            "torch_rng": torch.get_rng_state(),
            "loss_history": self.loss_history,
            # so a resumed loss.csv row averages the same steps as an uninterrupted one
            "running_loss": self.running_loss.detach().cpu(),
            "snapshot_steps": self.snapshot_steps,
        }

    def load_state_dict(self, saved: dict, device: torch.device) -> None:
        """Continue from a resume state (``torch.load``-ed to the CPU) of this run."""
        self.model.load_state_dict(saved["model"])
        load_optimizer_state(self.optimizer, saved["optimizer"])
        self.lr_schedule.load_state_dict(saved["lr_schedule"])
        if self.ema is not None:
            self.ema.load_state_dict(saved["ema"])
            self.ema.to(device=device)  # EMAModel takes the loaded (CPU) tensors as its weights
        self.data_rng.set_state(saved["data_rng"])
        self.noise_rng.set_state(saved["noise_rng"])
        for name, generator in self.task.generators.items():
            generator.set_state(saved["task_rngs"][name])
        torch.set_rng_state(saved["torch_rng"])
        self.step = saved["step"]
        self.loss_history = saved["loss_history"]
        self.snapshot_steps = saved["snapshot_steps"]
        self.running_loss = saved["running_loss"].to(device)

    def sampling_weights(self) -> dict[str, torch.Tensor]:
        """The weights a snapshot keeps for sampling: the model's, with the EMA's in place of the
        trained parameters (the training weights are put back)."""
        if self.ema is None:
            return self.model.state_dict()
        self.ema.store(self.parameters)
        self.ema.copy_to(self.parameters)
        weights = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.ema.restore(self.parameters)
        return weights


def prepare_device(cfg: dict) -> tuple[torch.device, dict, dict | None]:
    """The job's device (its CPU threads set), its effective GPU settings (TF32 applied, process-wide)
    and the keyword arguments of torch.compile (None: eager)."""
    device = resolve_device(cfg["device"])
    torch.set_num_threads(cfg["threads"])
    settings = gpu_settings(cfg, device)
    apply_tf32(settings["tf32"])
    return device, settings, compile_options(cfg, device)


def make_optimisation(
    parameters: list[torch.nn.Parameter], cfg: dict, settings: dict, *, graphed: bool, cuda_graph: bool
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LRScheduler, ForeachEMA | None]:
    """AdamW of ``parameters`` (capturable when the step is ``graphed``), its LR schedule and their
    EMA (None when training.ema_decay is 0)."""
    # Imported here, not at the top: diffusers takes about 4 s to import, and the jobs that only
    # read and write snapshots (unpacking a pack) import this module too.
    from diffusers.optimization import get_scheduler

    from diffcomp.ema import ForeachEMA
    from diffcomp.graphed_step import DeviceEMA

    optimizer = make_optimizer(parameters, cfg, settings, capturable=graphed)
    lr_schedule = get_scheduler(
        cfg["lr_schedule"], optimizer, num_warmup_steps=cfg["warmup_steps"], num_training_steps=cfg["steps"]
    )
    # EMAModel's per-tensor arithmetic as a few foreach operations (diffcomp/ema.py); with cuda_graph
    # (on any device, so a CPU run checks it) the variant that keeps its step counter and decay on the
    # device, which a captured step needs (same numbers, same state format)
    ema_class = DeviceEMA if cuda_graph else ForeachEMA
    ema = ema_class(parameters, decay=cfg["ema_decay"]) if cfg["ema_decay"] > 0 else None
    return optimizer, lr_schedule, ema


def start_training(
    task: TrainingTask,
    seed: int,
    run_fingerprint: str,
    cfg: dict,
    settings: dict,
    device: torch.device,
    *,
    graphed: bool,
    cuda_graph: bool,
) -> TrainingState:
    """``task`` at step 0: its model in the memory format asked for, the optimiser, LR schedule and
    EMA of its trained parameters, and the run's generators seeded from ``seed``."""
    if settings["channels_last"]:
        task.model.to(memory_format=torch.channels_last)  # in place: the parameters stay the same objects
    parameters = [p for p in task.model.parameters() if p.requires_grad]
    optimizer, lr_schedule, ema = make_optimisation(parameters, cfg, settings, graphed=graphed, cuda_graph=cuda_graph)
    data_rng, noise_rng = training_generators(seed, device)
    return TrainingState(
        task=task,
        seed=seed,
        fingerprint=run_fingerprint,
        parameters=parameters,
        optimizer=optimizer,
        lr_schedule=lr_schedule,
        ema=ema,
        data_rng=data_rng,
        noise_rng=noise_rng,
        running_loss=torch.zeros(task.loss_parts or (), device=device),
    )


def resume_from_latest_state(state: TrainingState, state_dir: Path, device: torch.device) -> None:
    """Load the newest usable resume state of this run into ``state``; without one it starts from scratch."""
    saved = load_latest_state(state_dir, state.fingerprint)
    if saved is not None:
        state.load_state_dict(saved, device)
        log.info("resuming %s from step %d (%s)", state.task.name, state.step, state_dir)
    else:
        log.info("training %s seed %d from scratch (%s)", state.task.name, state.seed, state_dir)


def autocast_forward(model: Callable, autocast: torch.autocast) -> Callable:
    """``model`` called under ``autocast`` (bf16 for precision bf16, else a context that does nothing)."""

    def forward(*args):
        with autocast:
            return model(*args)

    return forward


def training_step(state: TrainingState, forward: Callable) -> None:
    """One optimisation step: a batch and its loss, the gradients (clipped if the task asks), AdamW,
    the EMA, and the losses added to the running sum. Everything here may be captured in a CUDA
    graph (training.cuda_graph), so nothing reads a value back to the host."""
    task = state.task
    loss, losses = task.batch_loss(forward, state.data_rng, state.noise_rng)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if task.clip_gradients is not None:
        task.clip_gradients(state.parameters)
    elif task.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(state.parameters, task.max_grad_norm)
    state.optimizer.step()
    if state.ema is not None:
        state.ema.step(state.parameters)
    state.running_loss.add_(losses.detach())


def step_runner(
    state: TrainingState, forward: Callable, device: torch.device, *, graphed: bool, cuda_graph: bool
) -> Callable[[], None]:
    """What the loop calls for each step: :func:`training_step` itself; with training.cuda_graph on a
    CUDA device, a GraphedStep that captures it in a CUDA graph and replays it."""
    from diffcomp.graphed_step import GraphedStep, audited_first_call

    step = functools.partial(training_step, state, forward)
    if graphed:
        return GraphedStep(step, state.optimizer, state.generators, device, name=state.task.name)
    if cuda_graph:
        # the same step eagerly; its first run is audited for what a CUDA graph would get wrong
        # (host reads, data-dependent shapes, undeclared generators), so a CPU run catches it
        return audited_first_call(step, state.generators, device, state.task.name)
    return step


def record_losses(state: TrainingState, progress: tqdm) -> None:
    """Add loss.csv's row for the steps since the last row (their mean loss, each part's too, and
    the learning rate) and show it in the progress bar; stop the run on a NaN or inf loss."""
    # One host sync per row; a NaN anywhere since the last row poisons the sum.
    steps_in_row = state.step - (state.loss_history[-1][0] if state.loss_history else 0)
    means = [value / steps_in_row for value in state.running_loss.reshape(-1).tolist()]
    mean_loss = sum(means) if state.task.loss_parts else means[0]
    state.running_loss.zero_()
    if not np.isfinite(mean_loss):
        first_step = state.step - steps_in_row + 1
        raise NonFiniteLoss(
            f"{state.task.name} seed {state.seed}: loss became {mean_loss} between steps {first_step} and "
            f"{state.step}; stopping (lower the learning rate or check the data). No checkpoint was written."
        )
    parts = means if state.task.loss_parts else []
    state.loss_history.append([state.step, mean_loss, state.lr_schedule.get_last_lr()[0], *parts])
    progress.set_postfix(loss=f"{mean_loss:.4f}", refresh=False)
    progress.update(state.step - progress.n)  # (n counts from the last row, which may predate a resume)


def save_checkpoint(state: TrainingState, state_dir: Path, keep: int) -> None:
    """Keep this step's sampling weights as a snapshot, then save a resume state that lists it."""
    save_snapshot(state_dir, state.step, state.sampling_weights())
    state.snapshot_steps.append(state.step)
    save_state(state_dir, state.state_dict(), keep)


def stop_reason(step: int, stop_after_step: int | None, stop_watch: StopWatch) -> str | None:
    """Why the job stops after ``step`` (a test's simulated time limit, a signal, the job's end time
    coming), or None to go on."""
    if stop_after_step is not None and step >= stop_after_step:
        return "stop_after_step"
    return stop_watch.reason()


def training_summary(
    state: TrainingState,
    cfg: dict,
    device: torch.device,
    settings: dict,
    compile_kwargs: dict | None,
    graphed: bool,
    steps_this_job: int,
    seconds_this_job: float,
) -> dict:
    """train.json: the task's own entries, then how the run was trained and what it reached."""
    return {
        **state.task.summary,
        "seed": state.seed,
        "fingerprint": state.fingerprint,
        "steps": cfg["steps"],
        "snapshot_steps": state.snapshot_steps,
        "device": str(device),
        "precision": cfg["precision"],
        "compile": compile_kwargs["mode"] if compile_kwargs is not None else "none",
        **settings,
        "cuda_graph": graphed,
        "steps_this_job": steps_this_job,
        "seconds_this_job": seconds_this_job,
        "steps_per_second": steps_this_job / seconds_this_job if seconds_this_job > 0 else None,
        "parameters": sum(p.numel() for p in state.model.parameters()),
        "trained_parameters": sum(p.numel() for p in state.parameters),
        "final_loss": state.loss_history[-1][1],
    }


def train(
    build: Callable[[torch.device], TrainingTask],
    run: dict,
    training: dict,
    out_dir,
    *,
    stop_after_step: int | None = None,
) -> dict:
    """Train ``build(device)``'s task to ``training["steps"]`` and write the finished run to ``out_dir``.

    ``run`` is everything that determines the weights (its hash names the state folder; its
    ``seed`` seeds the model initialisation and the RNG streams). ``training`` holds the training
    keys, including the runtime ones in RUNTIME_KEYS. ``stop_after_step`` simulates a time limit
    (tests): save a state and stop after that step. Returns the summary written to train.json.
    """
    cfg = training
    cuda_graph = check_cuda_graph(cfg)  # a compile mode with CUDA graphs of its own is refused here
    seed = run["seed"]
    paths = RunPaths.for_run(out_dir, run)
    paths.state_dir.joinpath("snapshots").mkdir(parents=True, exist_ok=True)

    # the device, then the task's model, initialised from the run's seed
    device, settings, compile_kwargs = prepare_device(cfg)
    torch.manual_seed(seed)  # model initialisation
    task = build(device)
    check_cuda_graph(cfg, task)  # an undeclared task is refused before any training work
    graphed = cuda_graph and device.type == "cuda"
    if cuda_graph and not graphed:
        log.warning("training.cuda_graph: CUDA graphs need a CUDA device; running the same step eagerly on %s", device)

    # optimiser, LR schedule, EMA and generators, at step 0 or where the last job of this run stopped
    state = start_training(task, seed, fingerprint(run), cfg, settings, device, graphed=graphed, cuda_graph=cuda_graph)
    resume_from_latest_state(state, paths.state_dir, device)

    # the forward pass (compiled, under autocast) and the step that runs it
    compiled = torch.compile(task.model, **compile_kwargs) if compile_kwargs is not None else task.model
    cuda_graphs = uses_cuda_graphs(compile_kwargs)
    # (a captured step must not keep autocast's cast-weight cache across replays; the values are the same)
    autocast = torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=cfg["precision"] == "bf16", cache_enabled=not graphed
    )
    forward = autocast_forward(compiled, autocast)
    task.model.train()
    if compile_kwargs is not None:
        names = [name for name, p in task.model.named_parameters() if p.requires_grad]
        eager_forward = autocast_forward(task.model, autocast)
        check_compiled_gradients(
            task, eager_forward, forward, state.parameters, names, state.generators, compile_kwargs["mode"]
        )
    run_step = step_runner(state, forward, device, graphed=graphed, cuda_graph=cuda_graph)

    keep_steps = set(checkpoint_steps(cfg["steps"], cfg["checkpoint_every"]))
    stop_watch = StopWatch(cfg["stop_margin_seconds"], slurm_end_time())
    started, start_step = time.perf_counter(), state.step
    progress = tqdm(
        total=cfg["steps"], initial=state.step, desc=f"train {task.name}", mininterval=10, ascii=True, unit="step"
    )
    while state.step < cfg["steps"]:
        if cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's graph outputs may be overwritten
        run_step()
        state.lr_schedule.step()
        state.step += 1

        at_checkpoint = state.step in keep_steps
        if state.step % cfg["log_every"] == 0 or at_checkpoint or state.step == cfg["steps"]:
            record_losses(state, progress)
        if at_checkpoint:
            save_checkpoint(state, paths.state_dir, cfg["keep_resume_states"])
        reason = stop_reason(state.step, stop_after_step, stop_watch)
        if reason and state.step < cfg["steps"]:
            if not at_checkpoint:  # (a checkpoint has just saved this step's state)
                save_state(paths.state_dir, state.state_dict(), cfg["keep_resume_states"])
            progress.close()
            raise TrainingInterrupted(
                f"{task.name} seed {seed}: stopped at step {state.step}/{cfg['steps']} ({reason}); "
                f"state saved in {paths.state_dir}, a retry resumes from there"
            )
    progress.close()
    elapsed = time.perf_counter() - started

    summary = training_summary(state, cfg, device, settings, compile_kwargs, graphed, state.step - start_step, elapsed)
    publish_run(paths, state.snapshot_steps, state.loss_history, summary, task.loss_parts)
    return summary
