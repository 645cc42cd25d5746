"""The shared trainer's whole training step as one CUDA graph (``training.cuda_graph``).

Why: the bump models are small, so one training step is hundreds of short kernels and a GPU
spends much of it waiting for Python to launch them. Captured once with ``torch.cuda.graph`` and
replayed, the whole step (batch, loss, backward, clipping, AdamW, EMA, the running-loss sum) is
one launch. A replay repeats the captured kernels with the values they read from device memory;
anything the host computed at capture time is frozen. So every value that changes from step to
step must live on the device:

- AdamW's step counters: ``capturable=True`` keeps them (and the bias corrections) on the device;
- the learning rate: the LR schedule still sets ``param_group["lr"]`` as a Python float (so
  resume states and loss.csv keep their exact values and format); :class:`GraphedStep` copies it
  into a device tensor before each replay, and that tensor is the lr the captured AdamW reads;
- the EMA's step counter and decay: :class:`DeviceEMA` (diffusers' EMAModel computes the decay
  as a Python float);
- the random streams: every generator the step uses is registered with the graph, which then
  advances its offset on every replay exactly as eager execution would.

Before capture the step runs a few times eagerly on a side stream (PyTorch's recipe; they are
real training steps, counted and logged as any other), which also creates AdamW's state.

What breaks a capture, or silently freezes a value in it, can be seen by watching the step run
eagerly on any device: :class:`CaptureAudit` records the operations that read a tensor on the host,
have data-dependent shapes, build tensors from host data, move data between devices or draw from a
generator the graph does not know. The trainer audits the last warm-up step before capturing, and
a CPU run with ``cuda_graph`` on audits its first step, so the tests check the real training steps
of both studies for capturability without a GPU.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from diffcomp.ema import ForeachEMA

log = logging.getLogger("diffcomp.train")

# Eager steps on a side stream before the capture (torch.cuda.make_graphed_callables' default).
WARMUP_STEPS = 3


class DeviceEMA(ForeachEMA):
    """diffusers' EMAModel with its step counter and decay on the parameters' device.

    EMAModel.step computes the decay in Python from a Python step counter; a CUDA graph would
    replay the decay of the captured step forever. Here the counter is an int64 device tensor and
    the decay is computed from it on the device with EMAModel.get_decay's formula, in float64 (as
    Python's floats), then applied as EMAModel does (``s_param.sub_(one_minus_decay * (s_param -
    param))``, the factor rounded to the weights' compute type as PyTorch rounds a Python float),
    with ForeachEMA's foreach operations (a few kernels in the graph rather than three per tensor).
    On a CPU the float32 weights equal EMAModel's bit for bit (tests/test_graphed_step.py).
    ``state_dict`` and ``load_state_dict`` keep EMAModel's format (``optimization_step`` an int),
    so states move between the two; loading copies into the existing shadow tensors, which a
    captured graph refers to.
    """

    def __init__(self, parameters: Iterable[torch.nn.Parameter], **kwargs):
        parameters = list(parameters)
        self._step = torch.zeros((), dtype=torch.int64, device=parameters[0].device)
        super().__init__(parameters, **kwargs)

    @property
    def optimization_step(self) -> int:
        return int(self._step.item())  # a host sync: read at checkpoints only

    @optimization_step.setter
    def optimization_step(self, value: int) -> None:
        self._step.fill_(int(value))

    def device_decay(self) -> torch.Tensor:
        """EMAModel.get_decay(self.optimization_step) as a float64 tensor on the device."""
        step = (self._step - (self.update_after_step + 1)).clamp(min=0).to(torch.float64)
        if self.use_ema_warmup:
            value = 1 - (1 + step / self.inv_gamma) ** -self.power
        else:
            value = (1 + step) / (10 + step)
        value = value.clamp(max=self.decay).clamp(min=self.min_decay)
        return torch.where(step > 0, value, 0.0)

    @torch.no_grad()
    def step(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        parameters = list(parameters)
        self._step += 1
        decay = self.device_decay()
        self.cur_decay_value = decay
        one_minus_decay = 1 - decay
        # EMAModel multiplies by a Python float, which PyTorch rounds to the tensor's compute type
        # (float for float32, bfloat16 and half) and which never promotes the result (as a float64
        # tensor would, for 0-dim parameters): the same rounding, once per compute type
        self.update(parameters, lambda dtype: one_minus_decay.to(dtype))

    def load_state_dict(self, state_dict: dict) -> None:
        shadow = self.shadow_params
        super().load_state_dict(state_dict)  # validates the fields and sets the counter
        loaded, self.shadow_params = self.shadow_params, shadow
        if len(loaded) != len(shadow) or any(a.shape != b.shape for a, b in zip(loaded, shadow, strict=False)):
            raise ValueError("the saved EMA weights do not match the trained parameters")
        for s_param, saved in zip(shadow, loaded, strict=True):
            s_param.copy_(saved)

    def to(self, device=None, dtype=None, non_blocking=False) -> None:
        super().to(device=device, dtype=dtype, non_blocking=non_blocking)
        if device is not None:
            self._step = self._step.to(device)


# A seed no training run uses, set for a moment to tell whether two Generator objects are one generator.
_MARK_SEED = 0x5EED_DC0B_F00D_C0DE


def same_generator(a: torch.Generator, b: torch.Generator) -> bool:
    """Whether ``a`` and ``b`` are the same generator, though perhaps different Python objects.

    A dispatched operation hands over a new Python wrapper of the generator it was given, so
    identity cannot be asked with ``is``; nor by comparing states, since a CPU generator's state
    bytes include fields it leaves uninitialised (two reads of one generator can differ). So
    ``b`` is seeded with a mark for a moment and ``a`` asked for its seed; ``b``'s state is then
    put back, so its stream continues exactly as before.
    """
    state = b.get_state()
    b.manual_seed(_MARK_SEED)
    try:
        return a.initial_seed() == _MARK_SEED
    finally:
        b.set_state(state)


def check_generators(generators: Iterable[torch.Generator], device: torch.device) -> None:
    """A graph replays the RNG of generators on its device only."""
    for generator in generators:
        if generator.device.type != device.type:
            raise ValueError(
                f"training.cuda_graph: the training step draws from a generator on {generator.device}, which a "
                f"CUDA graph on {device} cannot replay; set training.cuda_graph: false"
            )


aten = torch.ops.aten
# Operations that wait for the device and read a value (or a data-dependent shape) on the host.
_HOST_READS = {
    aten._local_scalar_dense.default: "reads a tensor's value on the host (.item(), float(), a branch on a tensor)",
    aten.is_nonzero.default: "reads a tensor's truth value on the host",
    aten.equal.default: "compares tensors on the host (torch.equal)",
    aten.nonzero.default: "has a data-dependent output shape (nonzero)",
    aten.masked_select.default: "has a data-dependent output shape (masked_select)",
    aten._unique2.default: "has a data-dependent output shape (unique)",
    aten.unique_dim.default: "has a data-dependent output shape (unique)",
    aten.unique_consecutive.default: "has a data-dependent output shape (unique_consecutive)",
}
_INDEXING = {aten.index.Tensor, aten.index_put_.default, aten.index_put.default, aten._index_put_impl_.default}
_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_OPTIMIZER_DIR = os.path.join(_TORCH_DIR, "optim") + os.sep
_THIS_FILE = os.path.abspath(__file__)


@functools.cache
def _draws_random_numbers(func) -> bool:
    """A random operation: one of its overloads takes a generator (randn.default has none, randn.generator has)."""
    packet = func.overloadpacket
    return any(
        argument.name == "generator"
        for overload in packet.overloads()
        for argument in getattr(packet, overload)._schema.arguments
    )


def _frames():
    frame = sys._getframe(2)
    while frame is not None:
        yield frame
        frame = frame.f_back


class CaptureAudit(TorchDispatchMode):
    """Records what a CUDA graph of the code run under it would get wrong, from one eager run.

    A graph replays kernels with the values they read from device memory, so the step must not
    read values on the host (``.item()``, truth values, ``torch.equal``), produce data-dependent
    shapes (``nonzero``, boolean-mask indexing, ``unique``, ``repeat_interleave`` without
    ``output_size``), build tensors from host data (``torch.tensor``: the capture's value is
    replayed forever), copy between the host and the device, or draw random numbers from a
    generator other than ``generators`` (a replay would repeat the captured draws, and a resume
    state would not hold the stream). The optimizer's own operations are left to it (AdamW with
    ``capturable=True`` is PyTorch's contract). On a CPU, host/device copies and ``.tolist()``
    (which dispatches nothing) cannot be seen; everything else can.

    ``problems``: one line per distinct problem and source line, in order of appearance.
    """

    def __init__(self, generators: Iterable[torch.Generator], device: torch.device):
        super().__init__()
        self.generators = list(generators)
        self.device = device
        self._problems: dict[str, None] = {}

    @property
    def problems(self) -> list[str]:
        return list(self._problems)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        problem = self._problem(func, args, kwargs)
        if problem is not None and not self._inside_optimizer():
            self._problems.setdefault(f"{problem} [{func}] at {self._caller()}")
        return func(*args, **kwargs)

    def _problem(self, func, args, kwargs) -> str | None:
        if func in _HOST_READS:
            return _HOST_READS[func]
        if func is aten.repeat_interleave.Tensor and kwargs.get("output_size") is None:
            return "has a data-dependent output shape (repeat_interleave without output_size)"
        masks = (torch.bool, torch.uint8)
        if func in _INDEXING and any(isinstance(i, torch.Tensor) and i.dtype in masks for i in tree_leaves(args[1])):
            return "indexes with a boolean mask (a data-dependent shape; use torch.where)"
        if func is aten.lift_fresh.default:
            return (
                "builds a tensor from host data (torch.tensor, or a Python value assigned into a tensor): a replay "
                "keeps the captured value"
            )
        if func in (aten._to_copy.default, aten.copy_.default):
            # source and destination (copy_'s two tensors, or _to_copy's tensor and target device)
            devices = {t.device.type for t in tree_leaves(args) if isinstance(t, torch.Tensor)}
            if kwargs.get("device") is not None:
                devices.add(torch.device(kwargs["device"]).type)
            if "cpu" in devices and len(devices) > 1:
                return "copies between the host and the device"
        if func is aten.native_dropout.default and args[1] > 0 and args[2] is not False:
            return "draws from torch's default generator (dropout in training mode)"
        if _draws_random_numbers(func):
            generator = kwargs.get("generator")
            if generator is None:
                return "draws from torch's default generator, not one of the training step's generators"
            if not any(same_generator(generator, known) for known in self.generators):
                return "draws from a generator the training step does not declare (a replay would repeat its draws)"
        return None

    @staticmethod
    def _inside_optimizer() -> bool:
        return any(frame.f_code.co_filename.startswith(_OPTIMIZER_DIR) for frame in _frames())

    @staticmethod
    def _caller() -> str:
        """The innermost source line outside torch (and this file)."""
        for frame in _frames():
            path = os.path.abspath(frame.f_code.co_filename)
            if not path.startswith(_TORCH_DIR) and path != _THIS_FILE:
                shown = os.path.relpath(path) if path.startswith(os.getcwd()) else path
                return f"{shown}:{frame.f_lineno} ({frame.f_code.co_name})"
        return "an unknown line"


def audit_capture(
    step: Callable[[], None], generators: Iterable[torch.Generator], device: torch.device, name: str = ""
) -> None:
    """Runs ``step`` once under :class:`CaptureAudit`; raises ValueError naming every problem found."""
    audit = CaptureAudit(generators, device)
    with audit:
        step()
    if audit.problems:
        raise ValueError(
            f"training.cuda_graph: the training step of {name or 'the task'} cannot be captured in a CUDA graph:\n  "
            + "\n  ".join(audit.problems)
            + "\nset training.cuda_graph: false to train eagerly"
        )


def audited_first_call(
    step: Callable[[], None], generators: Iterable[torch.Generator], device: torch.device, name: str = ""
) -> Callable[[], None]:
    """``step``, its first call audited by :func:`audit_capture` (a CPU run with ``cuda_graph`` on)."""
    audited = False

    def run() -> None:
        nonlocal audited
        if audited:
            step()
        else:
            audited = True
            audit_capture(step, generators, device, name)

    return run


class GraphedStep:
    """Runs ``step`` (one whole training step) eagerly for the first ``warmup`` calls, on a side
    stream; captures it in a CUDA graph on the next call and replays the graph from then on.

    ``generators``: every generator ``step`` draws from besides the device's default one (which
    PyTorch registers itself). ``optimizer``: a ``capturable=True`` AdamW; its learning rates are
    copied into device tensors before each replay.
    """

    def __init__(
        self,
        step: Callable[[], None],
        optimizer: torch.optim.Optimizer,
        generators: Iterable[torch.Generator],
        device: torch.device,
        *,
        name: str = "",
        warmup: int = WARMUP_STEPS,
    ):
        if device.type != "cuda":
            raise ValueError(f"a CUDA graph needs a CUDA device, not {device}")
        if not all(group.get("capturable") for group in optimizer.param_groups):
            raise ValueError("training.cuda_graph needs an optimizer built with capturable=True")
        self.generators = list(generators)
        check_generators(self.generators, device)
        self.step, self.optimizer, self.device = step, optimizer, device
        self.name, self.warmup = name, warmup
        self.warmups_done = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.side_stream = torch.cuda.Stream(device)
        # the captured AdamW's learning rates, on its parameters' device (float32, as fused AdamW requires)
        self.lrs = [
            torch.zeros((), dtype=torch.float32, device=group["params"][0].device) for group in optimizer.param_groups
        ]
        self._lr_values: list[float | None] = [None] * len(self.lrs)

    def __call__(self) -> None:
        if self.graph is None:
            if self.warmups_done < self.warmup:
                # the last warm-up step is audited (after the first compiled the model, if compile is on,
                # and created AdamW's state): a step that cannot be captured is named before the capture
                self._eager_on_side_stream(audit=self.warmups_done == self.warmup - 1)
                self.warmups_done += 1
                return
            self.graph = self._capture()
        self._copy_lrs()
        self.graph.replay()

    def _eager_on_side_stream(self, audit: bool = False) -> None:
        current = torch.cuda.current_stream(self.device)
        self.side_stream.wait_stream(current)
        with torch.cuda.stream(self.side_stream), warnings.catch_warnings():
            # AdamW warns that a capturable instance runs uncaptured: expected before the capture
            warnings.filterwarnings("ignore", message="This instance was constructed with capturable=True")
            if audit:
                audit_capture(self.step, self.generators, self.device, self.name)
            else:
                self.step()
        current.wait_stream(self.side_stream)

    def _copy_lrs(self) -> None:
        """The schedule's current learning rates into the tensors the graph reads (only when changed)."""
        for k, (tensor, group) in enumerate(zip(self.lrs, self.optimizer.param_groups, strict=True)):
            value = float(group["lr"])
            if value != self._lr_values[k]:
                tensor.fill_(value)
                self._lr_values[k] = value

    def _capture(self) -> torch.cuda.CUDAGraph:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(self.device):
            for generator in self.generators:
                graph.register_generator_state(generator)
        # the captured backward allocates the gradients itself, in the graph's pool
        self.optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize(self.device)
        floats = [group["lr"] for group in self.optimizer.param_groups]
        for group, tensor in zip(self.optimizer.param_groups, self.lrs, strict=True):
            group["lr"] = tensor  # captured AdamW reads the lr from this tensor
        try:
            with torch.cuda.graph(graph):
                self.step()
        except Exception as err:
            raise RuntimeError(
                f"training.cuda_graph: capturing the training step of {self.name or 'the task'} failed "
                f"({type(err).__name__}: {err}). Everything in the step must run on the device without "
                "host synchronisation (no .item(), no CPU tensors, no data-dependent shapes); set "
                "training.cuda_graph: false to train eagerly"
            ) from err
        finally:
            for group, value in zip(self.optimizer.param_groups, floats, strict=True):
                group["lr"] = value
        log.info("%s: training step captured in a CUDA graph after %d eager steps", self.name, self.warmups_done)
        return graph
