"""Gaussian-bump images and datasets (Liang, Liu & Fiete 2024).

Coordinate convention (the paper's): the pixel in 0-based column ``i`` and row ``j`` sits at
label coordinates ``(x, y) = (i + 1, j + 1)``, so (1, 1) is the top-left pixel and (S, S) the
bottom-right one. Arrays are indexed ``[n, row, column]`` = ``[n, y - 1, x - 1]``.

A pixel's value is ``1 - exp(-(x - mu_x)^2 / (4 sigma_x^2) - (y - mu_y)^2 / (4 sigma_y^2))``:
a dark bump on a white background, in [0, 1].

Storage: a dataset is its label table (``labels.csv``); pixels are rendered on the fly, which
costs microseconds per image (the exponent is separable in x and y). The paper's densest
dataset (increment 0.1 at S = 32: 103,041 images) is 2 MB of labels instead of 420 MB of float32
pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# Tolerance for "is this grid value still on the canvas" with float increments such as 0.1.
_GRID_EPS = 1e-9


def _as_pair(value, name: str) -> tuple[float, float]:
    arr = np.broadcast_to(np.asarray(value, dtype=np.float64), (2,))
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return float(arr[0]), float(arr[1])


def render(labels, size: int, sigma) -> np.ndarray:
    """Render one bump per label.

    labels: (N, 2) array of (mu_x, mu_y) in label coordinates.
    size: image side S.
    sigma: a float, or (sigma_x, sigma_y).
    Returns float32 (N, S, S) in [0, 1].
    """
    labels = np.asarray(labels, dtype=np.float64).reshape(-1, 2)
    sigma_x, sigma_y = _as_pair(sigma, "sigma")
    coords = np.arange(1, size + 1, dtype=np.float64)
    # exp(a + b) = exp(a) * exp(b): two (N, S) factors and one outer product per image.
    gx = np.exp(-((coords[None, :] - labels[:, :1]) ** 2) / (4.0 * sigma_x**2))
    gy = np.exp(-((coords[None, :] - labels[:, 1:]) ** 2) / (4.0 * sigma_y**2))
    bumps = gy[:, :, None] * gx[:, None, :]  # [n, row (y), column (x)]
    return (1.0 - bumps).astype(np.float32)


def grid_values(increment: float, size: int) -> np.ndarray:
    """Values 0, d, 2d, ... up to and including ``size`` (label space is [0, S])."""
    if not increment > 0:
        raise ValueError(f"increment must be > 0, got {increment}")
    if increment > size:
        raise ValueError(f"increment {increment} is larger than the canvas size {size}")
    count = int(np.floor(size / increment + _GRID_EPS)) + 1
    # Multiply instead of accumulating so 0.1 * 320 is 32.0, not 31.99999.
    return np.round(np.arange(count) * increment, 10)


def tile(increment_x: float, increment_y: float, size: int) -> np.ndarray:
    """All (mu_x, mu_y) on the grid, x varying fastest. Shape (nx * ny, 2)."""
    xs = grid_values(increment_x, size)
    ys = grid_values(increment_y, size)
    mu_x, mu_y = np.meshgrid(xs, ys)
    return np.stack([mu_x.ravel(), mu_y.ravel()], axis=1)


@dataclass(frozen=True)
class Hole:
    """A region of label space held out of training (the out-of-distribution test set)."""

    name: str
    shape: str  # "rect" or "disc"
    x: tuple[float, float] = (0.0, 0.0)  # rect: [x0, x1]
    y: tuple[float, float] = (0.0, 0.0)  # rect: [y0, y1]
    center: tuple[float, float] = (0.0, 0.0)  # disc
    radius: float = 0.0  # disc

    @classmethod
    def from_config(cls, spec: dict) -> Hole:
        if spec["shape"] == "rect":
            return cls(name=spec["name"], shape="rect", x=tuple(spec["x"]), y=tuple(spec["y"]))
        return cls(name=spec["name"], shape="disc", center=tuple(spec["center"]), radius=spec["radius"])

    def contains(self, labels: np.ndarray) -> np.ndarray:
        labels = np.asarray(labels, dtype=np.float64).reshape(-1, 2)
        if self.shape == "rect":
            return (
                (labels[:, 0] >= self.x[0])
                & (labels[:, 0] <= self.x[1])
                & (labels[:, 1] >= self.y[0])
                & (labels[:, 1] <= self.y[1])
            )
        d2 = (labels[:, 0] - self.center[0]) ** 2 + (labels[:, 1] - self.center[1]) ** 2
        return d2 <= self.radius**2

    def bounds(self) -> tuple[float, float, float, float]:
        """(x0, x1, y0, y1) of the region."""
        if self.shape == "rect":
            return (self.x[0], self.x[1], self.y[0], self.y[1])
        cx, cy = self.center
        return (cx - self.radius, cx + self.radius, cy - self.radius, cy + self.radius)

    def check_inside(self, size: int) -> None:
        x0, x1, y0, y1 = self.bounds()
        if x0 >= x1 or y0 >= y1:
            raise ValueError(f"hole {self.name!r} is empty: bounds x=[{x0}, {x1}], y=[{y0}, {y1}]")
        if x0 < 0 or y0 < 0 or x1 > size or y1 > size:
            raise ValueError(
                f"hole {self.name!r} reaches outside the canvas [0, {size}]^2: bounds x=[{x0}, {x1}], y=[{y0}, {y1}]"
            )


@dataclass(frozen=True)
class BumpDataset:
    """One tiled dataset: a grid of labels with optional holes."""

    name: str
    size: int
    increment_x: float
    increment_y: float
    sigma: tuple[float, float]
    holes: tuple[Hole, ...] = field(default_factory=tuple)

    @classmethod
    def from_config(cls, spec: dict, size: int) -> BumpDataset:
        return cls(
            name=spec["name"],
            size=size,
            increment_x=float(spec["increment_x"]),
            increment_y=float(spec["increment_y"]),
            sigma=_as_pair(spec["sigma"], "sigma"),
            holes=tuple(Hole.from_config(h) for h in spec.get("holes", [])),
        )

    @property
    def hole_names(self) -> str:
        return "+".join(h.name for h in self.holes)

    def labels(self) -> pd.DataFrame:
        """The label table: columns mu_x, mu_y, split ('train' or 'ood')."""
        grid = tile(self.increment_x, self.increment_y, self.size)
        in_hole = np.zeros(len(grid), dtype=bool)
        for hole in self.holes:
            in_hole |= hole.contains(grid)
        return pd.DataFrame({"mu_x": grid[:, 0], "mu_y": grid[:, 1], "split": np.where(in_hole, "ood", "train")})

    def validate(self) -> None:
        """Raise ValueError naming the problem if this dataset cannot be built.

        Cheap for hole-free datasets (no grid is built): it runs for every dataset whenever the
        Snakefile is parsed.
        """
        for axis, increment in (("x", self.increment_x), ("y", self.increment_y)):
            if not 0 < increment <= self.size:
                raise ValueError(f"increment_{axis} = {increment} must be in (0, {self.size}] (the canvas size)")
        if not self.holes:
            return
        for hole in self.holes:
            hole.check_inside(self.size)
        grid = tile(self.increment_x, self.increment_y, self.size)
        inside = [hole.contains(grid) for hole in self.holes]
        if np.logical_or.reduce(inside).all():
            raise ValueError(f"dataset {self.name!r}: its holes cover every label; nothing is left to train on")
        for hole, mask in zip(self.holes, inside, strict=True):
            if not mask.any():
                raise ValueError(
                    f"dataset {self.name!r}: hole {hole.name!r} contains no grid label at increments "
                    f"({self.increment_x}, {self.increment_y}); it would give an empty OOD test set"
                )


def read_labels(path) -> pd.DataFrame:
    """Read and check a labels.csv written by :meth:`BumpDataset.labels`."""
    table = pd.read_csv(path)
    missing = {"mu_x", "mu_y", "split"} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
    if table.empty:
        raise ValueError(f"{path}: no labels")
    bad = set(table["split"]) - {"train", "ood"}
    if bad:
        raise ValueError(f"{path}: unknown split value(s) {sorted(bad)}; expected 'train' or 'ood'")
    if not np.all(np.isfinite(table[["mu_x", "mu_y"]].to_numpy(dtype=np.float64))):
        raise ValueError(f"{path}: mu_x/mu_y must be finite numbers")
    return table


def preview_grid(images: np.ndarray, labels: np.ndarray | None = None, ncols: int = 8, ax_size: float = 1.0):
    """A matplotlib figure of images in a grid, with red dots at the true positions if given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * ax_size, nrows * ax_size), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if k >= n:
            continue
        ax.imshow(images[k], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        if labels is not None:
            # imshow puts pixel (row j, col i) at (i, j); label coordinate x sits at column x - 1.
            ax.plot(labels[k, 0] - 1, labels[k, 1] - 1, "r.", markersize=3)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return fig


def select_preview(table: pd.DataFrame, count: int, seed: int) -> pd.DataFrame:
    """A seeded sample of rows, at most ``count``, keeping OOD rows visible if there are any."""
    rng = np.random.default_rng(seed)
    ood = table.index[table["split"] == "ood"].to_numpy()
    train = table.index[table["split"] == "train"].to_numpy()
    n_ood = min(len(ood), count // 4)
    chosen = np.concatenate(
        [
            rng.choice(train, size=min(len(train), count - n_ood), replace=False),
            rng.choice(ood, size=n_ood, replace=False),
        ]
    )
    return table.loc[np.sort(chosen)]


def write_dataset(spec: BumpDataset, labels_csv, preview_png, preview_count: int = 32, seed: int = 0) -> None:
    """The dataset rule: labels.csv plus a preview sheet."""
    import matplotlib.pyplot as plt

    from diffcomp.io import save_figure, write_csv

    spec.validate()
    table = spec.labels()
    shown = select_preview(table, preview_count, seed)
    images = render(shown[["mu_x", "mu_y"]].to_numpy(), spec.size, spec.sigma)
    fig = preview_grid(images, shown[["mu_x", "mu_y"]].to_numpy())
    fig.suptitle(f"{spec.name}: {len(table)} labels, {int((table.split == 'ood').sum())} held out", fontsize=8)
    save_figure(fig, [preview_png])
    plt.close(fig)
    write_csv(labels_csv, table)


def sigma_label(sigma: Sequence[float]) -> float | str:
    """sigma for tables: a float when isotropic, 'sx/sy' otherwise."""
    return float(sigma[0]) if sigma[0] == sigma[1] else f"{sigma[0]:g}/{sigma[1]:g}"
