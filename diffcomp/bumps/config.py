"""The bump study's section of the config: semantic checks and the expanded dataset/run lists."""

from __future__ import annotations

from diffcomp.bumps.data import BumpDataset
from diffcomp.errors import ConfigError
from diffcomp.runtime_keys import RUNTIME_KEYS


def semantic_config(section: dict, dataset_spec: dict, seed: int) -> dict:
    """Everything that determines a run's weights (and nothing else)."""
    training = {k: v for k, v in section["training"].items() if k not in RUNTIME_KEYS}
    return {
        "image_size": section["image_size"],
        "dataset": dataset_spec,
        "seed": seed,
        "model": section["model"],
        "diffusion": section["diffusion"],
        "training": training,
    }


def grid_dataset_name(increment: float, sigma: float) -> str:
    return f"inc{increment:g}_sig{sigma:g}"


def dataset_specs(section: dict) -> dict[str, dict]:
    """Every dataset of the study by name: the grid's, then the named ones, as plain dicts."""
    specs: dict[str, dict] = {}

    def add(name, increment, sigma, holes, where):
        if name in specs:
            raise ConfigError(f"{where}: dataset name {name!r} is used twice")
        inc = increment if isinstance(increment, list) else [increment, increment]
        specs[name] = {
            "name": name,
            "increment_x": float(inc[0]),
            "increment_y": float(inc[1]),
            "sigma": sigma,
            "holes": holes,
        }

    grid = section.get("grid", {})
    for increment in grid.get("increments", []):
        for sigma in grid.get("sigmas", []):
            add(grid_dataset_name(increment, sigma), increment, sigma, [], "bumps.grid")
    for k, entry in enumerate(section.get("datasets", [])):
        add(entry["name"], entry["increment"], entry["sigma"], entry.get("holes", []), f"bumps.datasets[{k}]")
    return specs


def dataset(section: dict, name: str) -> BumpDataset:
    return BumpDataset.from_config(dataset_specs(section)[name], section["image_size"])


def check_bumps(section: dict) -> None:
    """Rules the schema cannot express; each message names the key."""
    size = section["image_size"]
    specs = dataset_specs(section)
    if not specs:
        raise ConfigError("bumps: no datasets configured (bumps.grid and bumps.datasets are both empty)")
    for name, spec in specs.items():
        for axis in ("x", "y"):
            if spec[f"increment_{axis}"] > size:
                raise ConfigError(
                    f"bumps dataset {name!r}: increment_{axis} = {spec[f'increment_{axis}']} is larger than "
                    f"the canvas (bumps.image_size = {size})"
                )
        try:
            BumpDataset.from_config(spec, size).validate()
        except ValueError as err:
            raise ConfigError(f"bumps dataset {name!r}: {err}") from None
    phases_run = section.get("figures", {}).get("phases_run")
    runs = [f"{name}_seed{seed}" for name in specs for seed in section["seeds"]]
    if phases_run is not None and phases_run not in runs:
        raise ConfigError(
            f"bumps.figures.phases_run: {phases_run!r} is not a configured run ({{dataset}}_seed{{seed}}); "
            f"choose one of {runs[:6]}{' ...' if len(runs) > 6 else ''}"
        )
    figures = section.get("figures", {})
    grid = section.get("grid", {})
    sigmas, increments = grid.get("sigmas", []), grid.get("increments", [])
    if figures.get("diagram_sigma") is not None and figures["diagram_sigma"] not in sigmas:
        raise ConfigError(
            f"bumps.figures.diagram_sigma: {figures['diagram_sigma']} is not one of bumps.grid.sigmas {sigmas}"
        )
    absent = [d for d in figures.get("sigma_increments", []) if d not in increments]
    if absent:
        raise ConfigError(
            f"bumps.figures.sigma_increments: {absent} not in bumps.grid.increments {increments} (empty panels)"
        )
    sampling = section.get("sampling", {})
    if figures.get("diagram_accuracy") == "accuracy_offgrid" and not sampling.get("num_samples_offgrid"):
        raise ConfigError(
            "bumps.figures.diagram_accuracy: accuracy_offgrid needs off-grid samples "
            "(bumps.sampling.num_samples_offgrid > 0)"
        )
    if sampling.get("num_samples_offgrid") and not 0 <= sampling.get("offgrid_margin", 0) < size / 2:
        raise ConfigError(
            f"bumps.sampling.offgrid_margin: {sampling['offgrid_margin']} leaves no interior in [0, {size}]"
        )
    attention = section.get("model", {}).get("attention_levels", [])
    levels = len(section.get("model", {}).get("block_out_channels", [64, 128, 256]))
    if any(level >= levels for level in attention):
        raise ConfigError(f"bumps.model.attention_levels {attention}: the UNet has only {levels} levels")
    model = section.get("model", {})
    head_dim = model.get("attention_head_dim")
    if head_dim is not None:
        channels = model.get("block_out_channels", [64, 128, 256])
        # diffusers would silently build heads narrower than the block (channels // head_dim heads);
        # the mid-block's attention works at the last level's width
        levels_with_attention = sorted({*attention, len(channels) - 1})
        uneven = {level: channels[level] for level in levels_with_attention if channels[level] % head_dim}
        if uneven:
            raise ConfigError(
                f"bumps.model.attention_head_dim: {head_dim} does not divide the channels of attention "
                f"level(s) {uneven} (bumps.model.block_out_channels at bumps.model.attention_levels and "
                f"at the last level, whose width the mid-block's attention has)"
            )
