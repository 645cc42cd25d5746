"""Figure ``skew``: visual against linguistic skew, test accuracy by kind of held-out triple, and the
kinds of failure on test triples."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from diffcomp.plotting import no_data
from diffcomp.relational.evaluate import FAILURE_KINDS, HELD_OUT_KINDS
from diffcomp.relational.figures.style import (
    FAILURE_COLOURS,
    _accuracy_scatter,
    _marker_legend,
    _over_seeds,
    _rho_text,
    _seed_markers,
    _split_colours,
    _yerr,
)
from diffcomp.relational.results import final_points, final_seed_rows
from diffcomp.stats import spearman_rho

# The kinds of held-out triple on the skew figure: label, colour, marker.
KIND_STYLES = {
    "new_caption": ("new caption of a training image", "#7b3294", "s"),
    "new_image": ("new image", "#008837", "o"),
}


def _kinds_panel(ax, points: pd.DataFrame, seeds: pd.DataFrame) -> None:
    """Final test accuracy on each kind of held-out triple, per split: value over seeds with its
    interval, each seed a small marker, "n/a" where the split's test samples have none of a kind."""
    ax.set_title("test accuracy by kind of held-out triple", fontsize=9)
    columns = [f"test_{kind}_accuracy" for kind in HELD_OUT_KINDS]
    if points.empty or not np.isfinite(points[columns].to_numpy(dtype=np.float64)).any():
        no_data(ax)
        return
    x = np.arange(len(points))
    offsets = {kind: (k - (len(HELD_OUT_KINDS) - 1) / 2) * 0.3 for k, kind in enumerate(HELD_OUT_KINDS)}
    for kind in HELD_OUT_KINDS:
        label, colour, marker = KIND_STYLES[kind]
        column = f"test_{kind}_accuracy"
        position = x + offsets[kind]
        container = ax.errorbar(
            position,
            points[column].to_numpy(dtype=np.float64),
            yerr=_yerr(points, column),
            fmt=marker,
            color=colour,
            markersize=5,
            capsize=2.0,
            elinewidth=0.9,
            markeredgecolor="black",
            markeredgewidth=0.4,
            label=label,
        )
        container.lines[0].set_gid(f"kind:{kind}")  # the markers, not the caps
        for k, row in enumerate(points.itertuples(index=False)):
            values = seeds.loc[seeds["split"] == row.split, column]
            _seed_markers(ax, position[k], values, "black", gid=f"seeds:{kind}:{row.split}")
            if np.isnan(getattr(row, column)):
                ax.text(position[k], 0.02, "n/a", ha="center", va="bottom", fontsize=5.5, rotation=90, color=colour)
    ax.set_xticks(x, points["split"].tolist(), rotation=40, ha="right", fontsize=7)
    ax.set_xlim(-0.6, len(points) - 0.4)
    ax.set_ylim(-0.05, 1.25)  # the legend sits above 1
    ax.set_yticks(np.linspace(0.0, 1.0, 6))
    ax.set_ylabel("final test accuracy", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(axis="y", alpha=0.3)
    handles = [
        Line2D([], [], marker=marker, linestyle="", color=colour, markeredgecolor="black", label=label)
        for label, colour, marker in KIND_STYLES.values()
    ]
    ax.legend(handles=handles, fontsize=6.5, loc="upper center", ncols=1, frameon=False, handlelength=1.2)


def skew_figure(metrics, baseline: str) -> Figure:
    """Visual against linguistic skew: final test accuracy by visual and by linguistic balance.

    First and second panel (same y axis): one point per split of ``baseline`` (mean over seeds,
    95% interval, each seed a small dot), so that splits skewed in one view only (bipartite vs
    caption_bipartite, one_sided vs caption_by_order) separate. Third: the final test accuracy on
    each kind of held-out triple per split, new captions of training images and new images (the
    same statistics; "n/a" for a kind the split's test samples do not have). Fourth: the kinds of
    failure on test triples at the final step, stacked per split (mean fraction over seeds):
    swapped nouns, one noun wrong, both wrong.
    """
    points = final_points(metrics, baseline)
    seeds = final_seed_rows(metrics, baseline)
    colours = _split_colours(points["split"].tolist())
    n_splits = len(points)
    bar_width = max(3.0, 0.42 * n_splits + 1.6)
    kind_width = max(3.2, 0.5 * n_splits + 1.6)
    fig = Figure(figsize=(7.6 + kind_width + bar_width, 4.4), layout="constrained")
    ax_vis, ax_ling, ax_kind, ax_bar = fig.subplots(1, 4, width_ratios=[3.8, 3.8, kind_width, bar_width])
    ax_ling.sharey(ax_vis)
    for ax, view in ((ax_vis, "visual"), (ax_ling, "linguistic")):
        n = _accuracy_scatter(ax, points, f"{view}_balance", f"{view} balance (%)", colours, seeds)
        rho = spearman_rho(points[f"{view}_balance"], points["test_accuracy"])
        ax.set_title(f"{view} roles: {_rho_text(rho, n)}", fontsize=9)
    ax_ling.set_ylabel("")
    _kinds_panel(ax_kind, points, seeds)
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
    fig.suptitle(f"{baseline}: visual vs linguistic skew ({_over_seeds(points['n_seeds'])})", fontsize=10)
    return fig
