"""Plotting style shared by both studies' figures: "no data" panels, curves with 95% bands.

The figures are built without pyplot (:class:`matplotlib.figure.Figure` directly), so nothing here
selects a backend or keeps figure state.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter


def fmt_step(step) -> str:
    """A training step as a short label: 1.5M, 1.2k, 50."""
    step = float(step)
    if step >= 1_000_000 and step % 100_000 == 0:
        return f"{step / 1e6:g}M"
    if step >= 1000 and step % 100 == 0:
        return f"{step / 1e3:g}k"
    return f"{step:g}"


def no_data(ax, text: str = "no data") -> None:
    """Write ``text`` (grey) in the middle of ``ax``, without ticks."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def no_data_figure(text: str, size=(6.0, 2.0)) -> Figure:
    """A figure of one axis that says ``text`` (see :func:`no_data`)."""
    fig = Figure(figsize=size, layout="constrained")
    no_data(fig.add_subplot(), text)
    return fig


def band(ax, agg: pd.DataFrame, column: str, colour: str, label: str, linestyle: str = "-") -> None:
    """Mean line and shaded 95% interval; intervals of accuracies (not R^2) are clipped to [0, 1]."""
    low, high = (0.0, 1.0) if column.startswith("accuracy") else (-np.inf, np.inf)
    steps = agg["step"].to_numpy(dtype=np.float64)
    mean = agg[column].to_numpy(dtype=np.float64)
    marker = "o" if len(steps) <= 2 else None
    ax.plot(steps, mean, color=colour, label=label, linestyle=linestyle, marker=marker, markersize=3, lw=1.3)
    ax.fill_between(
        steps,
        np.clip(agg[f"{column}_lo"].to_numpy(dtype=np.float64), low, high),
        np.clip(agg[f"{column}_hi"].to_numpy(dtype=np.float64), low, high),
        color=colour,
        alpha=0.2,
        linewidth=0,
    )


def curves_axes(ax, ylabel: str, steps) -> None:
    """Labels and grid; the x range is the steps' (a single step gets one tick, centred)."""
    ax.set_xlabel("training step", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_step(v) if v >= 0 else f"{v:g}"))
    steps = np.unique(np.asarray(steps, dtype=np.float64))
    if len(steps) == 1:
        half = max(1.0, 0.5 * abs(steps[0]))
        ax.set_xlim(steps[0] - half, steps[0] + half)
        ax.set_xticks(steps)
    elif len(steps) > 1:
        margin = 0.03 * (steps[-1] - steps[0])
        ax.set_xlim(steps[0] - margin, steps[-1] + margin)
