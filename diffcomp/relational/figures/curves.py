"""Figure ``curves``: train and test accuracy of every split of the baseline against training steps."""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from diffcomp.plotting import band, curves_axes, no_data_figure
from diffcomp.relational.figures.style import _seeds_text, _split_colours
from diffcomp.relational.figures.tables import _ordered, load_metrics
from diffcomp.stats import aggregate_seeds

_CURVE_COLUMNS = ("experiment", "split", "family", "seed", "step", "train_accuracy", "test_accuracy")


def curves_figure(metrics, baseline: str) -> Figure:
    """Test (solid) and train (dashed) accuracy of every split of ``baseline`` against training steps.

    One colour per split (table order), mean over seeds with a shaded 95% t-interval; the legend
    names each split with its family. Axes: one (a "no data" axis if the baseline has no rows).
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
        agg = aggregate_seeds(rows, ["step"], ["accuracy_test", "accuracy_train"], how="mean")
        n_seeds += agg["n_seeds"].tolist()
        colour = colours[split]
        band(ax, agg, "accuracy_test", colour, None)
        ax.collections[-1].set_alpha(alpha)
        band(ax, agg, "accuracy_train", colour, None, linestyle="--")
        ax.collections[-1].set_alpha(alpha / 2)  # train bands fainter: the test curves are the point
        family = "/".join(_ordered(rows["family"]))
        handles.append(Line2D([], [], color=colour, lw=2, label=f"{split} ({family})" if family else split))
    curves_axes(ax, "accuracy (both nouns right)", table["step"])
    ax.set_ylim(-0.03, 1.03)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
    fig.suptitle(
        f"{baseline}: accuracy against training steps (mean, 95% t-interval over {_seeds_text(n_seeds)})",
        fontsize=10,
    )
    return fig
