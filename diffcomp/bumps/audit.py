"""Completeness/balance audit of a Gaussian-bump dataset."""

from __future__ import annotations

import numpy as np
import pandas as pd

from diffcomp.bumps.data import BumpDataset, render


def marginal_coverage(values: np.ndarray, size: int) -> dict:
    """Counts per unit bin of [0, S] and their normalised entropy (1 = perfectly even).

    np.histogram's last bin is closed, so a label at exactly S lands in [S-1, S].
    """
    counts, _ = np.histogram(values, bins=np.arange(size + 1))
    total = counts.sum()
    if total == 0:
        return {"counts": counts.tolist(), "normalised_entropy": 0.0, "empty_bins": int(size)}
    p = counts[counts > 0] / total
    entropy = float(-(p * np.log(p)).sum() / np.log(size))
    return {"counts": counts.tolist(), "normalised_entropy": entropy, "empty_bins": int((counts == 0).sum())}


def neighbour_overlap(size: int, sigma, offset: tuple[float, float]) -> float:
    """||sqrt(a * b)||_2 / ||a||_2 for the inverted bumps a at the canvas centre and b at centre + offset.

    Appendix B.5 of Liang et al. 2024: how much two neighbouring training images share; it is
    1 for identical images and falls towards 0 as the increment grows relative to sigma.
    """
    centre = (size + 1) / 2.0
    labels = np.array([[centre, centre], [centre + offset[0], centre + offset[1]]])
    a, b = 1.0 - render(labels, size, sigma).astype(np.float64)
    return float(np.linalg.norm(np.sqrt(a * b)) / np.linalg.norm(a))


def audit(spec: BumpDataset, table: pd.DataFrame) -> dict:
    """The audit.json content for a dataset and its label table."""
    train = table[table["split"] == "train"]
    n, n_ood = len(table), int((table["split"] == "ood").sum())
    return {
        "dataset": spec.name,
        "image_size": spec.size,
        "increment_x": spec.increment_x,
        "increment_y": spec.increment_y,
        "sigma_x": spec.sigma[0],
        "sigma_y": spec.sigma[1],
        "holes": [h.name for h in spec.holes],
        "n_images": n,
        "n_train": n - n_ood,
        "n_ood": n_ood,
        "hole_fraction": n_ood / n,
        "coverage_x": marginal_coverage(train["mu_x"].to_numpy(), spec.size),
        "coverage_y": marginal_coverage(train["mu_y"].to_numpy(), spec.size),
        "neighbour_overlap_x": neighbour_overlap(spec.size, spec.sigma, (spec.increment_x, 0.0)),
        "neighbour_overlap_y": neighbour_overlap(spec.size, spec.sigma, (0.0, spec.increment_y)),
    }
