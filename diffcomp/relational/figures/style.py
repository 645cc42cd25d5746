"""Style of the relational figures: colours, texts, per-seed markers, and the accuracy scatter of the
scatter and skew figures.

A mean over seeds is drawn with its 95% interval (:mod:`diffcomp.stats`: bounded for accuracies)
and, where two or more seeds entered it, each seed's value as a small marker; with one seed there
is no interval and nothing is drawn for one.
"""

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


# Per-seed values: small markers drawn over the mean and its interval.
SEED_MARKER = {
    "marker": "o",
    "markersize": 2.8,
    "linestyle": "",
    "alpha": 0.9,
    "markeredgewidth": 0.4,
    "markeredgecolor": "white",  # keeps a dot visible on an error bar of its colour
}


def _seeds_text(n_seeds) -> str:
    n = pd.Series(n_seeds, dtype="float64").dropna()
    if n.empty:
        return "0 seeds"
    low, high = int(n.min()), int(n.max())
    if low == high:
        return f"{low} seed{'s' if low != 1 else ''}"
    return f"{low}-{high} seeds"


def _over_seeds(n_seeds) -> str:
    """How a figure's means are drawn: "mean, 95% interval over 3 seeds, dots: seeds", or "1 seed, no interval"."""
    n = pd.Series(n_seeds, dtype="float64").dropna()
    if n.empty or n.max() < 2:
        return f"{_seeds_text(n_seeds)}, no interval"
    return f"mean, 95% interval over {_seeds_text(n_seeds)}, dots: seeds"


def _seed_markers(ax, x, values, colour, gid: str | None = None, **style) -> None:
    """Each seed's value (``values``) as a small marker at ``x``; nothing for fewer than two finite values."""
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size < 2:
        return
    x = np.broadcast_to(np.asarray(x, dtype=np.float64), values.shape)
    ax.plot(x, values, color=colour, zorder=4, gid=gid, **{**SEED_MARKER, **style})


def _is_random(family: str) -> bool:
    return str(family).startswith("random")


def _rho_text(rho: float, n: int) -> str:
    value = "n/a" if not np.isfinite(rho) else f"{rho:.2f}"
    return f"Spearman $\\rho$ = {value} (n = {n})"


def _yerr(points: pd.DataFrame, column: str) -> np.ndarray:
    """Asymmetric error bars of an accuracy column (its interval, inside [0, 1]); NaN, drawn as
    nothing, where there is no interval (one seed)."""
    mean = points[column].to_numpy(dtype=np.float64)
    low = np.clip(points[f"{column}_lo"].to_numpy(dtype=np.float64), 0.0, 1.0)
    high = np.clip(points[f"{column}_hi"].to_numpy(dtype=np.float64), 0.0, 1.0)
    return np.clip(np.vstack([mean - low, high - mean]), 0.0, None)


def _accuracy_scatter(
    ax, points: pd.DataFrame, xcol: str, xlabel: str, colours: Mapping, seeds: pd.DataFrame | None = None
) -> int:
    """Final test accuracy against ``xcol``, one labelled point per split; returns how many were drawn.

    A point is the value over seeds with its interval as error bar; ``seeds`` (the per-seed rows,
    with ``split`` and ``test_accuracy``) adds each seed's value as a small marker at the point's x.
    """
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
        if seeds is not None:
            values = seeds.loc[seeds["split"] == row.split, "test_accuracy"]
            _seed_markers(ax, getattr(row, xcol), values, "black", gid=f"seeds:{row.split}")
    # One label per group of nearby points (their names stacked), so that labels never overlap
    labels = []
    for x, y, names in _label_groups(shown[xcol].astype(float), shown["test_accuracy"].astype(float), shown["split"]):
        # below a high point, above a low one: a stacked label stays inside the axes
        high = y > 0.5
        labels.append(
            ax.annotate(
                "\n".join(names),
                (x, y),
                xytext=(4, -4 if high else 4),
                textcoords="offset points",
                va="top" if high else "bottom",
                fontsize=6.5,
                color="0.15",
                gid="label",
            )
        )
    ax.set_ylim(-0.05, 1.1)
    ax.margins(x=0.15)
    tops = shown["test_accuracy"].to_numpy(float) + np.nan_to_num(yerr[1])
    _place_labels(ax, labels, shown[xcol].astype(float), shown["test_accuracy"].astype(float), tops)
    return len(shown)


def _place_labels(ax, labels: list, xs: pd.Series, ys: pd.Series, tops, pad: float = 4.0) -> None:
    """Put each label where it covers no other point's marker and no label placed before it: to
    the right of its point, else centred above its error bar, else to its left (the
    first place that is clear, or the one with the fewest collisions). Measured on the drawn
    figure (display units), since a label's width depends on its text and the axes' size."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = ax.figure.canvas
    renderer = (canvas if hasattr(canvas, "get_renderer") else FigureCanvasAgg(ax.figure)).get_renderer()
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    points = ax.transData.transform(np.column_stack([x, y]))
    top_of = {(float(a), float(b)): float(t) for a, b, t in zip(x, y, tops, strict=True)}
    placed = []
    for label in sorted(labels, key=lambda t: -t.xy[0]):
        own = ax.transData.transform(label.xy)
        others = [p for p in points if np.hypot(*(p - own)) > 1.0]
        dy = label.get_position()[1]
        anchor = tuple(map(float, label.xy))
        options = [
            (anchor, (4, dy), "left", label.get_verticalalignment()),
            ((anchor[0], top_of.get(anchor, anchor[1])), (0, 3), "center", "bottom"),
            (anchor, (-4, dy), "right", label.get_verticalalignment()),
        ]

        counts = [_label_collisions(label, option, renderer, others, placed, pad) for option in options]
        _label_collisions(label, options[counts.index(min(counts))], renderer, others, placed, pad)
        placed.append(label.get_window_extent(renderer))


def _label_collisions(label, option: tuple, renderer, others: list, placed: list, pad: float) -> int:
    """Move ``label`` to ``option`` (anchor, offset, horizontal and vertical alignment); how many
    of the ``others`` markers and ``placed`` label boxes it then covers."""
    label.xy, label.xyann = option[0], option[1]
    label.set_horizontalalignment(option[2])
    label.set_verticalalignment(option[3])
    box = label.get_window_extent(renderer)
    hits = sum(box.x0 - pad <= px <= box.x1 + pad and box.y0 - pad <= py <= box.y1 + pad for px, py in others)
    return hits + sum(box.overlaps(other) for other in placed)


def _label_groups(xs: pd.Series, ys: pd.Series, names: pd.Series, near: float = 0.12) -> list[tuple]:
    """Points whose labels would overlap, grouped: ``(x, y, [names])`` per group, at its topmost
    point. Two points are near when, in units of the axes' spans (x over the values' range, y over
    the accuracy range), they are closer than ``near`` across and a stacked label's height apart;
    groups are joined transitively."""
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    span = float(np.ptp(x)) or 1.0
    u, v = (x - x.min()) / span, y / 1.15
    group = list(range(len(x)))

    def root(k: int) -> int:
        while group[k] != k:
            k = group[k]
        return k

    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            if abs(u[i] - u[j]) < near and abs(v[i] - v[j]) < near / 2:
                group[root(j)] = root(i)
    out = []
    for r in dict.fromkeys(root(k) for k in range(len(x))):
        members = [k for k in range(len(x)) if root(k) == r]
        top = max(members, key=lambda k: (y[k], -x[k]))
        out.append((x[top], y[top], [names.iloc[k] for k in sorted(members, key=lambda k: (-y[k], x[k]))]))
    return out


def _marker_legend(fig) -> None:
    handles = [
        Line2D([], [], marker="o", linestyle="", color="0.5", markeredgecolor="black", label="structured split"),
        Line2D([], [], marker="^", linestyle="", color="0.5", markeredgecolor="black", label="random split"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=7, frameon=False)
