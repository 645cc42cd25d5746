"""The relational study's results table: every (experiment, split) at its final checkpoint.

``results/relational/summary.csv`` (rule relational_summary) has one row per (experiment, split),
in the metrics table's order, with the final checkpoint's train and test accuracy as the mean
over seeds and its two-sided 95% Student-t interval (:func:`diffcomp.stats.aggregate_seeds`), and,
for every experiment other than the baseline, its **paired difference** from the baseline: per
seed, the experiment's final test accuracy minus the baseline's on the same split and seed, and
the mean of those differences with its t-interval. Pairing removes what the two runs of a seed
share (the split's difficulty, the sampled triples), so the interval is that of the effect, not
of two accuracies side by side. A projection experiment's runs start from its base's final
weights, so its difference is exactly what the fine-tuning changed.
"""

from __future__ import annotations

import pandas as pd

from diffcomp.io import write_csv
from diffcomp.relational.figures.tables import final_rows, load_metrics
from diffcomp.stats import aggregate_seeds

_COLUMNS = ("experiment", "split", "family", "intervention", "seed", "step", "train_accuracy", "test_accuracy")


def final_summary(metrics, baseline: str) -> pd.DataFrame:
    """One row per (experiment, split) at its final checkpoint; ``metrics``: a DataFrame or the CSV.

    Columns: experiment, split, family, intervention, step, n_seeds; ``train_accuracy`` and
    ``test_accuracy`` (mean over seeds) with ``_lo``/``_hi`` (95% t-interval; equal to the mean with
    one seed); ``test_diff`` (mean over paired seeds of experiment minus ``baseline``, final test
    accuracy), ``test_diff_lo``/``test_diff_hi`` and ``n_paired`` (seeds both ran on the split;
    0 and empty differences for the baseline itself and for splits the baseline did not run).
    """
    table = load_metrics(metrics, _COLUMNS)
    final = final_rows(table)
    columns = [
        "experiment",
        "split",
        "family",
        "intervention",
        "step",
        "n_seeds",
        *(f"{c}{s}" for c in ("train_accuracy", "test_accuracy") for s in ("", "_lo", "_hi")),
        "test_diff",
        "test_diff_lo",
        "test_diff_hi",
        "n_paired",
    ]
    if final.empty:
        return pd.DataFrame(columns=columns)
    agg = aggregate_seeds(final, ["experiment", "split"], ["train_accuracy", "test_accuracy"], how="mean")
    groups = final.groupby(["experiment", "split"], sort=False)
    info = groups[["family", "intervention", "step"]].first().reset_index()
    agg = info.merge(agg, on=["experiment", "split"], how="left")

    base = final[final["experiment"] == baseline][["split", "seed", "test_accuracy"]]
    paired = final[final["experiment"] != baseline].merge(base, on=["split", "seed"], suffixes=("", "_baseline"))
    paired = paired.assign(test_diff=paired["test_accuracy"] - paired["test_accuracy_baseline"])
    diff = aggregate_seeds(paired, ["experiment", "split"], ["test_diff"], how="mean")
    diff = diff.rename(columns={"test_diff_n": "n_paired"}).drop(columns="n_seeds")
    out = agg.merge(diff, on=["experiment", "split"], how="left")
    out["n_paired"] = out["n_paired"].fillna(0).astype(int)
    return out[columns].reset_index(drop=True)


def write_summary(metrics_csv, output, *, baseline: str) -> pd.DataFrame:
    """Rule relational_summary: :func:`final_summary` of the metrics CSV, written atomically to ``output``."""
    summary = final_summary(metrics_csv, baseline)
    write_csv(output, summary.round(6))
    return summary
