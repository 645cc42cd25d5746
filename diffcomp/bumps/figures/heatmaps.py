"""Heat maps over training step (x) by increment or sigma (y), shared by Figs. 4 and 8."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize

from diffcomp.bumps.figures.style import _HEAT_CMAP, _fmt_value, _thin_ticks
from diffcomp.plotting import fmt_step, no_data
from diffcomp.stats import aggregate_seeds

# Cells of a heat map are annotated with their value when a panel has at most this many.
ANNOTATE_MAX_CELLS = 80


def _heatmap(ax, frame: pd.DataFrame, title: str, ylabel: str) -> None:
    """Draw ``frame`` (rows: y values ascending upwards, columns: steps) as a [0, 1] heat map."""
    ax.set_title(title, fontsize=9)
    if frame.empty or frame.shape[1] == 0:
        no_data(ax)
        ax.set_ylabel(ylabel)
        return
    values = frame.to_numpy(dtype=np.float64)
    ax.imshow(
        np.ma.masked_invalid(values),
        origin="lower",
        aspect="auto",
        cmap=_HEAT_CMAP,
        vmin=0.0,
        vmax=1.0,
        interpolation="nearest",
    )
    n_rows, n_cols = values.shape
    xt = _thin_ticks(n_cols)
    ax.set_xticks(xt, [fmt_step(frame.columns[k]) for k in xt], fontsize=7, rotation=45 if n_cols > 6 else 0)
    yt = _thin_ticks(n_rows, most=14)
    ax.set_yticks(yt, [_fmt_value(frame.index[k]) for k in yt], fontsize=7)
    ax.set_xlabel("training step", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    if values.size <= ANNOTATE_MAX_CELLS:
        size = 7 if n_cols <= 8 else 5.5
        for (r, c), v in np.ndenumerate(values):
            if np.isfinite(v):
                colour = "white" if v < 0.55 else "black"
                ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=size, color=colour)


def _colourbar(fig, axes, label: str, below_zero: bool) -> None:
    mappable = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=_HEAT_CMAP)
    cbar = fig.colorbar(mappable, ax=axes, shrink=0.9, extend="min" if below_zero else "neither")
    cbar.set_label(label, fontsize=8)
    cbar.ax.tick_params(labelsize=7)


def _pivot(agg: pd.DataFrame, row: str, column: str) -> pd.DataFrame:
    if agg.empty:
        return pd.DataFrame()
    frame = agg.pivot_table(index=row, columns="step", values=column, aggfunc="first", dropna=False)
    return frame.sort_index().sort_index(axis=1)


def _diagram_rows(grid: pd.DataFrame, row: str, how: str) -> pd.DataFrame:
    if grid.empty:
        return pd.DataFrame(columns=[row, "step", "accuracy", "r2_mean"])
    return aggregate_seeds(grid, [row, "step"], ["accuracy", "r2_mean"], how=how)


def _heat_pair(fig, axes_rows, frames, ylabel: str) -> None:
    """frames: per row (accuracy frame, r2 frame, row title)."""
    below = False
    for (ax_acc, ax_r2), (acc, r2, title) in zip(axes_rows, frames, strict=True):
        _heatmap(ax_acc, acc, f"{title}accuracy", ylabel)
        _heatmap(ax_r2, r2, f"{title}mean $R^2$", ylabel)
        below |= bool((r2.to_numpy(dtype=np.float64) < 0).any())
    _colourbar(fig, [row[0] for row in axes_rows], "accuracy", False)
    _colourbar(fig, [row[1] for row in axes_rows], r"$(R^2_x + R^2_y)/2$", below)


def _heat_size(n_steps: int, n_rows_total: int, n_panel_rows: int) -> tuple[float, float]:
    width = min(16.0, max(8.0, 2 * (1.6 + 0.42 * n_steps) + 1.5))
    height = n_panel_rows * min(6.0, max(2.4, 1.0 + 0.3 * n_rows_total / max(1, n_panel_rows)))
    return width, height
