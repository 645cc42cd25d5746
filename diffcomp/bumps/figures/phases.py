"""Paper Fig. 3 (``phases``): the three phases of one run, samples beside the hidden layer's UMAP."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import NullFormatter

from diffcomp.bumps.figures.style import _MOSAIC_CMAP
from diffcomp.bumps.figures.tables import PHASES, _phase_or_none
from diffcomp.plotting import no_data


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
        no_data(ax, f"{run_name}: no checkpoint with a phase")
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
            no_data(ax_grid, "no images")
        ax3 = right.add_subplot(projection="3d")
        _umap_panel(right, ax3, ck, labels, max_points, seed)
    return fig
