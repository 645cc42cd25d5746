"""Classifier-free guidance: config and fingerprints, conditioning dropout, guided sampling."""

import copy

import numpy as np
import pytest
import torch
from test_relational_train import TINY, tiny_section, weights

from diffcomp.config import ConfigError, validate_config
from diffcomp.relational.config import (
    packs,
    pretrain_definition,
    run_definition,
    sampling_definition,
    unpackable_reason,
)
from diffcomp.relational.text import build_caption_encoder
from diffcomp.relational.train import (
    Conditioner,
    guided_prediction,
    sample_relational_run,
    train_relational_run,
    with_null,
)


def section_with(*experiments, **study):
    config = copy.deepcopy(TINY)
    config["relational"]["experiments"] = list(experiments)
    config["relational"].update(study)
    return validate_config(config)["relational"]


def test_guidance_off_leaves_run_and_sampling_fingerprints_as_they_were():
    section = section_with({"name": "baseline"})
    assert section["guidance"] == {"condition_dropout": 0.0, "scale": 1.0}
    run = run_definition(section, "baseline", "band", 0)
    assert "condition_dropout" not in run["training"]
    assert sampling_definition(section, "baseline") == section["sampling"]


def test_an_experiments_guidance_reaches_its_runs_pretraining_and_samples_only():
    section = section_with(
        {"name": "baseline"},
        {"name": "cfg", "guidance": {"condition_dropout": 0.1, "scale": 2.0}},
        {"name": "cfg_wiclp", "projection": {"base": "cfg", "variant": "window", "steps": 4}},
        single_object_pretraining_steps=4,
    )
    assert "condition_dropout" not in run_definition(section, "baseline", "band", 0)["training"]
    run = run_definition(section, "cfg", "band", 0)
    assert run["training"]["condition_dropout"] == 0.1
    assert run["init"]["training"]["condition_dropout"] == 0.1  # its pretraining run
    assert pretrain_definition(section, "cfg", "band", 0)["training"]["condition_dropout"] == 0.1
    assert sampling_definition(section, "cfg") == {**section["sampling"], "guidance_scale": 2.0}
    # a projection fine-tunes without dropout, on the guided base, and samples as the base does
    projection = run_definition(section, "cfg_wiclp", "band", 0)
    assert "condition_dropout" not in projection["training"]
    assert projection["init"] == run
    assert sampling_definition(section, "cfg_wiclp")["guidance_scale"] == 2.0
    # dropout runs are not packed; the baseline still is
    assert unpackable_reason(run) == "conditioning dropout is not packed"
    assert set(packs({**section, "pack_size": 2})) == {"baseline", "cfg_wiclp"}


def test_a_study_wide_scale_is_overridden_key_by_key():
    section = section_with(
        {"name": "baseline"},
        {"name": "stronger", "guidance": {"scale": 3.0}},
        guidance={"condition_dropout": 0.2, "scale": 1.5},
    )
    assert sampling_definition(section, "baseline")["guidance_scale"] == 1.5
    assert sampling_definition(section, "stronger")["guidance_scale"] == 3.0
    assert run_definition(section, "stronger", "band", 0)["training"]["condition_dropout"] == 0.2


@pytest.mark.parametrize(
    ("experiment", "study", "message"),
    [
        (
            {"name": "b", "guidance": {"scale": 2.0}},
            {},
            r"relational.experiments\[0\].guidance.scale: 2.0 needs condition_dropout > 0",
        ),
        ({"name": "b"}, {"guidance": {"scale": 0.0}}, r"relational.guidance.scale: 0.0 needs condition_dropout"),
        (
            {"name": "b", "guidance": {"condition_dropout": 0.1}, "contrastive": {"fake_to_real": 0.1}},
            {},
            r"relational.experiments\[0\].guidance.condition_dropout: not with contrastive losses",
        ),
        (
            {"name": "p", "projection": {"base": "a", "variant": "linear"}, "guidance": {"scale": 2.0}},
            {},
            r"a projection experiment uses its base's model and encoder; drop \['guidance'\]",
        ),
    ],
)
def test_guidance_that_cannot_work_is_refused_naming_the_key(experiment, study, message):
    experiments = [{"name": "a"}, experiment] if "projection" in experiment else [experiment]
    if "projection" not in experiment:
        message = message.replace(r"experiments\[0\]", rf"experiments\[{len(experiments) - 1}\]")
    with pytest.raises(ConfigError, match=message):
        section_with(*experiments, **study)  # validate_config runs check_relational


@pytest.mark.parametrize("bad", [{"condition_dropout": 1.0}, {"condition_dropout": -0.1}, {"scale": -1}, {"w": 2}])
def test_schema_refuses_out_of_range_guidance(bad):
    with pytest.raises(ConfigError, match="guidance"):
        section_with({"name": "baseline"}, guidance=bad)


@pytest.fixture(scope="module")
def encoder():
    return build_caption_encoder(
        "t5-scratch", ["star", "heart"], seed=0, d_model=8, num_layers=1, num_heads=2, d_ff=16, max_length=12
    )


def test_conditioner_keeps_captions_in_place_and_appends_the_empty_caption(encoder):
    captions = ["a star is on top of a heart.", "a heart is on top of a star."]
    plain = Conditioner(encoder, captions, torch.device("cpu"))
    with_null = Conditioner(encoder, captions, torch.device("cpu"), unconditional=True)
    assert plain.count == with_null.count == 2 and plain.null_index is None and with_null.null_index == 2
    index = torch.tensor([1, 0, 1])
    for a, b in zip(plain(index), with_null(index), strict=True):
        assert torch.equal(a, b)
    null_states, null_mask = with_null.unconditional(3)
    empty_states, empty_mask = encoder.encode([""])
    assert torch.equal(null_states, empty_states.expand(3, -1, -1))
    assert null_mask.tolist() == [[1] + [0] * 11] * 3  # "" is the end-of-sequence token alone
    with pytest.raises(ValueError, match="unconditional=True"):
        plain.drop(index, 0.5, torch.Generator())


def test_conditioning_dropout_replaces_the_drawn_fraction_with_the_null_condition(encoder):
    conditioner = Conditioner(encoder, ["a star is on top of a heart."] * 5, torch.device("cpu"), unconditional=True)
    index = torch.arange(5).repeat(2000)
    dropped = conditioner.drop(index, 0.1, torch.Generator().manual_seed(0))
    is_null = dropped == 5
    assert torch.equal(dropped[~is_null], index[~is_null])  # the others keep their caption
    assert abs(is_null.float().mean().item() - 0.1) < 0.01  # 1,000 of 10,000 expected; sd 30
    again = conditioner.drop(index, 0.1, torch.Generator().manual_seed(0))
    assert torch.equal(dropped, again)
    assert torch.equal(conditioner.drop(index, 0.0, torch.Generator()), index)


def test_guided_prediction_is_the_ho_salimans_combination():
    torch.manual_seed(0)
    weight = torch.randn(3)

    def model(x, t, condition):
        tokens, mask = condition
        per_image = tokens.sum(dim=(1, 2)) * mask.sum(1) + t  # depends on the condition and t
        return x * weight.sum() + per_image.view(-1, 1, 1, 1)

    x, t = torch.randn(4, 1, 2, 2), torch.arange(4)
    condition = (torch.randn(4, 5, 3), torch.ones(4, 5, dtype=torch.long))
    null = (torch.randn(1, 5, 3), torch.tensor([[1, 0, 0, 0, 0]]))

    def unconditional(count):
        return null[0].expand(count, -1, -1), null[1].expand(count, -1)

    conditional, plain = model(x, t, condition), model(x, t, unconditional(4))
    assert torch.equal(guided_prediction(model, x, t, condition, 1.0), conditional)
    both = with_null(condition, unconditional(4))
    for scale in (0.0, 2.5):
        expected = plain + scale * (conditional - plain)
        assert torch.allclose(guided_prediction(model, x, t, both, scale), expected, atol=1e-6)


def test_dropout_trains_the_empty_caption_and_guided_samples_differ(tmp_path):
    section, runtime, icons = tiny_section(tmp_path)
    section["experiments"] = [{"name": "cfg", "guidance": {"condition_dropout": 0.5, "scale": 3.0}}]
    section["guidance"] = {"condition_dropout": 0.0, "scale": 1.0}
    run = run_definition(section, "cfg", "band", 0)
    seen = []
    from diffcomp.relational import model as relational_model

    forward = relational_model.RelationalDenoiser.forward

    def recording(self, x, t, condition):
        seen.append(condition[1][:, 1].clone())  # the mask's second token: 0 only for ""
        return forward(self, x, t, condition)

    out = tmp_path / "train"
    relational_model.RelationalDenoiser.forward = recording
    try:
        train_relational_run(run, runtime, icons, out, train_csv=tmp_path / "train.csv")
    finally:
        relational_model.RelationalDenoiser.forward = forward
    masks = torch.cat(seen)
    assert 0.2 < (masks == 0).float().mean().item() < 0.8  # 32 images, half expected unconditional
    assert weights(out)  # trained to the end

    sampled = {}
    for scale in (1.0, 3.0):
        sampling = {**section["sampling"], "sampler": "ddim"}
        if scale != 1:
            sampling["guidance_scale"] = scale
        files = sample_relational_run(
            run, sampling, runtime, icons, tmp_path / "train.csv", tmp_path / "test.csv", out, tmp_path / f"s{scale}"
        )
        sampled[scale] = np.load(files[-1])["images"]
    assert sampled[1.0].shape == sampled[3.0].shape
    assert not np.array_equal(sampled[1.0], sampled[3.0])


def test_condition_sensitivity_bench_reads_a_trained_run_and_is_zero_for_a_caption_blind_model(tmp_path, monkeypatch):
    """bench/relational_sensitivity.py: how far swapping a caption's nouns, or describing the same
    image the other way, moves a run's prediction; exactly 0 when the model ignores its caption."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "relational_sensitivity.py"
    spec = importlib.util.spec_from_file_location("relational_sensitivity", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    section, runtime, icons = tiny_section(tmp_path)
    run = run_definition(section, "baseline", "band", 0)
    train_relational_run(run, runtime, icons, tmp_path / "train", train_csv=tmp_path / "train.csv")
    rows = bench.sensitivity(run, icons, tmp_path / "train.csv", tmp_path / "train", timesteps=(5, 15))
    assert [(row["step"], row["t"]) for row in rows] == [(8, 5), (8, 15)]
    assert all(row["swap"] > 0 and row["partner"] > 0 for row in rows)  # the caption reaches the model

    from diffcomp.relational import model as relational_model

    def caption_blind(self, x, t, condition):
        return x * 0.5

    monkeypatch.setattr(relational_model.RelationalDenoiser, "forward", caption_blind)
    blind = bench.sensitivity(run, icons, tmp_path / "train.csv", tmp_path / "train", timesteps=(5,))
    assert blind[0]["swap"] == 0 and blind[0]["partner"] == 0
