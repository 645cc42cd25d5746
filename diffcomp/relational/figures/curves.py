"""Figure ``curves``: train and test accuracy of every split of the baseline against training steps."""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from diffcomp.plotting import band, curves_axes, no_data_figure
from diffcomp.relational.figures.style import SEED_MARKER, _over_seeds, _split_colours
from diffcomp.relational.results import _ordered, load_metrics
from diffcomp.stats import aggregate_seeds

_CURVE_COLUMNS = (
    "experiment",
    "split",
    "family",
    "seed",
    "step",
    "train_accuracy",
    "test_accuracy",
    "n_train_samples",
    "n_test_samples",
)
_CURVE_COUNTS = {"accuracy_test": "n_test_samples", "accuracy_train": "n_train_samples"}


def curves_figure(metrics, baseline: str) -> Figure:
    """Test (solid) and train (dashed) accuracy of every split of ``baseline`` against training steps.

    One colour per split (table order), mean over seeds with a shaded 95% interval (bounded,
    :func:`diffcomp.stats.proportion_interval`; none with one seed) and, with two or more seeds,
    each seed's value as a small dot (test) or ring (train); the legend names each split with its
    family. Axes: one (a "no data" axis if the baseline has no rows).
    """
    table = load_metrics(metrics, _CURVE_COLUMNS)
    table = table[(table["experiment"] == baseline) & table["step"].notna()]
    if table.empty:
        return no_data_figure(f"no runs of experiment {baseline!r}", size=(7.0, 3.0))
    splits = _ordered(table["split"])
    colours = _split_colours(splits)
    fig = Figure(figsize=(8.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    handles = [
        Line2D([], [], color="black", linestyle="-", label="test triples"),
        Line2D([], [], color="black", linestyle="--", label="train triples"),
    ]
    n_seeds = []
    alpha = max(0.06, min(0.2, 0.8 / len(splits)))  # many overlapping bands would turn to mud
    for split in splits:
        rows = table[table["split"] == split].assign(
            accuracy_test=lambda t: t["test_accuracy"], accuracy_train=lambda t: t["train_accuracy"]
        )
        agg = aggregate_seeds(rows, ["step"], list(_CURVE_COUNTS), how="mean", counts=_CURVE_COUNTS)
        n_seeds += agg["n_seeds"].tolist()
        colour = colours[split]
        band(ax, agg, "accuracy_test", colour, None)
        ax.collections[-1].set_alpha(alpha)
        band(ax, agg, "accuracy_train", colour, None, linestyle="--")
        ax.collections[-1].set_alpha(alpha / 2)  # train bands fainter: the test curves are the point
        if rows["seed"].nunique() >= 2:
            ax.plot(rows["step"], rows["test_accuracy"], color=colour, gid=f"seeds:test:{split}", **SEED_MARKER)
            ax.plot(
                rows["step"],
                rows["train_accuracy"],
                color=colour,
                gid=f"seeds:train:{split}",
                **{**SEED_MARKER, "markerfacecolor": "none", "markeredgewidth": 0.6, "markeredgecolor": colour},
            )
        family = "/".join(_ordered(rows["family"]))
        handles.append(Line2D([], [], color=colour, lw=2, label=f"{split} ({family})" if family else split))
    if max(n_seeds, default=0) >= 2:
        handles += [
            Line2D([], [], color="black", label="test, one seed", **SEED_MARKER),
            Line2D(
                [],
                [],
                color="black",
                label="train, one seed",
                **{**SEED_MARKER, "markerfacecolor": "none", "markeredgewidth": 0.6, "markeredgecolor": "black"},
            ),
        ]
    curves_axes(ax, "accuracy (both nouns right)", table["step"])
    ax.set_ylim(-0.03, 1.03)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
    fig.suptitle(
        f"{baseline}: accuracy against training steps ({_over_seeds(n_seeds)})",
        fontsize=10,
    )
    return fig
