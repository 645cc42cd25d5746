"""Text-embedding projections (Zarei et al. 2024): identity at initialisation, the window's receptive field."""

import pytest
import torch

from diffcomp.relational.model import RelationalDenoiser
from diffcomp.relational.projection import PROJECTIONS, TextProjection

WIDTH, LENGTH = 16, 12


def states(seed=0, batch=3):
    return torch.randn(batch, LENGTH, WIDTH, generator=torch.Generator().manual_seed(seed))


def randomise(module, seed=1):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
    return module


@pytest.mark.parametrize("kind", PROJECTIONS)
def test_every_projection_starts_as_the_identity(kind):
    e = states()
    assert torch.equal(TextProjection(kind, WIDTH)(e), e)


def test_zero_initialised_projection_leaves_the_denoiser_unchanged_at_step_zero():
    model_config = {
        "block_out_channels": [8, 16],
        "layers_per_block": 1,
        "cross_attention_levels": [1],
        "cross_attention_dim": 16,
        "attention_head_dim": 4,
        "norm_num_groups": 4,
        "pos_emb": "sinusoidal",
        "self_attention": True,
    }
    run = {"icon_size": 16, "model": model_config}
    x = torch.randn(3, 1, 32, 16, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([1, 10, 19])
    condition = (states(), torch.ones(3, LENGTH, dtype=torch.long))
    outputs = []
    for kind in (None, *PROJECTIONS):
        torch.manual_seed(0)
        model = RelationalDenoiser.from_config(run, text_hidden_size=WIDTH)
        if kind is not None:
            model.projection = TextProjection(kind, WIDTH)
        with torch.no_grad():
            outputs.append(model.eval()(x, t, condition))
    for out in outputs[1:]:
        assert torch.equal(out, outputs[0])


@pytest.mark.parametrize("w", [0, 1, 2])
def test_window_projection_sees_exactly_2w_plus_1_tokens(w):
    projection = randomise(TextProjection("window", WIDTH, window=w))
    e = states()
    base = projection(e)
    for j in range(LENGTH):
        moved = e.clone()
        moved[:, j] += 1.0
        changed = (projection(moved) - base).abs().amax(dim=(0, 2)) > 0
        expected = torch.tensor([abs(i - j) <= w for i in range(LENGTH)])
        assert torch.equal(changed, expected), j
        if w <= j < LENGTH - w:
            assert int(changed.sum()) == 2 * w + 1


def test_projection_only_at_early_steps():
    projection = randomise(TextProjection("linear_skip", WIDTH, early_steps_above=50))
    e = states(batch=2)
    out = projection(e, torch.tensor([80, 20]))
    assert not torch.equal(out[0], e[0]) and torch.equal(out[1], e[1])


def test_only_the_projection_learns_when_the_rest_is_frozen():
    run = {
        "icon_size": 16,
        "model": {
            "block_out_channels": [8, 16],
            "layers_per_block": 1,
            "cross_attention_levels": [],
            "cross_attention_dim": 16,
            "attention_head_dim": 4,
            "norm_num_groups": 4,
            "pos_emb": "none",
            "self_attention": False,
        },
    }
    model = RelationalDenoiser.from_config(run, text_hidden_size=WIDTH)
    model.requires_grad_(False)
    model.projection = TextProjection("window", WIDTH)
    x = torch.randn(2, 1, 32, 16)
    out = model(x, torch.tensor([3, 7]), (states(batch=2), torch.ones(2, LENGTH, dtype=torch.long)))
    out.pow(2).mean().backward()
    assert model.projection.map.weight.grad is not None and model.projection.map.weight.grad.abs().sum() > 0
    assert all(p.grad is None for name, p in model.named_parameters() if not name.startswith("projection."))


def test_unknown_projection_is_an_error():
    with pytest.raises(ValueError, match="projection must be one of"):
        TextProjection("conv", WIDTH)
