import copy
from pathlib import Path

import pytest
import yaml

from diffcomp.bumps.config import dataset_specs
from diffcomp.config import ConfigError, load_config, validate_config

REPO = Path(__file__).resolve().parents[1]


def quick() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


@pytest.mark.parametrize("name", ["config.yaml", "config.paper.yaml"])
def test_shipped_configs_are_valid(name):
    config = load_config(REPO / name)
    assert dataset_specs(config["bumps"])


def test_medium_config_is_the_quick_relational_model_trained_longer_with_more_runs():
    quick_section = load_config(REPO / "config.yaml")["relational"]
    medium = load_config(REPO / "config.medium.yaml")
    assert "bumps" not in medium
    section = medium["relational"]
    assert section["seeds"] == [0, 1, 2]
    for key in ("text_encoder", "model", "diffusion", "sampling", "icon_size"):
        assert section[key] == quick_section[key], key
    # the same batch, warm-up and loss; the medium scale keeps 1,200 steps of cosine decay from 3e-3
    # with EMA 0.99, where the quick scale takes 600 steps at a constant 4e-3 with EMA 0.95
    schedule = ("steps", "learning_rate", "checkpoint_every", "lr_schedule", "ema_decay")
    assert [section["training"][k] for k in schedule] == [1200, 0.003, 300, "cosine", 0.99]
    assert [quick_section["training"][k] for k in schedule] == [600, 0.004, 150, "constant_with_warmup", 0.95]
    rest = [k for k in section["training"] if k not in schedule]
    assert {k: section["training"][k] for k in rest} == {k: quick_section["training"][k] for k in rest}


def test_defaults_are_filled_in():
    config = validate_config({"bumps": {"grid": {"increments": [1.0], "sigmas": [1.0]}}})
    assert config["seed"] == 0
    assert config["bumps"]["image_size"] == 32
    assert config["bumps"]["seeds"] == [0]


def test_grid_expands_to_named_datasets():
    specs = dataset_specs({"grid": {"increments": [0.5, 1.0], "sigmas": [1.0, 2.0]}, "datasets": []})
    assert sorted(specs) == ["inc0.5_sig1", "inc0.5_sig2", "inc1_sig1", "inc1_sig2"]


def _broken(edit):
    config = quick()
    edit(config)
    return config


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["bumps"]["grid"].update(increments=[0.0]), r"bumps\.grid\.increments\[0\].*less than or equal"),
        (
            lambda c: (
                c["bumps"].setdefault("figures", {}).update(diagram_accuracy="accuracy_offgrid"),
                c["bumps"].setdefault("sampling", {}).update(num_samples_offgrid=0),
            ),
            r"bumps\.figures\.diagram_accuracy: accuracy_offgrid needs off-grid samples",
        ),
        (
            lambda c: c["bumps"].setdefault("sampling", {}).update(num_samples_offgrid=8, offgrid_margin=20),
            r"bumps\.sampling\.offgrid_margin: 20 leaves no interior",
        ),
        (lambda c: c["bumps"]["grid"].update(increments=[-1]), r"bumps\.grid\.increments\[0\]"),
        (lambda c: c["bumps"]["grid"].update(increments=[40.0]), r"increment_x = 40.0 is larger than the canvas"),
        (lambda c: c["bumps"]["grid"].update(sigmas=[0]), r"bumps\.grid\.sigmas\[0\]"),
        (lambda c: c["bumps"]["datasets"][0].update(sigma=-1.0), r"bumps\.datasets\[0\]\.sigma"),
        (lambda c: c["bumps"].update(image_size="16"), r"bumps\.image_size: '16' is not of type 'integer'"),
        (lambda c: c["bumps"].update(learning_rate=1), r"Additional properties.*'learning_rate'"),
        (lambda c: c.update(bumpz={}), r"<top level>: Additional properties.*'bumpz'"),
        (
            lambda c: c["bumps"]["datasets"][2]["holes"][0].update(center=[15.5, 8.0]),
            r"hole 'centre' reaches outside the canvas",
        ),
        (
            lambda c: c["bumps"]["datasets"][2]["holes"].append(
                {"name": "all", "shape": "rect", "x": [0, 16], "y": [0, 16]}
            ),
            r"cover every label",
        ),
        (
            lambda c: c["bumps"]["datasets"][2]["holes"].append({"name": "bad", "shape": "rect", "center": [1, 1]}),
            r"bumps\.datasets\[2\]\.holes\[1\]",
        ),
        (lambda c: c["bumps"]["datasets"].append(copy.deepcopy(c["bumps"]["datasets"][0])), r"used twice"),
        (lambda c: c["bumps"].update(seeds=[0, 0]), r"bumps\.seeds.*non-unique"),
        (lambda c: c["bumps"]["figures"].update(phases_run="nope_seed0"), r"bumps\.figures\.phases_run: 'nope_seed0'"),
        (lambda c: c["bumps"]["model"].update(attention_levels=[2]), r"attention_levels \[2\]: the UNet has only 2"),
        (
            lambda c: c["bumps"]["model"].update(attention_levels=[1], attention_head_dim=12),
            r"bumps\.model\.attention_head_dim: 12 does not divide the channels of attention level\(s\) \{1: 32\}",
        ),
    ],
)
def test_bad_values_name_key_and_rule(edit, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(_broken(edit))


def test_attention_head_dim_sets_the_heads_and_absent_keeps_the_fingerprint():
    """Absent means 8 heads' width, as before the key existed, and leaves the run definition alone;
    set, it gives channels // width heads at every attention level."""
    from diffcomp.bumps.config import semantic_config
    from diffcomp.bumps.model import BumpDenoiser

    config = quick()
    config["bumps"]["model"]["attention_levels"] = [1]  # the quick model has no attention
    section = validate_config(config)["bumps"]
    spec = next(iter(dataset_specs(section).values()))
    assert "attention_head_dim" not in semantic_config(section, spec, 0)["model"]

    def heads(model):
        return sorted({m.heads for m in model.modules() if type(m).__name__ == "Attention"})

    channels = section["model"]["block_out_channels"][1]
    assert heads(BumpDenoiser.from_config(section)) == [channels // 8]
    wide = copy.deepcopy(config)
    wide["bumps"]["model"]["attention_head_dim"] = channels
    section = validate_config(wide)["bumps"]
    assert heads(BumpDenoiser.from_config(section)) == [1]
    assert semantic_config(section, spec, 0)["model"]["attention_head_dim"] == channels
