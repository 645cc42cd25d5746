"""Packs: K bump runs trained as one stacked model in one job equal their single runs up to rounding."""

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file
from test_bumps_train import TINY

from diffcomp.bumps.config import dataset_specs
from diffcomp.bumps.data import BumpDataset
from diffcomp.bumps.model import BumpDenoiser
from diffcomp.bumps.train import (
    PACK_SHARED_KEYS,
    RUNTIME_KEYS,
    TrainingInterrupted,
    pack_definition,
    semantic_config,
    train_pack,
    train_run,
)
from diffcomp.config import validate_config
from diffcomp.io import write_csv
from diffcomp.packing import unpack_run


def two_runs(tmp_path):
    """Two runs on different datasets and seeds, with their label files."""
    config = copy.deepcopy(TINY)
    config["bumps"]["datasets"].append({"name": "coarse", "increment": 2.0, "sigma": 1.0})
    section = validate_config(config)["bumps"]
    runs, labels = [], []
    for name, seed in (("tiny", 3), ("coarse", 4)):
        spec = {"image_size": 8, **dataset_specs(section)[name]}
        path = tmp_path / f"{name}.csv"
        write_csv(path, BumpDataset.from_config(spec, 8).labels())
        runs.append(semantic_config(section, spec, seed=seed))
        labels.append(path)
    runtime = {k: section["training"][k] for k in RUNTIME_KEYS}
    return runs, runtime, labels


def snapshots(train_dir):
    return {p.name: load_file(str(p)) for p in sorted((train_dir / "snapshots").glob("*.safetensors"))}


def test_packed_runs_equal_their_single_runs_up_to_rounding(tmp_path):
    runs, runtime, labels = two_runs(tmp_path)
    summary = train_pack(runs, runtime, labels, tmp_path / "pack" / "train")
    assert summary["pack"] == ["tiny_seed3", "coarse_seed4"] and summary["snapshot_steps"] == [4, 8, 12]
    for k, (run, label) in enumerate(zip(runs, labels, strict=True)):
        unpacked = tmp_path / f"unpacked{k}" / "train"
        unpack_run(tmp_path / "pack" / "train", k, unpacked)
        single = tmp_path / f"single{k}" / "train"
        train_run(run, runtime, label, single)
        got_loss, expected_loss = pd.read_csv(unpacked / "loss.csv"), pd.read_csv(single / "loss.csv")
        assert got_loss[["step", "lr"]].equals(expected_loss[["step", "lr"]])
        np.testing.assert_allclose(got_loss["loss"], expected_loss["loss"], rtol=1e-5)
        got, expected = snapshots(unpacked), snapshots(single)
        assert got.keys() == expected.keys() == {f"step{s:09d}.safetensors" for s in (4, 8, 12)}
        for name in expected:
            assert got[name].keys() == expected[name].keys()
            for key, value in expected[name].items():
                if key.endswith("to_k.bias"):
                    # a key bias adds the same q.b to every logit of a query: its true gradient is 0,
                    # so Adam turns rounding noise of either run into full-size steps; not compared
                    continue
                # the same initial weights, batches, noise and timesteps: only the batched kernels differ
                torch.testing.assert_close(got[name][key], value, rtol=1e-4, atol=2e-6)


def test_a_resumed_pack_is_bit_identical(tmp_path):
    runs, runtime, labels = two_runs(tmp_path)
    train_pack(runs, runtime, labels, tmp_path / "a" / "train")
    with pytest.raises(TrainingInterrupted):
        train_pack(runs, runtime, labels, tmp_path / "b" / "train", stop_after_step=6)
    train_pack(runs, runtime, labels, tmp_path / "b" / "train")
    a, b = snapshots(tmp_path / "a" / "train"), snapshots(tmp_path / "b" / "train")
    assert a.keys() == b.keys()
    for name in a:
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), (name, key)


def test_unpack_names_a_missing_run_or_a_corrupt_snapshot(tmp_path):
    runs, runtime, labels = two_runs(tmp_path)
    pack = tmp_path / "pack" / "train"
    summary = train_pack(runs, runtime, labels, pack)
    # the pack records its models' state keys (what unpacking names the weights by), not the runs'
    assert summary["state_keys"] == list(BumpDenoiser.from_config(runs[0]).state_dict())
    with pytest.raises(ValueError, match="no run 2 in a pack of 2"):
        unpack_run(pack, 2, tmp_path / "out" / "train")
    last = sorted((pack / "snapshots").glob("*.safetensors"))[-1]
    last.unlink()  # a hard link into the state folder: replace, do not overwrite in place
    last.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=f"pack snapshot {last} is corrupt"):
        unpack_run(pack, 0, tmp_path / "out" / "train")
    assert not (tmp_path / "out" / "train").exists()
    save_file({"unrelated": torch.zeros(1)}, str(last))
    with pytest.raises(ValueError, match="not this run's model"):
        unpack_run(pack, 0, tmp_path / "out" / "train")
    # a pack whose train.json has no state keys (written before packs recorded them)
    info = json.loads((pack / "train.json").read_text())
    del info["state_keys"]
    (pack / "train.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="records no model state keys .* delete"):
        unpack_run(pack, 0, tmp_path / "out" / "train")
    assert not (tmp_path / "out" / "train").exists()


def test_runs_of_different_shapes_do_not_pack(tmp_path):
    runs, _, _ = two_runs(tmp_path)
    other = copy.deepcopy(runs[1])
    other["model"] = {**other["model"], "block_out_channels": [8, 8]}
    with pytest.raises(ValueError, match="must share their model settings"):
        pack_definition([runs[0], other], PACK_SHARED_KEYS)
