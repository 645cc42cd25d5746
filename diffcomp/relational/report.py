"""The audit table over all configured splits and its figure."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from diffcomp.relational.audit import FLAT_KEYS, VIEW_METRICS, VIEWS, flatten
from diffcomp.relational.splits import Split

TABLE_COLUMNS = ("split", "family", "vocab_size", *FLAT_KEYS)


def audit_table(audits: dict[str, dict], specs: dict[str, dict]) -> pd.DataFrame:
    """One row per split, in ``audits`` order: name, family with parameters, N and the flat audit."""
    rows = []
    for name, audit in audits.items():
        split = Split.from_config(specs[name])
        rows.append({"split": name, "family": split.describe(), "vocab_size": split.vocab_size, **flatten(audit)})
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def write_audit_table(audit_jsons: list, specs: dict[str, dict], table_csv) -> pd.DataFrame:
    """Gather the per-split audit.json files (in the order of ``specs``) into audit.csv."""
    from diffcomp.io import write_csv

    if len(audit_jsons) != len(specs):
        raise ValueError(f"{len(audit_jsons)} audit files for {len(specs)} splits")
    audits = {}
    for name, path in zip(specs, audit_jsons, strict=True):
        with open(path) as handle:
            audits[name] = json.load(handle)
    table = audit_table(audits, specs)
    write_csv(table_csv, table)
    return table


def audit_figure(table: pd.DataFrame):
    """Horizontal bars per split: visual and linguistic completeness/balance, and coverage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{row.split}\n{row.family}, N={row.vocab_size}" for row in table.itertuples()]
    y = np.arange(len(table))
    height = 0.8 / len(VIEW_METRICS)
    fig, axes = plt.subplots(
        1, 3, figsize=(11, 0.55 * len(table) + 1.4), sharey=True, gridspec_kw={"width_ratios": [3, 3, 1.6]}
    )
    colours = {"completeness_r1": "tab:blue", "completeness_r2": "tab:cyan", "balance": "tab:orange"}
    for ax, view in zip(axes[:2], VIEWS, strict=True):  # the third axis holds coverage
        for k, metric in enumerate(VIEW_METRICS):
            ax.barh(y + (k - 1) * height, table[f"{view}.{metric}"], height=height, color=colours[metric], label=metric)
        ax.set_title(f"{view} roles", fontsize=9)
    axes[2].barh(y, table["coverage"], height=0.6, color="tab:gray")
    axes[2].set_title("coverage", fontsize=9)
    for ax in axes:
        ax.set_xlim(0, 100)
        ax.set_xlabel("%", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(labelsize=7)
    axes[0].set_yticks(y, labels)
    axes[0].invert_yaxis()
    axes[0].legend(fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 1.06), ncols=3, frameon=False)
    fig.suptitle("Completeness and balance of each split's training set (Chang et al. 2024)", fontsize=10, y=1.0)
    fig.tight_layout()
    return fig


def write_audit_figure(table_csv, figure_png) -> None:
    import matplotlib.pyplot as plt

    from diffcomp.io import save_figure

    fig = audit_figure(pd.read_csv(table_csv))
    save_figure(fig, [figure_png])
    plt.close(fig)
