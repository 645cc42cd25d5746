"""The results table: final-checkpoint accuracies pooled over seeds with bounded intervals, by kind of
held-out triple, and paired differences from the baseline."""

import numpy as np
import pandas as pd
import pytest

from diffcomp.relational.evaluate import METRIC_COLUMNS
from diffcomp.relational.summary import SUMMARY_COLUMNS, final_summary, write_summary
from diffcomp.stats import paired_difference_interval, proportion_interval

N_TEST = 64


def _row(experiment, split, seed, step, train, test, intervention="baseline", kinds=(None, None)):
    """A final-checkpoint row; ``kinds``: (new-caption samples, new-image samples), each (count, accuracy)."""
    new_caption, new_image = (kind or (0, np.nan) for kind in kinds)
    return {
        "experiment": experiment,
        "split": split,
        "family": split,
        "intervention": intervention,
        "seed": seed,
        "step": step,
        "train_accuracy": train,
        "test_accuracy": test,
        "test_new_caption_accuracy": new_caption[1],
        "test_new_image_accuracy": new_image[1],
        "n_train_samples": 64,
        "n_test_samples": N_TEST,
        "n_test_new_caption_samples": new_caption[0],
        "n_test_new_image_samples": new_image[0],
    }


def metrics() -> pd.DataFrame:
    rows = []
    for seed, (base, other) in enumerate([(0.50, 0.70), (0.60, 0.90), (0.40, 0.50)]):
        rows.append(_row("baseline", "band", seed, 600, 0.1, 0.0))  # an earlier checkpoint: ignored
        rows.append(_row("baseline", "band", seed, 1200, 1.0, base, kinds=(None, (N_TEST, base))))
        rows.append(_row("f2r", "band", seed, 1200, 1.0, other, "contrastive-fake_to_real", (None, (N_TEST, other))))
    rows.append(_row("baseline", "bipartite", 0, 1200, 1.0, 0.0))
    rows.append(_row("f2r", "bipartite", 0, 1200, 1.0, 0.25, "contrastive-fake_to_real"))
    rows.append(_row("f2r", "bipartite", 1, 1200, 1.0, 0.75, "contrastive-fake_to_real"))  # no baseline seed 1
    # a split with both kinds, in other numbers on each seed: 24 + 40 and 16 + 48 test samples
    rows.append(_row("baseline", "mixed", 0, 1200, 1.0, 0.5, kinds=((24, 1.0), (40, 0.2))))
    rows.append(_row("baseline", "mixed", 1, 1200, 1.0, 0.75, kinds=((16, 1.0), (48, 2 / 3))))
    return pd.DataFrame(rows)


def test_accuracies_are_pooled_with_bounded_intervals():
    table = final_summary(metrics(), "baseline").set_index(["experiment", "split"])
    assert list(table.reset_index().columns) == SUMMARY_COLUMNS
    band = table.loc[("baseline", "band")]
    assert band["step"] == 1200 and band["n_seeds"] == 3
    expected = proportion_interval([0.5, 0.6, 0.4], [N_TEST] * 3)
    assert tuple(band[["test_accuracy", "test_accuracy_lo", "test_accuracy_hi"]]) == pytest.approx(expected)
    assert band["test_accuracy"] == pytest.approx(0.5)
    # every seed at 1.0: an interval below 1, not the point [1, 1]
    assert band["train_accuracy"] == 1.0 and band["train_accuracy_lo"] < 1.0 and band["train_accuracy_hi"] == 1.0
    assert band["n_paired"] == 0 and np.isnan(band["test_diff"])
    for _, row in table.iterrows():
        for column in ("train_accuracy", "test_accuracy", "test_new_caption_accuracy", "test_new_image_accuracy"):
            low, high = row[f"{column}_lo"], row[f"{column}_hi"]
            assert (np.isnan(low) and np.isnan(high)) or 0.0 <= low <= row[column] <= high <= 1.0


def test_test_accuracy_by_kind_of_held_out_triple():
    table = final_summary(metrics(), "baseline").set_index(["experiment", "split"])
    band = table.loc[("baseline", "band")]
    # band's held-out triples are all new images: no new-caption samples, so no accuracy (not 0)
    assert band["n_test_new_caption_samples"] == 0 and np.isnan(band["test_new_caption_accuracy"])
    assert band["n_test_new_image_samples"] == 3 * N_TEST and band["test_new_image_accuracy"] == pytest.approx(0.5)
    mixed = table.loc[("baseline", "mixed")]
    assert mixed["n_test_new_caption_samples"] == 40 and mixed["n_test_new_image_samples"] == 88
    assert mixed["test_new_caption_accuracy"] == 1.0
    # pooled: (8 + 32) / 88 right, not the mean of 0.2 and 2/3
    assert mixed["test_new_image_accuracy"] == pytest.approx(40 / 88)
    expected = proportion_interval([0.2, 2 / 3], [40, 48])
    assert (mixed["test_new_image_accuracy_lo"], mixed["test_new_image_accuracy_hi"]) == pytest.approx(expected[1:])


def test_the_effect_is_the_paired_difference_from_the_baseline():
    table = final_summary(metrics(), "baseline").set_index(["experiment", "split"])
    f2r = table.loc[("f2r", "band")]
    # per seed: 0.2, 0.3, 0.1 -> 0.2, with the paired interval of the two arms
    expected = paired_difference_interval([0.7, 0.9, 0.5], [N_TEST] * 3, [0.5, 0.6, 0.4], [N_TEST] * 3)
    assert f2r["test_diff"] == pytest.approx(0.2)
    assert (f2r["test_diff"], f2r["test_diff_lo"], f2r["test_diff_hi"]) == pytest.approx(expected)
    assert -1.0 <= f2r["test_diff_lo"] < 0.2 < f2r["test_diff_hi"] <= 1.0
    assert f2r["n_paired"] == 3 and f2r["intervention"] == "contrastive-fake_to_real"
    # bipartite: only seed 0 has a baseline; its test accuracy still counts both seeds
    bipartite = table.loc[("f2r", "bipartite")]
    assert bipartite["n_seeds"] == 2 and bipartite["test_accuracy"] == pytest.approx(0.5)
    assert bipartite["n_paired"] == 1 and bipartite["test_diff"] == pytest.approx(0.25)
    # one paired seed: no interval
    assert np.isnan(bipartite["test_diff_lo"]) and np.isnan(bipartite["test_diff_hi"])


def test_one_seed_has_no_interval_in_the_file(tmp_path):
    table = metrics()
    table = table[table["seed"] == 0]
    for column in METRIC_COLUMNS:
        if column not in table:
            table[column] = "x" if column in ("run", "encoder", "pos_emb", "intervention_params") else 0
    path = tmp_path / "metrics.csv"
    table.to_csv(path, index=False)
    write_summary(path, tmp_path / "summary.csv", baseline="baseline")
    written = pd.read_csv(tmp_path / "summary.csv")
    assert written["test_accuracy"].notna().all()
    interval = [f"{c}_{s}" for c in ("train_accuracy", "test_accuracy", "test_diff") for s in ("lo", "hi")]
    assert written[interval].isna().all(axis=None)


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
        ("baseline", "mixed"),
    ]
    assert pd.read_csv(tmp_path / "summary.csv").shape == summary.shape


def test_a_table_without_accuracies_is_refused():
    with pytest.raises(ValueError, match="test_accuracy"):
        final_summary(metrics().drop(columns="test_accuracy"), "baseline")
    with pytest.raises(ValueError, match="n_test_new_image_samples"):
        final_summary(metrics().drop(columns="n_test_new_image_samples"), "baseline")


def test_a_projection_is_paired_with_its_base_experiment():
    """wiclp_random fine-tunes t5_random's runs: its effect is measured against t5_random, not the baseline."""
    rows = []
    for seed, (base, random_, projected) in enumerate([(0.9, 0.2, 0.3), (0.8, 0.1, 0.3), (1.0, 0.2, 0.2)]):
        rows.append(_row("baseline", "band", seed, 1200, 1.0, base))
        rows.append(_row("t5_random", "band", seed, 1200, 0.4, random_))
        rows.append(_row("wiclp_random", "band", seed, 300, 0.5, projected, "projection-window"))
    table = pd.DataFrame(rows)
    table["intervention_params"] = ["none", "none", "base=t5_random variant=window window=2"] * 3
    summary = final_summary(table, "baseline").set_index("experiment")
    assert summary.loc["wiclp_random", "reference"] == "t5_random"
    assert summary.loc["wiclp_random", "test_diff"] == pytest.approx(0.1)
    assert summary.loc["t5_random", "reference"] == "baseline"
    assert summary.loc["t5_random", "test_diff"] == pytest.approx(-0.7333333)
    assert summary.loc["baseline", "n_paired"] == 0
