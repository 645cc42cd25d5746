"""Figure ``scatter``: final test accuracy of each split against its training set's audit numbers."""

from __future__ import annotations

from matplotlib.figure import Figure

from diffcomp.relational.figures.style import (
    _accuracy_scatter,
    _marker_legend,
    _over_seeds,
    _rho_text,
    _split_colours,
)
from diffcomp.relational.results import _ordered, final_points, final_seed_rows
from diffcomp.stats import spearman_rho

# Audit x axes of the scatter figure: (column of final_points, axis label).
SCATTER_AXES = (
    ("visual_completeness", "visual completeness (%)\n(mean of r1 and r2)"),
    ("visual_balance", "visual balance (%)"),
    ("coverage", "coverage (%)"),
)


def scatter_rhos(metrics, baseline: str) -> dict[str, float]:
    """Spearman's rho of final test accuracy (mean over seeds) against each x of :data:`SCATTER_AXES`.

    Computed on the points :func:`scatter_figure` draws (those of :func:`final_points`); NaN = n/a.
    """
    points = final_points(metrics, baseline)
    return {column: spearman_rho(points[column], points["test_accuracy"]) for column, _ in SCATTER_AXES}


def scatter_figure(metrics, baseline: str) -> Figure:
    """Final test accuracy of each split of ``baseline`` against its training set's audit numbers.

    Three panels (:data:`SCATTER_AXES`): visual completeness (mean of r1 and r2), visual balance and
    coverage, each titled with Spearman's rho over the splits (:func:`scatter_rhos`; "n/a" with fewer
    than 3 distinct points or a constant axis). A point is the mean over seeds with its 95%
    interval as error bar (none with one seed) and each seed's value as a small dot, labelled with
    the split's name; random splits are triangles.
    """
    points = final_points(metrics, baseline)
    seeds = final_seed_rows(metrics, baseline)
    colours = _split_colours(points["split"].tolist())
    fig = Figure(figsize=(11.0, 4.0), layout="constrained")
    axes = fig.subplots(1, len(SCATTER_AXES), sharey=True)
    for ax, (column, label) in zip(axes, SCATTER_AXES, strict=True):
        n = _accuracy_scatter(ax, points, column, label, colours, seeds)
        rho = spearman_rho(points[column], points["test_accuracy"])
        ax.set_title(_rho_text(rho, n), fontsize=9)
    for ax in axes[1:]:
        ax.set_ylabel("")
    _marker_legend(fig)
    step = "/".join(str(int(s)) for s in _ordered(points["step"].dropna()))
    when = f" at step {step}" if step else ""
    fig.suptitle(
        f"{baseline}: final test accuracy{when} against the training set's audit ({_over_seeds(points['n_seeds'])})",
        fontsize=10,
    )
    return fig
