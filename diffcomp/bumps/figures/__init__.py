"""Figures of the bump study (Liang, Liu & Fiete 2024, Figs. 3, 4, 5, 8 and 9).

Every figure function returns a :class:`matplotlib.figure.Figure` built without pyplot, so it is
independent of the interactive backend and needs no ``plt.close``; save it with
``diffcomp.io.save_figure(fig, [png, pdf])``. :mod:`diffcomp.bumps.figure_jobs` draws them from the
pipeline's files.

One module per figure, named as the figure (``results/bumps/figures/{name}.png``):

- :mod:`~diffcomp.bumps.figures.phases`: Fig. 3, :func:`phases_figure` (and
  :func:`choose_phase_checkpoints`);
- :mod:`~diffcomp.bumps.figures.phase_diagram`: Fig. 4, :func:`phase_diagram_figure`;
- :mod:`~diffcomp.bumps.figures.sigma`: Fig. 8, :func:`sigma_figure`;
- :mod:`~diffcomp.bumps.figures.imbalance`: Fig. 5, :func:`imbalance_figure`;
- :mod:`~diffcomp.bumps.figures.holes`: Fig. 9, :func:`holes_figure` (and :func:`hole_patch`);

and the code they share: :mod:`~diffcomp.bumps.figures.tables` (:func:`load_metrics`, the
isotropic grid), :mod:`~diffcomp.bumps.figures.style` (colours, number formats, title texts),
:mod:`~diffcomp.bumps.figures.heatmaps` (the heat maps of Figs. 4 and 8) and
:mod:`~diffcomp.bumps.figures.trend` (the phase diagram's Spearman trend: :func:`increment_trend`,
:func:`sampling_interval`, :func:`trend_text`). Both studies' figures share :mod:`diffcomp.plotting`
(no-data panels, curves with bands) and :mod:`diffcomp.stats` (:func:`aggregate_seeds`,
:func:`spearman_rho`).

Inputs
------
``metrics``: the tidy table ``metrics.csv`` (a DataFrame, or a path to it), one row per
(run, step), with columns ``run, dataset, increment_x, increment_y, sigma, hole, seed, step,
accuracy, accuracy_x, accuracy_y, r2_x, r2_y, frac_none, frac_single, frac_multi, phase,
accuracy_ood``. When ``dataset`` is absent it is taken from ``run`` ("{dataset}_seed{seed}").
``sigma`` may be a string ("sx/sy") for anisotropic bumps: such rows never enter the sigma or
increment heat maps. A dataset "has a hole" when ``hole`` is neither empty/NaN nor "none".

Aggregation over seeds (:func:`diffcomp.stats.aggregate_seeds`): the mean with a two-sided 95%
Student-t interval, ``mean +/- t_{0.975, n-1} * sd / sqrt(n)`` (sd with ddof = 1, NaNs ignored), or
the best of seeds (the maximum), which the paper uses for its phase diagrams.
"""

from diffcomp.bumps.figures.heatmaps import ANNOTATE_MAX_CELLS
from diffcomp.bumps.figures.holes import hole_patch, holes_figure
from diffcomp.bumps.figures.imbalance import imbalance_figure
from diffcomp.bumps.figures.phase_diagram import phase_diagram_figure
from diffcomp.bumps.figures.phases import choose_phase_checkpoints, phases_figure
from diffcomp.bumps.figures.sigma import sigma_figure
from diffcomp.bumps.figures.tables import PHASES, load_metrics
from diffcomp.bumps.figures.trend import NOISE_DRAWS, TREND_RHO, increment_trend, sampling_interval, trend_text
from diffcomp.stats import aggregate_seeds, spearman_rho

__all__ = [
    "ANNOTATE_MAX_CELLS",
    "NOISE_DRAWS",
    "PHASES",
    "TREND_RHO",
    "aggregate_seeds",
    "choose_phase_checkpoints",
    "hole_patch",
    "holes_figure",
    "imbalance_figure",
    "increment_trend",
    "load_metrics",
    "phase_diagram_figure",
    "phases_figure",
    "sampling_interval",
    "sigma_figure",
    "spearman_rho",
    "trend_text",
]
