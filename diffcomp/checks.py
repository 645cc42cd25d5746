"""Config checks that need the code which builds the models and the samplers.

The schema checks types and ranges; these checks catch what only the real code knows, by running
that code cheaply when the config is read (before any job):

- each study's model is built on PyTorch's ``meta`` device (no memory, no arithmetic) and given
  one forward pass of meta tensors of the configured image size: a GroupNorm that does not divide
  a channel count, more down-sampling levels than the image allows, a text width that does not
  fit, all fail here exactly as they would in the training job;
- the bump study's hidden layer is resolved on that model;
- the samplers are built and their timesteps set, and the activation step indexed into them;
- numbers the schema cannot bound: finite learning rates, a warm-up shorter than training.

Each message names the config key. This module imports torch and diffusers (about 2 s), once per
workflow parse, independent of the number of runs.
"""

from __future__ import annotations

import math

from diffcomp.errors import ConfigError


def _explain(err: Exception) -> str:
    return f"{type(err).__name__}: {err}".strip()


def check_training(training: dict, prefix: str) -> None:
    """Numbers of a ``training`` section that the schema cannot bound."""
    if not math.isfinite(training["learning_rate"]):
        raise ConfigError(f"{prefix}.learning_rate: must be a finite number, got {training['learning_rate']}")
    if training["warmup_steps"] >= training["steps"] and training["lr_schedule"] != "constant":
        raise ConfigError(
            f"{prefix}.warmup_steps: {training['warmup_steps']} warm-up steps for {training['steps']} training "
            "steps: the learning rate would never reach its peak (make warmup_steps smaller than steps)"
        )


def check_sampler(diffusion: dict, sampling: dict, prefix: str) -> list:
    """Build the configured sampler and set its timesteps, as the sampling job will; returns them."""
    from diffcomp.diffusion import inference_steps, sampling_scheduler

    steps = inference_steps(diffusion, sampling)
    if steps > diffusion["num_train_timesteps"]:
        raise ConfigError(
            f"{prefix}.sampling.num_inference_steps: {steps} DDIM steps, but the model is trained on "
            f"{prefix}.diffusion.num_train_timesteps = {diffusion['num_train_timesteps']}"
        )
    scheduler = sampling_scheduler(diffusion, sampling["sampler"])
    try:
        scheduler.set_timesteps(steps)
    except ValueError as err:
        raise ConfigError(f"{prefix}.sampling: the sampler rejects these settings: {err}") from None
    return list(scheduler.timesteps)


def check_group_norm(model: dict, prefix: str) -> None:
    """GroupNorm splits every level's channels into ``norm_num_groups`` groups: name the level that
    does not divide (diffusers' own message names neither the key nor the level)."""
    groups = model["norm_num_groups"]
    for level, channels in enumerate(model["block_out_channels"]):
        if channels % groups:
            raise ConfigError(
                f"{prefix}.norm_num_groups: {groups} groups do not divide {prefix}.block_out_channels[{level}] = "
                f"{channels} (GroupNorm needs every channel count to be a multiple of the group count)"
            )


def _meta_forward(build, inputs, key: str, what: str) -> object:
    """Build a model on the meta device and run one forward pass; ConfigError naming ``key`` if either fails."""
    import torch

    try:
        with torch.device("meta"):
            model = build()
    except Exception as err:  # noqa: BLE001 - whatever the build raises, the job would raise too
        raise ConfigError(f"{key}: the model cannot be built: {_explain(err)}") from None
    try:
        with torch.no_grad():
            model(*inputs())
    except Exception as err:  # noqa: BLE001
        raise ConfigError(f"{key}: the model cannot process {what}: {_explain(err)}") from None
    return model


def check_bumps_build(section: dict) -> None:
    import torch

    from diffcomp.bumps.model import BumpDenoiser

    check_training(section["training"], "bumps.training")
    check_group_norm(section["model"], "bumps.model")
    size = section["image_size"]
    model = _meta_forward(
        lambda: BumpDenoiser.from_config(section),
        lambda: (
            torch.empty(2, 1, size, size, device="meta"),
            torch.zeros(2, dtype=torch.long, device="meta"),
            torch.empty(2, 2, device="meta"),
        ),
        "bumps.model",
        f"{size} x {size} images (bumps.image_size)",
    )
    try:
        model.hidden_module(section["model"]["hidden_layer"])
    except ValueError as err:
        raise ConfigError(f"bumps.model.hidden_layer: {err}") from None
    timesteps = check_sampler(section["diffusion"], section["sampling"], "bumps")
    step = section["sampling"]["activation_step"]
    try:
        timesteps[step]  # what the sampling job does to find the step it records
    except IndexError:
        raise ConfigError(
            f"bumps.sampling.activation_step: {step} is not an index into the sampler's {len(timesteps)} "
            f"timesteps (use 0 .. {len(timesteps) - 1}, or -1 for the last)"
        ) from None


def check_scratch_encoder(section: dict) -> int:
    """Build the t5-scratch encoder with the code the jobs use (on the meta device: no weights are
    drawn) and tokenize every caption of the largest vocabulary; returns the width of its states.
    A pretrained encoder (minilm, pretrained:<dir>) is checked by check_encoder instead, without
    loading its weights."""
    import torch

    from diffcomp.relational.config import vocab_sizes
    from diffcomp.relational.icons import nouns
    from diffcomp.relational.text.build import caption_encoder
    from diffcomp.relational.text.captions import all_captions

    names = nouns(max(vocab_sizes(section)))
    try:
        with torch.device("meta"):
            encoder = caption_encoder({"text_encoder": section["text_encoder"]}, names)
        encoder.token_ids(all_captions(names))  # what tokenize() checks, without building its tensors
    except ValueError as err:
        raise ConfigError(f"relational.text_encoder: {err}") from None
    return encoder.hidden_size


def check_relational_build(section: dict) -> None:
    import torch

    from diffcomp.relational.config import experiment_names, experiment_settings
    from diffcomp.relational.model import RelationalDenoiser

    if not experiment_names(section):
        return  # nothing is trained
    check_training(section["training"], "relational.training")
    for k, spec in enumerate(section["experiments"]):
        rate = spec.get("projection", {}).get("learning_rate", 0.0)
        if not math.isfinite(rate):
            key = f"relational.experiments[{k}].projection.learning_rate"
            raise ConfigError(f"{key}: must be a finite number, got {rate}")
    text = section["text_encoder"]
    width = check_scratch_encoder(section) if text["name"] == "t5-scratch" else section["model"]["cross_attention_dim"]
    size = section["icon_size"]
    checked = set()
    for name in experiment_names(section):
        model_config = experiment_settings(section, name)["model"]
        key = repr(sorted(model_config.items()))
        if key in checked:
            continue
        checked.add(key)
        check_group_norm(model_config, "relational.model")
        run = {"icon_size": size, "model": model_config, "text_encoder": text}
        _meta_forward(
            lambda run=run, width=width: RelationalDenoiser.from_config(run, text_hidden_size=width),
            lambda width=width: (
                torch.empty(2, 1, 2 * size, size, device="meta"),
                torch.zeros(2, dtype=torch.long, device="meta"),
                (
                    torch.empty(2, text["max_length"], width, device="meta"),
                    torch.ones(2, text["max_length"], device="meta"),
                ),
            ),
            "relational.model",
            f"{2 * size} x {size} images (relational.icon_size = {size})",
        )
    check_sampler(section["diffusion"], section["sampling"], "relational")


def check_buildable(config: dict) -> None:
    """Every study's model and samplers, built as the jobs will build them (see the module docstring)."""
    if "bumps" in config:
        check_bumps_build(config["bumps"])
    if "relational" in config:
        check_relational_build(config["relational"])
