"""Figures of the relational-skew study (Chang et al. 2024).

Every figure function returns a :class:`matplotlib.figure.Figure` built without pyplot (no backend
state, no ``plt.close`` needed); :func:`write_relational_figure` draws one from the pipeline's files
and saves it with :func:`diffcomp.io.save_figure`. Missing data never raises: an empty table, an
absent baseline experiment or a split without samples gives a "no data" panel.

Inputs
------
``metrics``: the tidy table ``results/relational/metrics.csv`` (a DataFrame, or a path to it), one
row per (run, step) with the columns :data:`METRICS_COLUMNS`. Accuracies and failure fractions are
fractions in [0, 1]; the audit columns (completeness, balance, coverage) are percents. ``baseline``
names the experiment most figures show.

Aggregation over seeds: :func:`diffcomp.bumps.figures.aggregate_seeds`, the mean with a two-sided
95% Student-t interval ``mean +/- t_{0.975, n-1} sd / sqrt(n)`` (one seed: no interval). The final
checkpoint of an (experiment, split) is the largest step any of its runs reached; only the runs at
that step enter its final-checkpoint numbers. Accuracy intervals are clipped to [0, 1] when drawn.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from diffcomp.bumps.figures import _band, _curves_axes, _no_data, aggregate_seeds, spearman_rho
from diffcomp.io import save_figure
from diffcomp.relational.evaluate import AUDIT_COLUMNS, FAILURE_KINDS, METRIC_COLUMNS, read_metrics
from diffcomp.relational.relations import caption

METRICS_COLUMNS = tuple(METRIC_COLUMNS)
_TEXT_COLUMNS = ("run", "experiment", "split", "family", "encoder", "pos_emb", "intervention", "intervention_params")
FIGURES = ("curves", "scatter", "skew", "ablation", "interventions", "samples")
FAILURE_COLOURS = {"swapped": "#d62728", "one_wrong": "#ff7f0e", "both_wrong": "0.45"}
CORRECT_COLOUR = "#1a9850"
WRONG_COLOUR = "#d73027"
MIN_FONT_SIZE = 5.0
# final train accuracy on the interventions figure's bars (and its legend entry)
_TRAIN_MARKER = {
    "linestyle": "",
    "marker": "D",
    "markersize": 3.5,
    "markeredgewidth": 0.6,
    "markeredgecolor": "white",
    "color": "black",
}
# Audit x axes of the scatter figure: (column of final_points, axis label).
SCATTER_AXES = (
    ("visual_completeness", "visual completeness (%)\n(mean of r1 and r2)"),
    ("visual_balance", "visual balance (%)"),
    ("coverage", "coverage (%)"),
)
# Columns aggregated over seeds at the final checkpoint.
_FINAL_VALUES = (
    "train_accuracy",
    "test_accuracy",
    *(f"{part}_frac_{kind}" for part in ("train", "test") for kind in FAILURE_KINDS),
    *AUDIT_COLUMNS.values(),
    "visual_completeness",
    "linguistic_completeness",
)
_CURVE_COLUMNS = ("experiment", "split", "family", "seed", "step", "train_accuracy", "test_accuracy")
_FINAL_COLUMNS = (
    "experiment",
    "split",
    "family",
    "seed",
    "step",
    *[c for c in _FINAL_VALUES if c not in ("visual_completeness", "linguistic_completeness")],
)
_ABLATION_COLUMNS = (*_FINAL_COLUMNS, "encoder", "pos_emb")  # "intervention" is used when present
_INTERVENTION_COLUMNS = ("experiment", "split", "seed", "step", "train_accuracy", "test_accuracy", "intervention")
# Line style and marker of each split in the interventions figure's curves (cycled beyond its length).
_SPLIT_STYLES = (
    ("-", None),
    ("--", None),
    (":", None),
    ("-.", None),
    ("-", "o"),
    ("--", "s"),
    (":", "^"),
    ("-.", "D"),
    ("-", "v"),
    ("--", "P"),
)


# --------------------------------------------------------------------------------------------
# tables


def _check_columns(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {', '.join(missing)}")


def _coerce(table: pd.DataFrame) -> pd.DataFrame:
    for column in table.columns:
        if column in _TEXT_COLUMNS:
            table[column] = table[column].astype(object).fillna("").astype(str)
        elif column in METRICS_COLUMNS:
            table[column] = pd.to_numeric(table[column], errors="coerce")
    return table


def read_relational_metrics(path) -> pd.DataFrame:
    """The study's metrics CSV; ValueError naming the file when it is unreadable or lacks a column.

    Only empty cells are missing values, so labels such as "none" (``pos_emb``) read back as written.
    """
    table = read_metrics(path)
    return _coerce(table)


def load_metrics(metrics, columns: Sequence[str] = METRICS_COLUMNS) -> pd.DataFrame:
    """The metrics table as a coerced copy; ``metrics`` is a DataFrame or a path to the CSV.

    ValueError naming every column of ``columns`` the table lacks.
    """
    if isinstance(metrics, (str, os.PathLike)):
        return read_relational_metrics(metrics)
    table = pd.DataFrame(metrics).copy()
    _check_columns(table, columns, "metrics table")
    return _coerce(table)


def _ordered(values) -> list:
    """Distinct values in order of first appearance."""
    return list(dict.fromkeys(values))


def _final_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Rows at the final checkpoint (largest step) of each (experiment, split)."""
    table = table[table["step"].notna()]
    if table.empty:
        return table
    last = table.groupby(["experiment", "split"], sort=False)["step"].transform("max")
    return table[table["step"] == last]


def _final_aggregate(table: pd.DataFrame, values: Sequence[str] = _FINAL_VALUES) -> pd.DataFrame:
    """Per (experiment, split) in order of appearance: the final checkpoint aggregated over seeds.

    ``values``: the columns aggregated (default :data:`_FINAL_VALUES`, which needs the audit columns).
    """
    values = list(values)
    final = _final_rows(table).copy()
    columns = ["experiment", "split", "family", "encoder", "pos_emb", "intervention", "step", "n_seeds"]
    if final.empty:
        return pd.DataFrame(columns=columns + [f"{c}{s}" for c in values for s in ("", "_lo", "_hi", "_n")])
    for view in ("visual", "linguistic"):
        if f"{view}_completeness" in values:
            final[f"{view}_completeness"] = (final[f"{view}_completeness_r1"] + final[f"{view}_completeness_r2"]) / 2.0
    agg = aggregate_seeds(final, ["experiment", "split"], values, how="mean")
    groups = final.groupby(["experiment", "split"], sort=False)
    info = pd.DataFrame({"step": groups["step"].first()})
    for column in ("family", "encoder", "pos_emb", "intervention"):
        if column in final.columns:
            info[column] = groups[column].agg(lambda v: "/".join(_ordered(v.astype(str))))
        else:
            info[column] = ""
    agg = agg.merge(info.reset_index(), on=["experiment", "split"], how="left")
    order = {key: k for k, key in enumerate(_ordered(zip(final["experiment"], final["split"], strict=True)))}
    agg["_order"] = [order[key] for key in zip(agg["experiment"], agg["split"], strict=True)]
    return agg.sort_values("_order").drop(columns="_order").reset_index(drop=True)


def final_points(metrics, baseline: str) -> pd.DataFrame:
    """One row per split of experiment ``baseline`` (in table order) at its final checkpoint.

    Columns: experiment, split, family, encoder, pos_emb, step, n_seeds and, for each of
    train/test accuracy, the six failure fractions, the audit columns and ``visual_completeness``
    / ``linguistic_completeness`` (the mean of the r1 and r2 completeness of a view), the mean over
    seeds ``c`` with its 95% t-interval ``c_lo``, ``c_hi`` and count ``c_n``.
    """
    table = load_metrics(metrics, _FINAL_COLUMNS)
    agg = _final_aggregate(table[table["experiment"] == baseline])
    return agg


def scatter_rhos(metrics, baseline: str) -> dict[str, float]:
    """Spearman's rho of final test accuracy (mean over seeds) against each x of :data:`SCATTER_AXES`.

    Computed on the points :func:`scatter_figure` draws (those of :func:`final_points`); NaN = n/a.
    """
    points = final_points(metrics, baseline)
    return {column: spearman_rho(points[column], points["test_accuracy"]) for column, _ in SCATTER_AXES}


# --------------------------------------------------------------------------------------------
# small drawing helpers


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


def _seeds_text(n_seeds) -> str:
    n = pd.Series(n_seeds, dtype="float64").dropna()
    if n.empty:
        return "0 seeds"
    low, high = int(n.min()), int(n.max())
    if low == high:
        return f"{low} seed{'s' if low != 1 else ''}"
    return f"{low}-{high} seeds"


def _no_data_figure(text: str, size=(6.0, 2.0)) -> Figure:
    fig = Figure(figsize=size, layout="constrained")
    _no_data(fig.add_subplot(), text)
    return fig


def _is_random(family: str) -> bool:
    return str(family).startswith("random")


def _rho_text(rho: float, n: int) -> str:
    value = "n/a" if not np.isfinite(rho) else f"{rho:.2f}"
    return f"Spearman $\\rho$ = {value} (n = {n})"


def _yerr(points: pd.DataFrame, column: str) -> np.ndarray:
    """Asymmetric error bars of an accuracy column, its interval clipped to [0, 1]; 0 where unknown."""
    mean = points[column].to_numpy(dtype=np.float64)
    low = np.clip(points[f"{column}_lo"].to_numpy(dtype=np.float64), 0.0, 1.0)
    high = np.clip(points[f"{column}_hi"].to_numpy(dtype=np.float64), 0.0, 1.0)
    return np.nan_to_num(np.clip(np.vstack([mean - low, high - mean]), 0.0, None), nan=0.0)


def _accuracy_scatter(ax, points: pd.DataFrame, xcol: str, xlabel: str, colours: Mapping) -> int:
    """Final test accuracy against ``xcol``, one labelled point per split; returns how many were drawn."""
    keep = points[xcol].notna() & points["test_accuracy"].notna()
    shown = points[keep]
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("final test accuracy", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if shown.empty:
        _no_data(ax)
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
    # One label per distinct point: splits that land on the same spot share it ("a, b").
    labels: dict[tuple[float, float], list[str]] = {}
    for row in shown.itertuples(index=False):
        labels.setdefault((float(getattr(row, xcol)), float(row.test_accuracy)), []).append(row.split)
    for (x, y), names in labels.items():
        ax.annotate(", ".join(names), (x, y), xytext=(4, 4), textcoords="offset points", fontsize=6.5, color="0.15")
    ax.set_ylim(-0.05, 1.1)
    ax.margins(x=0.15)
    return len(shown)


def _marker_legend(fig) -> None:
    handles = [
        Line2D([], [], marker="o", linestyle="", color="0.5", markeredgecolor="black", label="structured split"),
        Line2D([], [], marker="^", linestyle="", color="0.5", markeredgecolor="black", label="random split"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=7, frameon=False)


# --------------------------------------------------------------------------------------------
# figures from the metrics table


def curves_figure(metrics, baseline: str) -> Figure:
    """Test (solid) and train (dashed) accuracy of every split of ``baseline`` against training steps.

    One colour per split (table order), mean over seeds with a shaded 95% t-interval; the legend
    names each split with its family. Axes: one (a "no data" axis if the baseline has no rows).
    """
    table = load_metrics(metrics, _CURVE_COLUMNS)
    table = table[(table["experiment"] == baseline) & table["step"].notna()]
    if table.empty:
        return _no_data_figure(f"no runs of experiment {baseline!r}", size=(7.0, 3.0))
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
        _band(ax, agg, "accuracy_test", colour, None)
        ax.collections[-1].set_alpha(alpha)
        _band(ax, agg, "accuracy_train", colour, None, linestyle="--")
        ax.collections[-1].set_alpha(alpha / 2)  # train bands fainter: the test curves are the point
        family = "/".join(_ordered(rows["family"]))
        handles.append(Line2D([], [], color=colour, lw=2, label=f"{split} ({family})" if family else split))
    _curves_axes(ax, "accuracy (both nouns right)", table["step"])
    ax.set_ylim(-0.03, 1.03)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
    fig.suptitle(
        f"{baseline}: accuracy against training steps (mean, 95% t-interval over {_seeds_text(n_seeds)})",
        fontsize=10,
    )
    return fig


def scatter_figure(metrics, baseline: str) -> Figure:
    """Final test accuracy of each split of ``baseline`` against its training set's audit numbers.

    Three panels (:data:`SCATTER_AXES`): visual completeness (mean of r1 and r2), visual balance and
    coverage, each titled with Spearman's rho over the splits (:func:`scatter_rhos`; "n/a" with fewer
    than 3 distinct points or a constant axis). A point is the mean over seeds with its 95%
    t-interval as error bar, labelled with the split's name; random splits are triangles.
    """
    points = final_points(metrics, baseline)
    colours = _split_colours(points["split"].tolist())
    fig = Figure(figsize=(11.0, 4.0), layout="constrained")
    axes = fig.subplots(1, len(SCATTER_AXES), sharey=True)
    for ax, (column, label) in zip(axes, SCATTER_AXES, strict=True):
        n = _accuracy_scatter(ax, points, column, label, colours)
        rho = spearman_rho(points[column], points["test_accuracy"])
        ax.set_title(_rho_text(rho, n), fontsize=9)
    for ax in axes[1:]:
        ax.set_ylabel("")
    _marker_legend(fig)
    step = "/".join(str(int(s)) for s in _ordered(points["step"].dropna()))
    when = f" at step {step}" if step else ""
    fig.suptitle(
        f"{baseline}: final test accuracy{when} against the training set's audit "
        f"(mean, 95% t-interval over {_seeds_text(points['n_seeds'])})",
        fontsize=10,
    )
    return fig


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
        _no_data(ax_bar)
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


def _experiment_description(agg: pd.DataFrame, experiments: Sequence[str], baseline: str) -> tuple[dict, str]:
    """Legend labels per experiment and a title line naming the columns (encoder, pos_emb) that vary."""
    settings = {}
    for experiment in experiments:
        rows = agg[agg["experiment"] == experiment]
        settings[experiment] = {
            column: "/".join(_ordered("/".join(rows[column].astype(str)).split("/")))
            for column in ("encoder", "pos_emb", "intervention")
        }
    labels = {
        e: f"{e}: encoder {s['encoder']}, pos_emb {s['pos_emb']}"
        + (f", {s['intervention']}" if s["intervention"] not in ("", "baseline") else "")
        for e, s in settings.items()
    }
    if len(experiments) <= 1:
        return labels, "only the baseline was run"
    varied = [c for c in ("encoder", "pos_emb") if len({s[c] for s in settings.values()}) > 1]
    if not varied:
        return labels, "encoder and pos_emb as in the baseline"
    reference = settings.get(baseline)
    parts = []
    for column in varied:
        values = _ordered(s[column] for s in settings.values())
        if reference:
            others = [v for v in values if v != reference[column]]
            parts.append(f"{column} {reference[column]} (baseline) vs {', '.join(others)}")
        else:
            parts.append(f"{column} {', '.join(values)}")
    return labels, "varied: " + "; ".join(parts)


def ablation_figure(metrics, baseline: str) -> Figure:
    """Final test accuracy per split, one bar per experiment (baseline first, then table order).

    Bars are the mean over seeds with 95% t-interval error bars; splits are grouped in table order
    (the baseline's splits first). The legend gives each experiment's encoder and position
    embedding, the title which of the two differ between experiments.
    """
    table = load_metrics(metrics, _ABLATION_COLUMNS)
    agg = _final_aggregate(table)
    if agg.empty:
        return _no_data_figure("no runs", size=(7.0, 3.0))
    names = _ordered(agg["experiment"])
    experiments = ([baseline] if baseline in names else []) + [e for e in names if e != baseline]
    splits = _ordered(agg.loc[agg["experiment"] == baseline, "split"].tolist() + agg["split"].tolist())
    labels, varied = _experiment_description(agg, experiments, baseline)
    n_exp, n_splits = len(experiments), len(splits)
    fig = Figure(
        figsize=(min(18.0, max(6.5, 0.25 * n_exp * n_splits + 0.6 * n_splits + 3.5)), 4.4), layout="constrained"
    )
    ax = fig.add_subplot()
    width = 0.8 / n_exp
    x = np.arange(n_splits)
    colours = matplotlib.colormaps["tab10" if n_exp <= 10 else "viridis"]
    for k, experiment in enumerate(experiments):
        rows = agg[agg["experiment"] == experiment].set_index("split").reindex(splits)
        colour = colours(k) if n_exp <= 10 else colours(k / max(1, n_exp - 1))
        ax.bar(
            x + (k - (n_exp - 1) / 2) * width,
            np.nan_to_num(rows["test_accuracy"].to_numpy(dtype=np.float64), nan=0.0),
            width=width * 0.92,
            yerr=_yerr(rows, "test_accuracy"),
            capsize=2,
            error_kw={"elinewidth": 0.9},
            color=colour,
            edgecolor="black",
            linewidth=0.4,
            label=labels[experiment] + (" (baseline)" if experiment == baseline else ""),
        )
        missing = rows["test_accuracy"].isna().to_numpy()
        for position in x[missing]:
            ax.text(position + (k - (n_exp - 1) / 2) * width, 0.01, "n/a", ha="center", fontsize=5, rotation=90)
    ax.set_xticks(x, splits, rotation=30 if n_splits > 4 else 0, ha="right" if n_splits > 4 else "center", fontsize=7)
    ax.set_ylabel("final test accuracy", fontsize=8)
    ax.set_ylim(0.0, 1.05)
    ax.tick_params(labelsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=min(n_exp, 3), fontsize=7, frameon=False)
    missing_base = "" if baseline in names else f"; baseline {baseline!r} has no runs"
    fig.suptitle(
        f"Final test accuracy by experiment (mean, 95% t-interval over {_seeds_text(agg['n_seeds'])})\n"
        f"{varied}{missing_base}",
        fontsize=10,
    )
    return fig


# --------------------------------------------------------------------------------------------
# interventions against the baseline


def _intervention_label(experiment: str, intervention: str, baseline: str) -> str:
    if experiment == baseline:
        return experiment if experiment == "baseline" else f"{experiment} (baseline)"
    return f"{experiment} ({intervention})"


def intervention_runs(metrics, baseline: str) -> tuple[pd.DataFrame, dict[str, str], str]:
    """The rows the interventions figure draws, its experiments and, when it has nothing to draw, why.

    Returns ``(table, interventions, reason)``. ``interventions``: ``{experiment: intervention}``
    in table order for every experiment other than ``baseline`` whose ``intervention`` is neither
    "baseline" nor empty (projection-*, contrastive-*); other experiments (e.g. encoder ablations)
    are left out. ``table``: the baseline's rows and the interventions' rows on the splits both ran,
    an intervention's runs restricted to the (split, seed) pairs the baseline ran (they are
    compared with those runs), plus ``plot_step``: the step, and for a projection-* experiment
    (which fine-tunes the baseline's final weights, its steps counting from 0) the step plus the
    baseline's final step on that split. ``reason``: "" when there is something to draw, else a
    "no ..." text (no baseline runs, no intervention experiments, no split in common).
    """
    table = load_metrics(metrics, _INTERVENTION_COLUMNS)
    table = table[table["step"].notna()]
    empty = table.iloc[0:0].assign(plot_step=pd.Series(dtype="float64"))
    base = table[table["experiment"] == baseline]
    interventions = {}
    for experiment in _ordered(table["experiment"]):
        if experiment == baseline:
            continue
        labels = [v for v in _ordered(table.loc[table["experiment"] == experiment, "intervention"]) if v]
        labels = [v for v in labels if v != "baseline"]
        if labels:
            interventions[experiment] = "/".join(labels)
    if base.empty:
        return empty, interventions, f"no runs of the baseline experiment {baseline!r}"
    if not interventions:
        return empty, interventions, f"no intervention experiments (projection-*, contrastive-*) besides {baseline!r}"
    base_runs = set(zip(base["split"], base["seed"], strict=True))
    others = table[table["experiment"].isin(list(interventions))]
    paired = [(split, seed) in base_runs for split, seed in zip(others["split"], others["seed"], strict=True)]
    others = others[np.asarray(paired, dtype=bool)]
    splits = [s for s in _ordered(base["split"]) if s in set(others["split"])]
    if not splits:
        return empty, {}, f"no split run by both {baseline!r} and an intervention experiment"
    interventions = {e: v for e, v in interventions.items() if e in set(others["experiment"])}
    table = pd.concat([base[base["split"].isin(splits)], others[others["split"].isin(splits)]])
    base_final = base.groupby("split")["step"].max()
    projection = table["experiment"].isin([e for e, v in interventions.items() if v.startswith("projection-")])
    offset = table["split"].map(base_final).where(projection, 0.0).astype("float64")
    table = table.assign(plot_step=table["step"].astype("float64") + offset)
    return table.reset_index(drop=True), interventions, ""


def _experiment_colours(experiments: Sequence[str]) -> dict[str, object]:
    """One colour per experiment in order: tab10, a viridis ramp beyond 10 (as the ablation figure)."""
    if len(experiments) <= 10:
        cmap = matplotlib.colormaps["tab10"]
        return {e: cmap(k) for k, e in enumerate(experiments)}
    cmap = matplotlib.colormaps["viridis"]
    return {e: cmap(k / (len(experiments) - 1)) for k, e in enumerate(experiments)}


def interventions_figure(metrics, baseline: str) -> Figure:
    """Each intervention experiment against ``baseline`` on the splits and seeds both ran.

    Left: per split (the baseline's order), one bar per experiment (baseline first, then table
    order): the final-checkpoint test accuracy, mean over seeds with 95% t-interval error bars
    ("n/a" where an experiment lacks the split), and a black diamond at the final train accuracy (mean
    over seeds). Right: test accuracy against training step, one colour per experiment (as its bars)
    and one line style/marker per split, mean over seeds with a shaded 95% t-interval where 2+
    seeds entered; a projection-* experiment is drawn after the baseline's final step (its steps
    added to it, see :func:`intervention_runs`), which a dotted grey line marks. Experiments that
    are not interventions are left out. Bars are labelled "experiment (intervention)". With no
    baseline runs, no intervention experiment or no split in common: a "no ..." figure.
    """
    table, interventions, reason = intervention_runs(metrics, baseline)
    if reason:
        return _no_data_figure(reason, size=(7.0, 3.0))
    experiments = [baseline, *interventions]
    labels = {e: _intervention_label(e, interventions.get(e, "baseline"), baseline) for e in experiments}
    colours = _experiment_colours(experiments)
    agg = _final_aggregate(table, ("train_accuracy", "test_accuracy"))
    splits = _ordered(table.loc[table["experiment"] == baseline, "split"])
    n_exp, n_splits = len(experiments), len(splits)
    bars_width = min(12.0, max(3.8, 0.28 * n_exp * n_splits + 0.5 * n_splits + 1.5))
    fig = Figure(figsize=(bars_width + 5.2, 4.8), layout="constrained")
    ax_bar, ax_curve = fig.subplots(1, 2, width_ratios=[bars_width, 5.2])

    # left: final accuracies
    width = 0.8 / n_exp
    x = np.arange(n_splits)
    for k, experiment in enumerate(experiments):
        rows = agg[agg["experiment"] == experiment].set_index("split").reindex(splits)
        position = x + (k - (n_exp - 1) / 2) * width
        ax_bar.bar(
            position,
            np.nan_to_num(rows["test_accuracy"].to_numpy(dtype=np.float64), nan=0.0),
            width=width * 0.92,
            yerr=_yerr(rows, "test_accuracy"),
            capsize=2,
            error_kw={"elinewidth": 0.9},
            color=colours[experiment],
            edgecolor="black",
            linewidth=0.4,
            label=labels[experiment],
        )
        ax_bar.plot(
            position,
            rows["train_accuracy"].to_numpy(dtype=np.float64),
            **_TRAIN_MARKER,
            zorder=3,
            gid=f"train:{experiment}",
            label="_nolegend_",
        )
        for p in position[rows["test_accuracy"].isna().to_numpy()]:
            ax_bar.text(p, 0.01, "n/a", ha="center", fontsize=5, rotation=90)
    ax_bar.set_xticks(
        x, splits, rotation=30 if n_splits > 4 else 0, ha="right" if n_splits > 4 else "center", fontsize=7
    )
    ax_bar.set_ylabel("final test accuracy (bars), train accuracy (diamonds)", fontsize=8)
    ax_bar.set_ylim(0.0, 1.05)
    ax_bar.tick_params(labelsize=7)
    ax_bar.grid(axis="y", alpha=0.3)
    ax_bar.set_title("final checkpoint", fontsize=9)

    # right: test accuracy over training
    styles = {s: _SPLIT_STYLES[k % len(_SPLIT_STYLES)] for k, s in enumerate(splits)}
    for experiment in experiments:
        for split in splits:
            rows = table[(table["experiment"] == experiment) & (table["split"] == split)]
            if rows.empty:
                continue
            curve = aggregate_seeds(rows, ["plot_step"], ["test_accuracy"], how="mean")
            steps = curve["plot_step"].to_numpy(dtype=np.float64)
            linestyle, marker = styles[split]
            ax_curve.plot(
                steps,
                curve["test_accuracy"].to_numpy(dtype=np.float64),
                color=colours[experiment],
                linestyle=linestyle,
                marker=marker or ("o" if len(steps) <= 2 else None),
                markersize=3,
                lw=1.3,
                gid=f"curve:{experiment}:{split}",
            )
            base_rows = table[(table["experiment"] == baseline) & (table["split"] == split)]
            if interventions.get(experiment, "").startswith("projection-") and not base_rows.empty:
                # continue from the base run's last point, which the projection starts from
                base = aggregate_seeds(base_rows, ["plot_step"], ["test_accuracy"], how="mean").iloc[-1]
                ax_curve.plot(
                    [base["plot_step"], steps[0]],
                    [base["test_accuracy"], curve["test_accuracy"].iloc[0]],
                    color=colours[experiment],
                    linestyle=(0, (2, 2)),
                    lw=1.0,
                    gid=f"link:{experiment}:{split}",
                )
            if (curve["test_accuracy_n"] >= 2).any():
                ax_curve.fill_between(
                    steps,
                    np.clip(curve["test_accuracy_lo"].to_numpy(dtype=np.float64), 0.0, 1.0),
                    np.clip(curve["test_accuracy_hi"].to_numpy(dtype=np.float64), 0.0, 1.0),
                    color=colours[experiment],
                    alpha=0.15,
                    linewidth=0,
                )
    _curves_axes(ax_curve, "test accuracy", table["plot_step"])
    ax_curve.set_ylim(-0.03, 1.03)
    ax_curve.set_title("test accuracy over training", fontsize=9)
    projected = [e for e, v in interventions.items() if v.startswith("projection-")]
    handles = [Patch(facecolor=colours[e], edgecolor="black", linewidth=0.4, label=labels[e]) for e in experiments]
    handles.append(Line2D([], [], **_TRAIN_MARKER, label="final train accuracy"))
    handles += [
        Line2D([], [], color="black", linestyle=styles[s][0], marker=styles[s][1], markersize=3, label=s)
        for s in splits
    ]
    if projected:
        ends = table.loc[table["experiment"] == baseline].groupby("split")["step"].max()
        for end in sorted(set(ends.tolist())):
            ax_curve.axvline(end, color="0.55", linestyle=(0, (1, 2)), linewidth=0.9, gid="base_end")
        ax_curve.set_xlabel("training step (projection steps added after the base run's last step)", fontsize=8)
        handles.append(Line2D([], [], color="0.55", linestyle=(0, (1, 2)), label="base run's last step"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)), fontsize=7, frameon=False)
    fig.suptitle(
        f"Interventions against {baseline} (mean, 95% t-interval over {_seeds_text(agg['n_seeds'])})\n"
        f"splits: {', '.join(splits)}",
        fontsize=10,
    )
    return fig


# --------------------------------------------------------------------------------------------
# generated samples


def _noun(names: Sequence[str], index: int) -> str:
    if index < 0:
        return "blank"
    return str(names[index]) if index < len(names) else f"#{index}"


def _caption_text(names: Sequence[str], top: int, bottom: int, relation: int) -> str:
    try:
        return caption(_noun(names, top), _noun(names, bottom), int(relation))
    except ValueError:
        return f"{_noun(names, top)} / {_noun(names, bottom)} (relation {relation})"


def sample_grid_figure(
    samples: Mapping,
    icons,
    names: Sequence[str],
    pred_top,
    pred_bottom,
    max_per_split: int = 8,
    *,
    seed: int = 0,
    title: str | None = None,
) -> Figure:
    """Generated images with their captions: a row of training triples, then a row of test triples.

    samples: a checkpoint's samples (``images`` (n, 2S, S) in [0, 1], 1 = white, ``top``,
    ``bottom``, ``relation``, ``split`` ('train'/'test'), ``step``); icons: the vocabulary
    (N, S, S) or None, used to check the image size; names: the noun names; pred_top,
    pred_bottom: the noun (index, -1 = blank) each half shows, e.g. from
    ``diffcomp.relational.evaluate.predict_nouns``. Up to ``max_per_split`` samples per split (a
    seeded choice, in file order) are shown, titled with their wrapped caption; frame and title are
    green when both predicted nouns are right and red otherwise, and the predicted nouns are written
    under each image. Each row's title gives the split's accuracy over all of its samples; ``title``
    (e.g. the run) prefixes the figure's title.
    Axes: ``max(shown)`` per row, each image axis labelled "split:index" (a "no data" axis when
    there are no samples).
    """
    if int(max_per_split) < 1:
        raise ValueError(f"max_per_split must be >= 1, got {max_per_split!r}")
    images = np.asarray(samples.get("images", np.zeros((0, 2, 1))), dtype=np.float32)
    n = len(images)
    if images.ndim != 3 or n == 0:
        return _no_data_figure(f"{title}: no samples" if title else "no samples")
    if icons is not None and np.shape(icons)[1:] and images.shape[1:] != (2 * np.shape(icons)[1], np.shape(icons)[2]):
        raise ValueError(f"images of shape {images.shape[1:]} do not stack two icons of shape {np.shape(icons)[1:]}")
    top = np.asarray(samples["top"], dtype=np.int64).ravel()
    bottom = np.asarray(samples["bottom"], dtype=np.int64).ravel()
    relation = np.asarray(samples["relation"], dtype=np.int64).ravel()
    split = np.asarray(samples["split"]).astype(str).ravel()
    pred_top = np.asarray(pred_top, dtype=np.int64).ravel()
    pred_bottom = np.asarray(pred_bottom, dtype=np.int64).ravel()
    sizes = {len(a) for a in (top, bottom, relation, split, pred_top, pred_bottom)}
    if sizes != {n}:
        raise ValueError(f"samples and predictions must have one entry per image ({n}), got lengths {sorted(sizes)}")
    correct = (pred_top == top) & (pred_bottom == bottom)
    rng = np.random.default_rng(seed)
    rows = []
    for part in ("train", "test"):
        members = np.flatnonzero(split == part)
        pick = np.sort(rng.choice(members, size=min(len(members), int(max_per_split)), replace=False))
        rows.append((part, members, pick))
    ncols = max(1, max(len(pick) for _, _, pick in rows))
    fig = Figure(figsize=(max(5.0, 1.25 * ncols + 0.3), 2 * 3.2 + 0.4), layout="constrained")
    step = samples.get("step")
    when = f" at step {int(np.asarray(step))}" if step is not None and np.size(step) == 1 else ""
    prefix = f"{title}: g" if title else "G"
    fig.suptitle(f"{prefix}enerated samples{when}: green = both nouns right, red = wrong", fontsize=10)
    for subfig, (part, members, pick) in zip(fig.subfigures(2, 1, hspace=0.03), rows, strict=True):
        axes = np.atleast_1d(subfig.subplots(1, ncols, squeeze=False)[0])
        if len(members):
            accuracy = correct[members].mean()
            subfig.suptitle(
                f"{part} triples: {len(pick)} of {len(members)} shown; accuracy {accuracy:.2f} "
                f"({int(correct[members].sum())}/{len(members)})",
                fontsize=9,
                x=0.01,
                ha="left",
            )
        else:
            subfig.suptitle(f"{part} triples", fontsize=9, x=0.01, ha="left")
        for ax in axes:
            ax.set_axis_off()
        if not len(pick):
            axes[0].set_axis_on()
            _no_data(axes[0], f"no {part}\nsamples")
            for spine in axes[0].spines.values():
                spine.set_visible(False)
            continue
        for ax, index in zip(axes, pick, strict=False):
            ax.set_axis_on()
            ax.set_label(f"{part}:{index}")
            ax.imshow(images[index], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            colour = CORRECT_COLOUR if correct[index] else WRONG_COLOUR
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(2.5)
            text = _caption_text(names, top[index], bottom[index], relation[index])
            ax.set_title(textwrap.fill(text, 16), fontsize=6.5, color=colour)
            predicted = f"pred: {_noun(names, pred_top[index])} / {_noun(names, pred_bottom[index])}"
            ax.set_xlabel(textwrap.fill(predicted, 18), fontsize=6.5, color=colour)
    return fig


# --------------------------------------------------------------------------------------------
# file-level entry point


def _run_label(samples_npz) -> str:
    """The run of ``.../{experiment}/{split}/seed{N}/samples/step*.npz`` as "experiment/split/seedN", else the stem."""
    path = Path(samples_npz)
    parents = path.parent.parts
    if path.parent.name == "samples" and len(parents) >= 4:
        return "/".join(parents[-4:-1])
    return path.stem


def write_relational_figure(kind: str, metrics_csv, outputs, *, baseline: str, samples_npz=None, icons_npz=None):
    """Draw figure ``kind`` (one of :data:`FIGURES`) and save it to every path in ``outputs``.

    The metrics CSV is read first (it may be None for "samples" only); an unreadable file or a
    missing column raises ValueError naming the file and the columns, before anything is written.
    "samples" draws :func:`sample_grid_figure` from ``samples_npz`` (one checkpoint's samples) and
    ``icons_npz`` (the run's vocabulary), predicting the nouns with
    ``diffcomp.relational.evaluate.predict_nouns``; with no ``samples_npz`` it draws a "no samples"
    figure. A samples file at ``.../{experiment}/{split}/seed{seed}/samples/step*.npz`` is titled
    with its run ("experiment/split/seedN").
    """
    if kind not in FIGURES:
        raise ValueError(f"unknown relational figure {kind!r}; expected one of {FIGURES}")
    outputs = [outputs] if isinstance(outputs, (str, os.PathLike)) else list(outputs)
    metrics = None
    if metrics_csv is not None or kind != "samples":
        metrics = read_relational_metrics(metrics_csv)
    if kind == "samples":
        if samples_npz is None:
            fig = _no_data_figure("no samples (the run has no checkpoint yet)")
        elif icons_npz is None:
            raise ValueError(f"the samples figure of {samples_npz} needs the run's icons (icons_npz)")
        else:
            from diffcomp.relational.evaluate import load_samples, predict_nouns
            from diffcomp.relational.icons import load_icons

            samples = load_samples(samples_npz)
            icons, names = load_icons(icons_npz)
            pred_top, pred_bottom, _, _ = predict_nouns(samples["images"], icons)
            fig = sample_grid_figure(samples, icons, names, pred_top, pred_bottom, title=_run_label(samples_npz))
    else:
        draw = {
            "curves": curves_figure,
            "scatter": scatter_figure,
            "skew": skew_figure,
            "ablation": ablation_figure,
            "interventions": interventions_figure,
        }
        fig = draw[kind](metrics, baseline)
    save_figure(fig, outputs)
    return fig
