"""sampling.precision: fp32 is the plain eager float32 chain; bf16 autocasts the forward passes only."""

import numpy as np
import pytest
import torch
from test_bumps_train import TINY, tiny_run

from diffcomp.bumps import sample as sample_module
from diffcomp.bumps.model import BumpDenoiser, hook_activations, sampling_scheduler
from diffcomp.bumps.sample import generate, sample_run
from diffcomp.bumps.train import train_run
from diffcomp.config import ConfigError, validate_config

CPU = torch.device("cpu")


def tiny_section(**sampling) -> dict:
    """test_bumps_train's tiny bump study, with sampling overrides."""
    config = {"bumps": {**TINY["bumps"], "sampling": {**TINY["bumps"]["sampling"], **sampling}}}
    return validate_config(config)["bumps"]


def tiny_model(section: dict) -> BumpDenoiser:
    torch.manual_seed(0)
    return BumpDenoiser.from_config(section)


LABELS = np.random.default_rng(1).uniform(0, 8, (12, 2)).astype(np.float32)


def run_generate(section, model, sampler="ddim", **kwargs):
    return generate(
        model,
        sampling_scheduler(section["diffusion"], sampler),
        LABELS,
        num_inference_steps=4 if sampler == "ddim" else 20,
        batch_size=5,  # three batches, the last one short
        seed=11,
        hidden=model.hidden_module(section["model"]["hidden_layer"]),
        activation_step=-1,
        device=CPU,
        **kwargs,
    )


@torch.no_grad()
def eager_reference(section, model, sampler):
    """The reverse chain written out directly: float32, no autocast (what generate did before the key)."""
    model.eval()
    scheduler = sampling_scheduler(section["diffusion"], sampler)
    scheduler.set_timesteps(4 if sampler == "ddim" else 20)
    generator = torch.Generator(device=CPU).manual_seed(11)
    store, active = [], [False]
    handle = hook_activations(model.hidden_module(section["model"]["hidden_layer"]), store, active)
    images, activations = [], []
    try:
        for start in range(0, len(LABELS), 5):
            batch = torch.from_numpy(LABELS[start : start + 5])
            x = torch.randn((len(batch), 1, 8, 8), generator=generator)
            for i, t in enumerate(scheduler.timesteps):
                active[0] = i == len(scheduler.timesteps) - 1
                eps = model(x, t.expand(len(batch)), batch)
                x = scheduler.step(eps, t, x, generator=generator).prev_sample
            active[0] = False
            images.append(((x.clamp(-1, 1) + 1) / 2).squeeze(1).numpy())
            activations.append(store.pop().numpy())
    finally:
        handle.remove()
    return np.concatenate(images), np.concatenate(activations)


def test_schema_default_is_fp32_and_only_fp32_or_bf16():
    assert tiny_section()["sampling"]["precision"] == "fp32"
    assert tiny_section(precision="bf16")["sampling"]["precision"] == "bf16"
    with pytest.raises(ConfigError, match="precision"):
        tiny_section(precision="fp16")


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])  # ddpm also draws noise at every step
def test_fp32_is_the_plain_eager_chain(sampler):
    section = tiny_section()
    model = tiny_model(section)
    ref_images, ref_activations = eager_reference(section, model, sampler)
    for kwargs in ({}, {"precision": "fp32"}):
        images, activations = run_generate(section, model, sampler, **kwargs)
        assert images.dtype == np.float32
        np.testing.assert_array_equal(images, ref_images)
        np.testing.assert_array_equal(activations, ref_activations)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_bf16_on_the_cpu_is_float32_deterministic_and_close_to_fp32(sampler):
    section = tiny_section()
    model = tiny_model(section)
    fp32_images, fp32_activations = run_generate(section, model, sampler)
    images, activations = run_generate(section, model, sampler, precision="bf16")
    again, again_activations = run_generate(section, model, sampler, precision="bf16")
    assert images.dtype == np.float32 and images.shape == (12, 8, 8)
    assert activations.dtype == np.float32 and activations.shape == fp32_activations.shape
    assert 0 <= images.min() and images.max() <= 1
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(activations, again_activations)
    assert not np.array_equal(images, fp32_images)  # autocast did act
    # measured mean |bf16 - fp32| 2.9e-4 (DDIM) and 3.6e-4 (DDPM), max 1.6e-3 and 2.6e-3
    assert np.abs(images - fp32_images).mean() < 1e-3


def test_unknown_precision_is_refused():
    section = tiny_section()
    with pytest.raises(ValueError, match="sampling.precision"):
        run_generate(section, tiny_model(section), precision="fp16")


def test_sample_run_passes_precision_and_applies_the_runs_tf32(tmp_path, monkeypatch):
    section, run, runtime, labels = tiny_run(tmp_path, tf32=True)
    train_run(run, runtime, labels, tmp_path / "train")

    applied, precisions = [], []
    monkeypatch.setattr(sample_module, "apply_tf32", applied.append)
    real_generate = sample_module.generate

    def recording_generate(*args, **kwargs):
        precisions.append(kwargs["precision"])
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(sample_module, "generate", recording_generate)
    fp32 = sample_run(run, section["sampling"], runtime, labels, tmp_path / "train", tmp_path / "fp32")
    bf16 = sample_run(
        run, {**section["sampling"], "precision": "bf16"}, runtime, labels, tmp_path / "train", tmp_path / "bf16"
    )
    assert applied == [None, None]  # tf32 acts on CUDA only: a CPU job leaves PyTorch's settings alone
    assert precisions == ["fp32"] * len(fp32) + ["bf16"] * len(bf16)  # one call per checkpoint
    with np.load(fp32[-1]) as a, np.load(bf16[-1]) as b:
        assert a["images"].dtype == b["images"].dtype == np.float16
        # the same tiny model's sampling through sample_run: bf16 vs fp32 as above (measured 3e-4)
        assert np.abs(a["images"].astype(np.float32) - b["images"].astype(np.float32)).mean() < 1e-3
