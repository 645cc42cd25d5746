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
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable

import torch

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


def check_generators(generators: Iterable[torch.Generator], device: torch.device) -> None:
    """A graph replays the RNG of generators on its device only."""
    for generator in generators:
        if generator.device.type != device.type:
            raise ValueError(
                f"training.cuda_graph: the training step draws from a generator on {generator.device}, which a "
                f"CUDA graph on {device} cannot replay; set training.cuda_graph: false"
            )


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
                self._eager_on_side_stream()
                self.warmups_done += 1
                return
            self.graph = self._capture()
        self._copy_lrs()
        self.graph.replay()

    def _eager_on_side_stream(self) -> None:
        current = torch.cuda.current_stream(self.device)
        self.side_stream.wait_stream(current)
        with torch.cuda.stream(self.side_stream), warnings.catch_warnings():
            # AdamW warns that a capturable instance runs uncaptured: expected before the capture
            warnings.filterwarnings("ignore", message="This instance was constructed with capturable=True")
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
