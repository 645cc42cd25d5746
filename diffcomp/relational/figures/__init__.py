"""Figures of the relational-skew study (Chang et al. 2024).

Every figure function returns a :class:`matplotlib.figure.Figure` built without pyplot (no backend
state, no ``plt.close`` needed); :func:`write_relational_figure` draws one from the pipeline's files
and saves it with :func:`diffcomp.io.save_figure`. Missing data never raises: an empty table, an
absent baseline experiment or a split without samples gives a "no data" panel.

One module per figure, named as the figure (``results/relational/figures/{name}.png``, the kinds of
:data:`FIGURES`):

- :mod:`~diffcomp.relational.figures.curves`: :func:`curves_figure`;
- :mod:`~diffcomp.relational.figures.scatter`: :func:`scatter_figure` (and :func:`scatter_rhos`,
  :data:`SCATTER_AXES`);
- :mod:`~diffcomp.relational.figures.skew`: :func:`skew_figure`;
- :mod:`~diffcomp.relational.figures.ablation`: :func:`ablation_figure`;
- :mod:`~diffcomp.relational.figures.interventions`: :func:`interventions_figure` (and
  :func:`intervention_runs`);
- :mod:`~diffcomp.relational.figures.samples`: :func:`sample_grid_figure`;

and the code they share: :mod:`~diffcomp.relational.results` (reading the metrics table,
the final checkpoints: :func:`final_points`), :mod:`~diffcomp.relational.figures.style` (colours,
texts, the accuracy scatter) and :mod:`~diffcomp.relational.figures.write` (the rule's entry point
:func:`write_relational_figure`). Both studies' figures share :mod:`diffcomp.plotting` (no-data
panels, curves with bands) and :mod:`diffcomp.stats` (:func:`aggregate_seeds`, :func:`spearman_rho`).

Inputs
------
``metrics``: the tidy table ``results/relational/metrics.csv`` (a DataFrame, or a path to it), one
row per (run, step) with the columns :data:`METRICS_COLUMNS`. Accuracies and failure fractions are
fractions in [0, 1]; the audit columns (completeness, balance, coverage) are percents. ``baseline``
names the experiment most figures show.

Aggregation over seeds: :func:`diffcomp.stats.aggregate_seeds`. Accuracies and failure fractions
(proportions of a known number of samples, :data:`~diffcomp.relational.results.COUNTS`)
are pooled over seeds with a 95% interval that stays in [0, 1] (the Wilson score interval at the
design-effect sample size, Student's t at n_seeds - 1 df: :func:`diffcomp.stats.proportion_interval`);
the audit's percents get the mean with its t-interval. With one seed there is no interval and
none is drawn; with two or more every figure that draws a mean over seeds also draws each seed's
value as a small marker. The final checkpoint of an (experiment, split) is the largest step any of
its runs reached; only the runs at that step enter its final-checkpoint numbers.
"""

from diffcomp.io import save_figure
from diffcomp.relational.figures.ablation import ablation_figure
from diffcomp.relational.figures.curves import curves_figure
from diffcomp.relational.figures.interventions import intervention_runs, interventions_figure
from diffcomp.relational.figures.samples import sample_grid_figure
from diffcomp.relational.figures.scatter import SCATTER_AXES, scatter_figure, scatter_rhos
from diffcomp.relational.figures.skew import skew_figure
from diffcomp.relational.figures.style import CORRECT_COLOUR, FAILURE_COLOURS, MIN_FONT_SIZE, WRONG_COLOUR
from diffcomp.relational.figures.write import FIGURES, write_relational_figure
from diffcomp.relational.results import (
    METRICS_COLUMNS,
    final_points,
    final_seed_rows,
    load_metrics,
    read_relational_metrics,
)
from diffcomp.stats import aggregate_seeds, spearman_rho

__all__ = [
    "CORRECT_COLOUR",
    "FAILURE_COLOURS",
    "FIGURES",
    "METRICS_COLUMNS",
    "MIN_FONT_SIZE",
    "SCATTER_AXES",
    "WRONG_COLOUR",
    "ablation_figure",
    "aggregate_seeds",
    "curves_figure",
    "final_points",
    "final_seed_rows",
    "intervention_runs",
    "interventions_figure",
    "load_metrics",
    "read_relational_metrics",
    "sample_grid_figure",
    "save_figure",
    "scatter_figure",
    "scatter_rhos",
    "skew_figure",
    "spearman_rho",
    "write_relational_figure",
]
