"""Paper Fig. 5 (``imbalance``): per-axis accuracy and R^2 of datasets with unequal increments."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from diffcomp.bumps.figures.style import _COLOURS, _dataset_title
from diffcomp.bumps.figures.tables import load_metrics
from diffcomp.plotting import band, curves_axes, no_data_figure
from diffcomp.stats import aggregate_seeds


def imbalance_figure(metrics) -> Figure:
    """Paper Fig. 5: per dataset with increment_x != increment_y, x and y against training steps.

    One row per such dataset (sorted by name): left accuracy_x and accuracy_y (with the joint
    accuracy dotted), right r2_x and r2_y; each the mean over seeds with a shaded 95% t-interval.
    All-NaN series draw nothing. Axes: two per dataset (one "no data" axis if there is none).
    """
    table = load_metrics(metrics)
    known = table["increment_x"].notna() & table["increment_y"].notna() & table["step"].notna()
    table = table[known & ~np.isclose(table["increment_x"], table["increment_y"])]
    names = sorted(table["dataset"].unique().tolist())
    if not names:
        return no_data_figure("no dataset with increment_x != increment_y")
    fig = Figure(figsize=(9.0, 2.7 * len(names) + 0.4), layout="constrained")
    axes = fig.subplots(len(names), 2, squeeze=False)
    columns = ["accuracy", "accuracy_x", "accuracy_y", "r2_x", "r2_y"]
    for (ax_acc, ax_r2), name in zip(axes, names, strict=True):
        rows = table[table["dataset"] == name]
        agg = aggregate_seeds(rows, ["step"], columns, how="mean")
        band(ax_acc, agg, "accuracy_x", _COLOURS["x"], "x")
        band(ax_acc, agg, "accuracy_y", _COLOURS["y"], "y")
        band(ax_acc, agg, "accuracy", _COLOURS["joint"], "joint", linestyle=":")
        band(ax_r2, agg, "r2_x", _COLOURS["x"], "x")
        band(ax_r2, agg, "r2_y", _COLOURS["y"], "y")
        curves_axes(ax_acc, "accuracy", agg["step"])
        curves_axes(ax_r2, "$R^2$", agg["step"])
        ax_acc.set_ylim(-0.03, 1.03)
        if agg["r2_x"].notna().any() or agg["r2_y"].notna().any():
            # the means too: with one seed there is no interval
            low = np.nanmin(agg[["r2_x", "r2_y", "r2_x_lo", "r2_y_lo"]].to_numpy(dtype=np.float64))
            ax_r2.set_ylim(min(-0.03, low - 0.03), 1.03)
        else:
            ax_r2.set_ylim(-0.03, 1.03)
            ax_r2.text(0.5, 0.5, "no $R^2$", ha="center", va="center", transform=ax_r2.transAxes, color="0.4")
        ax_acc.set_title(_dataset_title(rows, name), fontsize=9, loc="left")
        ax_acc.legend(fontsize=7, loc="lower right")
        ax_r2.legend(fontsize=7, loc="lower right")
    fig.suptitle("Imbalanced increments: per-axis accuracy and $R^2$ (mean, 95% t-interval over seeds)", fontsize=10)
    return fig
