"""Training: resume bit-identity (simulated time limit, SIGKILL, SIGTERM), corrupt states, NaN stop."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL
from safetensors.torch import load_file

from diffcomp.bumps import train as train_module
from diffcomp.bumps.config import dataset_specs
from diffcomp.bumps.data import BumpDataset
from diffcomp.bumps.sample import offgrid_labels, sample_run
from diffcomp.bumps.train import (
    EXIT_TIME_LIMIT,
    RUNTIME_KEYS,
    NonFiniteLoss,
    RunPaths,
    TrainingInterrupted,
    checkpoint_steps,
    semantic_config,
    train_run,
)
from diffcomp.config import validate_config
from diffcomp.io import write_csv

TINY = {
    "bumps": {
        "image_size": 8,
        "datasets": [{"name": "tiny", "increment": 1.0, "sigma": 1.0}],
        "model": TINY_MODEL,
        "diffusion": {"num_train_timesteps": 20},
        "training": {
            "steps": 12,
            "batch_size": 8,
            "learning_rate": 0.001,
            "warmup_steps": 2,
            "lr_schedule": "cosine",
            "ema_decay": 0.9,
            "checkpoint_every": 4,
            "log_every": 2,
        },
        "sampling": {"num_samples": 8, "num_samples_ood": 2, "num_inference_steps": 3, "batch_size": 8},
    }
}


def tiny_run(tmp_path: Path, **training):
    config = validate_config(TINY)
    section = config["bumps"]
    section["training"].update(training)
    spec = {"image_size": 8, **dataset_specs(section)["tiny"]}
    labels = tmp_path / "labels.csv"
    write_csv(labels, BumpDataset.from_config(spec, 8).labels())
    run = semantic_config(section, spec, seed=3)
    runtime = {k: section["training"][k] for k in RUNTIME_KEYS}
    return section, run, runtime, labels


def final_weights(out_dir: Path) -> dict:
    last = sorted((out_dir / "snapshots").glob("*.safetensors"))[-1]
    return load_file(str(last))


def assert_identical(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_checkpoint_steps():
    assert checkpoint_steps(12, 4) == [4, 8, 12]
    assert checkpoint_steps(10, 4) == [4, 8, 10]
    assert checkpoint_steps(3, 4) == [3]


@pytest.mark.parametrize("snr_gamma", [None, 5.0])
def test_uninterrupted_run_writes_finished_run(tmp_path, snr_gamma):
    _, run, runtime, labels = tiny_run(tmp_path, snr_gamma=snr_gamma)
    out = tmp_path / "run" / "train"
    summary = train_run(run, runtime, labels, out)
    assert summary["snapshot_steps"] == [4, 8, 12]
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == [
        "step000000004.safetensors",
        "step000000008.safetensors",
        "step000000012.safetensors",
    ]
    loss = np.loadtxt(out / "loss.csv", delimiter=",", skiprows=1)
    assert loss[:, 0].tolist() == [2, 4, 6, 8, 10, 12]
    assert np.isfinite(loss[:, 1]).all()


def test_resume_after_simulated_time_limit_is_bit_identical(tmp_path):
    _, run, runtime, labels = tiny_run(tmp_path)
    reference = tmp_path / "a" / "train"
    train_run(run, runtime, labels, reference)

    resumed = tmp_path / "b" / "train"
    # step 5: between checkpoints (every 4) and between loss.csv rows (every 2)
    with pytest.raises(TrainingInterrupted, match="stopped at step 5/12"):
        train_run(run, runtime, labels, resumed, stop_after_step=5)
    assert not resumed.exists(), "the declared output must only appear when training finishes"
    summary = train_run(run, runtime, labels, resumed)
    assert summary["steps_this_job"] == 7
    assert_identical(final_weights(reference), final_weights(resumed))
    # every kept snapshot, not just the last, matches
    for name in ("step000000004.safetensors", "step000000008.safetensors"):
        assert_identical(load_file(str(reference / "snapshots" / name)), load_file(str(resumed / "snapshots" / name)))
    assert (reference / "loss.csv").read_text() == (resumed / "loss.csv").read_text()


def test_corrupt_latest_state_is_reported_and_skipped(tmp_path, caplog):
    _, run, runtime, labels = tiny_run(tmp_path, keep_resume_states=3)
    reference = tmp_path / "a" / "train"
    train_run(run, runtime, labels, reference)

    out = tmp_path / "b" / "train"
    with pytest.raises(TrainingInterrupted):
        train_run(run, runtime, labels, out, stop_after_step=10)
    state_dir = RunPaths.for_run(out, run).state_dir
    latest = sorted(state_dir.glob("state_step*.pt"))[-1]
    assert latest.name == "state_step000000010.pt"
    latest.write_bytes(latest.read_bytes()[:1000])  # truncated, as by a crash mid-copy
    with caplog.at_level("WARNING", logger="diffcomp.train"):
        summary = train_run(run, runtime, labels, out)
    assert "skipping unusable checkpoint" in caplog.text and latest.name in caplog.text
    assert summary["steps_this_job"] == 4  # resumed from step 8
    assert_identical(final_weights(reference), final_weights(out))


def test_changed_config_does_not_resume_a_stale_state(tmp_path):
    _, run, runtime, labels = tiny_run(tmp_path)
    out = tmp_path / "a" / "train"
    with pytest.raises(TrainingInterrupted):
        train_run(run, runtime, labels, out, stop_after_step=8)
    changed = {**run, "training": {**run["training"], "learning_rate": 0.002}}
    summary = train_run(changed, runtime, labels, out)
    assert summary["steps_this_job"] == 12


def test_nan_loss_stops_at_once(tmp_path, monkeypatch):
    _, run, runtime, labels = tiny_run(tmp_path)
    real_mse = train_module.F.mse_loss
    calls = {"n": 0}

    def poisoned(pred, target):
        calls["n"] += 1
        loss = real_mse(pred, target)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(train_module.F, "mse_loss", poisoned)
    out = tmp_path / "a" / "train"
    with pytest.raises(NonFiniteLoss, match=r"loss became nan between steps 3 and 4"):
        train_run(run, runtime, labels, out)
    assert not out.exists()
    state_dir = RunPaths.for_run(out, run).state_dir
    assert not list(state_dir.glob("state_step*.pt")), "no checkpoint may be written after a NaN"


TRAIN_SCRIPT = """
import json, sys
from diffcomp.bumps.train import TrainingInterrupted, train_run, EXIT_TIME_LIMIT
run, runtime, labels, out = json.loads(sys.argv[1])
try:
    train_run(run, runtime, labels, out)
except TrainingInterrupted as stop:
    print(stop, flush=True)
    sys.exit(EXIT_TIME_LIMIT)
"""


def _start_training(run, runtime, labels, out):
    import json

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    args = json.dumps([run, runtime, str(labels), str(out)])
    return subprocess.Popen(
        [sys.executable, "-c", TRAIN_SCRIPT, args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait_for_state(state_dir: Path, proc, timeout=120):
    deadline = time.time() + timeout
    while not list(state_dir.glob("state_step*.pt")):
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)


LONG = {"steps": 120, "checkpoint_every": 10, "log_every": 5}


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory):
    """An uninterrupted run long enough that a subprocess is still training after its first state."""
    tmp_path = tmp_path_factory.mktemp("reference")
    _, run, runtime, labels = tiny_run(tmp_path, **LONG)
    train_run(run, runtime, labels, tmp_path / "train")
    return final_weights(tmp_path / "train")


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_killed_process_resumes_bit_identical(tmp_path, how, long_reference):
    _, run, runtime, labels = tiny_run(tmp_path, **LONG)
    out = tmp_path / "b" / "train"
    proc = _start_training(run, runtime, labels, out)
    _wait_for_state(RunPaths.for_run(out, run).state_dir, proc)
    proc.send_signal(getattr(signal, how))
    output, _ = proc.communicate(timeout=120)
    if how == "SIGTERM":
        # the signal is taken as a time-limit warning: state saved, clean exit status for a retry
        assert proc.returncode == EXIT_TIME_LIMIT, output
        assert "received SIGTERM" in output
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not out.exists() or proc.returncode == 0
    summary = train_run(run, runtime, labels, out)
    assert 0 < summary["steps_this_job"] < LONG["steps"]
    assert_identical(long_reference, final_weights(out))


def test_sampling_every_checkpoint(tmp_path):
    section, run, runtime, labels = tiny_run(tmp_path)
    out = tmp_path / "run" / "train"
    train_run(run, runtime, labels, out)
    files = sample_run(run, section["sampling"], runtime, labels, out, tmp_path / "run" / "samples")
    assert [f.name for f in files] == ["step000000004.npz", "step000000008.npz", "step000000012.npz"]
    with np.load(files[-1]) as data:
        assert data["images"].shape == (8, 8, 8)
        assert 0 <= data["images"].min() and data["images"].max() <= 1
        assert data["activations"].shape[0] == 8 and data["activations"].shape[1] > 0
        assert set(data["split"]) == {"train"}  # no hole in this dataset
    # same config, same numbers; channels-last weights act only on CUDA, so here they change nothing
    again = sample_run(run, section["sampling"], {**runtime, "channels_last": True}, labels, out, tmp_path / "again")
    with np.load(files[-1]) as a, np.load(again[-1]) as b:
        np.testing.assert_array_equal(a["images"], b["images"])
        np.testing.assert_array_equal(a["activations"], b["activations"])


def test_offgrid_samples_are_shared_interior_labels_appended_after_the_others(tmp_path):
    section, run, runtime, labels = tiny_run(tmp_path)
    out = tmp_path / "run" / "train"
    train_run(run, runtime, labels, out)
    plain = sample_run(run, section["sampling"], runtime, labels, out, tmp_path / "plain")
    sampling = {**section["sampling"], "num_samples_offgrid": 6, "offgrid_margin": 1.5, "offgrid_seed": 2}
    files = sample_run(run, sampling, runtime, labels, out, tmp_path / "offgrid")
    with np.load(files[-1]) as data, np.load(plain[-1]) as before:
        assert data["split"].tolist() == ["train"] * 8 + ["offgrid"] * 6
        grid = data["labels"][data["split"] == "offgrid"]
        assert ((grid >= 1.5) & (grid <= 8 - 1.5)).all()
        np.testing.assert_array_equal(grid, offgrid_labels(8, 6, 1.5, 2))  # the same for every run
        np.testing.assert_array_equal(data["labels"][:8], before["labels"])
    with pytest.raises(ValueError, match="leaves no interior"):
        offgrid_labels(8, 6, 4.0, 0)


def test_offgrid_accuracy_counts_only_the_offgrid_samples():
    from diffcomp.bumps.data import render
    from diffcomp.bumps.metrics import evaluate_checkpoint

    rng = np.random.default_rng(0)
    labels = rng.uniform(2, 14, (40, 2)).astype(np.float32)
    images = render(labels, 16, (1.0, 1.0))
    split = np.array(["train"] * 20 + ["ood"] * 10 + ["offgrid"] * 10)
    images[30:35] = 1.0  # five blank off-grid samples: wrong
    samples = {"images": images, "labels": labels, "split": split, "activations": rng.normal(size=(40, 16))}
    thresholds = {"phase_single_min": 0.5, "phase_accuracy_min": 0.5, "phase_r2_min": 0.5}
    row, _ = evaluate_checkpoint(samples, thresholds, umap_neighbors=5, seed=0)
    assert row["accuracy"] == 1.0 and row["accuracy_ood"] == 1.0 and row["accuracy_offgrid"] == 0.5
    assert (row["n_samples"], row["n_ood"], row["n_offgrid"]) == (20, 10, 10)


def test_corrupt_snapshot_is_a_clear_error(tmp_path):
    section, run, runtime, labels = tiny_run(tmp_path)
    out = tmp_path / "run" / "train"
    train_run(run, runtime, labels, out)
    snapshot = sorted((out / "snapshots").iterdir())[0]
    snapshot.unlink()  # hard link: rewrite this name only
    snapshot.write_bytes(b"not a checkpoint")
    target = tmp_path / "run" / "samples"
    with pytest.raises(ValueError, match=r"step000000004.safetensors is corrupt"):
        sample_run(run, section["sampling"], runtime, labels, out, target)
    assert not list(target.glob("*.npz"))
