"""GPU options of the shared trainer: compile modes, TF32, fused AdamW, channels-last.

Nothing here compiles or needs a GPU: the mode and device logic are pure functions, the config
checks run the schema, and a CPU run with every GPU option on must equal the default run bit for bit.
"""

import copy
import hashlib
import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from test_bumps_train import assert_identical, final_weights, tiny_run

from diffcomp.bumps.config import dataset_specs, semantic_config
from diffcomp.bumps.train import train_run
from diffcomp.config import RUNTIME_KEYS, ConfigError, load_config, validate_config
from diffcomp.training import (
    COMPILE_MODES,
    apply_tf32,
    compile_mode,
    compile_options,
    fingerprint,
    gpu_settings,
    load_optimizer_state,
    make_optimizer,
    preserved_tf32,
    uses_cuda_graphs,
)

REPO = Path(__file__).resolve().parents[1]
CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU


def quick() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


# --------------------------------------------------------------------------------------------
# compile modes
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "mode"),
    [(False, "none"), (None, "none"), (True, "default")] + [(m, m) for m in COMPILE_MODES],
)
def test_compile_mode_accepts_booleans_and_mode_names(value, mode):
    assert compile_mode(value) == mode


def test_compile_mode_rejects_unknown_names():
    with pytest.raises(ValueError, match="'fast' is not one of"):
        compile_mode("fast")


@pytest.mark.parametrize(
    ("value", "cuda", "cpu"),
    [
        (False, None, None),
        ("none", None, None),
        (True, "default", "default"),
        ("default", "default", "default"),
        ("reduce-overhead", "reduce-overhead", "default"),
        ("max-autotune", "max-autotune", "max-autotune-no-cudagraphs"),
        ("max-autotune-no-cudagraphs", "max-autotune-no-cudagraphs", "max-autotune-no-cudagraphs"),
    ],
)
def test_compile_options_per_device(value, cuda, cpu):
    for device, expected in ((CUDA, cuda), (CPU, cpu)):
        options = compile_options({"compile": value}, device)
        assert (options and options["mode"]) == expected


def test_cuda_graph_modes_fall_back_on_the_cpu_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="diffcomp.train"):
        options = compile_options({"compile": "reduce-overhead"}, CPU)
    assert options == {"mode": "default"}
    assert "uses CUDA graphs" in caplog.text
    assert not uses_cuda_graphs(options)
    assert uses_cuda_graphs(compile_options({"compile": "reduce-overhead"}, CUDA))
    assert uses_cuda_graphs(compile_options({"compile": "max-autotune"}, CUDA))
    assert not uses_cuda_graphs(compile_options({"compile": "max-autotune-no-cudagraphs"}, CUDA))
    assert not uses_cuda_graphs(None)


# --------------------------------------------------------------------------------------------
# TF32, fused AdamW, channels-last
# --------------------------------------------------------------------------------------------
ALL_ON = {"tf32": True, "fused_optimizer": True, "channels_last": True}


def test_gpu_settings_act_only_on_cuda(caplog):
    assert gpu_settings(ALL_ON, CUDA) == ALL_ON
    assert gpu_settings({}, CUDA) == {"tf32": None, "fused_optimizer": False, "channels_last": False}
    with caplog.at_level(logging.INFO, logger="diffcomp.train"):
        assert gpu_settings(ALL_ON, CPU) == {"tf32": None, "fused_optimizer": False, "channels_last": False}
    assert "ignored on cpu" in caplog.text


def test_apply_tf32_sets_both_flags_and_none_leaves_them():
    def flags():
        return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32

    before = flags()
    with preserved_tf32():
        apply_tf32(True)
        assert flags() == (True, True)
        apply_tf32(None)
        assert flags() == (True, True)
        apply_tf32(False)
        assert flags() == (False, False)
        apply_tf32(not before[0])
    assert flags() == before  # preserved_tf32 put them back


def _stepped_optimizer(fused: bool):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = make_optimizer(
        list(model.parameters()), {"learning_rate": 1e-3, "weight_decay": 0.0}, {"fused_optimizer": fused}
    )
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.ones(2, 4)).sum().backward()
        optimizer.step()
    return model, optimizer


def test_make_optimizer_default_is_the_foreach_adamw():
    _, optimizer = _stepped_optimizer(fused=False)
    group = optimizer.param_groups[0]
    assert not group["fused"] and group["foreach"] is True
    assert group["lr"] == 1e-3 and group["weight_decay"] == 0.0


def test_foreach_adamw_updates_the_quick_bump_model_bit_identically_to_the_per_tensor_loop():
    """The trainer's AdamW (foreach) against the per-tensor loop PyTorch picks on a CPU, over 5 steps
    of the quick bump model with weight decay: the same parameters to the bit (a run trained with
    either implementation is the same run)."""
    from diffcomp.bumps.model import BumpDenoiser

    def trained(optimizer_for):
        torch.manual_seed(0)
        model = BumpDenoiser(16, (16, 32), 1, [], 8, 32)
        optimizer = optimizer_for(list(model.parameters()))
        generator = torch.Generator().manual_seed(1)
        for _ in range(5):
            x = torch.randn(8, 1, 16, 16, generator=generator)
            t = torch.randint(0, 100, (8,), generator=generator)
            labels = torch.rand(8, 2, generator=generator) * 16
            optimizer.zero_grad()
            (model(x, t, labels) - x).pow(2).mean().backward()
            optimizer.step()
        return [p.detach() for p in model.parameters()]

    cfg = {"learning_rate": 3e-3, "weight_decay": 0.01}
    ours = trained(lambda params: make_optimizer(params, cfg, {"fused_optimizer": False}))
    loop = trained(lambda params: torch.optim.AdamW(params, lr=3e-3, weight_decay=0.01, foreach=False))
    assert len(ours) == len(loop) > 100
    for a, b in zip(ours, loop, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("saved_fused", [False, True])
def test_resume_keeps_this_jobs_optimizer_implementation(saved_fused):
    """Optimizer.load_state_dict would take the saved group's 'fused' flag; the trainer keeps its own."""
    _, saved = _stepped_optimizer(fused=saved_fused)
    for fused in (False, True):
        _, optimizer = _stepped_optimizer(fused=fused)
        load_optimizer_state(optimizer, copy.deepcopy(saved.state_dict()))
        assert bool(optimizer.param_groups[0]["fused"]) is fused
        pairs = zip(optimizer.param_groups[0]["params"], saved.param_groups[0]["params"], strict=True)
        for p, p_saved in pairs:
            state = optimizer.state[p]
            assert state["step"].item() == 3 and state["step"].dtype == torch.float32
            assert state["step"].device == (p.device if fused else torch.device("cpu"))
            assert torch.equal(state["exp_avg"], saved.state[p_saved]["exp_avg"])
            assert torch.equal(state["exp_avg_sq"], saved.state[p_saved]["exp_avg_sq"])


def test_resume_with_the_same_implementation_changes_nothing():
    _, saved = _stepped_optimizer(fused=False)
    _, plain = _stepped_optimizer(fused=False)
    _, ours = _stepped_optimizer(fused=False)
    plain.load_state_dict(copy.deepcopy(saved.state_dict()))
    load_optimizer_state(ours, copy.deepcopy(saved.state_dict()))
    a, b = plain.state_dict(), ours.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for key in a["state"]:
        for name, value in a["state"][key].items():
            assert torch.equal(value, b["state"][key][name]) and value.device == b["state"][key][name].device


def test_gpu_options_leave_a_cpu_run_bit_identical(tmp_path):
    """tf32, fused_optimizer and channels_last are ignored on the CPU: same weights as the default run."""
    _, run, runtime, labels = tiny_run(tmp_path, device="cpu")
    train_run(run, runtime, labels, tmp_path / "default" / "train")
    _, run_on, runtime_on, _ = tiny_run(tmp_path, device="cpu", **ALL_ON)
    assert run_on["training"]["tf32"] is True  # tf32 is semantic: another fingerprint, another state folder
    summary = train_run(run_on, runtime_on, labels, tmp_path / "on" / "train")
    assert {k: summary[k] for k in ALL_ON} == {"tf32": None, "fused_optimizer": False, "channels_last": False}
    assert summary["compile"] == "none" and summary["precision"] == "fp32"
    assert_identical(final_weights(tmp_path / "default" / "train"), final_weights(tmp_path / "on" / "train"))


# --------------------------------------------------------------------------------------------
# config schema and fingerprints
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [False, True, *COMPILE_MODES])
def test_schema_accepts_every_compile_mode(value):
    config = quick()
    config["bumps"]["training"]["compile"] = value
    config["relational"]["training"]["compile"] = value
    validated = validate_config(config)
    assert validated["bumps"]["training"]["compile"] == value


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("compile", "fast", r"bumps\.training\.compile: 'fast' is not one of"),
        ("compile", "None", r"bumps\.training\.compile: 'None' is not one of"),
        ("compile", 1, r"bumps\.training\.compile: 1 is not one of"),
        ("tf32", "yes", r"bumps\.training\.tf32: 'yes' is not of type"),
        ("fused_optimizer", None, r"bumps\.training\.fused_optimizer: None is not of type 'boolean'"),
        ("channels_last", "true", r"bumps\.training\.channels_last: 'true' is not of type 'boolean'"),
    ],
)
def test_schema_rejects_bad_gpu_options(key, value, message):
    config = quick()
    config["bumps"]["training"][key] = value
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_defaults_and_runtime_keys():
    training = validate_config(quick())["bumps"]["training"]
    assert training["compile"] is False
    assert training["fused_optimizer"] is False and training["channels_last"] is False
    assert "tf32" not in training  # unset: PyTorch's own settings, and no change to existing fingerprints
    assert {"compile", "fused_optimizer", "channels_last"} <= set(RUNTIME_KEYS)
    assert "tf32" not in RUNTIME_KEYS and "precision" not in RUNTIME_KEYS


def _old_fingerprint(semantic: dict) -> str:
    """The fingerprint before the GPU options existed."""
    return hashlib.sha256(json.dumps(semantic, sort_keys=True).encode()).hexdigest()[:16]


def _bump_runs(config: dict) -> list[dict]:
    section = config["bumps"]
    specs = dataset_specs(section)
    return [
        semantic_config(section, {"image_size": section["image_size"], **specs[name]}, seed)
        for name in specs
        for seed in section["seeds"]
    ]


@pytest.mark.parametrize("name", ["config.yaml", "config.paper.yaml"])
def test_existing_fingerprints_do_not_change(name):
    runs = _bump_runs(load_config(REPO / name))
    assert runs
    for run in runs:
        assert not {"tf32", "fused_optimizer", "channels_last", "compile"} & set(run["training"])
        assert fingerprint(run) == _old_fingerprint(run)


def test_fingerprint_follows_tf32_but_not_runtime_options():
    config = quick()
    base = fingerprint(_bump_runs(validate_config(config))[0])
    for key, value, changes in [
        ("tf32", None, False),  # null is the same run as absent
        ("tf32", True, True),
        ("tf32", False, True),
        ("compile", "max-autotune", False),
        ("fused_optimizer", True, False),
        ("channels_last", True, False),
    ]:
        edited = copy.deepcopy(config)
        edited["bumps"]["training"][key] = value
        assert (fingerprint(_bump_runs(validate_config(edited))[0]) != base) is changes, (key, value)
