"""File-level entry points of the figure rules: read the pipeline's outputs, draw, save PNG + PDF.

A figure job imports only its own figure's module (:func:`figure_module`), not the package
``diffcomp.bumps.figures`` that re-exports them all: the code a job runs, and so what reruns it
(diffcomp.code_digest), is that figure's module and what it imports, which the figure rules name.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from diffcomp.bumps.metrics import load_samples, read_metrics
from diffcomp.io import save_figure

FIGURES = ("phases", "phase_diagram", "sigma", "imbalance", "holes")


def figure_module(kind: str) -> str:
    """The module that draws figure ``kind``: ``diffcomp.bumps.figures.{kind}``, with ``{kind}_figure``."""
    if kind not in FIGURES:
        raise ValueError(f"unknown figure {kind!r}; expected one of {FIGURES}")
    return f"diffcomp.bumps.figures.{kind}"


def figure_function(kind: str):
    """Figure ``kind``'s drawing function, imported from its module alone."""
    return getattr(importlib.import_module(figure_module(kind)), f"{kind}_figure")


def run_checkpoints(metrics, run: str, samples_dir, embeddings_npz) -> dict[int, dict]:
    """``{step: checkpoint}`` for :func:`diffcomp.bumps.figures.phases_figure`: training-label samples, UMAP, phase."""
    rows = metrics[metrics["run"] == run].set_index("step")
    with np.load(embeddings_npz) as saved:
        embeddings = dict(zip(saved["steps"].tolist(), saved["embeddings"], strict=True))
    checkpoints = {}
    for path in sorted(Path(samples_dir).glob("step*.npz")):
        samples = load_samples(path)
        step = int(samples["step"])
        train = samples["split"] == "train"
        checkpoints[step] = {
            "step": step,
            "images": samples["images"][train].astype(np.float32),
            "labels": samples["labels"][train],
            "embedding": embeddings.get(step),
            "phase": rows.loc[step, "phase"] if step in rows.index else None,
            "accuracy": rows.loc[step, "accuracy"] if step in rows.index else None,
        }
    return checkpoints


def hole_panel(samples_dir, holes: list[dict]) -> tuple[np.ndarray, list[dict]]:
    """A generated held-out sample from the last checkpoint, with the holes to outline on it."""
    last = sorted(Path(samples_dir).glob("step*.npz"))[-1]
    samples = load_samples(last)
    ood = np.flatnonzero(samples["split"] == "ood")
    index = ood[0] if len(ood) else 0
    return samples["images"][index].astype(np.float32), holes


def make_figure(kind: str, metrics_csv, outputs, *, options: dict, phases_run=None, holes=None) -> None:
    """Draw figure ``kind`` (one of FIGURES) from the study's metrics table and save it to ``outputs``.

    phases_run: (run name, samples dir, embeddings.npz) for the phases figure.
    holes: {dataset: (samples dir, [hole dicts])} for the holes figure.
    """
    draw = figure_function(kind)
    metrics = read_metrics(metrics_csv)
    how = options["seed_aggregate"]
    if kind == "phases":
        run, samples_dir, embeddings_npz = phases_run
        fig = draw(run_checkpoints(metrics, run, samples_dir, embeddings_npz), run)
    elif kind == "phase_diagram":
        fig = draw(metrics, options["diagram_sigma"], how=how, accuracy=options["diagram_accuracy"])
    elif kind == "sigma":
        fig = draw(metrics, options["sigma_increments"] or None, how=how)
    elif kind == "imbalance":
        fig = draw(metrics)
    else:  # holes
        panels = {name: hole_panel(samples_dir, spec) for name, (samples_dir, spec) in (holes or {}).items()}
        fig = draw(metrics, panels)
    save_figure(fig, outputs)
