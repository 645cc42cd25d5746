"""training.compile: before its first step, a job compares one batch's gradients through the
compiled model with the eager model's, and refuses to train on gradients that disagree
(diffcomp.training.check_compiled_gradients). On this CPU with torch 2.13, inductor's backward of
the quick bump model gave 67-68 of its 118 tensors zero gradients; these tests stand in for
torch.compile, so they do not depend on that bug being there."""

import logging

import pytest
import torch
from test_bumps_train import assert_identical, final_weights, tiny_run

from diffcomp.bumps.train import RunPaths, train_run
from diffcomp.training import (
    COMPILED_GRADIENT_TOLERANCE,
    CompiledGradientMismatch,
    gradient_disagreements,
)

NAMES = ["conv.weight", "conv.bias", "attn.to_k.bias", "out.weight"]


def _eager_gradients():
    generator = torch.Generator().manual_seed(0)
    shapes = [(16, 16, 3, 3), (8,), (8,), (4, 16)]
    gradients = [torch.randn(shape, generator=generator) * 1e-2 for shape in shapes]
    gradients[2] = torch.randn(8, generator=generator) * 1e-11  # a key bias: true gradient zero, rounding noise
    return gradients


def test_gradients_that_agree_up_to_reduced_precision_pass():
    eager = _eager_gradients()
    generator = torch.Generator().manual_seed(1)
    # bf16-sized differences everywhere; the key bias's noise entirely different
    compiled = [g * (1 + 1e-2 * torch.randn(g.shape, generator=generator)) for g in eager]
    compiled[2] = -eager[2] * 3
    assert gradient_disagreements(NAMES, eager, compiled, COMPILED_GRADIENT_TOLERANCE) == []


def test_an_all_zero_gradient_of_a_significant_tensor_is_named():
    eager = _eager_gradients()
    compiled = [g.clone() for g in eager]
    compiled[1] = torch.zeros_like(eager[1])  # a small tensor: the joint difference stays under the tolerance
    problems = gradient_disagreements(NAMES, eager, compiled, COMPILED_GRADIENT_TOLERANCE)
    assert problems == ["1 tensor gets an all-zero gradient: conv.bias"]
    compiled[1] = None  # no gradient at all counts as zero
    assert gradient_disagreements(NAMES, eager, compiled, COMPILED_GRADIENT_TOLERANCE) == problems


def test_a_joint_difference_above_the_tolerance_is_reported():
    eager = _eager_gradients()
    compiled = [g * 1.5 for g in eager]
    (problem,) = gradient_disagreements(NAMES, eager, compiled, COMPILED_GRADIENT_TOLERANCE)
    assert problem.startswith("all gradients together differ by 0.5 (relative; tolerance 0.1)")


def _compile_that_cuts_the_mid_block(model, **_options):
    """A stand-in for torch.compile whose gradients stop at the UNet's mid-block, as inductor's
    did below the first level: the forward values are right, the backward is not."""

    def forward(*args):
        handle = model.unet.mid_block.register_forward_hook(lambda _m, _i, output: output.detach())
        try:
            return model(*args)
        finally:
            handle.remove()

    return forward


def test_a_run_whose_compiled_gradients_disagree_is_refused_before_its_first_step(tmp_path, monkeypatch):
    _, run, runtime, labels = tiny_run(tmp_path, compile="default")
    monkeypatch.setattr(torch, "compile", _compile_that_cuts_the_mid_block)
    steps = []
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda *a, **k: steps.append(1))
    out = tmp_path / "run" / "train"
    with pytest.raises(CompiledGradientMismatch) as raised:
        train_run(run, runtime, labels, out)
    message = str(raised.value)
    assert "training.compile 'default' computes other gradients than the eager model" in message
    assert "tensors get an all-zero gradient: unet.mid_block." in message and "training.compile: none" in message
    assert not steps and not out.exists()
    assert not list(RunPaths.for_run(out, run).state_dir.glob("state_step*.pt"))


def test_the_check_leaves_the_run_as_it_would_be_without_it(tmp_path, monkeypatch, caplog):
    """With a faithful stand-in for torch.compile (the model itself), a run with compile on passes
    the check and equals a run with compile off bit for bit: the check's batch and noise come
    from the run's generators, whose states it restores."""
    _, run, runtime, labels = tiny_run(tmp_path)
    plain = tmp_path / "plain" / "train"
    train_run(run, runtime, labels, plain)
    monkeypatch.setattr(torch, "compile", lambda model, **_options: model)
    checked = tmp_path / "checked" / "train"
    with caplog.at_level(logging.INFO, logger="diffcomp.train"):
        summary = train_run(run, {**runtime, "compile": "default"}, labels, checked)
    assert summary["compile"] == "default"
    assert "one batch's gradients agree with the eager model's" in caplog.text
    assert_identical(final_weights(plain), final_weights(checked))
    assert (plain / "loss.csv").read_text() == (checked / "loss.csv").read_text()
