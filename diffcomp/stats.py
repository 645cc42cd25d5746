"""Statistics shared by the studies' figures: aggregation over seeds and Spearman's rho.

Aggregation over seeds (:func:`aggregate_seeds`) gives each value column a mean and a two-sided
95% interval, or the best of seeds (the maximum), which the bump study's phase diagrams use as the
paper does. One seed has no spread to estimate: its interval is NaN (nothing to print or draw).

**Proportions** (an accuracy or a failure fraction, each seed's value estimated from a known
number of samples; :func:`proportion_interval`). The seeds are clusters of binomial samples: a
seed's samples share its weights, so they vary more between seeds than binomial sampling alone
explains. The estimate is the pooled proportion (correct samples over all samples of the seeds;
the mean over seeds when every seed has as many samples). Its interval is the Wilson score
interval with an effective sample size, in the manner of Korn and Graubard (1998) for clustered
survey data: the between-seed variance of the pooled proportion (the ratio estimator's, seeds as
clusters) over its binomial variance is the design effect, floored at 1 (a spread below the
binomial noise is not evidence of a smaller one, and all seeds at 0 or at 1 have no spread at
all); the effective sample size is the number of samples over the design effect; and the normal
quantile is replaced by Student's t at n_seeds - 1 degrees of freedom, since the variance comes
from that many seeds. A Wilson interval never leaves [0, 1] and keeps a width at 0 and at 1, where
mean +/- t sd / sqrt(n) leaves [0, 1] (three seeds at 0.31, 0.05, 0.08 give -0.21 to 0.51) or
collapses to a point.

**Paired differences** of proportions (:func:`paired_difference_interval`: one experiment minus
another on the same seeds): Newcombe's hybrid score interval for paired data (Newcombe 1998,
method 10), built from the two arms' intervals above, L = d - sqrt(dl1^2 - 2 r dl1 du2 + du2^2)
and U = d + sqrt(du1^2 - 2 r du1 dl2 + dl2^2) (dl, du: the distances from an arm's estimate to its
lower and upper limit), with r the correlation of the two arms' estimates: their between-seed
covariance over the product of the standard errors behind the arms' intervals. r keeps what the
pairing removes (the seeds' shared difficulty, the same sampled triples), and with the arms'
variances floored at binomial it lies in [-1, 1]; the interval lies in [-1, 1]. Where the arms'
spreads exceed binomial noise it is the paired t-interval's variance (that of the per-seed
differences) shared out over the arms' bounded intervals. When every seed's difference is exactly
0 the pairing removes all of it and the interval keeps only the asymmetry of the arms' intervals,
as Newcombe's method does for pairs without a discordant one.

**Other values** (the bump study's R^2 and Spearman's rho, the audit's percents, and any column
given without a sample count): the Student-t interval of the mean,
``mean +/- t_{0.975, n-1} sd / sqrt(n)`` (sd with ddof = 1). It assumes nothing about a range and
may leave one; the bump figures clip their accuracy bands to [0, 1] when drawn.

scipy is imported inside the functions that need it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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


def _t_quantile(df) -> np.ndarray:
    """The 0.975 quantile of Student's t (scipy.special is far quicker to import than scipy.stats)."""
    from scipy.special import stdtrit

    return stdtrit(np.asarray(df, dtype=np.float64), 0.975)


def wilson_interval(p, n, q) -> tuple[np.ndarray, np.ndarray]:
    """The Wilson score interval of a proportion ``p`` from ``n`` samples at quantile ``q`` (arrays broadcast).

    ``(p + q^2 / 2n -/+ q sqrt(p (1 - p) / n + q^2 / 4n^2)) / (1 + q^2 / n)``, inside [0, 1] for any
    p in [0, 1] (clipped against rounding) and of positive width at p = 0 and p = 1.
    """
    p, n, q = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (p, n, q)))
    ratio = q * q / n
    denominator = 1.0 + ratio
    centre = (p + ratio / 2.0) / denominator
    half = q / denominator * np.sqrt(p * (1.0 - p) / n + ratio / (4.0 * n))
    low = np.where(p <= 0.0, 0.0, np.clip(centre - half, 0.0, 1.0))  # exactly 0 and 1 at the ends
    high = np.where(p >= 1.0, 1.0, np.clip(centre + half, 0.0, 1.0))
    return low, high


def _seed_values(values, counts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-seed proportions and sample counts as float64 arrays, and which seeds enter (both known, count > 0)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    counts = np.asarray(counts, dtype=np.float64).ravel()
    if values.shape != counts.shape:
        raise ValueError(f"one sample count per value is needed, got {values.size} values and {counts.size} counts")
    keep = np.isfinite(values) & np.isfinite(counts) & (counts > 0)
    outside = values[keep][(values[keep] < 0.0) | (values[keep] > 1.0)]
    if outside.size:
        raise ValueError(f"proportions must lie in [0, 1], got {outside[0]!r}")
    return values, counts, keep


def _pooled(values: np.ndarray, counts: np.ndarray) -> dict:
    """The pooled proportion of seeds (values, counts: the entering seeds only) and what its interval needs.

    ``p``: correct samples over all samples; ``residuals``: each seed's term of the ratio
    estimator's linearisation, m_i (p_i - p) / M, whose sum of squares times k / (k - 1) is the
    between-seed variance; ``variance``: the variance the interval uses, the larger of that and the
    binomial p (1 - p) / M; ``n_eff``: p (1 - p) / variance (M when p is 0 or 1).
    """
    k = len(values)
    total = counts.sum()
    p = float(np.clip((counts * values).sum() / total, 0.0, 1.0))
    residuals = counts * (values - p) / total
    between = k / (k - 1) * float((residuals**2).sum()) if k >= 2 else float("nan")
    binomial = p * (1.0 - p) / total
    if binomial > 0.0:
        variance = max(between, binomial)
        n_eff = p * (1.0 - p) / variance
    else:  # every seed at 0 or every seed at 1: no spread, the binomial interval of all samples
        variance, n_eff = 0.0, float(total)
    return {"k": k, "p": p, "residuals": residuals, "variance": variance, "n_eff": n_eff}


def proportion_interval(values, counts) -> tuple[float, float, float]:
    """Pooled proportion of seeds and its 95% interval: ``(estimate, low, high)``.

    ``values``: each seed's proportion (in [0, 1]); ``counts``: the samples behind each. Seeds with
    a missing value, a missing count or no samples are left out. The interval is the Wilson score
    interval at the effective sample size (design effect of the between-seed spread, floored at
    1) with Student's t at n_seeds - 1 degrees of freedom (module docstring); NaN with fewer than
    two seeds, and everything NaN with none.
    """
    values, counts, keep = _seed_values(values, counts)
    if not keep.any():
        return float("nan"), float("nan"), float("nan")
    pooled = _pooled(values[keep], counts[keep])
    if pooled["k"] < 2:
        return pooled["p"], float("nan"), float("nan")
    low, high = wilson_interval(pooled["p"], pooled["n_eff"], _t_quantile(pooled["k"] - 1))
    return pooled["p"], float(low), float(high)


def paired_difference_interval(values_a, counts_a, values_b, counts_b) -> tuple[float, float, float]:
    """Difference of two pooled proportions on the same seeds, a minus b, with its 95% interval.

    The arrays are aligned by seed; only seeds where both arms have a value and samples enter.
    Returns ``(difference, low, high)``: Newcombe's hybrid score interval for paired data from the
    two arms' intervals (:func:`proportion_interval`), with the correlation of the arms' estimates
    taken from their between-seed covariance (module docstring). It lies in [-1, 1]; NaN with
    fewer than two paired seeds, and everything NaN with none.
    """
    values_a, counts_a, keep_a = _seed_values(values_a, counts_a)
    values_b, counts_b, keep_b = _seed_values(values_b, counts_b)
    if values_a.shape != values_b.shape:
        raise ValueError(f"the two arms must have one value per seed each, got {values_a.size} and {values_b.size}")
    keep = keep_a & keep_b
    if not keep.any():
        return float("nan"), float("nan"), float("nan")
    a = _pooled(values_a[keep], counts_a[keep])
    b = _pooled(values_b[keep], counts_b[keep])
    difference = a["p"] - b["p"]
    k = a["k"]
    if k < 2:
        return difference, float("nan"), float("nan")
    q = _t_quantile(k - 1)
    low_a, high_a = wilson_interval(a["p"], a["n_eff"], q)
    low_b, high_b = wilson_interval(b["p"], b["n_eff"], q)
    covariance = k / (k - 1) * float((a["residuals"] * b["residuals"]).sum())
    scale = np.sqrt(a["variance"] * b["variance"])
    r = float(np.clip(covariance / scale, -1.0, 1.0)) if scale > 0.0 else 0.0
    below_a, above_a = a["p"] - float(low_a), float(high_a) - a["p"]
    below_b, above_b = b["p"] - float(low_b), float(high_b) - b["p"]
    low = difference - np.sqrt(max(0.0, below_a**2 - 2.0 * r * below_a * above_b + above_b**2))
    high = difference + np.sqrt(max(0.0, above_a**2 - 2.0 * r * above_a * below_b + below_b**2))
    return difference, float(max(-1.0, low)), float(min(1.0, high))


def _t_interval(values) -> tuple[float, float, float]:
    """Mean of the finite values and its two-sided 95% Student-t interval (NaN below two values)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    if values.size < 2:
        return mean, float("nan"), float("nan")
    half = float(_t_quantile(values.size - 1)) * float(values.std(ddof=1)) / np.sqrt(values.size)
    return mean, mean - half, mean + half


def aggregate_seeds(
    metrics,
    by: Sequence[str],
    value_columns: Sequence[str],
    how: str = "mean",
    counts: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Aggregate a metrics table over seeds: one row per group of ``by`` (e.g. ["dataset", "step"]).

    how="mean": for each value column ``c`` the columns ``c`` (the estimate), ``c_lo`` and ``c_hi``
    (its two-sided 95% interval) and ``c_n`` (how many seeds entered). A column named in
    ``counts`` (value column -> the column of each row's sample count, e.g. ``{"test_accuracy":
    "n_test_samples"}``) is a proportion: ``c`` is the pooled proportion and the interval
    :func:`proportion_interval`'s, inside [0, 1]; a row enters when its value and its count are
    known and the count is positive. Any other column gets the mean with the Student-t interval
    ``mean +/- t_{0.975, n-1} sd / sqrt(n)`` (sd with ddof = 1). With one entering value the
    interval is NaN; with none all three are NaN.
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
    counts = dict(counts or {})
    unknown = [c for c in counts if c not in value_columns]
    if unknown:
        raise ValueError(f"counts names column(s) {unknown} that are not value columns")
    table = metrics.copy()
    missing = [c for c in by + value_columns + list(counts.values()) if c not in table.columns]
    if missing:
        raise ValueError(f"metrics table lacks column(s) {missing}")
    for column in value_columns + list(counts.values()):
        table[column] = pd.to_numeric(table[column], errors="coerce")
    # Sort first so that a mean's floating-point summation order is fixed too.
    table = table.iloc[_key_order(table, by)]
    groups = table.groupby(by, sort=False, dropna=False)
    out = groups.size().rename("n_seeds").to_frame()
    if "seed" in table.columns:
        out["n_seeds"] = groups["seed"].nunique(dropna=False)
    codes = groups.ngroup().to_numpy()  # groups numbered in order of appearance, as in ``out``
    positions = [np.flatnonzero(codes == group) for group in range(len(out))]
    for column in value_columns:
        if how == "best":
            out[column] = groups[column].max()
            out[f"{column}_n"] = groups[column].count()
            continue
        values = table[column].to_numpy(dtype=np.float64)
        if column in counts:
            sizes = table[counts[column]].to_numpy(dtype=np.float64)
            rows = [proportion_interval(values[index], sizes[index]) for index in positions]
            entered = [int(_seed_values(values[index], sizes[index])[2].sum()) for index in positions]
        else:
            rows = [_t_interval(values[index]) for index in positions]
            entered = [int(np.isfinite(values[index]).sum()) for index in positions]
        estimate, low, high = np.array(rows, dtype=np.float64).reshape(-1, 3).T
        out[column] = estimate
        out[f"{column}_lo"] = low
        out[f"{column}_hi"] = high
        out[f"{column}_n"] = entered
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
