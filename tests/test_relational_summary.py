"""The results table: final-checkpoint means with t-intervals and paired differences, worked by hand."""

import numpy as np
import pandas as pd
import pytest

from diffcomp.relational.evaluate import METRIC_COLUMNS
from diffcomp.relational.summary import final_summary, write_summary


def _row(experiment, split, seed, step, train, test, intervention="baseline"):
    return {
        "experiment": experiment,
        "split": split,
        "family": split,
        "intervention": intervention,
        "seed": seed,
        "step": step,
        "train_accuracy": train,
        "test_accuracy": test,
    }


def metrics() -> pd.DataFrame:
    rows = []
    for seed, (base, other) in enumerate([(0.50, 0.70), (0.60, 0.90), (0.40, 0.50)]):
        rows.append(_row("baseline", "band", seed, 600, 0.1, 0.0))  # an earlier checkpoint: ignored
        rows.append(_row("baseline", "band", seed, 1200, 1.0, base))
        rows.append(_row("f2r", "band", seed, 1200, 1.0, other, "contrastive-fake_to_real"))
    rows.append(_row("baseline", "bipartite", 0, 1200, 1.0, 0.0))
    rows.append(_row("f2r", "bipartite", 0, 1200, 1.0, 0.25, "contrastive-fake_to_real"))
    rows.append(_row("f2r", "bipartite", 1, 1200, 1.0, 0.75, "contrastive-fake_to_real"))  # no baseline seed 1
    return pd.DataFrame(rows)


def test_means_and_intervals_at_the_final_checkpoint():
    table = final_summary(metrics(), "baseline").set_index(["experiment", "split"])
    band = table.loc[("baseline", "band")]
    assert band["step"] == 1200 and band["n_seeds"] == 3
    assert band["test_accuracy"] == pytest.approx(0.5)
    # sd of (0.5, 0.6, 0.4) is 0.1; t_{0.975, 2} = 4.302653
    half = 4.302653 * 0.1 / np.sqrt(3)
    assert band["test_accuracy_lo"] == pytest.approx(0.5 - half, abs=1e-6)
    assert band["test_accuracy_hi"] == pytest.approx(0.5 + half, abs=1e-6)
    assert band["n_paired"] == 0 and np.isnan(band["test_diff"])


def test_the_effect_is_the_paired_difference_from_the_baseline():
    table = final_summary(metrics(), "baseline").set_index(["experiment", "split"])
    f2r = table.loc[("f2r", "band")]
    # per seed: 0.2, 0.3, 0.1 -> mean 0.2, sd 0.1: the same interval as above around 0.2, narrower
    # than the two accuracies' own intervals side by side would suggest
    half = 4.302653 * 0.1 / np.sqrt(3)
    assert f2r["test_diff"] == pytest.approx(0.2)
    assert f2r["test_diff_lo"] == pytest.approx(0.2 - half, abs=1e-6)
    assert f2r["n_paired"] == 3 and f2r["intervention"] == "contrastive-fake_to_real"
    # bipartite: only seed 0 has a baseline; its mean test accuracy still counts both seeds
    bipartite = table.loc[("f2r", "bipartite")]
    assert bipartite["n_seeds"] == 2 and bipartite["test_accuracy"] == pytest.approx(0.5)
    assert bipartite["n_paired"] == 1 and bipartite["test_diff"] == pytest.approx(0.25)
    assert bipartite["test_diff_lo"] == bipartite["test_diff_hi"] == pytest.approx(0.25)


def test_rows_keep_the_metrics_order_and_the_file_is_written(tmp_path):
    table = metrics()
    for column in METRIC_COLUMNS:  # the rest of a metrics file's columns, which the summary does not read
        if column not in table:
            table[column] = "x" if column in ("run", "encoder", "pos_emb", "intervention_params") else 0
    path = tmp_path / "metrics.csv"
    table.to_csv(path, index=False)
    summary = write_summary(path, tmp_path / "summary.csv", baseline="baseline")
    assert list(zip(summary["experiment"], summary["split"], strict=True)) == [
        ("baseline", "band"),
        ("f2r", "band"),
        ("baseline", "bipartite"),
        ("f2r", "bipartite"),
    ]
    assert pd.read_csv(tmp_path / "summary.csv").shape == summary.shape


def test_a_table_without_accuracies_is_refused():
    with pytest.raises(ValueError, match="test_accuracy"):
        final_summary(metrics().drop(columns="test_accuracy"), "baseline")
