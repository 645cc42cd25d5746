"""Figure ``skew``: visual against linguistic skew, and the kinds of failure on test triples."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from diffcomp.plotting import no_data
from diffcomp.relational.evaluate import FAILURE_KINDS
from diffcomp.relational.figures.style import (
    FAILURE_COLOURS,
    _accuracy_scatter,
    _marker_legend,
    _rho_text,
    _seeds_text,
    _split_colours,
)
from diffcomp.relational.figures.tables import final_points
from diffcomp.stats import spearman_rho


def skew_figure(metrics, baseline: str) -> Figure:
    """Visual against linguistic skew: final test accuracy by visual and by linguistic balance.

    Left and middle (same y axis): one point per split of ``baseline`` (mean over seeds, 95%
    t-interval), so that splits skewed in one view only (bipartite vs caption_bipartite, one_sided
    vs caption_by_order) separate. Right: the kinds of failure on test triples at the final step,
    stacked per split (mean fraction over seeds): swapped nouns, one noun wrong, both wrong.
    """
    points = final_points(metrics, baseline)
    colours = _split_colours(points["split"].tolist())
    n_splits = len(points)
    bar_width = max(3.0, 0.42 * n_splits + 1.6)
    fig = Figure(figsize=(7.6 + bar_width, 4.2), layout="constrained")
    ax_vis, ax_ling, ax_bar = fig.subplots(1, 3, width_ratios=[3.8, 3.8, bar_width])
    ax_ling.sharey(ax_vis)
    for ax, view in ((ax_vis, "visual"), (ax_ling, "linguistic")):
        n = _accuracy_scatter(ax, points, f"{view}_balance", f"{view} balance (%)", colours)
        rho = spearman_rho(points[f"{view}_balance"], points["test_accuracy"])
        ax.set_title(f"{view} roles: {_rho_text(rho, n)}", fontsize=9)
    ax_ling.set_ylabel("")
    ax_bar.set_title("test failures at the final step", fontsize=9)
    fractions = points[[f"test_frac_{kind}" for kind in FAILURE_KINDS]].to_numpy(dtype=np.float64)
    if n_splits == 0 or not np.isfinite(fractions).any():
        no_data(ax_bar)
    else:
        x = np.arange(n_splits)
        bottom = np.zeros(n_splits)
        for k, kind in enumerate(FAILURE_KINDS):
            height = np.nan_to_num(fractions[:, k], nan=0.0)
            ax_bar.bar(x, height, bottom=bottom, width=0.7, color=FAILURE_COLOURS[kind], label=kind.replace("_", " "))
            bottom += height
        ax_bar.set_xticks(x, points["split"].tolist(), rotation=40, ha="right", fontsize=7)
        ax_bar.set_ylim(0.0, 1.25)  # the legend sits above 1, where no stack reaches
        ax_bar.set_yticks(np.linspace(0.0, 1.0, 6))
        ax_bar.set_ylabel("fraction of test samples", fontsize=8)
        ax_bar.tick_params(labelsize=7)
        ax_bar.grid(axis="y", alpha=0.3)
        ax_bar.legend(fontsize=6.5, loc="upper center", ncols=3, frameon=False, handlelength=1.2, columnspacing=0.8)
    _marker_legend(fig)
    fig.suptitle(
        f"{baseline}: visual vs linguistic skew (mean, 95% t-interval over {_seeds_text(points['n_seeds'])})",
        fontsize=10,
    )
    return fig
