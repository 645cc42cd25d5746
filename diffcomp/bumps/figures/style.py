"""Style of the bump study's figures: colours and colour maps, number formats, title texts."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pandas as pd

_HEAT_CMAP = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
_MOSAIC_CMAP = matplotlib.colormaps["gray"].with_extremes(bad="white")  # empty tiles
_COLOURS = {"x": "C0", "y": "C1", "joint": "0.35", "id": "C2", "ood": "C3"}


def _fmt_value(value) -> str:
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return str(value)


def _thin_ticks(count: int, most: int = 10) -> np.ndarray:
    stride = max(1, int(math.ceil(count / most)))
    return np.arange(0, count, stride)


def _how_text(how: str, n_seeds: int) -> str:
    if how == "best":
        return f"best of {n_seeds} seed{'s' if n_seeds != 1 else ''}"
    return f"mean over {n_seeds} seed{'s' if n_seeds != 1 else ''}"


def _seed_count(table: pd.DataFrame) -> int:
    if table.empty:
        return 0
    column = "seed" if "seed" in table.columns else "run"
    return int(table.groupby("dataset")[column].nunique().max())


def _dataset_title(rows: pd.DataFrame, name: str) -> str:
    first = rows.iloc[0]
    seeds = rows["seed"].nunique() if "seed" in rows.columns else rows["run"].nunique()
    return (
        f"{name}: increment ({_fmt_value(first['increment_x'])}, {_fmt_value(first['increment_y'])}), "
        f"$\\sigma$ = {_fmt_value(first.get('sigma', '?'))}, {seeds} seed{'s' if seeds != 1 else ''}"
    )
