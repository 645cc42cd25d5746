"""Figures of the bump study (Liang, Liu & Fiete 2024, Figs. 3, 4, 5, 8 and 9).

Every figure function returns a :class:`matplotlib.figure.Figure` built without pyplot, so it is
independent of the interactive backend and needs no ``plt.close``; save it with
``diffcomp.io.save_figure(fig, [png, pdf])``.

Inputs
------
``metrics``: the tidy table ``metrics.csv`` (a DataFrame, or a path to it), one row per
(run, step), with columns ``run, dataset, increment_x, increment_y, sigma, hole, seed, step,
accuracy, accuracy_x, accuracy_y, r2_x, r2_y, frac_none, frac_single, frac_multi, phase,
accuracy_ood``. When ``dataset`` is absent it is taken from ``run`` ("{dataset}_seed{seed}").
``sigma`` may be a string ("sx/sy") for anisotropic bumps: such rows never enter the sigma or
increment heat maps. A dataset "has a hole" when ``hole`` is neither empty/NaN nor "none".

Aggregation over seeds (:func:`aggregate_seeds`): the mean with a two-sided 95% Student-t
interval, ``mean +/- t_{0.975, n-1} * sd / sqrt(n)`` (sd with ddof = 1, NaNs ignored), or the
best of seeds (the maximum), which the paper uses for its phase diagrams.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Rectangle
from matplotlib.ticker import FuncFormatter, NullFormatter

from diffcomp.bumps.metrics import METRIC_COLUMNS

PHASES = ("A", "B", "C")
# Cells of a heat map are annotated with their value when a panel has at most this many.
ANNOTATE_MAX_CELLS = 80
_HEAT_CMAP = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
_MOSAIC_CMAP = matplotlib.colormaps["gray"].with_extremes(bad="white")  # empty tiles
_RUN_SUFFIX = re.compile(r"_seed\d+$")
_COLOURS = {"x": "C0", "y": "C1", "joint": "0.35", "id": "C2", "ood": "C3"}


# --------------------------------------------------------------------------------------------
# tables


def load_metrics(metrics) -> pd.DataFrame:
    """The metrics table as a DataFrame (a copy), with a ``dataset`` column and numeric columns coerced.

    ``metrics`` is a DataFrame or a path to ``metrics.csv``. ``sigma`` is kept as given (it may be
    "sx/sy"); its numeric value, NaN for anisotropic bumps, is added as ``sigma_value``.
    """
    if isinstance(metrics, (str, os.PathLike)):
        metrics = pd.read_csv(metrics)
    table = metrics.copy()
    if "dataset" not in table.columns:
        if "run" not in table.columns:
            raise ValueError("metrics table needs a 'dataset' or a 'run' column")
        table["dataset"] = table["run"].astype(str).str.replace(_RUN_SUFFIX, "", regex=True)
    numeric = [c for c in METRIC_COLUMNS if c not in ("run", "dataset", "sigma", "hole", "seed", "phase")]
    for column in numeric:
        if column in table.columns:
            table[column] = pd.to_numeric(table[column], errors="coerce")
    if "sigma" in table.columns:
        table["sigma_value"] = pd.to_numeric(table["sigma"], errors="coerce")
    if "phase" in table.columns:
        table["phase"] = table["phase"].map(_phase_or_none)
    return table


def _phase_or_none(value):
    if value is None or (np.ndim(value) == 0 and pd.isna(value)):
        return None
    text = str(np.asarray(value)).strip().upper()
    return text if text in PHASES else None


def _has_hole(table: pd.DataFrame) -> pd.Series:
    if "hole" not in table.columns:
        return pd.Series(False, index=table.index)
    text = table["hole"].astype(str).str.strip().str.lower()
    return table["hole"].notna() & ~text.isin(["", "nan", "none"])


def _isotropic_grid(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of hole-free datasets with equal increments and a numeric (isotropic) sigma."""
    keep = (
        np.isclose(table["increment_x"], table["increment_y"])
        & table["sigma_value"].notna()
        & ~_has_hole(table)
        & table["step"].notna()
    )
    out = table[keep].copy()
    out["increment"] = out["increment_x"]
    out["r2_mean"] = (out["r2_x"] + out["r2_y"]) / 2.0
    return out


def _sort_key(value):
    """Numbers (by value) before strings before missing values: a total order for mixed columns."""
    if value is None or (np.ndim(value) == 0 and pd.isna(value)):
        return (2, 0.0, "")
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _key_order(table: pd.DataFrame, by: Sequence[str]) -> list[int]:
    """Row positions that sort ``table`` by ``by`` with :func:`_sort_key` (stable)."""
    columns = [table[c].tolist() for c in by]
    keys = [tuple(_sort_key(col[i]) for col in columns) for i in range(len(table))]
    return sorted(range(len(table)), key=keys.__getitem__)


def _t_quantile(df: np.ndarray) -> np.ndarray:
    """The 0.975 quantile of Student's t (scipy.special is far quicker to import than scipy.stats)."""
    from scipy.special import stdtrit

    return stdtrit(df, 0.975)


def aggregate_seeds(metrics, by: Sequence[str], value_columns: Sequence[str], how: str = "mean") -> pd.DataFrame:
    """Aggregate a metrics table over seeds: one row per group of ``by`` (e.g. ["dataset", "step"]).

    how="mean": for each value column ``c`` the columns ``c`` (mean), ``c_lo`` and ``c_hi`` (the
    two-sided 95% Student-t interval of the mean, ``mean +/- t_{0.975, n-1} sd / sqrt(n)`` with
    ddof = 1) and ``c_n`` (how many non-NaN values entered). With one value the interval collapses
    to the mean; with none all three are NaN.
    how="best": ``c`` is the maximum over seeds (the paper's "best of seeds") and ``c_n`` the count.
    Each column is aggregated separately, so the best accuracy and the best R^2 of a group may come
    from different seeds.

    Also ``n_seeds``: rows (distinct seeds, if a ``seed`` column exists) in the group. NaN keys
    (e.g. ``hole``) form their own group. Rows are sorted by the keys (numbers before strings,
    missing last), so the output does not depend on the input's row order.
    """
    if how not in ("mean", "best"):
        raise ValueError(f"how must be 'mean' or 'best', got {how!r}")
    by = list(by)
    value_columns = list(value_columns)
    table = metrics.copy()
    missing = [c for c in by + value_columns if c not in table.columns]
    if missing:
        raise ValueError(f"metrics table lacks column(s) {missing}")
    for column in value_columns:
        table[column] = pd.to_numeric(table[column], errors="coerce")
    # Sort first so that a mean's floating-point summation order is fixed too.
    table = table.iloc[_key_order(table, by)]
    groups = table.groupby(by, sort=False, dropna=False)
    out = groups.size().rename("n_seeds").to_frame()
    if "seed" in table.columns:
        out["n_seeds"] = groups["seed"].nunique(dropna=False)
    for column in value_columns:
        if how == "best":
            out[column] = groups[column].max()
            out[f"{column}_n"] = groups[column].count()
            continue
        mean = groups[column].mean()
        sd = groups[column].std(ddof=1)
        n = groups[column].count()
        half = np.zeros(len(n))
        several = n.to_numpy() >= 2
        half[several] = _t_quantile(n.to_numpy()[several] - 1) * sd.to_numpy()[several] / np.sqrt(n.to_numpy()[several])
        half[n.to_numpy() == 0] = np.nan
        out[column] = mean
        out[f"{column}_lo"] = mean.to_numpy() - half
        out[f"{column}_hi"] = mean.to_numpy() + half
        out[f"{column}_n"] = n
    out = out.reset_index()
    return out.iloc[_key_order(out, by)].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# small drawing helpers


def _fmt_step(step) -> str:
    step = float(step)
    if step >= 1_000_000 and step % 100_000 == 0:
        return f"{step / 1e6:g}M"
    if step >= 1000 and step % 100 == 0:
        return f"{step / 1e3:g}k"
    return f"{step:g}"


def _fmt_value(value) -> str:
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return str(value)


def _no_data(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _thin_ticks(count: int, most: int = 10) -> np.ndarray:
    stride = max(1, int(math.ceil(count / most)))
    return np.arange(0, count, stride)


def _heatmap(ax, frame: pd.DataFrame, title: str, ylabel: str) -> None:
    """Draw ``frame`` (rows: y values ascending upwards, columns: steps) as a [0, 1] heat map."""
    ax.set_title(title, fontsize=9)
    if frame.empty or frame.shape[1] == 0:
        _no_data(ax)
        ax.set_ylabel(ylabel)
        return
    values = frame.to_numpy(dtype=np.float64)
    ax.imshow(
        np.ma.masked_invalid(values),
        origin="lower",
        aspect="auto",
        cmap=_HEAT_CMAP,
        vmin=0.0,
        vmax=1.0,
        interpolation="nearest",
    )
    n_rows, n_cols = values.shape
    xt = _thin_ticks(n_cols)
    ax.set_xticks(xt, [_fmt_step(frame.columns[k]) for k in xt], fontsize=7, rotation=45 if n_cols > 6 else 0)
    yt = _thin_ticks(n_rows, most=14)
    ax.set_yticks(yt, [_fmt_value(frame.index[k]) for k in yt], fontsize=7)
    ax.set_xlabel("training step", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    if values.size <= ANNOTATE_MAX_CELLS:
        size = 7 if n_cols <= 8 else 5.5
        for (r, c), v in np.ndenumerate(values):
            if np.isfinite(v):
                colour = "white" if v < 0.55 else "black"
                ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=size, color=colour)


def _colourbar(fig, axes, label: str, below_zero: bool) -> None:
    mappable = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=_HEAT_CMAP)
    cbar = fig.colorbar(mappable, ax=axes, shrink=0.9, extend="min" if below_zero else "neither")
    cbar.set_label(label, fontsize=8)
    cbar.ax.tick_params(labelsize=7)


def _how_text(how: str, n_seeds: int) -> str:
    if how == "best":
        return f"best of {n_seeds} seed{'s' if n_seeds != 1 else ''}"
    return f"mean over {n_seeds} seed{'s' if n_seeds != 1 else ''}"


def _seed_count(table: pd.DataFrame) -> int:
    if table.empty:
        return 0
    column = "seed" if "seed" in table.columns else "run"
    return int(table.groupby("dataset")[column].nunique().max())


def _band(ax, agg: pd.DataFrame, column: str, colour: str, label: str, linestyle: str = "-") -> None:
    """Mean line and shaded 95% interval; intervals of accuracies (not R^2) are clipped to [0, 1]."""
    low, high = (0.0, 1.0) if column.startswith("accuracy") else (-np.inf, np.inf)
    steps = agg["step"].to_numpy(dtype=np.float64)
    mean = agg[column].to_numpy(dtype=np.float64)
    marker = "o" if len(steps) <= 2 else None
    ax.plot(steps, mean, color=colour, label=label, linestyle=linestyle, marker=marker, markersize=3, lw=1.3)
    ax.fill_between(
        steps,
        np.clip(agg[f"{column}_lo"].to_numpy(dtype=np.float64), low, high),
        np.clip(agg[f"{column}_hi"].to_numpy(dtype=np.float64), low, high),
        color=colour,
        alpha=0.2,
        linewidth=0,
    )


def _curves_axes(ax, ylabel: str, steps) -> None:
    """Labels and grid; the x range is the steps' (a single step gets one tick, centred)."""
    ax.set_xlabel("training step", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _fmt_step(v) if v >= 0 else f"{v:g}"))
    steps = np.unique(np.asarray(steps, dtype=np.float64))
    if len(steps) == 1:
        half = max(1.0, 0.5 * abs(steps[0]))
        ax.set_xlim(steps[0] - half, steps[0] + half)
        ax.set_xticks(steps)
    elif len(steps) > 1:
        margin = 0.03 * (steps[-1] - steps[0])
        ax.set_xlim(steps[0] - margin, steps[-1] + margin)


# --------------------------------------------------------------------------------------------
# Fig. 3: the three phases of one run


def choose_phase_checkpoints(metrics_of_run) -> dict[str, int]:
    """The checkpoint shown for each phase of one run: ``{phase: step}`` in the order A, B, C.

    Rule: C -> the first step in phase C (when the 2-D representation has just formed);
    B -> the latest B step before that C step; A -> the latest A step before the chosen B (or C)
    step. The chosen steps therefore increase with the phase. When a phase only occurs after the
    next phase's chosen step (non-monotone phase labels), its latest step overall is taken. A phase
    that is never reached is left out. ``metrics_of_run`` needs ``step`` and ``phase`` columns (other
    rows with no or an unknown phase are ignored); rows of several runs are refused.
    """
    table = metrics_of_run if isinstance(metrics_of_run, pd.DataFrame) else pd.DataFrame(metrics_of_run)
    if "run" in table.columns and table["run"].nunique() > 1:
        raise ValueError(f"choose_phase_checkpoints takes one run, got {sorted(table['run'].unique())}")
    phases = table["phase"].map(_phase_or_none)
    steps = pd.to_numeric(table["step"], errors="coerce")
    valid = phases.notna() & steps.notna()
    phases, steps = phases[valid], steps[valid]
    chosen: dict[str, int] = {}
    c_steps = steps[phases == "C"]
    if len(c_steps):
        chosen["C"] = int(c_steps.min())
    limit = chosen.get("C")
    for phase in ("B", "A"):
        in_phase = steps[phases == phase]
        if not len(in_phase):
            continue
        before = in_phase[in_phase < limit] if limit is not None else in_phase
        chosen[phase] = int(before.max() if len(before) else in_phase.max())
        limit = chosen[phase]
    return {phase: chosen[phase] for phase in PHASES if phase in chosen}


def _checkpoint_table(checkpoints) -> dict[int, Mapping]:
    """``{step: checkpoint}`` from a mapping step -> checkpoint or a sequence of checkpoints with 'step'."""
    if isinstance(checkpoints, Mapping):
        return {int(step): ck for step, ck in checkpoints.items()}
    return {int(np.asarray(ck["step"])): ck for ck in checkpoints}


def _checkpoint_accuracy(ck: Mapping) -> float:
    if "accuracy" in ck and ck["accuracy"] is not None:
        return float(np.asarray(ck["accuracy"]))
    from diffcomp.bumps.evaluate import accuracy, predict_positions

    images = np.asarray(ck["images"])
    if images.ndim != 3 or len(images) == 0:
        return float("nan")
    positions, _ = predict_positions(images)
    return accuracy(np.asarray(ck["labels"]), positions)["joint"]


def _mosaic(images: np.ndarray, ncols: int, gap: int = 0) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Tile (n, H, W) images row by row into one array (NaN in gaps); also each tile's (x, y) offset."""
    n, height, width = images.shape
    nrows = int(math.ceil(n / ncols))
    ncols = min(ncols, n)
    mosaic = np.full((nrows * (height + gap) - gap, ncols * (width + gap) - gap), np.nan)
    offsets = []
    for k in range(n):
        oy, ox = (k // ncols) * (height + gap), (k % ncols) * (width + gap)
        mosaic[oy : oy + height, ox : ox + width] = images[k]
        offsets.append((ox, oy))
    return mosaic, offsets


def _umap_panel(subfig, ax3, ck: Mapping, labels: np.ndarray, max_points: int, seed: int) -> None:
    """3-D scatter of the embedding coloured by mu_x, with its colorbar (none when there is no embedding)."""
    ax3.set_xlabel("UMAP 1", fontsize=7, labelpad=-8)
    ax3.set_ylabel("UMAP 2", fontsize=7, labelpad=-8)
    ax3.set_zlabel("UMAP 3", fontsize=7, labelpad=-8)
    # No tick labels: a formatter that writes none, not a zero font size (which FreeType rejects
    # with a warning per label and draw, about a thousand lines on the paper config's GPU run).
    ax3.tick_params(length=0)
    for axis in (ax3.xaxis, ax3.yaxis, ax3.zaxis):
        axis.set_major_formatter(NullFormatter())
    embedding = ck.get("embedding") if "embedding" in ck else None
    embedding = None if embedding is None else np.asarray(embedding, dtype=np.float64)
    if embedding is None or embedding.ndim != 2 or embedding.shape[1] < 3 or len(embedding) == 0:
        ax3.text2D(0.5, 0.5, "no embedding", ha="center", va="center", transform=ax3.transAxes, color="0.4")
        return
    keep = np.arange(len(embedding))
    if len(keep) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(keep), size=max_points, replace=False))
    points = embedding[keep]
    if len(labels) < len(embedding):  # no mu_x for every point: one colour, no colorbar
        ax3.scatter(points[:, 0], points[:, 1], points[:, 2], s=3, alpha=0.8, linewidths=0, depthshade=False)
        return
    scatter = ax3.scatter(
        points[:, 0],
        points[:, 1],
        points[:, 2],
        c=labels[keep, 0],
        cmap="viridis",
        s=3,
        alpha=0.8,
        linewidths=0,
        depthshade=False,
    )
    cbar = subfig.colorbar(scatter, ax=ax3, shrink=0.6, pad=0.02)
    cbar.set_label(r"$\mu_x$", fontsize=8)
    cbar.ax.tick_params(labelsize=7)


def phases_figure(
    checkpoints,
    run_name: str,
    chosen: Mapping[str, int] | None = None,
    n_samples: int = 25,
    seed: int = 0,
    max_points: int = 5000,
) -> Figure:
    """Paper Fig. 3: one row per phase reached (A, B, C) of one run.

    Each row: a 5x5 grid of generated samples (one mosaic image, tiles separated by light blue
    lines) with red dots at their true (conditioning) positions, beside the 3-D UMAP of the hidden
    layer coloured by mu_x (with a colorbar); the row title gives step, phase and accuracy.

    checkpoints: ``{step: ck}`` or a sequence of ``ck`` with a "step" entry, each ``ck`` a mapping
    (a dict or an ``np.load``-ed npz) with "images" (N, S, S) in [0, 1], "labels" (N, 2) in label
    coordinates, "embedding" (N, 3) (may be absent or None: the panel then says so), "phase"
    ("A", "B" or "C") and optionally "accuracy" (else computed with Algorithm 1 from the images).
    chosen: ``{phase: step}`` to show; by default :func:`choose_phase_checkpoints` on the
    checkpoints' phases. The samples shown are a seeded choice of ``n_samples`` images (sorted by
    index), the same at every checkpoint when N is; at most ``max_points`` (a seeded subset) are
    drawn in the UMAP scatter. Axes per row: the sample mosaic, the 3-D UMAP and its colorbar
    (no colorbar when the embedding is missing).
    """
    table = _checkpoint_table(checkpoints)
    if chosen is None:
        rows = [{"step": step, "phase": ck.get("phase")} for step, ck in table.items()]
        chosen = choose_phase_checkpoints(pd.DataFrame(rows, columns=["step", "phase"]))
    shown = [(phase, int(step)) for phase, step in chosen.items() if int(step) in table]
    if not shown:
        fig = Figure(figsize=(6, 2), layout="constrained")
        ax = fig.add_subplot()
        ax.set_axis_off()
        _no_data(ax, f"{run_name}: no checkpoint with a phase")
        return fig
    ncols = int(math.ceil(math.sqrt(n_samples)))
    fig = Figure(figsize=(9.0, 4.1 * len(shown)), layout="constrained")
    fig.suptitle(f"{run_name}: samples and hidden-layer UMAP by phase", fontsize=11)
    subfigs = np.atleast_1d(fig.subfigures(len(shown), 1, hspace=0.04))
    for subfig, (phase, step) in zip(subfigs, shown, strict=True):
        ck = table[step]
        images = np.asarray(ck["images"])
        labels = np.asarray(ck["labels"], dtype=np.float64).reshape(-1, 2)
        acc = _checkpoint_accuracy(ck)
        subfig.suptitle(f"phase {phase}: step {step}, accuracy {acc:.2f}", fontsize=10)
        left, right = subfig.subfigures(1, 2, width_ratios=[1.0, 1.25], wspace=0.02)
        n = len(images)
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(n, size=min(n, n_samples), replace=False)) if n else np.array([], dtype=int)
        ax_grid = left.add_subplot()
        ax_grid.set_axis_off()
        if len(pick):
            mosaic, offsets = _mosaic(images[pick], ncols)
            ax_grid.imshow(mosaic, cmap=_MOSAIC_CMAP, vmin=0, vmax=1, interpolation="nearest")
            height, width = images.shape[1:]
            for ox, oy in offsets:  # thin tile frames, drawn over the pixels' edges
                frame = Rectangle((ox - 0.5, oy - 0.5), width, height, fill=False, edgecolor="#6baed6", linewidth=0.6)
                ax_grid.add_patch(frame)
            dots = [(i, off) for i, off in zip(pick, offsets, strict=True) if i < len(labels)]
            if dots:
                # label coordinate x sits at imshow column x - 1 (see diffcomp.bumps.data)
                xy = np.array([[labels[i, 0] - 1 + ox, labels[i, 1] - 1 + oy] for i, (ox, oy) in dots])
                ax_grid.plot(xy[:, 0], xy[:, 1], "r.", markersize=3)
        else:
            _no_data(ax_grid, "no images")
        ax3 = right.add_subplot(projection="3d")
        _umap_panel(right, ax3, ck, labels, max_points, seed)
    return fig


# --------------------------------------------------------------------------------------------
# Figs. 4 and 8: phase diagrams


def _pivot(agg: pd.DataFrame, row: str, column: str) -> pd.DataFrame:
    if agg.empty:
        return pd.DataFrame()
    frame = agg.pivot_table(index=row, columns="step", values=column, aggfunc="first", dropna=False)
    return frame.sort_index().sort_index(axis=1)


def _diagram_rows(grid: pd.DataFrame, row: str, how: str) -> pd.DataFrame:
    if grid.empty:
        return pd.DataFrame(columns=[row, "step", "accuracy", "r2_mean"])
    return aggregate_seeds(grid, [row, "step"], ["accuracy", "r2_mean"], how=how)


def _heat_pair(fig, axes_rows, frames, ylabel: str) -> None:
    """frames: per row (accuracy frame, r2 frame, row title)."""
    below = False
    for (ax_acc, ax_r2), (acc, r2, title) in zip(axes_rows, frames, strict=True):
        _heatmap(ax_acc, acc, f"{title}accuracy", ylabel)
        _heatmap(ax_r2, r2, f"{title}mean $R^2$", ylabel)
        below |= bool((r2.to_numpy(dtype=np.float64) < 0).any())
    _colourbar(fig, [row[0] for row in axes_rows], "accuracy", False)
    _colourbar(fig, [row[1] for row in axes_rows], r"$(R^2_x + R^2_y)/2$", below)


def _heat_size(n_steps: int, n_rows_total: int, n_panel_rows: int) -> tuple[float, float]:
    width = min(16.0, max(8.0, 2 * (1.6 + 0.42 * n_steps) + 1.5))
    height = n_panel_rows * min(6.0, max(2.4, 1.0 + 0.3 * n_rows_total / max(1, n_panel_rows)))
    return width, height


def spearman_rho(x, y) -> float:
    """Spearman's rank correlation of the finite (x, y) pairs (scipy.stats.spearmanr).

    NaN ("n/a") with fewer than 3 distinct points or when x or y is constant.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(set(zip(x.tolist(), y.tolist(), strict=True))) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


# The trend is "clear" when |rho| reaches this at every checkpoint from the middle one on.
TREND_RHO = 0.8
# Redraws of the accuracies behind the sampling interval of rho (seeded: a table gives one interval).
NOISE_DRAWS = 4000


def _rank_rows(values: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(values, axis=-1)  # average ranks for ties, as spearmanr


def sampling_interval(rows: pd.DataFrame, seed: int = 0) -> tuple[float, float]:
    """95% interval of Spearman's rho between increment and mean accuracy under the accuracies'
    sampling noise: every accuracy redrawn as Binomial(n, accuracy) / n with n its ``n_samples``,
    averaged over seeds per increment, rho recomputed; NOISE_DRAWS draws, seeded. The 2.5 and 97.5
    percentiles of the draws whose rho is defined; NaN without sample counts or defined draws.

    ``rows``: one checkpoint's rows (``increment``, ``accuracy``, ``n_samples``).
    """
    if "n_samples" not in rows.columns:
        return float("nan"), float("nan")
    rows = rows[np.isfinite(rows["accuracy"])]
    if not (np.isfinite(rows["n_samples"]) & (rows["n_samples"] > 0)).all():
        return float("nan"), float("nan")
    increments = np.unique(rows["increment"].to_numpy(np.float64))
    if len(increments) < 3:
        return float("nan"), float("nan")
    n = rows["n_samples"].to_numpy(np.int64)
    accuracy = np.clip(rows["accuracy"].to_numpy(np.float64), 0.0, 1.0)
    draws = np.random.default_rng(seed).binomial(n, accuracy, (NOISE_DRAWS, len(rows))) / n
    which = np.searchsorted(increments, rows["increment"].to_numpy(np.float64))
    means = np.stack([draws[:, which == k].mean(axis=1) for k in range(len(increments))], axis=1)
    ranks_x, ranks_y = _rank_rows(increments), _rank_rows(means)
    dx, dy = ranks_x - ranks_x.mean(), ranks_y - ranks_y.mean(axis=1, keepdims=True)
    norm = np.sqrt((dy**2).sum(axis=1) * (dx**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(norm > 0, dy @ dx / norm, np.nan)
    rho = rho[np.isfinite(rho)]
    if rho.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(rho, [2.5, 97.5])
    return float(low), float(high)


def increment_trend(metrics, sigma: float) -> pd.DataFrame:
    """Spearman's rho between increment and accuracy at each training step, on the phase diagram's rows.

    Rows as :func:`phase_diagram_figure` (hole-free, increment_x == increment_y, isotropic sigma
    equal to ``sigma``). Per step: ``rho``, the rank correlation between the increment and the mean
    accuracy over seeds (NaN with fewer than 3 increments); ``n_increments``; ``n_seeds``; and, from
    the same rank correlation computed within each seed, ``rho_seed_mean``, ``rho_seed_lo`` and
    ``rho_seed_hi`` (mean and two-sided 95% Student-t interval over seeds, as
    :func:`aggregate_seeds`; the interval collapses to the mean with one seed); and
    ``rho_noise_lo``, ``rho_noise_hi``, its 95% interval under the accuracies' sampling noise
    (:func:`sampling_interval`; NaN without an ``n_samples`` column). A negative rho means that
    smaller increments have reached a higher accuracy (learn faster).
    """
    columns = [
        "step",
        "rho",
        "n_increments",
        "n_seeds",
        "rho_seed_mean",
        "rho_seed_lo",
        "rho_seed_hi",
        "rho_noise_lo",
        "rho_noise_hi",
    ]
    grid = _isotropic_grid(load_metrics(metrics))
    grid = grid[np.isclose(grid["sigma_value"], float(sigma))].copy()
    if grid.empty:
        return pd.DataFrame(columns=columns)
    if "seed" not in grid.columns:
        grid["seed"] = grid["run"]
    mean = aggregate_seeds(grid, ["increment", "step"], ["accuracy"], how="mean")
    rows = []
    for step, at_step in mean.groupby("step", sort=True):
        of_step = grid[grid["step"] == step]
        seed_rho = pd.DataFrame(
            {
                "step": step,
                "rho": [
                    spearman_rho(seed_rows["increment"], seed_rows["accuracy"])
                    for _, seed_rows in of_step.groupby("seed")
                ],
            }
        )
        spread = aggregate_seeds(seed_rho, ["step"], ["rho"], how="mean").iloc[0]
        noise_lo, noise_hi = sampling_interval(of_step)
        rows.append(
            {
                "step": step,
                "rho": spearman_rho(at_step["increment"], at_step["accuracy"]),
                "n_increments": int(at_step["accuracy"].notna().sum()),
                "n_seeds": int(at_step["n_seeds"].max()),
                "rho_seed_mean": spread["rho"],
                "rho_seed_lo": float(np.clip(spread["rho_lo"], -1.0, 1.0)),
                "rho_seed_hi": float(np.clip(spread["rho_hi"], -1.0, 1.0)),
                "rho_noise_lo": noise_lo,
                "rho_noise_hi": noise_hi,
            }
        )
    return pd.DataFrame(rows, columns=columns)


def _middle_on(trend: pd.DataFrame) -> pd.DataFrame:
    """The checkpoints from the middle one on. The middle of an even count is the later of the two,
    as issue #11 reads it (step 800 of the quick set's 200, 400, ..., 1,200)."""
    return trend.iloc[len(trend) // 2 :]


def trend_text(trend: pd.DataFrame) -> str:
    """The sentence the phase diagram states about its trend (see :func:`increment_trend`).

    The verdict ("smaller increments learn faster", "larger increments learn faster" or "no clear
    order of increments") holds when rho is at most -TREND_RHO (at least +TREND_RHO) at every
    checkpoint from the middle one on; then rho of the mean accuracy at the middle and the final
    checkpoint with its 95% interval under sampling noise (when the table has sample counts), and
    with two or more seeds the per-seed rho's mean and 95% interval there.
    Checkpoints without a rho (fewer than 3 increments, or every accuracy equal) are left out.
    """
    trend = trend[trend["rho"].notna()]
    if trend.empty:
        return "trend: fewer than 3 increments, no Spearman rho"
    late = _middle_on(trend)
    if (late["rho"] <= -TREND_RHO).all():
        verdict = "smaller increments learn faster"
    elif (late["rho"] >= TREND_RHO).all():
        verdict = "larger increments learn faster"
    else:
        verdict = "no clear order of increments"
    shown = late.iloc[[0, -1]] if len(late) > 1 else late
    names = ["middle", "final"] if len(late) > 1 else ["final"]
    n_inc, n_seeds = int(late["n_increments"].min()), int(late["n_seeds"].max())
    seeds = f"{n_seeds} seed{'s' if n_seeds != 1 else ''}"

    lines = [
        f"{verdict} (Spearman $\\rho$ between increment and mean accuracy over {seeds}, {n_inc} increments)",
        "$\\rho$ = "
        + ", ".join(
            f"{row['rho']:+.2f} at step {_fmt_step(row['step'])} ({name})"
            for name, (_, row) in zip(names, shown.iterrows(), strict=True)
        )
        + f"; at most {late['rho'].max():+.2f} from the middle step on",
    ]
    if shown[["rho_noise_lo", "rho_noise_hi"]].notna().all(axis=None):
        lines.append(
            "95% interval of $\\rho$ under sampling noise: "
            + ", ".join(
                f"{row['rho_noise_lo']:+.2f} to {row['rho_noise_hi']:+.2f} at step {_fmt_step(row['step'])}"
                for _, row in shown.iterrows()
            )
        )
    if n_seeds >= 2:
        lines.append(
            "per-seed $\\rho$: "
            + ", ".join(
                f"{row['rho_seed_mean']:+.2f} (95% CI {row['rho_seed_lo']:+.2f} to {row['rho_seed_hi']:+.2f}) "
                f"at step {_fmt_step(row['step'])}"
                for _, row in shown.iterrows()
            )
        )
    return "\n".join(lines)


def _trend_axis(ax, trend: pd.DataFrame, steps) -> None:
    """Rho of each checkpoint on a secondary x axis above the accuracy heat map."""
    rho = dict(zip(trend["step"], trend["rho"], strict=True))
    top = ax.secondary_xaxis("top")
    ticks = _thin_ticks(len(steps), most=16)
    values = [rho.get(steps[k], np.nan) for k in ticks]
    top.set_xticks(ticks, [f"{v:+.2f}" if np.isfinite(v) else "-" for v in values], fontsize=6.5)
    top.set_xlabel("Spearman $\\rho$(increment, mean accuracy)", fontsize=7)


def phase_diagram_figure(metrics, sigma: float, how: str = "best", accuracy: str = "accuracy") -> Figure:
    """Paper Fig. 4: accuracy and mean R^2 ((r2_x + r2_y)/2) over increment (y) x training step (x).

    Only hole-free datasets with increment_x == increment_y and an isotropic sigma equal to
    ``sigma`` (np.isclose) enter. Seeds are combined with :func:`aggregate_seeds` (``how`` =
    "best", the paper's choice, or "mean"); R^2 is averaged over x and y per seed first. Missing
    cells are grey; cells are annotated with their value when a panel has at most
    ``ANNOTATE_MAX_CELLS``. Colour scales are fixed to [0, 1] (negative R^2 shows as the lowest
    colour, the colorbar then has a "min" arrow). Axes: two heat maps and two colorbars.

    The trend is stated whatever ``how`` is, on the mean accuracy over seeds (:func:`increment_trend`):
    Spearman's rho between increment and accuracy at each checkpoint above the accuracy heat map,
    and :func:`trend_text` (verdict, rho at the middle and final checkpoints, per-seed 95%
    interval with two or more seeds) in the title.

    ``accuracy``: the metrics column shown and ranked, "accuracy" (at the training labels, the
    paper's) or "accuracy_offgrid" (at labels shared by every run, on and off the training grid).
    """
    table = load_metrics(metrics)
    if accuracy not in ("accuracy", "accuracy_offgrid"):
        raise ValueError(f"accuracy must be 'accuracy' or 'accuracy_offgrid', got {accuracy!r}")
    offgrid = accuracy == "accuracy_offgrid"
    if offgrid:
        if "accuracy_offgrid" not in table.columns:
            raise ValueError("the metrics table has no accuracy_offgrid column (sampled without off-grid labels?)")
        table = table.assign(accuracy=table["accuracy_offgrid"])
        # the counts behind the off-grid accuracies, for the trend's sampling interval
        if "n_offgrid" in table.columns:
            table = table.assign(n_samples=table["n_offgrid"])
        else:
            table = table.drop(columns="n_samples", errors="ignore")
    grid = _isotropic_grid(table)
    grid = grid[np.isclose(grid["sigma_value"], float(sigma))]
    agg = _diagram_rows(grid, "increment", how)
    acc, r2 = _pivot(agg, "increment", "accuracy"), _pivot(agg, "increment", "r2_mean")
    fig = Figure(figsize=_heat_size(acc.shape[1], acc.shape[0], 1), layout="constrained")
    axes = fig.subplots(1, 2, squeeze=False)
    _heat_pair(fig, [tuple(axes[0])], [(acc, r2, "")], "increment")
    trend = increment_trend(grid, sigma)
    if acc.shape[1]:
        _trend_axis(axes[0][0], trend, list(acc.columns))
    where = ", accuracy at off-grid labels" if offgrid else ""
    fig.suptitle(
        f"Phase diagram at $\\sigma$ = {sigma:g} ({_how_text(how, _seed_count(grid))}{where})\n{trend_text(trend)}",
        fontsize=9,
    )
    return fig


def sigma_figure(metrics, increments: Sequence[float] | None = None, how: str = "best") -> Figure:
    """Paper Fig. 8: accuracy and mean R^2 over sigma (y) x training step (x), one row per increment.

    ``increments``: the increments to show (each matched with np.isclose), by default every
    increment of the isotropic, hole-free datasets. Rows otherwise as :func:`phase_diagram_figure`
    (anisotropic sigma is left out); an increment with no data gives a "no data" row. Axes: two
    heat maps per row plus two colorbars shared by the columns.
    """
    table = load_metrics(metrics)
    grid = _isotropic_grid(table)
    if increments is None:
        increments = sorted(grid["increment"].unique().tolist())
    increments = [float(v) for v in increments]
    frames = []
    n_steps, n_sigma = 0, 0
    for increment in increments:
        agg = _diagram_rows(grid[np.isclose(grid["increment"], increment)], "sigma_value", how)
        acc, r2 = _pivot(agg, "sigma_value", "accuracy"), _pivot(agg, "sigma_value", "r2_mean")
        frames.append((acc, r2, f"increment {increment:g}: "))
        n_steps, n_sigma = max(n_steps, acc.shape[1]), n_sigma + acc.shape[0]
    if not frames:
        fig = Figure(figsize=(6, 2), layout="constrained")
        _no_data(fig.add_subplot(), "no isotropic hole-free dataset")
        return fig
    fig = Figure(figsize=_heat_size(n_steps, n_sigma, len(frames)), layout="constrained")
    axes = fig.subplots(len(frames), 2, squeeze=False)
    _heat_pair(fig, [tuple(row) for row in axes], frames, r"$\sigma$")
    fig.suptitle(f"Accuracy and $R^2$ against bump width ({_how_text(how, _seed_count(grid))})", fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------
# Figs. 5 and 9: curves against training steps


def _dataset_title(rows: pd.DataFrame, name: str) -> str:
    first = rows.iloc[0]
    seeds = rows["seed"].nunique() if "seed" in rows.columns else rows["run"].nunique()
    return (
        f"{name}: increment ({_fmt_value(first['increment_x'])}, {_fmt_value(first['increment_y'])}), "
        f"$\\sigma$ = {_fmt_value(first.get('sigma', '?'))}, {seeds} seed{'s' if seeds != 1 else ''}"
    )


def imbalance_figure(metrics) -> Figure:
    """Paper Fig. 5: per dataset with increment_x != increment_y, x and y against training steps.

    One row per such dataset (sorted by name): left accuracy_x and accuracy_y (with the joint
    accuracy dotted), right r2_x and r2_y; each the mean over seeds with a shaded 95% t-interval.
    All-NaN series draw nothing. Axes: two per dataset (one "no data" axis if there is none).
    """
    table = load_metrics(metrics)
    known = table["increment_x"].notna() & table["increment_y"].notna() & table["step"].notna()
    table = table[known & ~np.isclose(table["increment_x"], table["increment_y"])]
    names = sorted(table["dataset"].unique().tolist())
    if not names:
        fig = Figure(figsize=(6, 2), layout="constrained")
        _no_data(fig.add_subplot(), "no dataset with increment_x != increment_y")
        return fig
    fig = Figure(figsize=(9.0, 2.7 * len(names) + 0.4), layout="constrained")
    axes = fig.subplots(len(names), 2, squeeze=False)
    columns = ["accuracy", "accuracy_x", "accuracy_y", "r2_x", "r2_y"]
    for (ax_acc, ax_r2), name in zip(axes, names, strict=True):
        rows = table[table["dataset"] == name]
        agg = aggregate_seeds(rows, ["step"], columns, how="mean")
        _band(ax_acc, agg, "accuracy_x", _COLOURS["x"], "x")
        _band(ax_acc, agg, "accuracy_y", _COLOURS["y"], "y")
        _band(ax_acc, agg, "accuracy", _COLOURS["joint"], "joint", linestyle=":")
        _band(ax_r2, agg, "r2_x", _COLOURS["x"], "x")
        _band(ax_r2, agg, "r2_y", _COLOURS["y"], "y")
        _curves_axes(ax_acc, "accuracy", agg["step"])
        _curves_axes(ax_r2, "$R^2$", agg["step"])
        ax_acc.set_ylim(-0.03, 1.03)
        if agg["r2_x"].notna().any() or agg["r2_y"].notna().any():
            low = np.nanmin(agg[["r2_x_lo", "r2_y_lo"]].to_numpy(dtype=np.float64))
            ax_r2.set_ylim(min(-0.03, low - 0.03), 1.03)
        else:
            ax_r2.set_ylim(-0.03, 1.03)
            ax_r2.text(0.5, 0.5, "no $R^2$", ha="center", va="center", transform=ax_r2.transAxes, color="0.4")
        ax_acc.set_title(_dataset_title(rows, name), fontsize=9, loc="left")
        ax_acc.legend(fontsize=7, loc="lower right")
        ax_r2.legend(fontsize=7, loc="lower right")
    fig.suptitle("Imbalanced increments: per-axis accuracy and $R^2$ (mean, 95% t-interval over seeds)", fontsize=10)
    return fig


def _hole_spec(hole) -> dict:
    if isinstance(hole, Mapping):
        return dict(hole)
    return {k: getattr(hole, k) for k in ("name", "shape", "x", "y", "center", "radius")}


def hole_patch(hole, **style):
    """A matplotlib patch outlining a hole (dict or :class:`~diffcomp.bumps.data.Hole`) on an imshow.

    Label coordinates (x, y) are drawn at imshow position (x - 1, y - 1).
    """
    spec = _hole_spec(hole)
    style = {"fill": False, "edgecolor": "red", "linewidth": 1.5, **style}
    if spec["shape"] == "disc":
        cx, cy = spec["center"]
        return Circle((float(cx) - 1, float(cy) - 1), float(spec["radius"]), **style)
    if spec["shape"] == "rect":
        (x0, x1), (y0, y1) = spec["x"], spec["y"]
        return Rectangle((float(x0) - 1, float(y0) - 1), float(x1) - float(x0), float(y1) - float(y0), **style)
    raise ValueError(f"unknown hole shape {spec['shape']!r}")


def holes_figure(metrics, hole_panels: Mapping[str, tuple] | None = None) -> Figure:
    """Paper Fig. 9: per dataset with a hole, in-distribution and OOD accuracy against training steps.

    One row per dataset that has a hole in ``metrics`` (sorted by name), then any further dataset
    named only in ``hole_panels``. Left: ``accuracy`` (in distribution) and ``accuracy_ood``, each
    the mean over seeds with a shaded 95% t-interval. Right: ``hole_panels[dataset] = (image (S, S),
    holes)`` drawn with each hole outlined (see :func:`hole_patch`) and named; a dataset missing
    from ``hole_panels`` gets an empty panel. Axes: two per dataset (one "no data" axis if none).
    """
    table = load_metrics(metrics)
    hole_panels = dict(hole_panels or {})
    table = table[_has_hole(table) & table["step"].notna()]
    names = sorted(table["dataset"].unique().tolist())
    names += [name for name in sorted(hole_panels) if name not in names]
    if not names:
        fig = Figure(figsize=(6, 2), layout="constrained")
        _no_data(fig.add_subplot(), "no dataset with a hole")
        return fig
    fig = Figure(figsize=(9.0, 2.9 * len(names) + 0.4), layout="constrained")
    axes = fig.subplots(len(names), 2, squeeze=False, width_ratios=[2.3, 1.0])
    for (ax_curve, ax_image), name in zip(axes, names, strict=True):
        rows = table[table["dataset"] == name]
        if rows.empty:
            _no_data(ax_curve, f"{name}: no metrics")
        else:
            agg = aggregate_seeds(rows, ["step"], ["accuracy", "accuracy_ood"], how="mean")
            _band(ax_curve, agg, "accuracy", _COLOURS["id"], "in distribution")
            _band(ax_curve, agg, "accuracy_ood", _COLOURS["ood"], "OOD (hole)")
            _curves_axes(ax_curve, "accuracy", agg["step"])
            ax_curve.set_ylim(-0.03, 1.03)
            ax_curve.legend(fontsize=7, loc="best")
            hole_names = ", ".join(sorted(rows["hole"].astype(str).unique()))
            ax_curve.set_title(f"{_dataset_title(rows, name)}; hole {hole_names}", fontsize=9, loc="left")
        ax_image.set_xticks([])
        ax_image.set_yticks([])
        if name not in hole_panels:
            _no_data(ax_image, "no sample")
            continue
        image, holes = hole_panels[name]
        image = np.asarray(image, dtype=np.float64)
        ax_image.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        for hole in holes:
            patch = hole_patch(hole)
            ax_image.add_patch(patch)
            spec = _hole_spec(hole)
            cx, cy = patch.center if isinstance(patch, Circle) else patch.get_center()
            ax_image.text(cx, cy, spec.get("name", ""), color="red", fontsize=7, ha="center", va="center")
        ax_image.set_xlim(-0.5, image.shape[1] - 0.5)
        ax_image.set_ylim(image.shape[0] - 0.5, -0.5)
        ax_image.set_title("sample, held-out region", fontsize=8)
    fig.suptitle("Held-out regions: in-distribution vs OOD accuracy (mean, 95% t-interval over seeds)", fontsize=10)
    return fig
