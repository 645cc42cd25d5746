"""File-level entry point of the rule ``relational_figure``: draw one figure from the pipeline's files, save it."""

from __future__ import annotations

import os
from pathlib import Path

from diffcomp.io import save_figure
from diffcomp.plotting import no_data_figure
from diffcomp.relational.figures.ablation import ablation_figure
from diffcomp.relational.figures.curves import curves_figure
from diffcomp.relational.figures.interventions import interventions_figure
from diffcomp.relational.figures.samples import sample_grid_figure
from diffcomp.relational.figures.scatter import scatter_figure
from diffcomp.relational.figures.skew import skew_figure
from diffcomp.relational.results import read_relational_metrics

FIGURES = ("curves", "scatter", "skew", "ablation", "interventions", "samples")


def _run_label(samples_npz) -> str:
    """The run of ``.../{experiment}/{split}/seed{N}/samples/step*.npz`` as "experiment/split/seedN", else the stem."""
    path = Path(samples_npz)
    parents = path.parent.parts
    if path.parent.name == "samples" and len(parents) >= 4:
        return "/".join(parents[-4:-1])
    return path.stem


def write_relational_figure(kind: str, metrics_csv, outputs, *, baseline: str, samples_npz=None, icons_npz=None):
    """Draw figure ``kind`` (one of :data:`FIGURES`) and save it to every path in ``outputs``.

    The metrics CSV is read first (it may be None for "samples" only); an unreadable file or a
    missing column raises ValueError naming the file and the columns, before anything is written.
    "samples" draws :func:`sample_grid_figure` from ``samples_npz`` (one checkpoint's samples) and
    ``icons_npz`` (the run's vocabulary), predicting the nouns with
    ``diffcomp.relational.evaluate.predict_nouns``; with no ``samples_npz`` it draws a "no samples"
    figure. A samples file at ``.../{experiment}/{split}/seed{seed}/samples/step*.npz`` is titled
    with its run ("experiment/split/seedN").
    """
    if kind not in FIGURES:
        raise ValueError(f"unknown relational figure {kind!r}; expected one of {FIGURES}")
    outputs = [outputs] if isinstance(outputs, (str, os.PathLike)) else list(outputs)
    metrics = None
    if metrics_csv is not None or kind != "samples":
        metrics = read_relational_metrics(metrics_csv)
    if kind == "samples":
        if samples_npz is None:
            fig = no_data_figure("no samples (the run has no checkpoint yet)")
        elif icons_npz is None:
            raise ValueError(f"the samples figure of {samples_npz} needs the run's icons (icons_npz)")
        else:
            from diffcomp.relational.evaluate import load_samples, predict_nouns
            from diffcomp.relational.icons import load_icons

            samples = load_samples(samples_npz)
            icons, names = load_icons(icons_npz)
            pred_top, pred_bottom, _, _ = predict_nouns(samples["images"], icons)
            fig = sample_grid_figure(samples, icons, names, pred_top, pred_bottom, title=_run_label(samples_npz))
    else:
        draw = {
            "curves": curves_figure,
            "scatter": scatter_figure,
            "skew": skew_figure,
            "ablation": ablation_figure,
            "interventions": interventions_figure,
        }
        fig = draw[kind](metrics, baseline)
    save_figure(fig, outputs)
    return fig
