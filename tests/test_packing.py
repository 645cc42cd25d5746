"""Stacked models (diffcomp.packing): K models as one vmapped module compute what the K models compute."""

import copy
import functools

import pytest
import torch
from conftest import TINY_MODEL, TINY_RELATIONAL_MODEL
from torch import nn

from diffcomp.bumps.model import BumpDenoiser
from diffcomp.config import validate_config
from diffcomp.packing import StackedModels, VmapGroupNorm, stacked_key
from diffcomp.relational.model import RelationalDenoiser

K, B = 3, 4


def bump_models(k=K, **model):
    section = validate_config(
        {"bumps": {"image_size": 8, "grid": {"increments": [1.0], "sigmas": [1.0]}, "model": {**TINY_MODEL, **model}}}
    )["bumps"]
    models = []
    for seed in range(k):
        torch.manual_seed(seed)
        models.append(BumpDenoiser.from_config(section))
    return models


def bump_inputs(k=K):
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(k, B, 1, 8, 8, generator=generator)
    t = torch.randint(100, (k, B), generator=generator)
    y = torch.rand(k, B, 2, generator=generator) * 8
    return x, t, y


def test_vmap_group_norm_is_group_norm_exactly():
    norm = nn.GroupNorm(4, 16)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    swapped = VmapGroupNorm(4, 16)
    swapped.load_state_dict(norm.state_dict())
    x = torch.randn(5, 16, 6, 6)
    assert torch.equal(norm(x), swapped(x))


def test_vmap_group_norm_follows_autocast_as_nn_group_norm_does(monkeypatch):
    """autocast casts group_norm to float32 on CUDA (not on the CPU) and has no rule for the
    native_group_norm that VmapGroupNorm calls; VmapGroupNorm applies the rule itself."""
    from diffcomp import packing

    assert packing.autocast_runs_in_float32("group_norm", "cuda")  # the dispatcher's registration, no GPU needed
    assert not packing.autocast_runs_in_float32("group_norm", "cpu")
    norm = nn.GroupNorm(4, 16)
    swapped = VmapGroupNorm(4, 16)
    swapped.load_state_dict(norm.state_dict())
    x = torch.randn(5, 16, 6, 6).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = norm(x)
        assert expected.dtype == torch.bfloat16 and torch.equal(swapped(x), expected)  # the CPU's rule: none
        # CUDA's rule, applied on the CPU: normalised in float32, as nn.GroupNorm under CUDA autocast
        monkeypatch.setattr(packing, "autocast_runs_in_float32", lambda op, device_type: True)
        got = swapped(x)
    assert got.dtype == torch.float32 and torch.equal(got, norm(x.float()))
    assert swapped(x).dtype == torch.bfloat16  # autocast off: no cast


def test_stacked_forward_and_gradients_match_the_separate_models():
    models = bump_models()
    reference = models
    x, t, y = bump_inputs()
    expected = torch.stack([m(x[k], t[k], y[k]) for k, m in enumerate(reference)])
    expected.pow(2).mean(dim=(1, 2, 3, 4)).sum().backward()
    stacked = StackedModels(bump_models())  # the same seeds: the same initial weights
    got = stacked(x, t, y)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    got.pow(2).mean(dim=(1, 2, 3, 4)).sum().backward()
    for name, parameter in stacked.named_parameters():
        original = name.replace("__", ".")
        for k, model in enumerate(reference):
            torch.testing.assert_close(parameter.grad[k], model.get_parameter(original).grad, rtol=1e-4, atol=1e-6)


def test_one_stacked_adamw_is_k_separate_adamws():
    """AdamW is elementwise: given the same gradients, one optimiser over the stacked parameters
    makes each model's update exactly (the gradients themselves agree to rounding, tested above)."""
    models = bump_models()
    stacked = StackedModels(bump_models())
    x, t, y = bump_inputs()
    optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.01) for m in models]
    optimizer = torch.optim.AdamW(stacked.parameters(), lr=1e-2, weight_decay=0.01)
    for _ in range(3):
        for k, (model, single) in enumerate(zip(models, optimizers, strict=True)):
            single.zero_grad()
            model(x[k], t[k], y[k]).pow(2).mean().backward()
            single.step()
        for name, parameter in stacked.named_parameters():
            original = name.replace("__", ".")
            parameter.grad = torch.stack([m.get_parameter(original).grad for m in models])
        optimizer.step()
    for k, model in enumerate(models):
        for name, value in stacked.model_state_dict(k).items():
            assert torch.equal(value, model.state_dict()[name]), name


def test_model_state_dict_loads_into_a_single_model_exactly():
    stacked = StackedModels(bump_models())
    for k, original in enumerate(bump_models()):
        single = bump_models(1)[0]
        single.load_state_dict(stacked.model_state_dict(k))
        for name, value in original.state_dict().items():
            assert torch.equal(single.state_dict()[name], value), name
    with pytest.raises(IndexError):
        stacked.model_state_dict(K)


def test_relational_denoisers_stack_too():
    def build(seed):
        torch.manual_seed(seed)
        return RelationalDenoiser(icon_size=16, text_hidden_size=16, **TINY_RELATIONAL_MODEL)

    reference = [build(k) for k in range(2)]
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, B, 1, 32, 16, generator=generator)
    t = torch.randint(20, (2, B), generator=generator)
    states = torch.randn(2, B, 5, 16, generator=generator)
    mask = torch.ones(2, B, 5, dtype=torch.long)
    expected = torch.stack([m(x[k], t[k], (states[k], mask[k])) for k, m in enumerate(reference)])
    got = StackedModels([build(k) for k in range(2)])(x, t, (states, mask))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def module_output_types(model: nn.Module, call) -> dict[str, torch.dtype]:
    """The output dtype of every submodule of ``model`` (by name) while ``call()`` runs."""
    seen = {}

    def record(name):
        def hook(_module, _inputs, output):
            if isinstance(output, torch.Tensor):
                seen.setdefault(name, output.dtype)

        return hook

    hooks = [module.register_forward_hook(record(name)) for name, module in model.named_modules() if name]
    try:
        call()
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def pack_and_single_types(device: torch.device) -> list[tuple[dict, dict]]:
    """(single model's, pack's) module output types under bf16 autocast on ``device``, for a bump
    denoiser and a relational denoiser with a text projection."""
    from diffcomp.relational.projection import TextProjection

    def relational(seed):
        torch.manual_seed(seed)
        model = RelationalDenoiser(icon_size=16, text_hidden_size=16, **TINY_RELATIONAL_MODEL)
        model.projection = TextProjection("window", 16, window=1)
        return model.to(device)

    x, t, y = (v.to(device) for v in bump_inputs(2))
    images = torch.randn(2, B, 1, 32, 16, device=device)
    states, mask = torch.randn(2, B, 5, 16, device=device), torch.ones(2, B, 5, dtype=torch.long, device=device)
    cases = [
        ([m.to(device) for m in bump_models(2)], (x, t, y)),
        ([relational(k) for k in range(2)], (images, t, (states, mask))),
    ]
    found = []
    for models, (a, b, c) in cases:
        single = copy.deepcopy(models[0])  # StackedModels makes its models vmappable in place
        pack = StackedModels(models)
        one = c[0] if isinstance(c, torch.Tensor) else tuple(part[0] for part in c)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            found.append(
                (
                    module_output_types(single, functools.partial(single, a[0], b[0], one)),
                    module_output_types(pack.template[0], functools.partial(pack, a, b, c)),
                )
            )
    return found


def test_a_bf16_pack_computes_every_layer_in_the_type_its_single_run_does():
    """Under vmap, autocast's convolutions and linear layers returned float32 (the bias added after
    the bf16 product; on the CPU the convolution not cast at all): a bf16 pack ran at another
    precision than its single runs. Every layer's output type now matches: that check, not the values,
    is what tells a bf16 pack from an fp32 one (an fp32 pack is as close to the bf16 single runs:
    max 0.013, mean 0.0026). The values bound the batched kernels' rounding: measured max 0.020
    (outputs up to 1.15, a bf16 step there 0.009) and mean 0.0031; tolerances 0.03 and 0.006."""
    for single, packed in pack_and_single_types(torch.device("cpu")):
        assert len(single) > 40 and torch.bfloat16 in single.values()
        assert packed == single
    models = bump_models(2)
    x, t, y = bump_inputs(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = torch.stack([m(x[k], t[k], y[k]) for k, m in enumerate(models)])
        got = StackedModels(models)(x, t, y)
    assert got.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected.float(), rtol=0.0, atol=0.03)
    assert (got.float() - expected.float()).abs().mean() < 0.006


def test_models_of_different_shapes_do_not_stack():
    with pytest.raises(ValueError, match="one architecture"):
        StackedModels([*bump_models(1), *bump_models(1, label_encoding_dim=16)])


def test_per_model_clipping_is_each_models_own_clip_grad_norm():
    from diffcomp.packing import clip_grad_norm_per_model

    models = bump_models()
    stacked = StackedModels(bump_models())
    x, t, y = bump_inputs()
    for k, model in enumerate(models):
        model(x[k], t[k], y[k]).pow(2).mean().backward()
    stacked(x, t, y).pow(2).mean(dim=(1, 2, 3, 4)).sum().backward()
    expected_norms = torch.stack([torch.nn.utils.clip_grad_norm_(m.parameters(), 0.05) for m in models])
    norms = clip_grad_norm_per_model(list(stacked.parameters()), 0.05)
    torch.testing.assert_close(norms, expected_norms, rtol=1e-5, atol=0)
    assert (expected_norms > 0.05).all()  # every model is clipped
    for k, model in enumerate(models):
        expected = {n: p.grad for n, p in model.named_parameters()}
        for name in stacked.param_names:
            torch.testing.assert_close(stacked.get_parameter(stacked_key(name)).grad[k], expected[name])


def test_stacking_keeps_frozen_parameters_frozen():
    models = bump_models(2)
    for model in models:
        model.requires_grad_(False)
        model.unet.conv_out.requires_grad_(True)
    stacked = StackedModels(models)
    trained = [name for name, p in stacked.named_parameters() if p.requires_grad]
    assert trained == ["unet__conv_out__weight", "unet__conv_out__bias"]
