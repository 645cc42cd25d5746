"""Relational packs: K runs of one experiment trained as one stacked model equal their single runs up to rounding."""

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from test_relational_train import TINY, assert_identical

from diffcomp.config import RUNTIME_KEYS, validate_config
from diffcomp.io import write_csv
from diffcomp.packing import unpack_run
from diffcomp.relational.config import run_definition
from diffcomp.relational.data import triples_frame
from diffcomp.relational.icons import nouns, render_icons, save_icons
from diffcomp.relational.projection import TextProjection
from diffcomp.relational.splits import Split
from diffcomp.relational.train import (
    train_relational_pack,
    train_relational_run,
)
from diffcomp.training import TrainingInterrupted

# two splits on different vocabularies: a frozen encoder's runs pack across vocabularies
SPLITS = [
    {"name": "band", "family": "band", "vocab_size": 4, "m": 1},
    {"name": "band5", "family": "band", "vocab_size": 5, "m": 1},
]


def study(tmp_path, experiments=None):
    """The tiny relational study with two splits, its icon files and split tables."""
    config = copy.deepcopy(TINY)
    config["relational"]["splits"] = SPLITS
    config["relational"]["experiments"] = experiments or [{"name": "baseline"}]
    section = validate_config(config)["relational"]
    files = {}
    for spec in SPLITS:
        n, name = spec["vocab_size"], spec["name"]
        icons = tmp_path / f"icons{n}.npz"
        save_icons(icons, render_icons(n, 16), nouns(n))
        train, test = Split.from_config(section["splits"][SPLITS.index(spec)]).triples()
        write_csv(tmp_path / f"{name}_train.csv", triples_frame(train, nouns(n)))
        files[name] = (icons, tmp_path / f"{name}_train.csv")
    runtime = {k: section["training"][k] for k in RUNTIME_KEYS}
    return section, runtime, files


def snapshots(train_dir):
    return {p.name: load_file(str(p)) for p in sorted((train_dir / "snapshots").glob("*.safetensors"))}


def assert_close_runs(got_dir, expected_dir):
    """An unpacked run equals its single run up to rounding: weights of every snapshot and loss.csv."""
    got_loss, expected_loss = pd.read_csv(got_dir / "loss.csv"), pd.read_csv(expected_dir / "loss.csv")
    assert list(got_loss.columns) == list(expected_loss.columns) == ["step", "loss", "lr"]
    assert got_loss[["step", "lr"]].equals(expected_loss[["step", "lr"]])
    np.testing.assert_allclose(got_loss["loss"], expected_loss["loss"], rtol=1e-5)
    got, expected = snapshots(got_dir), snapshots(expected_dir)
    assert got.keys() == expected.keys() and got
    for name in expected:
        assert got[name].keys() == expected[name].keys()
        for key, value in expected[name].items():
            # the same initial weights, batches, noise and timesteps: only the batched kernels differ
            torch.testing.assert_close(got[name][key], value, rtol=1e-4, atol=2e-6, msg=f"{name} {key}")


PAIRS = [("band", 3), ("band5", 4)]  # (split, seed) of the packed runs


def test_packed_pair_runs_equal_their_single_runs_up_to_rounding(tmp_path):
    section, runtime, files = study(tmp_path)
    runs = [run_definition(section, "baseline", split, seed) for split, seed in PAIRS]
    pack = tmp_path / "pack" / "train"
    summary = train_relational_pack(
        runs, runtime, [files[s][0] for s, _ in PAIRS], pack, train_csvs=[files[s][1] for s, _ in PAIRS]
    )
    assert summary["pack"] == ["band_seed3", "band5_seed4"] and summary["snapshot_steps"] == [4, 8]
    losses = pd.read_csv(pack / "loss.csv")  # the pack's total and each run's loss
    assert list(losses.columns) == ["step", "loss", "lr", "loss_0", "loss_1"]
    np.testing.assert_allclose(losses["loss"], losses["loss_0"] + losses["loss_1"], rtol=1e-6)
    for k, (run, (split, _)) in enumerate(zip(runs, PAIRS, strict=True)):
        unpacked = tmp_path / f"unpacked{k}" / "train"
        unpack_run(pack, k, unpacked)
        info = json.loads((unpacked / "train.json").read_text())
        assert info["run"] == summary["pack"][k] and info["pack_index"] == k and "state_keys" not in info
        single = tmp_path / f"single{k}" / "train"
        train_relational_run(run, runtime, files[split][0], single, train_csv=files[split][1])
        assert_close_runs(unpacked, single)


def test_packed_projection_runs_clip_each_run_on_its_own(tmp_path):
    # a clipping threshold every step reaches: a pack clipping the stack's joint norm would differ
    experiments = [
        {"name": "baseline"},
        {
            "name": "wiclp",
            "projection": {"base": "baseline", "variant": "window", "steps": 4, "max_grad_norm": 1e-3},
        },
    ]
    section, runtime, files = study(tmp_path, experiments)
    base_dirs = []
    for split, seed in PAIRS:
        base_dirs.append(tmp_path / f"base_{split}" / "train")
        train_relational_run(
            run_definition(section, "baseline", split, seed),
            runtime,
            *files[split][:1],
            base_dirs[-1],
            train_csv=files[split][1],
        )
    runs = [run_definition(section, "wiclp", split, seed) for split, seed in PAIRS]
    pack = tmp_path / "pack" / "train"
    summary = train_relational_pack(
        runs,
        runtime,
        [files[s][0] for s, _ in PAIRS],
        pack,
        train_csvs=[files[s][1] for s, _ in PAIRS],
        init_dirs=base_dirs,
    )
    # only the two runs' projections train
    assert summary["trained_parameters"] == 2 * sum(p.numel() for p in TextProjection("window", 16).parameters())
    for k, ((split, _), run, base) in enumerate(zip(PAIRS, runs, base_dirs, strict=True)):
        unpacked = tmp_path / f"unpacked{k}" / "train"
        unpack_run(pack, k, unpacked)
        single = tmp_path / f"single{k}" / "train"
        train_relational_run(run, runtime, files[split][0], single, train_csv=files[split][1], init_dir=base)
        assert_close_runs(unpacked, single)
        final = sorted(snapshots(unpacked).items())[-1][1]
        assert final["projection.map.weight"].abs().sum() > 0  # the projection learned
        for key, value in load_file(str(sorted((base / "snapshots").glob("*"))[-1])).items():
            assert torch.equal(final[key], value), key  # the base model is untouched


def test_a_resumed_pack_is_bit_identical(tmp_path):
    section, runtime, files = study(tmp_path)
    runs = [run_definition(section, "baseline", split, seed) for split, seed in PAIRS]
    args = (runs, runtime, [files[s][0] for s, _ in PAIRS])
    csvs = [files[s][1] for s, _ in PAIRS]
    train_relational_pack(*args, tmp_path / "a" / "train", train_csvs=csvs)
    with pytest.raises(TrainingInterrupted, match="stopped at step 5/8"):
        train_relational_pack(*args, tmp_path / "b" / "train", train_csvs=csvs, stop_after_step=5)
    summary = train_relational_pack(*args, tmp_path / "b" / "train", train_csvs=csvs)
    assert summary["steps_this_job"] == 3
    a, b = snapshots(tmp_path / "a" / "train"), snapshots(tmp_path / "b" / "train")
    assert a.keys() == b.keys()
    for name in a:
        assert_identical(a[name], b[name])
    assert (tmp_path / "a" / "train" / "loss.csv").read_text() == (tmp_path / "b" / "train" / "loss.csv").read_text()


@pytest.mark.parametrize(
    ("experiment", "message"),
    [
        ({"name": "trained", "text_encoder_trainable": True}, "a trained text encoder cannot run under torch.vmap"),
        (
            {"name": "f2r", "contrastive": {"fake_to_real": 0.2}},
            "contrastive losses .* are not packed",
        ),
    ],
)
def test_unpackable_runs_are_refused_before_training(tmp_path, experiment, message):
    section, runtime, files = study(tmp_path, [experiment])
    runs = [run_definition(section, experiment["name"], split, seed) for split, seed in PAIRS]
    with pytest.raises(ValueError, match=message):
        train_relational_pack(runs, runtime, [files[s][0] for s, _ in PAIRS], tmp_path / "pack" / "train")
    assert not (tmp_path / ".state").exists()


def test_runs_of_different_shapes_or_stages_do_not_pack(tmp_path):
    section, runtime, files = study(tmp_path, [{"name": "baseline"}, {"name": "no_pos", "pos_emb": "none"}])
    runs = [run_definition(section, "baseline", "band", 0), run_definition(section, "no_pos", "band", 0)]
    with pytest.raises(ValueError, match="must share their model settings"):
        train_relational_pack(runs, runtime, [files["band"][0]] * 2, tmp_path / "pack" / "train")


def test_unpack_names_a_missing_run_or_an_unfinished_pack(tmp_path):
    section, runtime, files = study(tmp_path)
    runs = [run_definition(section, "baseline", split, seed) for split, seed in PAIRS]
    pack = tmp_path / "pack" / "train"
    train_relational_pack(
        runs, runtime, [files[s][0] for s, _ in PAIRS], pack, train_csvs=[files[s][1] for s, _ in PAIRS]
    )
    with pytest.raises(ValueError, match="no run 2 in a pack of 2"):
        unpack_run(pack, 2, tmp_path / "out" / "train")
    with pytest.raises(ValueError, match="not a finished pack"):
        unpack_run(tmp_path / "nothing", 0, tmp_path / "out" / "train")
    assert not (tmp_path / "out" / "train").exists()
