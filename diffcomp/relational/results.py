"""The relational study's metrics table as the summary and the figures read it, and its final checkpoints.

The final checkpoint of an (experiment, split) is the largest step any of its runs reached; only
the runs at that step enter its final-checkpoint numbers (:func:`final_points`). Accuracies and
failure fractions are proportions of a known number of samples (:data:`COUNTS`): pooled over
seeds with the bounded interval of :func:`diffcomp.stats.proportion_interval`; the audit columns
get the mean with its t-interval.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import pandas as pd

from diffcomp.relational.evaluate import AUDIT_COLUMNS, FAILURE_KINDS, HELD_OUT_KINDS, METRIC_COLUMNS, read_metrics
from diffcomp.stats import aggregate_seeds

METRICS_COLUMNS = tuple(METRIC_COLUMNS)
_TEXT_COLUMNS = ("run", "experiment", "split", "family", "encoder", "pos_emb", "intervention", "intervention_params")
# Proportion columns of the metrics table -> the column of the samples behind each.
COUNTS = {
    "train_accuracy": "n_train_samples",
    "test_accuracy": "n_test_samples",
    **{f"test_{kind}_accuracy": f"n_test_{kind}_samples" for kind in HELD_OUT_KINDS},
    **{f"{part}_frac_{kind}": f"n_{part}_samples" for part in ("train", "test") for kind in FAILURE_KINDS},
}
# Columns aggregated over seeds at the final checkpoint.
_FINAL_VALUES = (
    "train_accuracy",
    "test_accuracy",
    *(f"test_{kind}_accuracy" for kind in HELD_OUT_KINDS),
    *(f"{part}_frac_{kind}" for part in ("train", "test") for kind in FAILURE_KINDS),
    *AUDIT_COLUMNS.values(),
    "visual_completeness",
    "linguistic_completeness",
)
_FINAL_COLUMNS = (
    "experiment",
    "split",
    "family",
    "seed",
    "step",
    *[c for c in _FINAL_VALUES if c not in ("visual_completeness", "linguistic_completeness")],
    *dict.fromkeys(COUNTS.values()),
)


def _check_columns(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {', '.join(missing)}")


def _coerce(table: pd.DataFrame) -> pd.DataFrame:
    for column in table.columns:
        if column in _TEXT_COLUMNS:
            table[column] = table[column].astype(object).fillna("").astype(str)
        elif column in METRICS_COLUMNS:
            table[column] = pd.to_numeric(table[column], errors="coerce")
    return table


def read_relational_metrics(path) -> pd.DataFrame:
    """The study's metrics CSV; ValueError naming the file when it is unreadable or lacks a column.

    Only empty cells are missing values, so labels such as "none" (``pos_emb``) read back as written.
    """
    table = read_metrics(path)
    return _coerce(table)


def load_metrics(metrics, columns: Sequence[str] = METRICS_COLUMNS) -> pd.DataFrame:
    """The metrics table as a coerced copy; ``metrics`` is a DataFrame or a path to the CSV.

    ValueError naming every column of ``columns`` the table lacks.
    """
    if isinstance(metrics, (str, os.PathLike)):
        return read_relational_metrics(metrics)
    table = pd.DataFrame(metrics).copy()
    _check_columns(table, columns, "metrics table")
    return _coerce(table)


def _ordered(values) -> list:
    """Distinct values in order of first appearance."""
    return list(dict.fromkeys(values))


def reference_experiments(table: pd.DataFrame, baseline: str) -> dict[str, str]:
    """Each experiment's reference, what its effect is measured against: a projection's base
    experiment (its runs fine-tune the base's final weights; ``base=`` in the metrics table's
    ``intervention_params``; a table without that column has no projections), else ``baseline``."""
    references = {}
    params_column = table["intervention_params"] if "intervention_params" in table else [""] * len(table)
    for experiment, params in zip(table["experiment"], params_column, strict=True):
        if experiment in references:
            continue
        pairs = dict(item.split("=", 1) for item in str(params).split() if "=" in item)
        references[experiment] = pairs.get("base", baseline)
    return references


def final_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Rows at the final checkpoint (largest step) of each (experiment, split)."""
    table = table[table["step"].notna()]
    if table.empty:
        return table
    last = table.groupby(["experiment", "split"], sort=False)["step"].transform("max")
    return table[table["step"] == last]


def _with_completeness(final: pd.DataFrame) -> pd.DataFrame:
    """``{visual,linguistic}_completeness``: the mean of a view's r1 and r2 completeness, where the table has them."""
    final = final.copy()
    for view in ("visual", "linguistic"):
        if f"{view}_completeness_r1" in final.columns and f"{view}_completeness_r2" in final.columns:
            final[f"{view}_completeness"] = (final[f"{view}_completeness_r1"] + final[f"{view}_completeness_r2"]) / 2.0
    return final


def _final_aggregate(table: pd.DataFrame, values: Sequence[str] = _FINAL_VALUES) -> pd.DataFrame:
    """Per (experiment, split) in order of appearance: the final checkpoint aggregated over seeds.

    ``values``: the columns aggregated (default :data:`_FINAL_VALUES`, which needs the audit columns);
    those of :data:`COUNTS` as proportions (their count columns are needed too).
    """
    values = list(values)
    final = _with_completeness(final_rows(table))
    columns = ["experiment", "split", "family", "encoder", "pos_emb", "intervention", "step", "n_seeds"]
    if final.empty:
        return pd.DataFrame(columns=columns + [f"{c}{s}" for c in values for s in ("", "_lo", "_hi", "_n")])
    counts = {c: COUNTS[c] for c in values if c in COUNTS}
    agg = aggregate_seeds(final, ["experiment", "split"], values, how="mean", counts=counts)
    groups = final.groupby(["experiment", "split"], sort=False)
    info = pd.DataFrame({"step": groups["step"].first()})
    for column in ("family", "encoder", "pos_emb", "intervention"):
        if column in final.columns:
            info[column] = groups[column].agg(lambda v: "/".join(_ordered(v.astype(str))))
        else:
            info[column] = ""
    agg = agg.merge(info.reset_index(), on=["experiment", "split"], how="left")
    order = {key: k for k, key in enumerate(_ordered(zip(final["experiment"], final["split"], strict=True)))}
    agg["_order"] = [order[key] for key in zip(agg["experiment"], agg["split"], strict=True)]
    return agg.sort_values("_order").drop(columns="_order").reset_index(drop=True)


def final_points(metrics, baseline: str) -> pd.DataFrame:
    """One row per split of experiment ``baseline`` (in table order) at its final checkpoint.

    Columns: experiment, split, family, encoder, pos_emb, step, n_seeds and, for each of
    train/test accuracy, the test accuracy on each kind of held-out triple, the six failure
    fractions, the audit columns and ``visual_completeness`` / ``linguistic_completeness`` (the
    mean of the r1 and r2 completeness of a view), the value over seeds ``c`` (pooled for the
    proportions, the mean for the audit) with its 95% interval ``c_lo``, ``c_hi`` (NaN with one
    seed) and count of seeds ``c_n``.
    """
    table = load_metrics(metrics, _FINAL_COLUMNS)
    agg = _final_aggregate(table[table["experiment"] == baseline])
    return agg


def final_seed_rows(metrics, baseline: str) -> pd.DataFrame:
    """The per-seed rows behind :func:`final_points`: every run of ``baseline`` at its split's final
    checkpoint, with ``visual_completeness`` and ``linguistic_completeness`` added."""
    table = load_metrics(metrics, _FINAL_COLUMNS)
    return _with_completeness(final_rows(table[table["experiment"] == baseline])).reset_index(drop=True)
