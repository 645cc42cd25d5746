"""Relational training on the shared trainer: resume, NaN stop, two stages, position embedding, sampling."""

import numpy as np
import pytest
import torch
from conftest import TINY_RELATIONAL_MODEL, TINY_TEXT_ENCODER
from safetensors.torch import load_file

from diffcomp.config import RUNTIME_KEYS, validate_config
from diffcomp.io import write_csv
from diffcomp.relational.config import pretrain_definition, run_definition
from diffcomp.relational.data import triples_frame
from diffcomp.relational.icons import nouns, render_icons, save_icons
from diffcomp.relational.model import RelationalDenoiser, sinusoidal_1d, sinusoidal_2d
from diffcomp.relational.splits import Split
from diffcomp.relational.train import build_run, read_run_inputs, sample_relational_run, train_relational_run
from diffcomp.training import NonFiniteLoss, RunPaths, TrainingInterrupted

N = 4
TINY = {
    "relational": {
        "icon_size": 16,
        "splits": [{"name": "band", "family": "band", "vocab_size": N, "m": 1}],
        "text_encoder": TINY_TEXT_ENCODER,
        "model": TINY_RELATIONAL_MODEL,
        "diffusion": {"num_train_timesteps": 20},
        "training": {
            "steps": 8,
            "batch_size": 4,
            "learning_rate": 0.001,
            "warmup_steps": 2,
            "lr_schedule": "cosine",
            "ema_decay": 0.9,
            "checkpoint_every": 4,
            "log_every": 2,
        },
        "sampling": {"num_train": 3, "num_test": 2, "num_inference_steps": 2, "batch_size": 4},
        "experiments": [{"name": "baseline"}],
    }
}


def tiny_section(tmp_path, *, trainable=False, single_object_pretraining_steps=0, **model):
    config = validate_config(TINY)
    section = config["relational"]
    section["text_encoder"]["trainable"] = trainable
    section["model"].update(model)
    section["single_object_pretraining_steps"] = single_object_pretraining_steps
    icons = tmp_path / "icons.npz"
    save_icons(icons, render_icons(N, 16), nouns(N))
    train, test = Split.from_config(section["splits"][0]).triples()
    write_csv(tmp_path / "train.csv", triples_frame(train, nouns(N)))
    write_csv(tmp_path / "test.csv", triples_frame(test, nouns(N)))
    runtime = {k: section["training"][k] for k in RUNTIME_KEYS}
    return section, runtime, icons


def weights(out_dir, name=None):
    snapshots = sorted((out_dir / "snapshots").glob("*.safetensors"))
    return load_file(str(snapshots[-1] if name is None else out_dir / "snapshots" / name))


def assert_identical(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("trainable", [False, True], ids=["frozen-encoder", "trained-encoder"])
def test_resume_is_bit_identical(tmp_path, trainable):
    section, runtime, icons = tiny_section(tmp_path, trainable=trainable)
    run = run_definition(section, "baseline", "band", 0)
    reference = tmp_path / "a" / "train"
    summary = train_relational_run(run, runtime, icons, reference, train_csv=tmp_path / "train.csv")
    assert summary["snapshot_steps"] == [4, 8]
    encoder_keys = [k for k in weights(reference) if k.startswith("text_encoder.")]
    # a trained encoder is part of the model's checkpoints; a frozen one is rebuilt from its seed
    assert bool(encoder_keys) == trainable

    resumed = tmp_path / "b" / "train"
    with pytest.raises(TrainingInterrupted, match="stopped at step 5/8"):
        train_relational_run(run, runtime, icons, resumed, train_csv=tmp_path / "train.csv", stop_after_step=5)
    assert not resumed.exists()
    summary = train_relational_run(run, runtime, icons, resumed, train_csv=tmp_path / "train.csv")
    assert summary["steps_this_job"] == 3
    for name in ("step000000004.safetensors", "step000000008.safetensors"):
        assert_identical(weights(reference, name), weights(resumed, name))
    assert (reference / "loss.csv").read_text() == (resumed / "loss.csv").read_text()


def test_nan_loss_stops_before_any_checkpoint(tmp_path, monkeypatch):
    section, runtime, icons = tiny_section(tmp_path)
    run = run_definition(section, "baseline", "band", 0)
    real_mse = torch.nn.functional.mse_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real_mse(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(torch.nn.functional, "mse_loss", poisoned)
    out = tmp_path / "run" / "train"
    with pytest.raises(NonFiniteLoss, match=r"band seed 0: loss became nan between steps 3 and 4"):
        train_relational_run(run, runtime, icons, out, train_csv=tmp_path / "train.csv")
    assert not out.exists()
    assert not list(RunPaths.for_run(out, run).state_dir.glob("state_step*.pt"))


def test_pair_training_starts_from_the_pretraining_weights(tmp_path):
    section, runtime, icons = tiny_section(tmp_path, single_object_pretraining_steps=8)
    pretrain = pretrain_definition(section, "baseline", "band", 0)
    assert pretrain["training"]["steps"] == 8 and pretrain["stage"] == "pretrain"
    pre_dir = tmp_path / "pre" / "train"
    summary = train_relational_run(pretrain, runtime, icons, pre_dir, train_csv=tmp_path / "train.csv")
    assert summary["captions"] == N  # "an image of a {noun}." for each noun

    run = run_definition(section, "baseline", "band", 0)
    assert run["init"] == pretrain  # the pretraining config is part of the pair run's fingerprint
    from_pretrained = tmp_path / "b" / "train"
    train_relational_run(run, runtime, icons, from_pretrained, train_csv=tmp_path / "train.csv", init_dir=pre_dir)
    from_scratch = tmp_path / "c" / "train"
    train_relational_run(run, runtime, icons, from_scratch, train_csv=tmp_path / "train.csv")
    a, b = weights(from_pretrained), weights(from_scratch)
    assert any(not torch.equal(a[k], b[k]) for k in a)

    # it starts from every tensor of the pretraining run's last snapshot, not an earlier one
    snapshots = sorted((pre_dir / "snapshots").glob("*.safetensors"))
    first, last = load_file(str(snapshots[0])), load_file(str(snapshots[-1]))
    assert len(snapshots) == 2 and any(not torch.equal(first[k], last[k]) for k in last)
    inputs = read_run_inputs(run, icons, train_csv=tmp_path / "train.csv", init_dir=pre_dir)
    model, _, _ = build_run(inputs, batch_size=4, device=torch.device("cpu"))
    state = model.state_dict()
    assert last.keys() == {k for k in state if k in last} and len(last) > 50
    for key, value in last.items():
        assert torch.equal(state[key], value), key


def test_learned_position_embedding_is_applied_and_trained(tmp_path):
    section, runtime, icons = tiny_section(tmp_path, pos_emb="learned")
    run = run_definition(section, "baseline", "band", 0)
    out = tmp_path / "run" / "train"
    train_relational_run(run, runtime, icons, out, train_csv=tmp_path / "train.csv")
    position = weights(out)["unet.conv_in.position"]
    assert position.shape == (1, 8, 32, 16) and position.abs().max() > 1e-4  # it starts at zero
    model = RelationalDenoiser.from_config(run, text_hidden_size=16)
    model.load_state_dict(weights(out), strict=False)
    x, t = torch.randn(2, 1, 32, 16), torch.tensor([3, 9])
    condition = (torch.randn(2, 12, 16), torch.ones(2, 12, dtype=torch.long))
    with torch.no_grad():
        trained = model.eval()(x, t, condition)
        model.unet.conv_in.position.zero_()
        assert not torch.allclose(model(x, t, condition), trained)


def test_zero_initialised_learned_position_embedding_is_a_no_op_at_step_zero(tmp_path):
    section, _, _ = tiny_section(tmp_path)
    run = run_definition(section, "baseline", "band", 0)
    outputs = {}
    x = torch.randn(3, 1, 32, 16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 5, 19])
    states = torch.randn(3, 6, 16, generator=torch.Generator().manual_seed(2))
    mask = torch.ones(3, 6, dtype=torch.long)
    for kind in ("learned", "none", "sinusoidal"):
        torch.manual_seed(0)
        model = RelationalDenoiser.from_config({**run, "model": {**run["model"], "pos_emb": kind}}, text_hidden_size=16)
        with torch.no_grad():
            outputs[kind] = model.eval()(x, t, (states, mask))
    assert torch.equal(outputs["learned"], outputs["none"])
    assert not torch.allclose(outputs["sinusoidal"], outputs["none"])


def test_sinusoidal_position_embedding_values_tell_every_pixel_apart():
    emb = sinusoidal_2d(8, 32, 16)[0]  # (C, H, W)
    assert emb.shape == (8, 32, 16)
    # channels: sin(row f_k), cos(row f_k), sin(col f_k), cos(col f_k), f_k = 10000^(-k / 2), k = 0, 1
    rows, cols = np.meshgrid(np.arange(32.0), np.arange(16.0), indexing="ij")
    f = 10_000.0 ** (-np.arange(2) / 2)
    expected = np.concatenate(
        [np.sin(rows * f[:, None, None]), np.cos(rows * f[:, None, None]),
         np.sin(cols * f[:, None, None]), np.cos(cols * f[:, None, None])]
    )  # fmt: skip
    np.testing.assert_allclose(emb.numpy(), expected, rtol=0, atol=1e-6)  # measured: 3e-8 (float32)
    flat = emb.flatten(1).T  # one row per pixel
    assert len(torch.unique(flat, dim=0)) == 32 * 16
    with pytest.raises(ValueError, match="divisible by 4"):
        sinusoidal_2d(6, 4, 4)


def test_text_position_embedding_tells_swapped_captions_apart(tmp_path):
    """Without it the model reads the token states as a set: the same states in another order give
    exactly the same output; with it (sinusoidal, or learned once trained) they do not."""
    section, _, _ = tiny_section(tmp_path)
    run = run_definition(section, "baseline", "band", 0)
    x = torch.randn(2, 1, 32, 16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([3, 11])
    states = torch.randn(2, 6, 16, generator=torch.Generator().manual_seed(2))
    swapped = states[:, [0, 4, 2, 3, 1, 5]]  # the two "nouns" (tokens 1 and 4) trade places
    mask = torch.ones(2, 6, dtype=torch.long)
    outputs = {}
    for kind in ("none", "sinusoidal", "learned"):
        torch.manual_seed(0)
        model = RelationalDenoiser.from_config(
            {**run, "model": {**run["model"], "text_pos_emb": kind}}, text_hidden_size=16
        ).eval()
        if kind == "learned":
            assert model.text_position.position.abs().sum() == 0  # starts as "none"
            with torch.no_grad():
                model.text_position.position.normal_(generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            outputs[kind] = (model(x, t, (states, mask)), model(x, t, (swapped, mask)))
    torch.testing.assert_close(*outputs["none"], rtol=1e-5, atol=1e-6)
    for kind in ("sinusoidal", "learned"):
        difference = (outputs[kind][0] - outputs[kind][1]).abs().max()
        assert difference > 1e-3, kind


def test_sinusoidal_text_position_embedding_values():
    emb = sinusoidal_1d(8, 50)[0]  # (L, C): sin(i f_k) for k = 0..3, then cos(i f_k); f_k = 10000^(-k / 4)
    i = np.arange(50.0)[:, None]
    f = 10_000.0 ** (-np.arange(4) / 4)  # 1, 0.1, 0.01, 0.001
    expected = np.concatenate([np.sin(i * f), np.cos(i * f)], axis=1)
    np.testing.assert_allclose(emb.numpy(), expected, rtol=0, atol=1e-6)  # measured: 3e-8 (float32)
    with pytest.raises(ValueError, match="even channel count"):
        sinusoidal_1d(5, 3)


def test_only_learned_position_embeddings_are_saved_with_the_weights(tmp_path):
    """A fixed sinusoidal embedding is rebuilt from the config (a non-persistent buffer), so
    snapshots, resume states and packs' state keys hold trained weights only; a learned one is a
    weight and is saved."""
    section, _, _ = tiny_section(tmp_path)
    run = run_definition(section, "baseline", "band", 0)
    saved = {}
    for kind in ("sinusoidal", "learned"):
        model = RelationalDenoiser.from_config(
            {**run, "model": {**run["model"], "pos_emb": kind, "text_pos_emb": kind}}, text_hidden_size=16
        )
        assert model.unet.conv_in.position.shape == (1, 8, 32, 16)
        assert model.text_position.position.shape[-1] == 16
        saved[kind] = sorted(key for key in model.state_dict() if key.endswith("position"))
    assert saved["sinusoidal"] == []
    assert saved["learned"] == ["text_position.position", "unet.conv_in.position"]


def test_sampling_is_deterministic_and_holds_what_the_evaluator_reads(tmp_path):
    section, runtime, icons = tiny_section(tmp_path)
    run = run_definition(section, "baseline", "band", 0)
    train_dir = tmp_path / "run" / "train"
    train_relational_run(run, runtime, icons, train_dir, train_csv=tmp_path / "train.csv")
    args = (run, section["sampling"], runtime, icons, tmp_path / "train.csv", tmp_path / "test.csv", train_dir)
    first = sample_relational_run(*args, tmp_path / "s1")
    second = sample_relational_run(*args, tmp_path / "s2")
    assert [p.name for p in first] == ["step000000004.npz", "step000000008.npz"]
    for a, b in zip(first, second, strict=True):
        with np.load(a) as x, np.load(b) as y:
            assert x["images"].shape == (5, 32, 16)
            assert list(x["split"]) == ["train"] * 3 + ["test"] * 2
            for key in ("images", "top", "bottom", "relation"):
                np.testing.assert_array_equal(x[key], y[key])
    # the held-out triples really are held out
    with np.load(first[0]) as x:
        train, test = Split.from_config(section["splits"][0]).triples()
        sampled = np.stack([x["top"], x["bottom"], x["relation"]], axis=1)
        train_set = {tuple(t) for t in train}
        assert all(tuple(t) in train_set for t in sampled[:3])
        assert not any(tuple(t) in train_set for t in sampled[3:])


def test_corrupt_snapshot_is_a_clear_error(tmp_path):
    section, runtime, icons = tiny_section(tmp_path)
    run = run_definition(section, "baseline", "band", 0)
    train_dir = tmp_path / "run" / "train"
    train_relational_run(run, runtime, icons, train_dir, train_csv=tmp_path / "train.csv")
    snapshot = sorted((train_dir / "snapshots").glob("*.safetensors"))[0]
    snapshot.unlink()
    snapshot.write_bytes(b"not a safetensors file")
    args = (run, section["sampling"], runtime, icons, tmp_path / "train.csv", tmp_path / "test.csv", train_dir)
    with pytest.raises(ValueError, match="corrupt or unreadable"):
        sample_relational_run(*args, tmp_path / "samples")


def test_every_transformer_block_attends_to_itself_then_to_the_caption():
    """config.yaml's model (cross-attention only in the mid-block): diffusers' UNetMidBlock2DCrossAttn
    attends to itself, then to the caption; blocks at a cross-attention level do the same."""
    from diffusers.models.attention_processor import Attention

    def attentions(levels):
        model = RelationalDenoiser(
            icon_size=16,
            text_hidden_size=32,
            block_out_channels=(16, 32),
            layers_per_block=1,
            cross_attention_levels=levels,
            cross_attention_dim=32,
            norm_num_groups=8,
        )
        return {
            name.removeprefix("unet."): "cross" if module.is_cross_attention else "self"
            for name, module in model.named_modules()
            if isinstance(module, Attention)
        }

    mid = {"mid_block.attentions.0.transformer_blocks.0.attn1": "self"}
    mid["mid_block.attentions.0.transformer_blocks.0.attn2"] = "cross"
    assert attentions([]) == mid
    level0 = {name: kind for name, kind in attentions([0]).items() if not name.startswith("mid_block")}
    assert level0 == {
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1": "self",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2": "cross",
        **{f"up_blocks.1.attentions.{k}.transformer_blocks.0.attn1": "self" for k in range(2)},
        **{f"up_blocks.1.attentions.{k}.transformer_blocks.0.attn2": "cross" for k in range(2)},
    }


def test_the_retired_self_attention_key_is_refused_with_what_to_do():
    from diffcomp.config import ConfigError

    config = {"relational": {**TINY["relational"], "model": {**TINY_RELATIONAL_MODEL, "self_attention": False}}}
    with pytest.raises(ConfigError, match=r"relational.model.self_attention: this key was removed.*delete it"):
        validate_config(config)


def test_the_renamed_pretraining_keys_are_refused_naming_their_new_names():
    from diffcomp.config import ConfigError

    section = TINY["relational"]
    config = {
        "relational": {
            **section,
            "pretraining_steps": 4,
            "text_encoder": {**TINY_TEXT_ENCODER, "pretraining_steps": 10},
            "experiments": [{"name": "baseline"}, {"name": "random", "text_encoder_pretraining_steps": 0}],
        }
    }
    with pytest.raises(ConfigError) as caught:
        validate_config(config)
    message = str(caught.value)
    assert "relational.pretraining_steps: this key is now relational.single_object_pretraining_steps" in message
    assert (
        "relational.text_encoder.pretraining_steps: this key is now "
        "relational.text_encoder.caption_pretraining_steps" in message
    )
    assert (
        "relational.experiments[1].text_encoder_pretraining_steps: this key is now "
        "relational.experiments[1].text_encoder_caption_pretraining_steps" in message
    )


def test_caption_pretraining_is_on_by_default_for_t5_scratch_and_ignored_by_a_pretrained_encoder():
    from diffcomp.config import ConfigError
    from diffcomp.relational.config import experiment_settings

    encoder = {key: value for key, value in TINY_TEXT_ENCODER.items() if key != "caption_pretraining_steps"}
    experiments = [{"name": "baseline"}, {"name": "minilm", "text_encoder": "minilm"}]
    relational = {**TINY["relational"], "text_encoder": encoder, "experiments": experiments}
    section = validate_config({"relational": relational})["relational"]
    assert section["text_encoder"]["caption_pretraining_steps"] == 400
    assert experiment_settings(section, "baseline")["text_encoder"]["caption_pretraining_steps"] == 400
    assert experiment_settings(section, "minilm")["text_encoder"]["caption_pretraining_steps"] == 0
    # set for the pretrained encoder by the experiment itself: refused, naming the key
    experiments[1]["text_encoder_caption_pretraining_steps"] = 50
    with pytest.raises(ConfigError, match=r"experiments\[1\].text_encoder_caption_pretraining_steps: caption"):
        validate_config({"relational": relational})


def test_circular_vertical_padding_without_a_position_embedding_cannot_tell_top_from_bottom():
    """Rolling the image by half its height swaps its icons. With circular vertical padding and no
    position embedding the denoiser commutes with that roll, so nothing in it knows which icon is
    on top; with zero padding (the border) or a position embedding it does not."""
    size = dict(icon_size=16, text_hidden_size=16, block_out_channels=(8, 16), layers_per_block=1)
    size.update(cross_attention_levels=[], cross_attention_dim=16, attention_head_dim=4, norm_num_groups=4)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 32, 16, generator=generator)
    condition = (torch.randn(2, 5, 16, generator=generator), torch.ones(2, 5, dtype=torch.long))
    timesteps = torch.tensor([3, 7])

    def swap(images):
        return torch.roll(images, 16, dims=2)

    keys = set()
    for pos_emb, padding, blind in [
        ("none", "circular", True),
        ("none", "zeros", False),
        ("sinusoidal", "circular", False),
    ]:
        torch.manual_seed(0)
        model = RelationalDenoiser(pos_emb=pos_emb, vertical_padding=padding, **size).eval()
        with torch.no_grad():
            swapped_output, output_of_swapped = (
                swap(model(x, timesteps, condition)),
                model(swap(x), timesteps, condition),
            )
        assert torch.allclose(swapped_output, output_of_swapped, atol=1e-5) == blind, (pos_emb, padding)
        if pos_emb == "none":
            keys.add(tuple(model.state_dict()))
    assert len(keys) == 1  # the same weights either way: only the padding differs
    with pytest.raises(ValueError, match="vertical_padding must be one of"):
        RelationalDenoiser(vertical_padding="reflect", **size)
