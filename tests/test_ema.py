"""ForeachEMA: EMAModel's per-tensor update bit for bit, in a number of operations that does not
grow with the number of tensors (on a GPU, kernel launches; there it is the default)."""

import pytest
import torch
from conftest import ema_parameters, perturb
from diffusers.training_utils import EMAModel
from torch.utils._python_dispatch import TorchDispatchMode

from diffcomp.ema import ForeachEMA


@pytest.mark.parametrize("foreach_update", [True, None], ids=["foreach", "default"])
@pytest.mark.parametrize(
    "options",
    [{"decay": 0.99}, {"decay": 0.9999}, {"decay": 0.999, "use_ema_warmup": True, "min_decay": 0.5}],
    ids=["0.99", "0.9999", "warmup"],
)
def test_foreach_ema_equals_diffusers_per_tensor_update_bit_for_bit(options, foreach_update):
    """Both update forms (None = the loop on this CPU) equal EMAModel's own bit for bit."""
    parameters = ema_parameters(0, count=6)
    with torch.no_grad():
        parameters[4].data = parameters[4].data.to(torch.bfloat16)  # a second compute type
    reference = EMAModel(parameters, **options)
    foreach = ForeachEMA(parameters, foreach_update=foreach_update, **options)
    generator = torch.Generator().manual_seed(1)
    for _ in range(30):
        perturb(parameters, generator)
        reference.step(parameters)
        foreach.step(parameters)
        assert foreach.optimization_step == reference.optimization_step
        assert foreach.cur_decay_value == reference.cur_decay_value
        for a, b in zip(reference.shadow_params, foreach.shadow_params, strict=True):
            assert a.dtype == b.dtype and torch.equal(a, b)
    # the state is EMAModel's: each resumes from the other's
    again = EMAModel(parameters, **options)
    again.load_state_dict(foreach.state_dict())
    back = ForeachEMA(parameters, foreach_update=foreach_update, **options)
    back.load_state_dict(reference.state_dict())
    for ema in (reference, foreach, again, back):
        ema.step(parameters)
    for a, b, c, d in zip(*(e.shadow_params for e in (reference, foreach, again, back)), strict=True):
        assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(a, d)


class _CountOperations(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def _operations_per_step(ema_class, parameters, **kwargs) -> int:
    ema = ema_class(parameters, decay=0.99, **kwargs)
    ema.step(parameters)  # the first step (decay 0) is no different, but count a later one
    with _CountOperations() as counter:
        ema.step(parameters)
    return counter.count


def test_foreach_ema_takes_a_fixed_number_of_operations_per_step():
    """Three per trained tensor for EMAModel's loop (each a kernel launch on a GPU); a constant
    for ForeachEMA, however many tensors there are."""
    small, large = ema_parameters(0, count=6), ema_parameters(0, count=60)
    trained = sum(p.requires_grad for p in large) - sum(p.requires_grad for p in small)
    per_tensor = _operations_per_step(EMAModel, large) - _operations_per_step(EMAModel, small)
    assert per_tensor == 3 * trained
    foreach = {"foreach_update": True}
    assert _operations_per_step(ForeachEMA, large, **foreach) == _operations_per_step(ForeachEMA, small, **foreach) <= 5
    # on a CPU the default is EMAModel's loop
    assert _operations_per_step(ForeachEMA, large) - _operations_per_step(ForeachEMA, small) == 3 * trained


def test_foreach_ema_refuses_the_foreach_flag():
    with pytest.raises(ValueError, match="per-tensor arithmetic"):
        ForeachEMA(ema_parameters(0), decay=0.9, foreach=True)
