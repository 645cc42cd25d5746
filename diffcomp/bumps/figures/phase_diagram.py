"""Paper Fig. 4 (``phase_diagram``): accuracy and R^2 over increment x training step at one sigma."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from diffcomp.bumps.figures.heatmaps import _diagram_rows, _heat_pair, _heat_size, _pivot
from diffcomp.bumps.figures.style import _how_text, _seed_count, _thin_ticks
from diffcomp.bumps.figures.tables import _isotropic_grid, load_metrics
from diffcomp.bumps.figures.trend import increment_trend, trend_text


def _trend_axis(ax, trend: pd.DataFrame, steps) -> None:
    """Rho of each checkpoint on a secondary x axis above the accuracy heat map."""
    rho = dict(zip(trend["step"], trend["rho"], strict=True))
    top = ax.secondary_xaxis("top")
    ticks = _thin_ticks(len(steps), most=16)
    values = [rho.get(steps[k], np.nan) for k in ticks]
    top.set_xticks(ticks, [f"{v:+.2f}" if np.isfinite(v) else "-" for v in values], fontsize=6.5)
    top.set_xlabel("Spearman $\\rho$(increment, mean accuracy)", fontsize=7)


def phase_diagram_figure(metrics, sigma: float, how: str = "best", accuracy: str = "accuracy") -> Figure:
    """Paper Fig. 4: accuracy and mean R^2 ((r2_x + r2_y)/2) over increment (y) x training step (x).

    Only hole-free datasets with increment_x == increment_y and an isotropic sigma equal to
    ``sigma`` (np.isclose) enter. Seeds are combined with :func:`aggregate_seeds` (``how`` =
    "best", the paper's choice, or "mean"); R^2 is averaged over x and y per seed first. Missing
    cells are grey; cells are annotated with their value when a panel has at most
    ``ANNOTATE_MAX_CELLS``. Colour scales are fixed to [0, 1] (negative R^2 shows as the lowest
    colour, the colorbar then has a "min" arrow). Axes: two heat maps and two colorbars.

    The trend is stated whatever ``how`` is, on the mean accuracy over seeds (:func:`increment_trend`):
    Spearman's rho between increment and accuracy at each checkpoint above the accuracy heat map,
    and :func:`trend_text` (verdict, rho at the middle and final checkpoints, per-seed 95%
    interval with two or more seeds) in the title.

    ``accuracy``: the metrics column shown and ranked, "accuracy" (at the training labels, the
    paper's) or "accuracy_offgrid" (at labels shared by every run, on and off the training grid).
    """
    table = load_metrics(metrics)
    if accuracy not in ("accuracy", "accuracy_offgrid"):
        raise ValueError(f"accuracy must be 'accuracy' or 'accuracy_offgrid', got {accuracy!r}")
    offgrid = accuracy == "accuracy_offgrid"
    if offgrid:
        if "accuracy_offgrid" not in table.columns:
            raise ValueError("the metrics table has no accuracy_offgrid column (sampled without off-grid labels?)")
        table = table.assign(accuracy=table["accuracy_offgrid"])
        # the counts behind the off-grid accuracies, for the trend's sampling interval
        if "n_offgrid" in table.columns:
            table = table.assign(n_samples=table["n_offgrid"])
        else:
            table = table.drop(columns="n_samples", errors="ignore")
    grid = _isotropic_grid(table)
    grid = grid[np.isclose(grid["sigma_value"], float(sigma))]
    agg = _diagram_rows(grid, "increment", how)
    acc, r2 = _pivot(agg, "increment", "accuracy"), _pivot(agg, "increment", "r2_mean")
    fig = Figure(figsize=_heat_size(acc.shape[1], acc.shape[0], 1), layout="constrained")
    axes = fig.subplots(1, 2, squeeze=False)
    _heat_pair(fig, [tuple(axes[0])], [(acc, r2, "")], "increment")
    trend = increment_trend(grid, sigma)
    if acc.shape[1]:
        _trend_axis(axes[0][0], trend, list(acc.columns))
    where = ", accuracy at off-grid labels" if offgrid else ""
    fig.suptitle(
        f"Phase diagram at $\\sigma$ = {sigma:g} ({_how_text(how, _seed_count(grid))}{where})\n{trend_text(trend)}",
        fontsize=9,
    )
    return fig
