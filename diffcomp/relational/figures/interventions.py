"""Figure ``interventions``: each intervention experiment (projection-*, contrastive-*) against the baseline."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from diffcomp.plotting import curves_axes, no_data_figure
from diffcomp.relational.figures.style import SEED_MARKER, _over_seeds, _seed_markers, _yerr
from diffcomp.relational.results import (
    COUNTS,
    _final_aggregate,
    _ordered,
    final_rows,
    load_metrics,
    reference_experiments,
)
from diffcomp.stats import aggregate_seeds

# final train accuracy on the interventions figure's bars (and its legend entry)
_TRAIN_MARKER = {
    "linestyle": "",
    "marker": "D",
    "markersize": 3.5,
    "markeredgewidth": 0.6,
    "markeredgecolor": "white",
    "color": "black",
}
_TEST_COUNT = {"test_accuracy": COUNTS["test_accuracy"]}
_INTERVENTION_COLUMNS = (
    "experiment",
    "split",
    "seed",
    "step",
    "train_accuracy",
    "test_accuracy",
    "n_train_samples",
    "n_test_samples",
    "intervention",
)
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


def _intervention_label(experiment: str, intervention: str, baseline: str) -> str:
    if experiment == baseline:
        return experiment if experiment == "baseline" else f"{experiment} (baseline)"
    if intervention == "baseline":  # a projection's base other than the baseline
        return f"{experiment} (base)"
    return f"{experiment} ({intervention})"


def intervention_runs(metrics, baseline: str) -> tuple[pd.DataFrame, dict[str, str], str]:
    """The rows the interventions figure draws, its experiments and, when it has nothing to draw, why.

    Returns ``(table, interventions, reason)``. ``interventions``: ``{experiment: intervention}``
    in table order for every experiment other than ``baseline`` whose ``intervention`` is neither
    "baseline" nor empty (projection-*, contrastive-*), preceded by the other experiments a
    projection fine-tunes (its base, e.g. an encoder ablation; intervention "baseline"); other
    experiments are left out. Each intervention is compared with its reference
    (:func:`~diffcomp.relational.results.reference_experiments`: a projection's base, else
    the baseline). ``table``: the references' rows and the interventions' rows on the splits they
    share, an intervention's runs restricted to the (split, seed) pairs its reference ran, plus
    ``plot_step``: the step, and for a projection-* experiment (which fine-tunes its base's final
    weights, its steps counting from 0) the step plus the base's final step on that split.
    ``reason``: "" when there is something to draw, else a "no ..." text (no baseline runs, no
    intervention experiments, no split in common).
    """
    table = load_metrics(metrics, _INTERVENTION_COLUMNS)
    table = table[table["step"].notna()]
    empty = table.iloc[0:0].assign(plot_step=pd.Series(dtype="float64"))
    references = reference_experiments(table, baseline)
    interventions = {}
    for experiment in _ordered(table["experiment"]):
        if experiment == baseline:
            continue
        labels = [v for v in _ordered(table.loc[table["experiment"] == experiment, "intervention"]) if v]
        labels = [v for v in labels if v != "baseline"]
        if labels:
            interventions[experiment] = "/".join(labels)
    if table[table["experiment"] == baseline].empty:
        return empty, interventions, f"no runs of the baseline experiment {baseline!r}"
    if not interventions:
        return empty, interventions, f"no intervention experiments (projection-*, contrastive-*) besides {baseline!r}"
    kept, compared = [], set()
    for experiment in interventions:
        reference = table[table["experiment"] == references[experiment]]
        runs = set(zip(reference["split"], reference["seed"], strict=True))
        rows = table[table["experiment"] == experiment]
        rows = rows[[(split, seed) in runs for split, seed in zip(rows["split"], rows["seed"], strict=True)]]
        if not rows.empty:
            kept.append(rows)
            compared |= {(references[experiment], split) for split in rows["split"]}
    if not kept:
        return empty, {}, f"no split run by both {baseline!r} and an intervention experiment"
    others = pd.concat(kept)
    bases = [e for e in _ordered([baseline, *(references[e] for e in interventions)]) if e not in interventions]
    base_rows = [
        table[(table["experiment"] == e) & table["split"].isin({s for r, s in compared if r == e})] for e in bases
    ]
    base_rows = [rows for rows in base_rows if not rows.empty]
    extra = {
        e: "baseline" for e in bases if e != baseline and any((rows["experiment"] == e).any() for rows in base_rows)
    }
    interventions = {**extra, **{e: v for e, v in interventions.items() if e in set(others["experiment"])}}
    table = pd.concat([*base_rows, others])
    final_step = table.groupby(["experiment", "split"])["step"].max()
    projection = table["experiment"].isin([e for e, v in interventions.items() if v.startswith("projection-")])
    offset = [
        final_step.get((references[e], split), 0.0) if is_projection else 0.0
        for e, split, is_projection in zip(table["experiment"], table["split"], projection, strict=True)
    ]
    table = table.assign(plot_step=table["step"].astype("float64") + np.asarray(offset, dtype="float64"))
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
    order): the final-checkpoint test accuracy, mean over seeds with 95% interval error bars
    (bounded, :func:`diffcomp.stats.proportion_interval`; none with one seed) and each seed's value
    as a small dot ("n/a" where an experiment lacks the split), and a black diamond at the final
    train accuracy (mean over seeds). Right: test accuracy against training step, one colour per
    experiment (as its bars) and one line style/marker per split, mean over seeds with a shaded 95%
    interval and each seed's value as a small dot where 2+ seeds entered; a projection-* experiment
    is drawn after the baseline's final step (its steps added to it, see :func:`intervention_runs`),
    which a dotted grey line marks. Experiments that are not interventions are left out. Bars are
    labelled "experiment (intervention)". With no baseline runs, no intervention experiment or no
    split in common: a "no ..." figure.
    """
    table, interventions, reason = intervention_runs(metrics, baseline)
    if reason:
        return no_data_figure(reason, size=(7.0, 3.0))
    experiments = [baseline, *interventions]
    references = reference_experiments(table, baseline)
    labels = {e: _intervention_label(e, interventions.get(e, "baseline"), baseline) for e in experiments}
    colours = _experiment_colours(experiments)
    agg = _final_aggregate(table, ("train_accuracy", "test_accuracy"))
    final = final_rows(table)
    splits = _ordered([*table.loc[table["experiment"] == baseline, "split"], *table["split"]])
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
        for at, split in zip(position, splits, strict=True):
            seeds = final.loc[(final["experiment"] == experiment) & (final["split"] == split), "test_accuracy"]
            _seed_markers(ax_bar, at, seeds, "black", gid=f"seeds:{experiment}:{split}")
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
            curve = aggregate_seeds(rows, ["plot_step"], ["test_accuracy"], how="mean", counts=_TEST_COUNT)
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
            base_rows = table[(table["experiment"] == references[experiment]) & (table["split"] == split)]
            if interventions.get(experiment, "").startswith("projection-") and not base_rows.empty:
                # continue from the base run's last point, which the projection starts from
                base = aggregate_seeds(base_rows, ["plot_step"], ["test_accuracy"], how="mean", counts=_TEST_COUNT)
                base = base.iloc[-1]
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
                    curve["test_accuracy_lo"].to_numpy(dtype=np.float64),
                    curve["test_accuracy_hi"].to_numpy(dtype=np.float64),
                    color=colours[experiment],
                    alpha=0.15,
                    linewidth=0,
                )
            if rows["seed"].nunique() >= 2:
                ax_curve.plot(
                    rows["plot_step"],
                    rows["test_accuracy"],
                    color=colours[experiment],
                    gid=f"seeds:{experiment}:{split}",
                    **SEED_MARKER,
                )
    curves_axes(ax_curve, "test accuracy", table["plot_step"])
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
        f"Interventions against {baseline} ({_over_seeds(agg['n_seeds'])})\nsplits: {', '.join(splits)}",
        fontsize=10,
    )
    return fig
