"""The trainer's EMA: diffusers' EMAModel with its update done over all tensors at once on a GPU.

EMAModel's default update (``foreach=False``) loops over the parameters in Python: three
operations per tensor (``s_param.sub_(one_minus_decay * (s_param - param))``), each one kernel
launch on a GPU: 972 an update for the 324 tensors of the paper's bump model, against 3,143 for its
whole eager training step without EMA (bench_bumps.py --flops). Its ``foreach=True`` update takes a
handful of launches, but computes ``s - a * (s - p)`` with ``alpha=a`` inside one kernel, which
differs from the per-tensor result in the last bit (measured: up to 2.4e-7 after 50 steps on a
CPU), so runs would no longer reproduce. :class:`ForeachEMA` does the per-tensor arithmetic, in
the same order and with the same rounding, as three foreach operations over all tensors (four with
frozen parameters): bit for bit EMAModel's default update on a CPU (tests/test_ema.py; on CUDA
expected, not checked without a GPU). It does so on CUDA, where launches are what an update costs;
on a CPU the per-tensor loop is kept, because there the foreach form's model-sized temporaries can
cost more than the loop's Python (bench_bumps.py's ``ema`` numbers, README). Its state is
EMAModel's, so resume states move between the two.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from diffusers.training_utils import EMAModel


class ForeachEMA(EMAModel):
    """EMAModel whose update is three foreach operations over all tensors (difference, scale,
    subtract; frozen parameters copied by a fourth) when ``foreach_update`` is on (None: when the
    weights are on CUDA), and EMAModel's per-tensor loop otherwise: the same arithmetic either way."""

    def __init__(self, parameters: Iterable[torch.nn.Parameter], foreach_update: bool | None = None, **kwargs):
        if kwargs.get("foreach"):
            raise ValueError("ForeachEMA does EMAModel's per-tensor arithmetic (foreach=False) with foreach operations")
        super().__init__(parameters, **kwargs)
        self.foreach_update = foreach_update

    @torch.no_grad()
    def step(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        parameters = list(parameters)
        self.optimization_step += 1
        decay = self.get_decay(self.optimization_step)
        self.cur_decay_value = decay
        one_minus_decay = 1 - decay
        # a Python float, which PyTorch rounds to each tensor's compute type, as EMAModel's product does
        self.update(parameters, lambda dtype: one_minus_decay)

    @torch.no_grad()
    def update(self, parameters: list[torch.nn.Parameter], factor: Callable[[torch.dtype], object]) -> None:
        """``s -= f * (s - p)`` for every trained parameter p and its shadow s, in that order of
        operations, with f = ``factor(compute type)`` (a Python float, or a 0-dim tensor of that
        type: DeviceEMA); frozen parameters are copied."""
        pairs = list(zip(self.shadow_params, parameters, strict=True))
        rounded: dict[torch.dtype, object] = {}  # the factor once per weight type

        def scale(dtype: torch.dtype):
            """The factor for weights of ``dtype``, rounded to its compute type."""
            if dtype not in rounded:
                rounded[dtype] = factor(torch.promote_types(dtype, torch.float32))
            return rounded[dtype]

        foreach = self.foreach_update
        if foreach is None:
            foreach = bool(pairs) and pairs[0][0].device.type == "cuda"
        if not foreach:
            for s, p in pairs:
                if p.requires_grad:
                    s.sub_(scale(s.dtype) * (s - p))
                else:
                    s.copy_(p)
            return
        frozen = [(s, p) for s, p in pairs if not p.requires_grad]
        if frozen:
            torch._foreach_copy_([s for s, _ in frozen], [p for _, p in frozen])
        by_type: dict[torch.dtype, list] = {}
        for s, p in pairs:
            if p.requires_grad:
                by_type.setdefault(s.dtype, []).append((s, p))
        for dtype, trained in by_type.items():
            shadows = [s for s, _ in trained]
            differences = torch._foreach_sub(shadows, [p for _, p in trained])
            # out of place: on a CPU, the in-place _foreach_mul_ rounds bfloat16 differently from mul
            steps = torch._foreach_mul(differences, scale(dtype))
            torch._foreach_sub_(shadows, steps)
