"""The trend the phase diagram (Fig. 4) states: Spearman's rho between increment and accuracy.

Per checkpoint, rho of the mean accuracy over seeds, its per-seed spread and its interval under the
accuracies' sampling noise (:func:`increment_trend`), and the sentence drawn in the figure's title
(:func:`trend_text`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from diffcomp.bumps.figures.tables import _isotropic_grid, load_metrics
from diffcomp.plotting import fmt_step
from diffcomp.stats import aggregate_seeds, spearman_rho

# The trend is "clear" when |rho| reaches this at every checkpoint from the middle one on.
TREND_RHO = 0.8
# Redraws of the accuracies behind the sampling interval of rho (seeded: a table gives one interval).
NOISE_DRAWS = 4000


def _rank_rows(values: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(values, axis=-1)  # average ranks for ties, as spearmanr


def sampling_interval(rows: pd.DataFrame, seed: int = 0) -> tuple[float, float]:
    """95% interval of Spearman's rho between increment and mean accuracy under the accuracies'
    sampling noise: every accuracy redrawn as Binomial(n, accuracy) / n with n its ``n_samples``,
    averaged over seeds per increment, rho recomputed; NOISE_DRAWS draws, seeded. The 2.5 and 97.5
    percentiles of the draws whose rho is defined; NaN without sample counts or defined draws.

    ``rows``: one checkpoint's rows (``increment``, ``accuracy``, ``n_samples``).
    """
    if "n_samples" not in rows.columns:
        return float("nan"), float("nan")
    rows = rows[np.isfinite(rows["accuracy"])]
    if not (np.isfinite(rows["n_samples"]) & (rows["n_samples"] > 0)).all():
        return float("nan"), float("nan")
    increments = np.unique(rows["increment"].to_numpy(np.float64))
    if len(increments) < 3:
        return float("nan"), float("nan")
    n = rows["n_samples"].to_numpy(np.int64)
    accuracy = np.clip(rows["accuracy"].to_numpy(np.float64), 0.0, 1.0)
    draws = np.random.default_rng(seed).binomial(n, accuracy, (NOISE_DRAWS, len(rows))) / n
    which = np.searchsorted(increments, rows["increment"].to_numpy(np.float64))
    means = np.stack([draws[:, which == k].mean(axis=1) for k in range(len(increments))], axis=1)
    ranks_x, ranks_y = _rank_rows(increments), _rank_rows(means)
    dx, dy = ranks_x - ranks_x.mean(), ranks_y - ranks_y.mean(axis=1, keepdims=True)
    norm = np.sqrt((dy**2).sum(axis=1) * (dx**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(norm > 0, dy @ dx / norm, np.nan)
    rho = rho[np.isfinite(rho)]
    if rho.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(rho, [2.5, 97.5])
    return float(low), float(high)


def increment_trend(metrics, sigma: float) -> pd.DataFrame:
    """Spearman's rho between increment and accuracy at each training step, on the phase diagram's rows.

    Rows as :func:`phase_diagram_figure` (hole-free, increment_x == increment_y, isotropic sigma
    equal to ``sigma``). Per step: ``rho``, the rank correlation between the increment and the mean
    accuracy over seeds (NaN with fewer than 3 increments); ``n_increments``; ``n_seeds``; and, from
    the same rank correlation computed within each seed, ``rho_seed_mean``, ``rho_seed_lo`` and
    ``rho_seed_hi`` (mean and two-sided 95% Student-t interval over seeds, as
    :func:`aggregate_seeds`; NaN with one seed); and
    ``rho_noise_lo``, ``rho_noise_hi``, its 95% interval under the accuracies' sampling noise
    (:func:`sampling_interval`; NaN without an ``n_samples`` column). A negative rho means that
    smaller increments have reached a higher accuracy (learn faster).
    """
    columns = [
        "step",
        "rho",
        "n_increments",
        "n_seeds",
        "rho_seed_mean",
        "rho_seed_lo",
        "rho_seed_hi",
        "rho_noise_lo",
        "rho_noise_hi",
    ]
    grid = _isotropic_grid(load_metrics(metrics))
    grid = grid[np.isclose(grid["sigma_value"], float(sigma))].copy()
    if grid.empty:
        return pd.DataFrame(columns=columns)
    if "seed" not in grid.columns:
        grid["seed"] = grid["run"]
    mean = aggregate_seeds(grid, ["increment", "step"], ["accuracy"], how="mean")
    rows = []
    for step, at_step in mean.groupby("step", sort=True):
        of_step = grid[grid["step"] == step]
        seed_rho = pd.DataFrame(
            {
                "step": step,
                "rho": [
                    spearman_rho(seed_rows["increment"], seed_rows["accuracy"])
                    for _, seed_rows in of_step.groupby("seed")
                ],
            }
        )
        spread = aggregate_seeds(seed_rho, ["step"], ["rho"], how="mean").iloc[0]
        noise_lo, noise_hi = sampling_interval(of_step)
        rows.append(
            {
                "step": step,
                "rho": spearman_rho(at_step["increment"], at_step["accuracy"]),
                "n_increments": int(at_step["accuracy"].notna().sum()),
                "n_seeds": int(at_step["n_seeds"].max()),
                "rho_seed_mean": spread["rho"],
                "rho_seed_lo": float(np.clip(spread["rho_lo"], -1.0, 1.0)),
                "rho_seed_hi": float(np.clip(spread["rho_hi"], -1.0, 1.0)),
                "rho_noise_lo": noise_lo,
                "rho_noise_hi": noise_hi,
            }
        )
    return pd.DataFrame(rows, columns=columns)


def _middle_on(trend: pd.DataFrame) -> pd.DataFrame:
    """The checkpoints from the middle one on. The middle of an even count is the later of the two,
    so step 700 of the quick set's 175, 350, ..., 1,050."""
    return trend.iloc[len(trend) // 2 :]


def trend_text(trend: pd.DataFrame) -> str:
    """The sentence the phase diagram states about its trend (see :func:`increment_trend`).

    The verdict ("smaller increments learn faster", "larger increments learn faster" or "no clear
    order of increments") holds when rho is at most -TREND_RHO (at least +TREND_RHO) at every
    checkpoint from the middle one on; then rho of the mean accuracy at the middle and the final
    checkpoint with its 95% interval under sampling noise (when the table has sample counts), and
    with two or more seeds the per-seed rho's mean and 95% interval there.
    Checkpoints without a rho (fewer than 3 increments, or every accuracy equal) are left out.
    """
    trend = trend[trend["rho"].notna()]
    if trend.empty:
        return "trend: fewer than 3 increments, no Spearman rho"
    late = _middle_on(trend)
    if (late["rho"] <= -TREND_RHO).all():
        verdict = "smaller increments learn faster"
    elif (late["rho"] >= TREND_RHO).all():
        verdict = "larger increments learn faster"
    else:
        verdict = "no clear order of increments"
    shown = late.iloc[[0, -1]] if len(late) > 1 else late
    names = ["middle", "final"] if len(late) > 1 else ["final"]
    n_inc, n_seeds = int(late["n_increments"].min()), int(late["n_seeds"].max())
    seeds = f"{n_seeds} seed{'s' if n_seeds != 1 else ''}"

    lines = [
        f"{verdict} (Spearman $\\rho$ between increment and mean accuracy over {seeds}, {n_inc} increments)",
        "$\\rho$ = "
        + ", ".join(
            f"{row['rho']:+.2f} at step {fmt_step(row['step'])} ({name})"
            for name, (_, row) in zip(names, shown.iterrows(), strict=True)
        )
        + f"; at most {late['rho'].max():+.2f} from the middle step on",
    ]
    if shown[["rho_noise_lo", "rho_noise_hi"]].notna().all(axis=None):
        lines.append(
            "95% interval of $\\rho$ under sampling noise: "
            + ", ".join(
                f"{row['rho_noise_lo']:+.2f} to {row['rho_noise_hi']:+.2f} at step {fmt_step(row['step'])}"
                for _, row in shown.iterrows()
            )
        )
    if n_seeds >= 2:
        lines.append(
            "per-seed $\\rho$: "
            + ", ".join(
                f"{row['rho_seed_mean']:+.2f} (95% CI {row['rho_seed_lo']:+.2f} to {row['rho_seed_hi']:+.2f}) "
                f"at step {fmt_step(row['step'])}"
                for _, row in shown.iterrows()
            )
        )
    return "\n".join(lines)
