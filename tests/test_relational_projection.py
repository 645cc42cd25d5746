"""Text-embedding projections (Zarei et al. 2024): identity at initialisation, the window's receptive field."""

import pytest
import torch
from conftest import TINY_RELATIONAL_MODEL

from diffcomp.config import ConfigError, validate_config
from diffcomp.relational.config import run_definition
from diffcomp.relational.model import RelationalDenoiser
from diffcomp.relational.projection import PROJECTIONS, TextProjection
from diffcomp.relational.train import sample_relational_run, train_relational_run

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
        **TINY_RELATIONAL_MODEL,
        "pos_emb": "sinusoidal",
        "vertical_padding": "zeros",
        "text_pos_emb": "none",
    }
    run = {"icon_size": 16, "model": model_config, "text_encoder": {"max_length": LENGTH}}
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
            **TINY_RELATIONAL_MODEL,
            "cross_attention_levels": [],
            "pos_emb": "none",
            "vertical_padding": "zeros",
            "text_pos_emb": "none",
        },
        "text_encoder": {"max_length": LENGTH},
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


# ------------------------------------------------------------------------------------------------
# A projection experiment: fine-tunes the base experiment's runs, only the projection learns
# ------------------------------------------------------------------------------------------------
def projection_section(tmp_path, **projection):
    from test_relational_train import TINY, tiny_section

    section, runtime, icons = tiny_section(tmp_path)
    section["experiments"] = [
        {"name": "baseline"},
        {"name": "wiclp", "projection": {"base": "baseline", "variant": "window", **projection}},
    ]
    config = validate_config({"relational": {**TINY["relational"], "experiments": section["experiments"]}})
    section = {**section, "experiments": config["relational"]["experiments"]}
    return section, runtime, icons


def test_projection_run_trains_only_the_projection_on_top_of_its_base(tmp_path):
    from safetensors.torch import load_file

    section, runtime, icons = projection_section(tmp_path, steps=4)
    base = run_definition(section, "baseline", "band", 0)
    run = run_definition(section, "wiclp", "band", 0)
    assert run["stage"] == "projection" and run["init"] == base
    assert run["model"] == base["model"] and run["training"]["steps"] == 4
    base_dir, run_dir = tmp_path / "base" / "train", tmp_path / "wiclp" / "train"
    train_relational_run(base, runtime, icons, base_dir, train_csv=tmp_path / "train.csv")
    summary = train_relational_run(run, runtime, icons, run_dir, train_csv=tmp_path / "train.csv", init_dir=base_dir)
    assert summary["trained_parameters"] == sum(p.numel() for p in TextProjection("window", 16, window=2).parameters())
    before = load_file(str(sorted((base_dir / "snapshots").glob("*.safetensors"))[-1]))
    after = load_file(str(sorted((run_dir / "snapshots").glob("*.safetensors"))[-1]))
    assert set(after) - set(before) == {"projection.map.weight", "projection.map.bias"}
    for key, value in before.items():
        assert torch.equal(after[key], value), key  # the base model is untouched
    assert after["projection.map.weight"].abs().sum() > 0  # the projection learned
    # and sampling builds the same model (projection included) from the snapshot
    samples = sample_relational_run(
        run, section["sampling"], runtime, icons, tmp_path / "train.csv", tmp_path / "test.csv", run_dir, tmp_path / "s"
    )
    assert [p.name for p in samples] == ["step000000004.npz"]


@pytest.mark.parametrize(
    ("experiments", "message"),
    [
        (
            [{"name": "p", "projection": {"base": "baseline", "variant": "linear"}}, {"name": "baseline"}],
            "not an experiment listed before",
        ),
        (
            [
                {"name": "baseline"},
                {"name": "p", "projection": {"base": "baseline", "variant": "linear"}},
                {"name": "q", "projection": {"base": "p", "variant": "linear"}},
            ],
            "is itself a projection",
        ),
        (
            [
                {"name": "baseline"},
                {"name": "p", "pos_emb": "none", "projection": {"base": "baseline", "variant": "linear"}},
            ],
            "uses its base's model and encoder",
        ),
        (
            [
                {"name": "baseline", "splits": ["band"]},
                {"name": "p", "splits": ["other"], "projection": {"base": "baseline", "variant": "linear"}},
            ],
            "no split named 'other'",
        ),
    ],
)
def test_bad_projection_experiments_name_the_key(experiments, message):
    from test_relational_train import TINY

    with pytest.raises(ConfigError, match=message):
        validate_config({"relational": {**TINY["relational"], "experiments": experiments}})
