"""The per-checkpoint metrics of a bump run (diffcomp.bumps.metrics) on sample files whose every
value is known by construction: exact renders at the label, renders shifted off it, blank images
and two-bump images, in each split."""

import numpy as np
import pandas as pd
import pytest

from diffcomp.bumps.data import render
from diffcomp.bumps.metrics import (
    METRIC_COLUMNS,
    classify_phase,
    combine_metrics,
    evaluate_run,
    load_samples,
    read_metrics,
)

THRESHOLDS = {"phase_single_min": 0.5, "phase_accuracy_min": 0.5, "phase_r2_min": 0.5, "umap_neighbors": 10}
SIZE = 16
SPEC = {
    "name": "hole",
    "increment_x": 1.0,
    "increment_y": 2.0,
    "sigma": 1.0,
    "holes": [{"name": "centre", "shape": "disc", "center": [8.0, 8.0], "radius": 1.8}],
    "image_size": SIZE,
}


def test_classify_phase_boundaries():
    assert classify_phase(0.49, 1.0, 1.0, THRESHOLDS) == "A"  # too few single bumps, whatever else
    assert classify_phase(0.5, 0.5, 0.5, THRESHOLDS) == "C"  # every threshold is inclusive
    assert classify_phase(0.9, 0.49, 0.9, THRESHOLDS) == "B"  # single bumps at the wrong places
    assert classify_phase(0.9, 0.9, 0.49, THRESHOLDS) == "B"  # right places, unordered manifold
    strict = {**THRESHOLDS, "phase_single_min": 0.95}
    assert classify_phase(0.9, 0.9, 0.9, strict) == "A"


def _checkpoint(step: int, rng: np.random.Generator, ordered_activations: bool) -> dict:
    """40 training samples: 30 exact, 5 shifted by 2 in x, 3 blank, 2 with two bumps far from the
    label; 4 OOD samples (2 exact, 2 blank); 6 off-grid samples, all exact."""
    train = np.column_stack([rng.integers(2, 13, 40), rng.integers(2, 15, 40)]).astype(np.float32)
    images = render(train, SIZE, 1.0)
    images[30:35] = render(train[30:35] + [2.0, 0.0], SIZE, 1.0)
    images[35:38] = 1.0
    train[38:40] = [3.0, 13.0]
    images[38:40] = np.minimum(render([[3.0, 3.0]], SIZE, 1.0), render([[13.0, 13.0]], SIZE, 1.0))
    ood = np.array([[8, 8], [8, 9], [7, 8], [9, 8]], dtype=np.float32)
    ood_images = render(ood, SIZE, 1.0)
    ood_images[2:] = 1.0
    offgrid = rng.uniform(2, 14, (6, 2)).astype(np.float32)
    labels = np.concatenate([train, ood, offgrid])
    # activations: the labels through a random linear map (an ordered manifold), or pure noise
    if ordered_activations:
        activations = labels @ rng.normal(size=(2, 24)) + 0.01 * rng.normal(size=(len(labels), 24))
    else:
        activations = rng.normal(size=(len(labels), 24))
    return {
        "images": np.concatenate([images, ood_images, render(offgrid, SIZE, 1.0)]),
        "labels": labels,
        "split": np.array(["train"] * 40 + ["ood"] * 4 + ["offgrid"] * 6),
        "activations": activations.astype(np.float16),
        "step": np.int64(step),
    }


def test_evaluate_run_scores_every_checkpoint_as_constructed(tmp_path):
    rng = np.random.default_rng(0)
    files = []
    for step, ordered in ((400, False), (200, True)):  # written out of step order on purpose
        path = tmp_path / f"step{step:09d}.npz"
        np.savez_compressed(path, **_checkpoint(step, rng, ordered))
        files.append(path)
    table = evaluate_run(THRESHOLDS, SPEC, 3, files, tmp_path / "metrics.csv", tmp_path / "embeddings.npz")

    assert list(table.columns) == METRIC_COLUMNS
    assert table.step.tolist() == [200, 400]
    for _, row in table.iterrows():
        assert (row.run, row.dataset, row.seed, row.hole) == ("hole_seed3", "hole", 3, "centre")
        assert (row.increment_x, row.increment_y, row.sigma) == (1.0, 2.0, 1.0)
        assert (row.n_samples, row.n_ood, row.n_offgrid) == (40, 4, 6)
        assert row.accuracy == 30 / 40 and row.accuracy_x == 30 / 40 and row.accuracy_y == 35 / 40
        assert (row.frac_none, row.frac_single, row.frac_multi) == (3 / 40, 35 / 40, 2 / 40)
        assert row.accuracy_ood == 0.5 and row.accuracy_offgrid == 1.0
    ordered, noise = table.iloc[0], table.iloc[1]
    # measured: R^2 0.95 / 0.96 on the ordered activations, 0.08 / 0.02 on the noise
    assert ordered.r2_x > 0.8 and ordered.r2_y > 0.8 and ordered.phase == "C"
    assert np.mean([noise.r2_x, noise.r2_y]) < 0.3 and noise.phase == "B"

    written = read_metrics(tmp_path / "metrics.csv")
    pd.testing.assert_frame_equal(written, table.reset_index(drop=True), check_dtype=False)
    with np.load(tmp_path / "embeddings.npz") as saved:
        assert saved["steps"].tolist() == [200, 400]
        assert saved["embeddings"].shape == (2, 40, 3)
        expected_labels = [load_samples(f)["labels"][:40] for f in sorted(files)]
        np.testing.assert_array_equal(saved["labels"], np.stack(expected_labels))


def test_a_checkpoint_without_ood_or_offgrid_samples_has_nan_there(tmp_path):
    samples = _checkpoint(100, np.random.default_rng(1), True)
    keep = samples["split"] == "train"
    samples = {**samples, **{k: samples[k][keep] for k in ("images", "labels", "split", "activations")}}
    np.savez_compressed(tmp_path / "step.npz", **samples)
    spec = {**SPEC, "holes": []}
    table = evaluate_run(THRESHOLDS, spec, 0, [tmp_path / "step.npz"], tmp_path / "m.csv", tmp_path / "e.npz")
    (row,) = table.itertuples()
    assert np.isnan(row.accuracy_ood) and np.isnan(row.accuracy_offgrid) and (row.n_ood, row.n_offgrid) == (0, 0)
    assert pd.isna(row.hole)


def test_evaluate_run_refuses_no_files_and_corrupt_ones(tmp_path):
    with pytest.raises(ValueError, match="no sample files to evaluate for hole seed 0"):
        evaluate_run(THRESHOLDS, SPEC, 0, [], tmp_path / "m.csv", tmp_path / "e.npz")
    (tmp_path / "step.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"step.npz is corrupt or unreadable"):
        evaluate_run(THRESHOLDS, SPEC, 0, [tmp_path / "step.npz"], tmp_path / "m.csv", tmp_path / "e.npz")
    assert not (tmp_path / "m.csv").exists() and not (tmp_path / "e.npz").exists()


def test_combine_metrics_sorts_by_dataset_seed_and_step(tmp_path):
    def table(dataset, seed, steps):
        frame = pd.DataFrame({column: 0.0 for column in METRIC_COLUMNS}, index=range(len(steps)))
        frame["dataset"], frame["seed"], frame["step"] = dataset, seed, steps
        return frame

    paths = []
    for k, frame in enumerate([table("b", 0, [200, 100]), table("a", 1, [100]), table("a", 0, [300, 100])]):
        paths.append(tmp_path / f"{k}.csv")
        frame.to_csv(paths[-1], index=False)
    combined = combine_metrics(paths, tmp_path / "all.csv")
    assert list(combined.columns) == METRIC_COLUMNS and combined.index.tolist() == list(range(5))
    keys = list(zip(combined.dataset, combined.seed, combined.step, strict=True))
    assert keys == [("a", 0, 100), ("a", 0, 300), ("a", 1, 100), ("b", 0, 100), ("b", 0, 200)]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "all.csv"), combined)

    pd.DataFrame({"run": ["x"], "step": [1]}).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(ValueError, match=r"short.csv: missing metric column\(s\) \['accuracy'"):
        read_metrics(tmp_path / "short.csv")


def test_umap_gets_the_configured_neighbours_and_the_run_seed(tmp_path, monkeypatch):
    import diffcomp.bumps.metrics as metrics

    calls = []
    real = metrics.umap_r2

    def recording(activations, labels, seed, n_neighbors):
        calls.append((seed, n_neighbors, activations.dtype, len(labels)))
        return real(activations, labels, seed, n_neighbors)

    monkeypatch.setattr(metrics, "umap_r2", recording)
    np.savez_compressed(tmp_path / "step.npz", **_checkpoint(100, np.random.default_rng(2), True))
    evaluate_run(
        {**THRESHOLDS, "umap_neighbors": 7}, SPEC, 5, [tmp_path / "step.npz"], tmp_path / "m.csv", tmp_path / "e.npz"
    )
    assert calls == [(5, 7, np.float32, 40)]


def test_a_sample_file_holding_pickled_objects_is_refused(tmp_path):
    samples = _checkpoint(100, np.random.default_rng(3), True)
    samples["split"] = samples["split"].astype(object)  # loadable only with allow_pickle
    np.savez(tmp_path / "step.npz", **samples)
    with pytest.raises(ValueError, match="corrupt or unreadable"):
        load_samples(tmp_path / "step.npz")
