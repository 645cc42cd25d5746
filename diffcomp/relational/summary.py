"""The relational study's results table: every (experiment, split) at its final checkpoint.

``results/relational/summary.csv`` (rule relational_summary) has one row per (experiment, split),
in the metrics table's order, with the final checkpoint's train and test accuracy and the test
accuracy on each kind of held-out triple (new captions of training images, new images; see
:mod:`diffcomp.relational.evaluate`), each pooled over seeds with its 95% interval
(:func:`diffcomp.stats.proportion_interval`: the Wilson score interval at the design-effect
sample size, Student's t at n_seeds - 1 df, inside [0, 1]); and, for every experiment other than
the baseline, its **paired difference** from the baseline: the experiment's final test accuracy
minus the baseline's on the same split and seeds, with Newcombe's hybrid score interval for
paired data built from the two arms' intervals (:func:`diffcomp.stats.paired_difference_interval`,
inside [-1, 1]). Pairing keeps what the two runs of a seed share (the split's difficulty, the
sampled triples) out of the effect's interval. A projection experiment is paired with its base
experiment instead (the baseline or another one, e.g. an encoder ablation): its runs start from
the base's final weights, so its difference is exactly what the fine-tuning changed. With one seed
(or one paired seed) there is no interval: its cells are empty.
"""

from __future__ import annotations

import pandas as pd

from diffcomp.io import write_csv
from diffcomp.relational.evaluate import HELD_OUT_KINDS
from diffcomp.relational.results import COUNTS, final_rows, load_metrics, reference_experiments
from diffcomp.stats import aggregate_seeds, paired_difference_interval

# Proportion columns of the summary and the metrics column of each one's sample count.
ACCURACY_COUNTS = {
    column: COUNTS[column]
    for column in ("train_accuracy", "test_accuracy", *(f"test_{kind}_accuracy" for kind in HELD_OUT_KINDS))
}
_COLUMNS = (
    "experiment",
    "split",
    "family",
    "intervention",
    "seed",
    "step",
    *ACCURACY_COUNTS,
    *ACCURACY_COUNTS.values(),
)
SUMMARY_COLUMNS = [
    "experiment",
    "split",
    "family",
    "intervention",
    "reference",
    "step",
    "n_seeds",
    *(f"{c}{s}" for c in ACCURACY_COUNTS for s in ("", "_lo", "_hi")),
    *(f"n_test_{kind}_samples" for kind in HELD_OUT_KINDS),
    "test_diff",
    "test_diff_lo",
    "test_diff_hi",
    "n_paired",
]


def _paired_differences(final: pd.DataFrame, references: dict[str, str]) -> pd.DataFrame:
    """Per (experiment, split) other than a reference's own: test_diff against its reference
    experiment, its interval and n_paired."""
    columns = ["experiment", "split", "seed", "test_accuracy", "n_test_samples"]
    reference = final[columns].rename(columns={"experiment": "reference"})
    own = final.assign(reference=final["experiment"].map(references))
    own = own[own["experiment"] != own["reference"]]
    paired = own.merge(reference, on=["reference", "split", "seed"], suffixes=("", "_baseline"))
    paired = paired.sort_values(["seed"], kind="stable")
    rows = []
    for (experiment, split), group in paired.groupby(["experiment", "split"], sort=False):
        difference, low, high = paired_difference_interval(
            group["test_accuracy"],
            group["n_test_samples"],
            group["test_accuracy_baseline"],
            group["n_test_samples_baseline"],
        )
        entered = (
            group[["test_accuracy", "n_test_samples", "test_accuracy_baseline", "n_test_samples_baseline"]]
            .notna()
            .all(axis=1)
            & (group["n_test_samples"] > 0)
            & (group["n_test_samples_baseline"] > 0)
        )
        rows.append((experiment, split, difference, low, high, int(entered.sum())))
    return pd.DataFrame(rows, columns=["experiment", "split", "test_diff", "test_diff_lo", "test_diff_hi", "n_paired"])


def final_summary(metrics, baseline: str) -> pd.DataFrame:
    """One row per (experiment, split) at its final checkpoint; ``metrics``: a DataFrame or the CSV.

    Columns (:data:`SUMMARY_COLUMNS`): experiment, split, family, intervention, step, n_seeds;
    ``train_accuracy``, ``test_accuracy``, ``test_new_caption_accuracy`` and
    ``test_new_image_accuracy`` (pooled over seeds: the mean when every seed has as many samples)
    with ``_lo``/``_hi`` (95% interval, empty with one seed); ``n_test_new_caption_samples`` and
    ``n_test_new_image_samples`` (test samples of each kind, summed over seeds; a kind without
    samples has an empty accuracy); ``reference`` (the experiment it is compared with: a
    projection's base, else ``baseline``); ``test_diff`` (experiment minus its reference, final
    test accuracy pooled over the seeds both ran), ``test_diff_lo``/``test_diff_hi`` and
    ``n_paired`` (those seeds; 0 and empty differences for the baseline itself and for splits its
    reference did not run).
    """
    table = load_metrics(metrics, _COLUMNS)
    final = final_rows(table)
    if final.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    agg = aggregate_seeds(final, ["experiment", "split"], list(ACCURACY_COUNTS), how="mean", counts=ACCURACY_COUNTS)
    groups = final.groupby(["experiment", "split"], sort=False)
    info = groups[["family", "intervention", "step"]].first()
    for kind in HELD_OUT_KINDS:
        column = f"n_test_{kind}_samples"
        info[column] = groups[column].sum(min_count=1)
    agg = info.reset_index().merge(agg, on=["experiment", "split"], how="left")
    references = reference_experiments(final, baseline)
    agg["reference"] = agg["experiment"].map(references)
    out = agg.merge(_paired_differences(final, references), on=["experiment", "split"], how="left")
    out["n_paired"] = out["n_paired"].fillna(0).astype(int)
    for kind in HELD_OUT_KINDS:
        column = f"n_test_{kind}_samples"
        out[column] = out[column].astype("Int64")
    return out[SUMMARY_COLUMNS].reset_index(drop=True)


def write_summary(metrics_csv, output, *, baseline: str) -> pd.DataFrame:
    """Rule relational_summary: :func:`final_summary` of the metrics CSV, written atomically to ``output``."""
    summary = final_summary(metrics_csv, baseline)
    write_csv(output, summary.round(6))
    return summary
