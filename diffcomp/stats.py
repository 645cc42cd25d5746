"""Statistics shared by the studies' figures: aggregation over seeds and Spearman's rho.

Aggregation over seeds (:func:`aggregate_seeds`): the mean with a two-sided 95% Student-t
interval, ``mean +/- t_{0.975, n-1} * sd / sqrt(n)`` (sd with ddof = 1, NaNs ignored), or the
best of seeds (the maximum), which the bump study's phase diagrams use as the paper does.
scipy is imported inside the functions that need it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def _sort_key(value):
    """Numbers (by value) before strings before missing values: a total order for mixed columns."""
    if value is None or (np.ndim(value) == 0 and pd.isna(value)):
        return (2, 0.0, "")
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _key_order(table: pd.DataFrame, by: Sequence[str]) -> list[int]:
    """Row positions that sort ``table`` by ``by`` with :func:`_sort_key` (stable)."""
    columns = [table[c].tolist() for c in by]
    keys = [tuple(_sort_key(col[i]) for col in columns) for i in range(len(table))]
    return sorted(range(len(table)), key=keys.__getitem__)


def _t_quantile(df: np.ndarray) -> np.ndarray:
    """The 0.975 quantile of Student's t (scipy.special is far quicker to import than scipy.stats)."""
    from scipy.special import stdtrit

    return stdtrit(df, 0.975)


def aggregate_seeds(metrics, by: Sequence[str], value_columns: Sequence[str], how: str = "mean") -> pd.DataFrame:
    """Aggregate a metrics table over seeds: one row per group of ``by`` (e.g. ["dataset", "step"]).

    how="mean": for each value column ``c`` the columns ``c`` (mean), ``c_lo`` and ``c_hi`` (the
    two-sided 95% Student-t interval of the mean, ``mean +/- t_{0.975, n-1} sd / sqrt(n)`` with
    ddof = 1) and ``c_n`` (how many non-NaN values entered). With one value the interval collapses
    to the mean; with none all three are NaN.
    how="best": ``c`` is the maximum over seeds (the paper's "best of seeds") and ``c_n`` the count.
    Each column is aggregated separately, so the best accuracy and the best R^2 of a group may come
    from different seeds.

    Also ``n_seeds``: rows (distinct seeds, if a ``seed`` column exists) in the group. NaN keys
    (e.g. ``hole``) form their own group. Rows are sorted by the keys (numbers before strings,
    missing last), so the output does not depend on the input's row order.
    """
    if how not in ("mean", "best"):
        raise ValueError(f"how must be 'mean' or 'best', got {how!r}")
    by = list(by)
    value_columns = list(value_columns)
    table = metrics.copy()
    missing = [c for c in by + value_columns if c not in table.columns]
    if missing:
        raise ValueError(f"metrics table lacks column(s) {missing}")
    for column in value_columns:
        table[column] = pd.to_numeric(table[column], errors="coerce")
    # Sort first so that a mean's floating-point summation order is fixed too.
    table = table.iloc[_key_order(table, by)]
    groups = table.groupby(by, sort=False, dropna=False)
    out = groups.size().rename("n_seeds").to_frame()
    if "seed" in table.columns:
        out["n_seeds"] = groups["seed"].nunique(dropna=False)
    for column in value_columns:
        if how == "best":
            out[column] = groups[column].max()
            out[f"{column}_n"] = groups[column].count()
            continue
        mean = groups[column].mean()
        sd = groups[column].std(ddof=1)
        n = groups[column].count()
        half = np.zeros(len(n))
        several = n.to_numpy() >= 2
        half[several] = _t_quantile(n.to_numpy()[several] - 1) * sd.to_numpy()[several] / np.sqrt(n.to_numpy()[several])
        half[n.to_numpy() == 0] = np.nan
        out[column] = mean
        out[f"{column}_lo"] = mean.to_numpy() - half
        out[f"{column}_hi"] = mean.to_numpy() + half
        out[f"{column}_n"] = n
    out = out.reset_index()
    return out.iloc[_key_order(out, by)].reset_index(drop=True)


def spearman_rho(x, y) -> float:
    """Spearman's rank correlation of the finite (x, y) pairs (scipy.stats.spearmanr).

    NaN ("n/a") with fewer than 3 distinct points or when x or y is constant.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(set(zip(x.tolist(), y.tolist(), strict=True))) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)
