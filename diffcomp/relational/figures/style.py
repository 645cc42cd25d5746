"""Style of the relational figures: colours, texts, and the accuracy scatter of the scatter and skew figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from diffcomp.plotting import no_data

FAILURE_COLOURS = {"swapped": "#d62728", "one_wrong": "#ff7f0e", "both_wrong": "0.45"}
CORRECT_COLOUR = "#1a9850"
WRONG_COLOUR = "#d73027"
MIN_FONT_SIZE = 5.0


def _split_colours(splits: Sequence[str]) -> dict[str, object]:
    """One colour per split: tab10, tab20 beyond 10 splits, a viridis ramp beyond 20."""
    splits = list(splits)
    if len(splits) <= 10:
        cmap = matplotlib.colormaps["tab10"]
        return {s: cmap(k) for k, s in enumerate(splits)}
    if len(splits) <= 20:
        cmap = matplotlib.colormaps["tab20"]
        return {s: cmap(k) for k, s in enumerate(splits)}
    cmap = matplotlib.colormaps["viridis"]
    return {s: cmap(k / (len(splits) - 1)) for k, s in enumerate(splits)}


def _seeds_text(n_seeds) -> str:
    n = pd.Series(n_seeds, dtype="float64").dropna()
    if n.empty:
        return "0 seeds"
    low, high = int(n.min()), int(n.max())
    if low == high:
        return f"{low} seed{'s' if low != 1 else ''}"
    return f"{low}-{high} seeds"


def _is_random(family: str) -> bool:
    return str(family).startswith("random")


def _rho_text(rho: float, n: int) -> str:
    value = "n/a" if not np.isfinite(rho) else f"{rho:.2f}"
    return f"Spearman $\\rho$ = {value} (n = {n})"


def _yerr(points: pd.DataFrame, column: str) -> np.ndarray:
    """Asymmetric error bars of an accuracy column, its interval clipped to [0, 1]; 0 where unknown."""
    mean = points[column].to_numpy(dtype=np.float64)
    low = np.clip(points[f"{column}_lo"].to_numpy(dtype=np.float64), 0.0, 1.0)
    high = np.clip(points[f"{column}_hi"].to_numpy(dtype=np.float64), 0.0, 1.0)
    return np.nan_to_num(np.clip(np.vstack([mean - low, high - mean]), 0.0, None), nan=0.0)


def _accuracy_scatter(ax, points: pd.DataFrame, xcol: str, xlabel: str, colours: Mapping) -> int:
    """Final test accuracy against ``xcol``, one labelled point per split; returns how many were drawn."""
    keep = points[xcol].notna() & points["test_accuracy"].notna()
    shown = points[keep]
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("final test accuracy", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if shown.empty:
        no_data(ax)
        return 0
    yerr = _yerr(shown, "test_accuracy")
    for k, row in enumerate(shown.itertuples(index=False)):
        ax.errorbar(
            getattr(row, xcol),
            row.test_accuracy,
            yerr=yerr[:, k : k + 1],
            fmt="^" if _is_random(row.family) else "o",
            color=colours.get(row.split, "0.3"),
            markersize=6,
            capsize=2.5,
            elinewidth=1.0,
            markeredgecolor="black",
            markeredgewidth=0.5,
        )
    # One label per distinct point: splits that land on the same spot share it ("a, b").
    labels: dict[tuple[float, float], list[str]] = {}
    for row in shown.itertuples(index=False):
        labels.setdefault((float(getattr(row, xcol)), float(row.test_accuracy)), []).append(row.split)
    for (x, y), names in labels.items():
        ax.annotate(", ".join(names), (x, y), xytext=(4, 4), textcoords="offset points", fontsize=6.5, color="0.15")
    ax.set_ylim(-0.05, 1.1)
    ax.margins(x=0.15)
    return len(shown)


def _marker_legend(fig) -> None:
    handles = [
        Line2D([], [], marker="o", linestyle="", color="0.5", markeredgecolor="black", label="structured split"),
        Line2D([], [], marker="^", linestyle="", color="0.5", markeredgecolor="black", label="random split"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=7, frameon=False)
