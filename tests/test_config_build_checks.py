"""Configs that would fail a job fail when the config is read, naming the key (one test per class)."""

import copy
import re

import pytest
import yaml
from conftest import REPO, run_snakemake

from diffcomp.config import ConfigError, validate_config

QUICK = yaml.safe_load((REPO / "config.yaml").read_text())


def broken(edit) -> dict:
    config = copy.deepcopy(QUICK)
    edit(config)
    return config


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        # model shape consistency, found by building the model on the meta device
        (
            lambda c: c["bumps"]["model"].update(norm_num_groups=5),
            r"bumps\.model\.norm_num_groups: 5 groups do not divide bumps\.model\.block_out_channels\[0\] = 16 ",
        ),
        (
            lambda c: c["bumps"]["model"].update(block_out_channels=[8, 8, 8, 8, 8, 8], norm_num_groups=4),
            r"bumps\.model: the model cannot process 16 x 16 images \(bumps\.image_size\)",
        ),
        (
            lambda c: c["relational"]["model"].update(norm_num_groups=7),
            r"relational\.model\.norm_num_groups: 7 groups do not divide relational\.model\.block_out_channels\[0\]",
        ),
        (
            lambda c: c["relational"]["model"].update(attention_head_dim=64),
            r"relational\.model: the model cannot be built: ZeroDivisionError",
        ),
        (
            lambda c: c["relational"]["text_encoder"].update(num_heads=3),
            r"relational\.text_encoder: d_model \(32\) must be a multiple of num_heads \(3\)",
        ),
        (
            lambda c: c["relational"]["text_encoder"].update(max_length=6),
            r"relational\.text_encoder: .*max_length=6 .*too long",
        ),
        # sampling consistency, found by building the samplers and resolving the hidden layer
        (
            lambda c: c["bumps"]["model"].update(hidden_layer="down_blocks.7"),
            r"bumps\.model\.hidden_layer: .*not a module of the UNet",
        ),
        (
            lambda c: c["bumps"]["sampling"].update(num_inference_steps=500),
            r"bumps\.sampling\.num_inference_steps: 500 DDIM steps, but .*num_train_timesteps = 100",
        ),
        (
            lambda c: c["relational"]["sampling"].update(num_inference_steps=101),
            r"relational\.sampling\.num_inference_steps: 101 DDIM steps",
        ),
        (
            lambda c: c["bumps"]["sampling"].update(activation_step=10),
            r"bumps\.sampling\.activation_step: 10 is not an index into the sampler's 10 timesteps",
        ),
        # numeric sanity
        (
            lambda c: c["bumps"]["training"].update(learning_rate=float("inf")),
            r"bumps\.training\.learning_rate: must be a finite number",
        ),
        (lambda c: c["bumps"]["training"].update(ema_decay=1.0), r"bumps\.training\.ema_decay: 1\.0 is greater than"),
        (
            lambda c: c["relational"]["experiments"][2]["projection"].update(learning_rate=float("nan")),
            r"relational\.experiments\[2\]\.projection\.learning_rate: must be a finite number",
        ),
        (
            lambda c: c["relational"]["training"].update(steps=800, warmup_steps=800),
            r"relational\.training\.warmup_steps: 800 warm-up steps for 800 training steps",
        ),
        (
            lambda c: c["bumps"]["figures"].update(sigma_increments=[0.3]),
            r"bumps\.figures\.sigma_increments: \[0\.3\] not in bumps\.grid\.increments",
        ),
        (
            lambda c: c["bumps"]["figures"].update(diagram_sigma=3.0),
            r"bumps\.figures\.diagram_sigma: 3\.0 is not one of bumps\.grid\.sigmas",
        ),
    ],
)
def test_a_config_that_would_fail_a_job_fails_at_once(edit, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(broken(edit))


def test_a_number_yaml_reads_as_a_string_gets_a_hint():
    shipped = (REPO / "config.yaml").read_text()
    text = re.sub(r"learning_rate: [0-9.]+", "learning_rate: 6e-3", shipped, count=1)  # the bumps section's
    assert text != shipped
    with pytest.raises(
        ConfigError,
        match=r"bumps\.training\.learning_rate: '6e-3' is not of type 'number' "
        r"\(YAML reads '6e-3' as a string; write 6.0e-3 for a number\)",
    ):
        validate_config(yaml.safe_load(text))


def test_the_shipped_configs_pass():
    validate_config(QUICK)
    validate_config(yaml.safe_load((REPO / "config.paper.yaml").read_text()))


@pytest.mark.slow
def test_the_workflow_names_the_config_file_and_key_not_its_own_code(tmp_path):
    bad = (REPO / "config.yaml").read_text().replace("norm_num_groups: 8", "norm_num_groups: 5", 1)
    (tmp_path / "mine.yaml").write_text(bad)
    proc = run_snakemake(tmp_path, "--configfile", "mine.yaml", "--cores", "1", "-n", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"Error in config file {tmp_path / 'mine.yaml'}:" in output
    assert "bumps.model.norm_num_groups: 5 groups do not divide bumps.model.block_out_channels[0] = 16" in output
    assert "common.smk" not in output and "Traceback" not in output
    assert not (tmp_path / "results").exists()


def test_a_config_that_passed_the_build_checks_is_not_built_again(tmp_path, monkeypatch):
    """The workflow remembers a config that passed (a dry run, or each cluster job's parse, skips
    the model builds); another config, or a failing one, is built."""
    import diffcomp.checks
    from diffcomp.config import build_check_key

    built = []
    real = diffcomp.checks.check_buildable
    monkeypatch.setattr(diffcomp.checks, "check_buildable", lambda config: (built.append(1), real(config)))
    cache = tmp_path / "build_checks"
    validate_config(QUICK, build_check_cache=cache)
    validate_config(QUICK, build_check_cache=cache)
    assert len(built) == 1 and len(list(cache.iterdir())) == 1
    other = broken(lambda c: c["relational"]["model"].update(attention_head_dim=4))
    validate_config(other, build_check_cache=cache)
    assert len(built) == 2
    failing = broken(lambda c: c["relational"]["model"].update(norm_num_groups=7))
    for _ in range(2):  # never remembered
        with pytest.raises(ConfigError, match="norm_num_groups"):
            validate_config(failing, build_check_cache=cache)
    assert len(built) == 4 and len(list(cache.iterdir())) == 2
    assert build_check_key(validate_config(QUICK)) != build_check_key(validate_config(other))


def test_the_build_check_key_follows_the_checks_code_and_the_library_versions(monkeypatch):
    import importlib.metadata

    import diffcomp.code_digest
    from diffcomp.config import build_check_key

    config = validate_config(QUICK)
    key = build_check_key(config)
    real_version = importlib.metadata.version
    with monkeypatch.context() as patch:
        patch.setattr(importlib.metadata, "version", lambda name: "0.0" if name == "diffusers" else real_version(name))
        assert build_check_key(config) != key

    class OtherCode:
        def digest(self, script):
            return "another digest"

    with monkeypatch.context() as patch:
        patch.setattr(diffcomp.code_digest, "code_index", lambda root: OtherCode())
        assert build_check_key(config) != key
    assert build_check_key(config) == key
