"""Figure ``samples``: one checkpoint's generated images with their captions and predicted nouns."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from diffcomp.plotting import no_data, no_data_figure
from diffcomp.relational.figures.style import CORRECT_COLOUR, WRONG_COLOUR
from diffcomp.relational.relations import caption


def _noun(names: Sequence[str], index: int) -> str:
    if index < 0:
        return "blank"
    return str(names[index]) if index < len(names) else f"#{index}"


def _caption_text(names: Sequence[str], top: int, bottom: int, relation: int) -> str:
    try:
        return caption(_noun(names, top), _noun(names, bottom), int(relation))
    except ValueError:
        return f"{_noun(names, top)} / {_noun(names, bottom)} (relation {relation})"


def sample_grid_figure(
    samples: Mapping,
    icons,
    names: Sequence[str],
    pred_top,
    pred_bottom,
    max_per_split: int = 8,
    *,
    seed: int = 0,
    title: str | None = None,
) -> Figure:
    """Generated images with their captions: a row of training triples, then a row of test triples.

    samples: a checkpoint's samples (``images`` (n, 2S, S) in [0, 1], 1 = white, ``top``,
    ``bottom``, ``relation``, ``split`` ('train'/'test'), ``step``); icons: the vocabulary
    (N, S, S) or None, used to check the image size; names: the noun names; pred_top,
    pred_bottom: the noun (index, -1 = blank) each half shows, e.g. from
    ``diffcomp.relational.evaluate.predict_nouns``. Up to ``max_per_split`` samples per split (a
    seeded choice, in file order) are shown, titled with their wrapped caption; frame and title are
    green when both predicted nouns are right and red otherwise, and the predicted nouns are written
    under each image. Each row's title gives the split's accuracy over all of its samples; ``title``
    (e.g. the run) prefixes the figure's title.
    Axes: ``max(shown)`` per row, each image axis labelled "split:index" (a "no data" axis when
    there are no samples).
    """
    if int(max_per_split) < 1:
        raise ValueError(f"max_per_split must be >= 1, got {max_per_split!r}")
    images = np.asarray(samples.get("images", np.zeros((0, 2, 1))), dtype=np.float32)
    n = len(images)
    if images.ndim != 3 or n == 0:
        return no_data_figure(f"{title}: no samples" if title else "no samples")
    if icons is not None and np.shape(icons)[1:] and images.shape[1:] != (2 * np.shape(icons)[1], np.shape(icons)[2]):
        raise ValueError(f"images of shape {images.shape[1:]} do not stack two icons of shape {np.shape(icons)[1:]}")
    top = np.asarray(samples["top"], dtype=np.int64).ravel()
    bottom = np.asarray(samples["bottom"], dtype=np.int64).ravel()
    relation = np.asarray(samples["relation"], dtype=np.int64).ravel()
    split = np.asarray(samples["split"]).astype(str).ravel()
    pred_top = np.asarray(pred_top, dtype=np.int64).ravel()
    pred_bottom = np.asarray(pred_bottom, dtype=np.int64).ravel()
    sizes = {len(a) for a in (top, bottom, relation, split, pred_top, pred_bottom)}
    if sizes != {n}:
        raise ValueError(f"samples and predictions must have one entry per image ({n}), got lengths {sorted(sizes)}")
    correct = (pred_top == top) & (pred_bottom == bottom)
    rng = np.random.default_rng(seed)
    rows = []
    for part in ("train", "test"):
        members = np.flatnonzero(split == part)
        pick = np.sort(rng.choice(members, size=min(len(members), int(max_per_split)), replace=False))
        rows.append((part, members, pick))
    ncols = max(1, max(len(pick) for _, _, pick in rows))
    fig = Figure(figsize=(max(5.0, 1.25 * ncols + 0.3), 2 * 3.2 + 0.4), layout="constrained")
    step = samples.get("step")
    when = f" at step {int(np.asarray(step))}" if step is not None and np.size(step) == 1 else ""
    prefix = f"{title}: g" if title else "G"
    fig.suptitle(f"{prefix}enerated samples{when}: green = both nouns right, red = wrong", fontsize=10)
    for subfig, (part, members, pick) in zip(fig.subfigures(2, 1, hspace=0.03), rows, strict=True):
        axes = np.atleast_1d(subfig.subplots(1, ncols, squeeze=False)[0])
        if len(members):
            accuracy = correct[members].mean()
            subfig.suptitle(
                f"{part} triples: {len(pick)} of {len(members)} shown; accuracy {accuracy:.2f} "
                f"({int(correct[members].sum())}/{len(members)})",
                fontsize=9,
                x=0.01,
                ha="left",
            )
        else:
            subfig.suptitle(f"{part} triples", fontsize=9, x=0.01, ha="left")
        for ax in axes:
            ax.set_axis_off()
        if not len(pick):
            axes[0].set_axis_on()
            no_data(axes[0], f"no {part}\nsamples")
            for spine in axes[0].spines.values():
                spine.set_visible(False)
            continue
        for ax, index in zip(axes, pick, strict=False):
            ax.set_axis_on()
            ax.set_label(f"{part}:{index}")
            ax.imshow(images[index], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            colour = CORRECT_COLOUR if correct[index] else WRONG_COLOUR
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(2.5)
            text = _caption_text(names, top[index], bottom[index], relation[index])
            ax.set_title(textwrap.fill(text, 16), fontsize=6.5, color=colour)
            predicted = f"pred: {_noun(names, pred_top[index])} / {_noun(names, pred_bottom[index])}"
            ax.set_xlabel(textwrap.fill(predicted, 18), fontsize=6.5, color=colour)
    return fig
