"""The real workflow CLI end to end on a tiny bump-study config: outputs, reruns, bad config."""

import json

import pandas as pd
import pytest
import yaml
from conftest import TINY_MODEL, planned_rules, run_snakemake

pytestmark = pytest.mark.slow

TINY = {
    "seed": 0,
    "bumps": {
        "image_size": 8,
        "grid": {"increments": [1.0, 2.0], "sigmas": [1.0]},
        "datasets": [
            {"name": "sigma2", "increment": 1.0, "sigma": 2.0},
            {"name": "imbalanced", "increment": [1.0, 2.0], "sigma": 1.0},
            {
                "name": "hole",
                "increment": 1.0,
                "sigma": 1.0,
                "holes": [{"name": "c", "shape": "disc", "center": [4.0, 4.0], "radius": 1.2}],
            },
        ],
        "seeds": [0],
        "model": TINY_MODEL,
        "diffusion": {"num_train_timesteps": 20},
        "training": {"steps": 6, "batch_size": 8, "warmup_steps": 1, "checkpoint_every": 3, "log_every": 3},
        "sampling": {"num_samples": 16, "num_samples_ood": 4, "num_inference_steps": 2, "batch_size": 32},
        "evaluation": {"umap_neighbors": 5},
    },
}

FIGURES = ["phases", "phase_diagram", "sigma", "imbalance", "holes"]
COLUMNS = (
    "run, increment_x, increment_y, sigma, hole, seed, step, accuracy, accuracy_x, accuracy_y, r2_x, r2_y, "
    "frac_none, frac_single, frac_multi, phase, accuracy_ood"
).split(", ")


def write_config(workdir, config):
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("workflow")
    write_config(workdir, TINY)
    run_snakemake(workdir, "--configfile", "config.yaml", "--cores", "2")
    return workdir


def test_all_outputs(finished):
    results = finished / "results" / "bumps"
    for kind in FIGURES:
        for ext in ("png", "pdf"):
            assert (results / "figures" / f"{kind}.{ext}").stat().st_size > 0
    metrics = pd.read_csv(results / "metrics.csv")
    assert list(metrics.columns[: len(COLUMNS)]) == COLUMNS
    assert len(metrics) == 5 * 2  # five runs, checkpoints at steps 3 and 6
    assert set(metrics["phase"]) <= {"A", "B", "C"}
    hole = metrics[metrics["run"] == "hole_seed0"]
    assert hole["hole"].eq("c").all() and hole["accuracy_ood"].notna().all()
    assert metrics.loc[metrics["run"] != "hole_seed0", ["hole", "accuracy_ood"]].isna().all().all()
    assert (finished / "results/benchmarks/bumps/train/hole_seed0.tsv").exists()
    assert "loss=" in (finished / "results/logs/bumps/train/hole_seed0.log").read_text()


def test_noop_rerun_runs_nothing(finished):
    assert planned_rules(finished) == {}


def planned_after(workdir, section: str, key: str, value) -> dict[str, int]:
    """What a dry run would execute after changing bumps.<section>.<key> (the config is restored)."""
    changed = yaml.safe_load(yaml.safe_dump(TINY))
    changed["bumps"][section][key] = value
    write_config(workdir, changed)
    try:
        return planned_rules(workdir)
    finally:
        write_config(workdir, TINY)


def test_changed_training_parameter_reruns_training_and_downstream_only(finished):
    planned = planned_after(finished, "training", "learning_rate", 0.0005)
    assert planned.get("bumps_train") == 5 and planned.get("bumps_sample") == 5 and planned.get("bumps_evaluate") == 5
    assert "bumps_dataset" not in planned and "bumps_audit" not in planned
    assert planned.get("bumps_metrics") == 1


def test_changed_sampling_parameter_keeps_training(finished):
    planned = planned_after(finished, "sampling", "num_inference_steps", 3)
    assert "bumps_train" not in planned and planned.get("bumps_sample") == 5


def test_report_builds(finished):
    run_snakemake(finished, "--configfile", "config.yaml", "--cores", "1", "--report", "results/report.html")
    html = (finished / "results" / "report.html").read_text(errors="replace")
    assert "phase_diagram.png" in html and "holes.png" in html


def test_bad_config_fails_before_any_job(tmp_path):
    bad = yaml.safe_load(yaml.safe_dump(TINY))
    bad["bumps"]["grid"]["increments"] = [0.0]
    write_config(tmp_path, bad)
    proc = run_snakemake(tmp_path, "--configfile", "config.yaml", "--cores", "1", check=False)
    assert proc.returncode != 0
    assert "bumps.grid.increments[0]" in proc.stderr + proc.stdout
    assert not (tmp_path / "results").exists()


def test_packed_training_trains_runs_in_packs_and_unpacks_each(tmp_path):
    """bumps.pack_size: 2 -> the five runs train in three pack jobs; sampling and evaluation stay per run."""
    packed = yaml.safe_load(yaml.safe_dump(TINY))
    packed["bumps"]["pack_size"] = 2
    write_config(tmp_path, packed)
    planned = planned_rules(tmp_path)
    assert "bumps_train" not in planned
    assert planned.get("bumps_train_pack") == 3 and planned.get("bumps_unpack") == 5
    assert planned.get("bumps_sample") == 5 and planned.get("bumps_evaluate") == 5
    run_snakemake(tmp_path, "--configfile", "config.yaml", "--cores", "2")
    results = tmp_path / "results" / "bumps"
    metrics = pd.read_csv(results / "metrics.csv")
    assert len(metrics) == 5 * 2 and set(metrics["step"]) == {3, 6}
    train = json.loads((results / "runs" / "hole" / "seed0" / "train" / "train.json").read_text())
    # datasets x seeds in config order: inc1_sig1, inc2_sig1 | sigma2, imbalanced | hole
    assert train["pack"] == ["hole_seed0"] and train["pack_index"] == 0
    assert sorted(p.name for p in (results / "packs").iterdir()) == ["pack0", "pack1", "pack2"]
    assert planned_rules(tmp_path) == {}
