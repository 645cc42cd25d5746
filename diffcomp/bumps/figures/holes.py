"""Paper Fig. 9 (``holes``): in-distribution against OOD accuracy of datasets with a held-out region."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Rectangle

from diffcomp.bumps.figures.style import _COLOURS, _dataset_title
from diffcomp.bumps.figures.tables import _has_hole, load_metrics
from diffcomp.plotting import band, curves_axes, no_data, no_data_figure
from diffcomp.stats import aggregate_seeds


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
        return no_data_figure("no dataset with a hole")
    fig = Figure(figsize=(9.0, 2.9 * len(names) + 0.4), layout="constrained")
    axes = fig.subplots(len(names), 2, squeeze=False, width_ratios=[2.3, 1.0])
    for (ax_curve, ax_image), name in zip(axes, names, strict=True):
        rows = table[table["dataset"] == name]
        if rows.empty:
            no_data(ax_curve, f"{name}: no metrics")
        else:
            agg = aggregate_seeds(rows, ["step"], ["accuracy", "accuracy_ood"], how="mean")
            band(ax_curve, agg, "accuracy", _COLOURS["id"], "in distribution")
            band(ax_curve, agg, "accuracy_ood", _COLOURS["ood"], "OOD (hole)")
            curves_axes(ax_curve, "accuracy", agg["step"])
            ax_curve.set_ylim(-0.03, 1.03)
            ax_curve.legend(fontsize=7, loc="best")
            hole_names = ", ".join(sorted(rows["hole"].astype(str).unique()))
            ax_curve.set_title(f"{_dataset_title(rows, name)}; hole {hole_names}", fontsize=9, loc="left")
        ax_image.set_xticks([])
        ax_image.set_yticks([])
        if name not in hole_panels:
            no_data(ax_image, "no sample")
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
