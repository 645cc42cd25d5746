"""End to end: the real workflow CLI on a config with only a (tiny) relational section."""

import json

import pandas as pd
import pytest
import yaml
from conftest import TINY_MODEL, TINY_RELATIONAL_MODEL, TINY_TEXT_ENCODER, planned_rules, run_snakemake

from diffcomp.relational.audit import FLAT_KEYS, audit_file, audit_index_triples, flatten
from diffcomp.relational.evaluate import METRIC_COLUMNS
from diffcomp.relational.icons import load_icons, nouns
from diffcomp.relational.splits import Split, n_triples

N = 8
SPLITS = [
    {"name": "band1", "family": "band", "vocab_size": N, "m": 1},
    {"name": "bipartite", "family": "bipartite", "vocab_size": N},
    {"name": "by_order", "family": "caption_by_order", "vocab_size": N},
    {"name": "random", "family": "random", "vocab_size": N, "size": 20, "seed": 5},
]


@pytest.mark.slow
def test_workflow_builds_splits_audits_and_figures(workdir):
    config = {"relational": {"icon_size": 16, "preview_count": 4, "splits": SPLITS}}
    (workdir / "relational.yaml").write_text(yaml.safe_dump(config))
    run_snakemake(workdir, "--configfile", "relational.yaml", "--cores", "2")
    results = workdir / "results" / "relational"

    table = pd.read_csv(results / "audit.csv")
    assert list(table.columns) == ["split", "family", "vocab_size", *FLAT_KEYS]
    assert table["split"].tolist() == [spec["name"] for spec in SPLITS]
    assert table["family"].tolist() == ["band(m=1)", "bipartite", "caption_by_order", "random(size=20)"]
    assert (results / "audit.png").stat().st_size > 10_000
    assert (workdir / "results" / "logs" / "relational" / "audit_figure.log").exists()

    icons, names = load_icons(results / "vocab" / f"N{N}_S16" / "icons.npz")
    assert icons.shape == (N, 16, 16) and names == nouns(N)
    assert pd.read_csv(results / "vocab" / f"N{N}_S16" / "pretrain.csv")["noun"].tolist() == nouns(N)

    for k, spec in enumerate(SPLITS):
        split_dir = results / "splits" / spec["name"]
        expected_train, _ = Split.from_config(spec).triples()
        expected = flatten(audit_index_triples(expected_train, N))
        # audit.json is exactly what `diffcomp audit train.csv --vocab-size N --json` writes ...
        written = json.loads((split_dir / "audit.json").read_text())
        assert written == audit_file(split_dir / "train.csv", N)
        # ... it matches the library's audit of the split's index triples, and so does its table row.
        assert flatten(written) == pytest.approx(expected)
        assert table.iloc[k][list(FLAT_KEYS)].to_dict() == pytest.approx(expected)
        train, test = pd.read_csv(split_dir / "train.csv"), pd.read_csv(split_dir / "test.csv")
        assert list(train.columns) == ["subject", "relation", "object"]
        assert len(train) == len(expected_train) and len(train) + len(test) == n_triples(N)
        assert (split_dir / "preview.png").stat().st_size > 5_000

    bipartite = table.set_index("split").loc["bipartite"]
    assert bipartite["visual.completeness_r1"] == 50.0 and bipartite["visual.balance"] == 0.0
    assert table.set_index("split").loc["band1", "linguistic.balance"] == 100.0

    # Nothing is left to do, and the dry run of a second call agrees.
    again = run_snakemake(workdir, "--configfile", "relational.yaml", "--cores", "2", "-n")
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.slow
def test_bad_relational_config_stops_the_workflow_naming_the_key(workdir):
    config = {"relational": {"splits": [{"name": "b", "family": "band", "vocab_size": N, "m": 4}]}}
    (workdir / "relational.yaml").write_text(yaml.safe_dump(config))
    proc = run_snakemake(workdir, "--configfile", "relational.yaml", "--cores", "1", "-n", check=False)
    assert proc.returncode != 0
    assert "relational.splits[0].m (split 'b'): m = 4 is too large for vocab_size = 8" in proc.stdout + proc.stderr


# Both studies, tiny: the relational study trained (with pretraining) next to one bump run.
TRAINED = {
    "bumps": {
        "image_size": 8,
        "grid": {"increments": [1.0], "sigmas": [1.0]},
        "model": TINY_MODEL,
        "diffusion": {"num_train_timesteps": 20},
        "training": {"steps": 4, "batch_size": 8, "warmup_steps": 1, "checkpoint_every": 2, "log_every": 2},
        "sampling": {"num_samples": 16, "num_samples_ood": 4, "num_inference_steps": 2, "batch_size": 32},
        "evaluation": {"umap_neighbors": 5},
    },
    "relational": {
        "icon_size": 16,
        "preview_count": 4,
        "splits": [
            {"name": "band", "family": "band", "vocab_size": 4, "m": 1},
            {"name": "bipartite", "family": "bipartite", "vocab_size": 4},
            {"name": "random", "family": "random", "vocab_size": 4, "size": 8, "seed": 1},
        ],
        # caption-pretrained (a few steps): one relational_text_encoder job for every run and sampling job
        "text_encoder": {**TINY_TEXT_ENCODER, "caption_pretraining_steps": 5},
        "model": TINY_RELATIONAL_MODEL,
        "diffusion": {"num_train_timesteps": 20},
        "training": {"steps": 4, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 2, "log_every": 2},
        "single_object_pretraining_steps": 2,
        "sampling": {"num_train": 3, "num_test": 3, "num_inference_steps": 2, "batch_size": 8},
        "experiments": [
            {"name": "baseline"},
            {"name": "no_pos_emb", "splits": ["band"], "pos_emb": "none"},
            # a WiCLP projection fine-tuned on baseline/band's final weights
            {"name": "wiclp", "splits": ["band"], "projection": {"base": "baseline", "variant": "window", "steps": 2}},
            # both contrastive losses, on the frozen image encoder the pipeline trains first
            {"name": "contrastive", "splits": ["band"], "contrastive": {"fake_to_fake": 0.2, "fake_to_real": 0.2}},
        ],
        "image_encoder": {"width": 4, "embedding_dim": 8, "steps": 20, "batch_size": 16},
    },
}
RELATIONAL_FIGURES = ["curves", "scatter", "skew", "ablation", "interventions", "samples"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("relational_trained")
    (workdir / "config.yaml").write_text(yaml.safe_dump(TRAINED))
    run_snakemake(workdir, "--configfile", "config.yaml", "--cores", "2")
    return workdir


@pytest.mark.slow
def test_trained_study_writes_metrics_and_every_figure(trained):
    results = trained / "results" / "relational"
    metrics = pd.read_csv(results / "metrics.csv", keep_default_na=False, na_values=[""])
    assert list(metrics.columns) == METRIC_COLUMNS
    # five runs (baseline on three splits, no_pos_emb and contrastive on band) with checkpoints at
    # steps 2 and 4, and the 2-step projection run on band
    assert len(metrics) == 5 * 2 + 1
    assert sorted(set(metrics["run"])) == [
        "baseline/band/seed0",
        "baseline/bipartite/seed0",
        "baseline/random/seed0",
        "contrastive/band/seed0",
        "no_pos_emb/band/seed0",
        "wiclp/band/seed0",
    ]
    assert set(metrics["step"]) == {2, 4}
    interventions = metrics.groupby("experiment")["intervention"].unique().map(list).to_dict()
    assert interventions == {
        "baseline": ["baseline"],
        "no_pos_emb": ["baseline"],
        "wiclp": ["projection-window"],
        "contrastive": ["contrastive-both"],
    }
    params = metrics.groupby("experiment")["intervention_params"].first().to_dict()
    assert params["contrastive"] == "fake_to_fake=0.2 fake_to_real=0.2 temperature=0.5" and params["baseline"] == "none"
    assert params["wiclp"].startswith("base=baseline variant=window window=2")
    # the contrastive run's image encoder, trained on its split's training images only
    encoder = json.loads((results / "image_encoders/band/encoder.json").read_text())
    assert encoder["spec"]["steps"] == 20 and 0 <= encoder["accuracy_noise0.0"] <= 1
    assert encoder["training_pairs"] == 8  # band(m=1) at N = 4: each noun with its 2 neighbours
    assert metrics["train_accuracy"].between(0, 1).all() and metrics["test_accuracy"].between(0, 1).all()
    assert set(metrics.loc[metrics["experiment"] == "no_pos_emb", "pos_emb"]) == {"none"}
    assert set(metrics["encoder"]) == {"t5-scratch-captions"}  # caption-pretrained (encoder_label)
    bipartite = metrics[metrics["split"] == "bipartite"].iloc[0]
    assert bipartite["visual_completeness_r1"] == 50.0 and bipartite["visual_balance"] == 0.0
    assert bipartite["family"] == "bipartite" and bipartite["vocab_size"] == 4
    for kind in RELATIONAL_FIGURES:
        for ext in ("png", "pdf"):
            assert (results / "figures" / f"{kind}.{ext}").stat().st_size > 5_000
    summary = pd.read_csv(results / "summary.csv")
    assert len(summary) == 6 and summary["n_seeds"].eq(1).all()  # one row per (experiment, split)
    assert summary.loc[summary["experiment"] == "baseline", "n_paired"].eq(0).all()
    assert summary.loc[summary["experiment"] == "wiclp", "n_paired"].tolist() == [1]
    # the two-stage DAG: one pretraining run per (experiment, split, seed), since its text encoder
    # is the split's
    for experiment, split in [("baseline", "band"), ("baseline", "bipartite"), ("no_pos_emb", "band")]:
        assert (results / "pretrain" / experiment / split / "seed0" / "train" / "train.json").exists()
    # the contrastive experiment pretrains exactly as the baseline does: it starts from the baseline's
    assert not (results / "pretrain" / "contrastive").exists()
    assert (trained / "results/benchmarks/relational/train/baseline_band_seed0.tsv").exists()
    assert "loss=" in (trained / "results/logs/relational/train/baseline_band_seed0.log").read_text()
    # one caption-pretrained encoder per split, pretrained once on the split's training captions
    # and loaded by every training and sampling job of that split
    shared = {path.parent.name: path for path in (results / "text_encoders").glob("*/*.safetensors")}
    assert sorted(shared) == ["band", "bipartite", "random"]
    logs = trained / "results" / "logs" / "relational"
    loaded = [*logs.glob("train/*.log"), *logs.glob("pretrain/*.log"), *logs.glob("sample/*.log")]
    assert len(loaded) == 6 + 4 + 6
    for log in loaded:
        split = next(name for name in shared if f"_{name}_seed" in log.name)
        assert f"caption pretraining loaded from {shared[split].relative_to(trained)}" in log.read_text(), log


@pytest.mark.slow
def test_changed_encoder_reruns_relational_training_and_downstream_but_no_bump_job(trained):
    assert planned_rules(trained) == {}
    changed = yaml.safe_load(yaml.safe_dump(TRAINED))
    changed["relational"]["text_encoder"]["d_model"] = 8
    (trained / "config.yaml").write_text(yaml.safe_dump(changed))
    try:
        planned = planned_rules(trained)
    finally:
        (trained / "config.yaml").write_text(yaml.safe_dump(TRAINED))
    # the projection run follows its base (pretraining runs: baseline, whose pretraining the
    # contrastive experiment shares, and no_pos_emb); the image encoder does not depend on the text
    # encoder
    assert planned.get("relational_text_encoder") == 3  # one per split
    assert planned.get("relational_pretrain") == 4 and planned.get("relational_train") == 6
    assert planned.get("relational_sample") == 6 and planned.get("relational_evaluate") == 6
    assert planned.get("relational_metrics") == 1 and planned.get("relational_figure") == 6
    assert "relational_image_encoder" not in planned
    assert not [rule for rule in planned if rule.startswith("bumps_")]
    assert not {"relational_vocabulary", "relational_split", "relational_audit"} & set(planned)


@pytest.mark.slow
def test_report_holds_the_relational_figures(trained):
    run_snakemake(trained, "--configfile", "config.yaml", "--cores", "1", "--report", "results/report.html")
    html = (trained / "results" / "report.html").read_text(errors="replace")
    assert "curves.png" in html and "samples.png" in html and "Learning curves of the relational-skew study" in html


@pytest.mark.slow
def test_packed_runs_train_in_packs_and_equal_the_single_runs(trained, tmp_path):
    """relational.pack_size 2: packable experiments train in packs and are unpacked per run; the
    contrastive experiment still trains alone; every run's weights equal the unpacked study's."""
    from safetensors.torch import load_file
    from torch.testing import assert_close

    packed = {"relational": {**TRAINED["relational"], "pack_size": 2}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(packed))
    planned = planned_rules(tmp_path)
    # baseline's three runs in two packs, no_pos_emb's and wiclp's one run each in a pack of one
    assert planned.get("relational_train_pack") == 4 and planned.get("relational_unpack") == 5
    assert planned.get("relational_train") == 1  # contrastive/band
    # up to the metrics table (the figures are the unpacked study's code path)
    run_snakemake(tmp_path, "--configfile", "config.yaml", "--cores", "2", "results/relational/metrics.csv")
    results = tmp_path / "results" / "relational"
    runs = sorted(p.parent.relative_to(results / "runs") for p in (results / "runs").glob("*/*/seed0/train"))
    assert len(runs) == 6
    for run in runs:
        ours, theirs = results / "runs" / run / "train", trained / "results/relational/runs" / run / "train"
        ours_loss, theirs_loss = pd.read_csv(ours / "loss.csv"), pd.read_csv(theirs / "loss.csv")
        assert ours_loss[["step", "lr"]].equals(theirs_loss[["step", "lr"]])
        assert_close(ours_loss["loss"].to_numpy(), theirs_loss["loss"].to_numpy(), rtol=1e-5, atol=0)
        names = sorted(p.name for p in (theirs / "snapshots").iterdir())
        assert sorted(p.name for p in (ours / "snapshots").iterdir()) == names
        for name in names:
            got, expected = load_file(str(ours / "snapshots" / name)), load_file(str(theirs / "snapshots" / name))
            assert got.keys() == expected.keys()
            for key in expected:
                assert_close(got[key], expected[key], rtol=1e-4, atol=2e-6, msg=f"{run} {name} {key}")
    assert json.loads((results / "runs/baseline/random/seed0/train/train.json").read_text())["pack_index"] == 0
    metrics = pd.read_csv(results / "metrics.csv")
    assert len(metrics) == 5 * 2 + 1 and (tmp_path / "results/benchmarks/relational/train_pack").is_dir()
