"""Figure ``ablation``: final test accuracy per split, one bar per experiment (encoder, position embedding)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from diffcomp.plotting import no_data_figure
from diffcomp.relational.figures.style import _over_seeds, _seed_markers, _yerr
from diffcomp.relational.results import _FINAL_COLUMNS, _final_aggregate, _ordered, final_rows, load_metrics

_ABLATION_COLUMNS = (*_FINAL_COLUMNS, "encoder", "pos_emb")  # "intervention" is used when present


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

    Bars are the mean over seeds with 95% interval error bars (bounded; none with one seed) and each
    seed's value as a small dot; splits are grouped in table order
    (the baseline's splits first). The legend gives each experiment's encoder and position
    embedding, the title which of the two differ between experiments.
    """
    table = load_metrics(metrics, _ABLATION_COLUMNS)
    agg = _final_aggregate(table)
    final = final_rows(table)
    if agg.empty:
        return no_data_figure("no runs", size=(7.0, 3.0))
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
        for position, split in zip(x + (k - (n_exp - 1) / 2) * width, splits, strict=True):
            seeds = final.loc[(final["experiment"] == experiment) & (final["split"] == split), "test_accuracy"]
            _seed_markers(ax, position, seeds, "black", gid=f"seeds:{experiment}:{split}")
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
        f"Final test accuracy by experiment ({_over_seeds(agg['n_seeds'])})\n{varied}{missing_base}",
        fontsize=10,
    )
    return fig
