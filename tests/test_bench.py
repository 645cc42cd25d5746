"""The GPU measurements run in one short device session (bench/gpu_bench.sh): the benches must
work when that session comes, so their counting modes and the script run here on the quick config
(no timing is asserted)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _gpu_bench_env(out: Path, **settings: str) -> dict:
    """bench/gpu_bench.sh's environment: this venv's python first on PATH, results under ``out``,
    the quick config unless ``settings`` (its variables) say otherwise."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, "PATH": path, "OUT": str(out), "CONFIG": "config.yaml", **settings}


def _run(*args, env=None, timeout=600):
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env, check=True)


def test_bench_bumps_counts_flops_and_operations(tmp_path):
    out = tmp_path / "flops.json"
    _run(sys.executable, "bench/bench_bumps.py", "--flops", "--packed", "2", "--json", str(out))
    result = json.loads(out.read_text())
    flops, operations = result["flops"], result["operations"]
    assert flops["checkpoints"] == 6 and flops["sampler_steps"] == 10  # the quick config's
    assert 0 < flops["sampling_pflop_per_run"] < flops["training_pflop_per_run"]
    one, stacked = operations["one_model"], operations["stacked_2"]
    assert one["tensors"] == stacked["tensors"]
    # the optimiser and the EMA do the same operations for one model and for the stack of two
    assert one["adamw_foreach"] == stacked["adamw_foreach"] and one["ema"] == stacked["ema"] == 4
    assert one["ema_as_per_tensor_loop"] >= 3 * one["tensors"] - 3
    assert 0 < one["batch_forward_loss_backward"] <= stacked["batch_forward_loss_backward"]


def test_bench_relational_counts_flops(tmp_path):
    out = tmp_path / "flops.json"
    _run(sys.executable, "bench/bench_relational.py", "--flops", "--json", str(out))
    result = json.loads(out.read_text())
    assert result["experiment"] == "baseline" and result["parameters"] > 0
    assert 0 < result["sampling_pflop_per_run"] < result["training_pflop_per_run"]


def test_gpu_bench_script_runs_a_setting_and_summarises(tmp_path):
    _run("bash", "bench/gpu_bench.sh", "eager_packed", env=_gpu_bench_env(tmp_path, STEPS="3", PACK="2"))
    result = json.loads((tmp_path / "eager_packed.json").read_text())
    packed = result["packed"]
    assert packed["models"] == 2 and packed["pipeline_pack_aggregate_steps_per_s"] > 0
    assert result["ema"]["foreach_operations"] < result["ema"]["per_tensor_operations"]
    summary = (tmp_path / "summary.txt").read_text()
    assert summary.startswith("eager_packed") and "pipeline pack" in summary


def test_bench_stacked_trainer_leaves_stacked_weights_contiguous(monkeypatch):
    """channels-last is a 4-D layout: as the workflow's pack trainer, the bench's stacked models
    ignore it (on CUDA, where gpu_settings keeps it, it used to fail on the 5-D stacked weights)."""
    sys.path.insert(0, str(REPO / "bench"))
    import bench_bumps

    from diffcomp.bumps.config import dataset_specs
    from diffcomp.config import load_config

    section = load_config(REPO / "config.yaml")["bumps"]
    section["training"] = {**section["training"], "channels_last": True}
    name, spec = next(iter(dataset_specs(section).items()))
    section, _, labels = bench_bumps.bench_data(section, {"image_size": section["image_size"], **spec})
    # what gpu_settings returns on CUDA: the requested settings as they are
    monkeypatch.setattr(
        bench_bumps,
        "gpu_settings",
        lambda training, device: {
            "tf32": None,
            "fused_optimizer": False,
            "channels_last": bool(training["channels_last"]),
        },
    )
    single = bench_bumps.BareTrainer(section, labels, torch.device("cpu"))
    assert any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) for p in single.model.parameters())
    stacked = bench_bumps.StackedTrainer(section, labels, torch.device("cpu"), 2)
    assert all(p.is_contiguous() for p in stacked.model.parameters())
    stacked.step()


def test_bench_relational_reports_images_and_the_fraction_of_peak(tmp_path):
    """gpu_bench.sh's relational setting: training rates with images/s and the fraction of a given peak."""
    out = tmp_path / "relational.json"
    _run(
        sys.executable, "bench/bench_relational.py", "--steps", "3", "--rounds", "1", "--eval-images", "200",
        "--scale-vocab", "9", "--peak-tflops", "2.0", "--json", str(out),
    )  # fmt: skip
    training = json.loads(out.read_text())["training"]
    assert training["images_per_s"] == training["pipeline_steps_per_s"] * training["batch_size"]
    assert training["flops_per_step"] > 0 and training["bf16_peak_tflops"] == 2.0
    assert training["achieved_tflops"] == training["flops_per_step"] * training["pipeline_steps_per_s"] / 1e12
    assert training["fraction_of_bf16_peak"] == training["achieved_tflops"] / 2.0


def test_agreement_bench_measures_what_is_bit_identical_on_the_cpu(tmp_path):
    """bench/agreement.py on the quick config: on a CPU a repeated and a resumed run equal the
    reference bit for bit, and so do the settings that act only on CUDA (tf32, fused AdamW,
    channels-last) and the CUDA-graph step run eagerly; bf16 autocast differs by a bf16-sized
    amount and a packed run by rounding, and resuming a CUDA-graph run, a pack or a run with every
    GPU option equals that variant uninterrupted; the EMA's foreach form equals its loop. Run as the GPU
    session runs it, through bench/gpu_bench.sh, whose summary line it checks too."""
    _run("bash", "bench/gpu_bench.sh", "agreement", env=_gpu_bench_env(tmp_path, AGREEMENT_STEPS="4"))
    result = json.loads((tmp_path / "agreement.json").read_text())
    assert result["device"] == "cpu" and result["steps"] == 4 and result["gpu"] is None
    variants = result["variants"]
    resumed = {"cuda_graph_resumed": "cuda_graph", "pack_resumed": "pack", "all_gpu_options_resumed": "all_gpu_options"}
    identical = ("repeat", "resumed", "tf32", "fused_optimizer", "channels_last", "cuda_graph", *resumed)
    assert set(variants) == {*identical, "bf16", "pack", "all_gpu_options"}
    for name in identical:
        for weights in ("weights", "snapshot"):
            row = variants[name][weights]
            assert row["bit_identical"] and row["max_abs_diff"] == 0 and row["relative_to_training"] == 0, name
        against = resumed.get(name)
        assert variants[name]["against"] == (against or "reference")
        expected_loss = variants[against]["final_loss"] if against else result["reference"]["final_loss"]
        assert variants[name]["final_loss"] == expected_loss
    bf16 = variants["bf16"]["weights"]
    assert not bf16["bit_identical"] and 1e-4 < bf16["relative_to_training"] < 0.2
    pack = variants["pack"]["weights"]
    assert not pack["bit_identical"] and 0 < pack["relative_to_training"] < 1e-3
    # on a CPU the options that act only on CUDA change nothing: all of them together are bf16 alone
    assert variants["all_gpu_options"]["weights"] == bf16
    assert result["ema_foreach_vs_loop"]["bit_identical"]
    summary = (tmp_path / "summary.txt").read_text()
    assert summary.startswith("agreement") and "resumed =" in summary and "EMA foreach =" in summary


def test_gpu_bench_stops_at_once_where_torch_does_not_see_the_gpu(tmp_path):
    """On a machine whose nvidia-smi answers, a torch without CUDA must not run the paper model on
    the CPU until every setting's timeout: the preflight stops the script before any setting."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    smi = fake_bin / "nvidia-smi"
    smi.write_text('#!/bin/sh\necho "NVIDIA H200, 580.159.04, 143771 MiB"\n')
    smi.chmod(0o755)
    env = _gpu_bench_env(tmp_path / "out", CONFIG="config.paper.yaml")
    env["PATH"] = f"{fake_bin}{os.pathsep}{env['PATH']}"
    run = subprocess.run(
        ["bash", "bench/gpu_bench.sh", "eager_packed"], cwd=REPO, capture_output=True, text=True, env=env, timeout=300
    )
    assert run.returncode == 1
    assert "nvidia-smi sees a GPU but torch does not" in run.stdout + run.stderr
    assert not list((tmp_path / "out").glob("*.json"))  # no setting ran


def test_relational_levers_trains_each_variant_through_the_pipeline(tmp_path):
    """bench/relational_levers.py: one row per variant and checkpoint, the overrides applied (its
    own step count and checkpoints), the diagnostic conditions accepted."""
    out = tmp_path / "levers.json"
    short = (
        "training.steps=4;training.checkpoint_every=2;training.warmup_steps=1;sampling.num_train=4;sampling.num_test=4"
    )
    _run(
        sys.executable, "bench/relational_levers.py", "--split", "band", "--jobs", "2", "--json", str(out),
        "--variant", f"roles:{short};text_encoder.caption_pretraining_steps=0;diagnosis.role_alpha=1",
        "--variant", f"one_caption:{short};model.text_pos_emb=sinusoidal;diagnosis.one_caption=true",
        "--variant", f"staged:{short};text_encoder.caption_pretraining_steps=0;single_object_pretraining_steps=2;"
        "training.condition_dropout=0.2;sampling.guidance_scale=2",
    )  # fmt: skip
    result = json.loads(out.read_text())
    assert result["variants"]["roles"]["diagnosis.role_alpha"] == 1
    assert result["variants"]["staged"]["single_object_pretraining_steps"] == 2
    rows = result["rows"]
    assert sorted((r["variant"], r["step"]) for r in rows) == [
        (name, step) for name in ("one_caption", "roles", "staged") for step in (2, 4)
    ]
    for row in rows:
        assert row["single_object_pretraining_steps"] == (2 if row["variant"] == "staged" else 0)
        assert 0 <= row["train_accuracy"] <= 1 and 0 <= row["test_accuracy"] <= 1
        assert row["n_train_samples"] == 4 and row["n_test_samples"] == 4


def test_bench_audit_times_the_audit_before_and_after_it_streamed(tmp_path):
    """bench/bench_audit.py on small files: a row per size (the quoted file and the big size too),
    time and peak memory of each command; before and after print and write the same audit (where
    the repository's history holds the in-memory audit's commit)."""
    sys.path.insert(0, str(REPO / "bench"))
    from bench_audit import IN_MEMORY_AUDIT

    git = ["git", "cat-file", "-e", f"{IN_MEMORY_AUDIT}^{{commit}}"]
    has_before = shutil.which("git") is not None and subprocess.run(git, cwd=REPO, capture_output=True).returncode == 0
    out, table, files = tmp_path / "audit.json", tmp_path / "audit.md", tmp_path / "files"
    _run(
        sys.executable, "bench/bench_audit.py", "--sizes", "3000,6000", "--quoted", "2000", "--big", "4000",
        "--nouns", "40", "--rounds", "2", "--out", str(files), "--json", str(out), "--md", str(table),
        *([] if has_before else ["--before", ""]),
    )  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    assert [(row["triples"], row["quoted"]) for row in rows] == [(3000, 0), (6000, 0), (2000, 1), (4000, 0)]
    for row in rows:
        name = f"triples_{row['triples']}_40{'_quoted' if row['quoted'] else ''}.csv"
        assert row["file_bytes"] == (files / name).stat().st_size
        assert row["after"]["seconds"] > 0 and row["after"]["peak_rss_bytes"] > 0
    assert "before" not in rows[3] and rows[3]["rounds"] == 1
    if has_before:
        assert all(row["same_output"] and len(row["before"]["seconds_all"]) == 2 for row in rows[:3])
    assert "| 3,000 |" in table.read_text() and "| 2,000, every field quoted |" in table.read_text()


def test_quick_findings_hold_on_the_quick_snapshot_and_fail_when_one_is_lost(tmp_path):
    """bench/quick_findings.py on the committed quick snapshot: every finding holds; phases that go
    back, an increment trend that is gone or a band run that does not generalise each fail it."""
    import pandas as pd

    sys.path.insert(0, str(REPO / "bench"))
    import quick_findings

    snapshot = REPO / "docs" / "results" / "quick"
    bumps = pd.read_csv(snapshot / "bumps_metrics.csv")
    relational = pd.read_csv(snapshot / "relational_final.csv")
    assert all(holds for _, holds, _ in quick_findings.bump_findings(bumps))
    assert all(holds for _, holds, _ in quick_findings.relational_findings(relational))

    back = bumps.copy()
    last = back.index[(back["run"] == "hole_seed0") & (back["step"] == back["step"].max())]
    back.loc[last, "phase"] = "A"
    failed = [name for name, holds, _ in quick_findings.bump_findings(back) if not holds]
    assert failed == ["hole_seed0: phases in order"]

    flat = bumps.assign(accuracy_offgrid=0.5 + 0.01 * bumps["increment_x"])  # larger increments ahead
    assert not quick_findings.bump_findings(flat)[-1][1]

    worse = relational.copy()
    worse.loc[(worse["split"] == "band") & (worse["experiment"] == "baseline"), "test_accuracy"] = 0.3
    assert [holds for _, holds, _ in quick_findings.relational_findings(worse)] == [True, False]

    (tmp_path / "bumps").mkdir()
    (tmp_path / "relational").mkdir()
    bumps.to_csv(tmp_path / "bumps" / "metrics.csv", index=False)
    worse.to_csv(tmp_path / "relational" / "metrics.csv", index=False)
    assert quick_findings.main([str(tmp_path)]) == 1
