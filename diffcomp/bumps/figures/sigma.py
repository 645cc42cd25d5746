"""Paper Fig. 8 (``sigma``): accuracy and R^2 over bump width x training step, one row per increment."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from diffcomp.bumps.figures.heatmaps import _diagram_rows, _heat_pair, _heat_size, _pivot
from diffcomp.bumps.figures.style import _how_text, _seed_count
from diffcomp.bumps.figures.tables import _isotropic_grid, load_metrics
from diffcomp.plotting import no_data_figure


def sigma_figure(metrics, increments: Sequence[float] | None = None, how: str = "best") -> Figure:
    """Paper Fig. 8: accuracy and mean R^2 over sigma (y) x training step (x), one row per increment.

    ``increments``: the increments to show (each matched with np.isclose), by default every
    increment of the isotropic, hole-free datasets. Rows otherwise as :func:`phase_diagram_figure`
    (anisotropic sigma is left out); an increment with no data gives a "no data" row. Axes: two
    heat maps per row plus two colorbars shared by the columns.
    """
    table = load_metrics(metrics)
    grid = _isotropic_grid(table)
    if increments is None:
        increments = sorted(grid["increment"].unique().tolist())
    increments = [float(v) for v in increments]
    frames = []
    n_steps, n_sigma = 0, 0
    for increment in increments:
        agg = _diagram_rows(grid[np.isclose(grid["increment"], increment)], "sigma_value", how)
        acc, r2 = _pivot(agg, "sigma_value", "accuracy"), _pivot(agg, "sigma_value", "r2_mean")
        frames.append((acc, r2, f"increment {increment:g}: "))
        n_steps, n_sigma = max(n_steps, acc.shape[1]), n_sigma + acc.shape[0]
    if not frames:
        return no_data_figure("no isotropic hole-free dataset")
    fig = Figure(figsize=_heat_size(n_steps, n_sigma, len(frames)), layout="constrained")
    axes = fig.subplots(len(frames), 2, squeeze=False)
    _heat_pair(fig, [tuple(row) for row in axes], frames, r"$\sigma$")
    fig.suptitle(f"Accuracy and $R^2$ against bump width ({_how_text(how, _seed_count(grid))})", fontsize=10)
    return fig
