"""The relational study's data products: vocabularies (icons, pretraining captions) and splits.

Storage: a split is two CSVs of (subject, relation, object) rows in the audit CLI's format;
images are stacked from the vocabulary's cached icons on the fly (a pair image is two array
slices), so nothing per example is ever rendered or stored.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd

from diffcomp.relational.audit import TRIPLE_COLUMNS, index_triples_to_rows
from diffcomp.relational.icons import icon_sheet, load_icons, nouns, pair_images, render_icons, save_icons
from diffcomp.relational.relations import caption, single_object_caption
from diffcomp.relational.splits import BOTTOM, RELATION, TOP, Split


def pretraining_table(names: list[str]) -> pd.DataFrame:
    """Single-object examples for the pretraining stage: one row per noun (index, noun, caption)."""
    return pd.DataFrame(
        {"index": np.arange(len(names)), "noun": names, "caption": [single_object_caption(n) for n in names]}
    )


def triples_frame(triples: np.ndarray, names: list[str]) -> pd.DataFrame:
    """Index triples as the audit CLI's CSV table: subject, relation, object in mention order."""
    return pd.DataFrame(index_triples_to_rows(triples, names), columns=list(TRIPLE_COLUMNS))


def triples_from_frame(frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    """The inverse of :func:`triples_frame` for the two caption relations: int64 (n, 3) index triples."""
    index = {name: k for k, name in enumerate(names)}
    subject = frame["subject"].map(index).to_numpy()
    object_ = frame["object"].map(index).to_numpy()
    relation = frame["relation"].map({"on top of": 0, "at the bottom of": 1}).to_numpy()
    if pd.isna(subject).any() or pd.isna(object_).any() or pd.isna(relation).any():
        raise ValueError("triples name a noun outside the vocabulary or a relation other than the two captions")
    top = np.where(relation == 0, subject, object_)
    bottom = np.where(relation == 0, object_, subject)
    return np.stack([top, bottom, relation], axis=1).astype(np.int64)


def read_split_triples(path, names: list[str]) -> np.ndarray:
    """A split CSV (subject, relation, object) as int64 index triples (top, bottom, relation)."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        return triples_from_frame(frame, names)
    except (ValueError, KeyError) as err:
        raise ValueError(f"{path}: not a triples table of this vocabulary: {err}") from None


def write_vocabulary(vocab_size: int, icon_size: int, icons_npz, sheet_png, pretrain_csv) -> None:
    """The vocabulary rule: cached icons (.npz), their sheet (.png) and the pretraining captions."""
    import matplotlib.pyplot as plt

    from diffcomp.io import save_figure, write_csv

    names = nouns(vocab_size)
    icons = render_icons(vocab_size, icon_size)
    fig = icon_sheet(icons, names)
    fig.suptitle(f"{vocab_size} nouns, {icon_size} x {icon_size} icons (DejaVu Sans glyphs)", fontsize=8)
    save_figure(fig, [sheet_png])
    plt.close(fig)
    write_csv(pretrain_csv, pretraining_table(names))
    save_icons(icons_npz, icons, names)


def select_preview(train: np.ndarray, test: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded sample of training and test triples, half each (fewer if a side is small)."""
    rng = np.random.default_rng(seed)
    n_test = min(len(test), count // 2)
    n_train = min(len(train), count - n_test)

    def sample(triples, k):
        return triples[np.sort(rng.choice(len(triples), size=k, replace=False))]

    return sample(train, n_train), sample(test, n_test)


def preview_sheet(icons: np.ndarray, names: list[str], train: np.ndarray, test: np.ndarray, ncols: int = 6):
    """A figure of pair images with their captions; test examples are titled in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [("train", t) for t in train] + [("test", t) for t in test]
    nrows = max(1, -(-len(shown) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * 1.3, nrows * 2.0), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if k >= len(shown):
            continue
        part, triple = shown[k]
        image = pair_images(icons, triple[TOP], triple[BOTTOM])[0]
        ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        text = caption(names[triple[TOP]], names[triple[BOTTOM]], int(triple[RELATION]))
        ax.set_title(
            f"{part}\n" + textwrap.fill(text, 20),
            fontsize=5.5,
            color="black" if part == "train" else "tab:red",
            pad=2,
        )
    fig.subplots_adjust(wspace=0.3, hspace=0.45)
    return fig


def write_split(spec: dict, icons_npz, train_csv, test_csv, preview_png, preview_count: int = 12) -> Split:
    """The split rule: train/test triples as CSV and a preview sheet of both. Returns the split."""
    import matplotlib.pyplot as plt

    from diffcomp.io import save_figure, write_csv

    split = Split.from_config(spec)
    icons, names = load_icons(icons_npz)
    if len(names) != split.vocab_size:
        raise ValueError(f"{icons_npz} holds {len(names)} nouns, split {split.name!r} needs {split.vocab_size}")
    train, test = split.triples()
    fig = preview_sheet(icons, names, *select_preview(train, test, preview_count, split.seed))
    fig.suptitle(
        f"{split.name}: {split.describe()}, N = {split.vocab_size}, {len(train)} train / {len(test)} test triples",
        fontsize=8,
    )
    save_figure(fig, [preview_png])
    plt.close(fig)
    write_csv(test_csv, triples_frame(test, names))
    write_csv(train_csv, triples_frame(train, names))
    return split
