"""Per-checkpoint evaluation of a relational run: which nouns a sample shows, and in which order.

A sample of the caption "top above bottom" is an image of height 2S and width S whose top
S x S half should show icon ``top`` and whose bottom half icon ``bottom``, each exactly where
the training images draw it (the icons fill their half, so there is no position to search).
Each half is classified on its own by template matching against every icon of the run's
vocabulary: the score of icon c is the normalised cross-correlation

    ncc(h, c) = sum((h - mean h) (c - mean c)) / (||h - mean h|| ||c - mean c||),

which is what ``cv2.matchTemplate(half, icon, cv2.TM_CCOEFF_NORMED)`` gives for a template of
the image's own size. It ignores brightness and contrast (a faint or grey glyph still matches
its icon) and lies in [-1, 1]. The predicted noun is the icon with the highest score, ties going
to the lower index. Halves and icons are z-scored once and scored with one matrix product per
chunk of images, so 100k samples take seconds and bounded memory. A half with (near-)zero
variance, a blank half, has no shape to match: it is predicted -1 with score 0, as is a half
with non-finite pixels (a diverged model).

A sample is correct when both halves show the right icon. A wrong sample is one of
:data:`FAILURE_KINDS`:

- ``swapped``: the top half shows the bottom noun and the bottom half the top noun, i.e. both
  nouns are drawn but in the wrong relation (the failure the relational skew study is about);
- ``one_wrong``: exactly one half is wrong (and the sample is not swapped);
- ``both_wrong``: both halves are wrong and the sample is not swapped (blank halves included).

Accuracy and the three failure fractions sum to 1. They are reported separately for the
samples of training triples and of test (held-out) triples, one row per checkpoint, next to the
run's description and the audit of its split (completeness, balance and coverage, in percent as
the audit writes them): :data:`METRIC_COLUMNS`.

Test accuracy is also split by the kind of held-out triple (:data:`HELD_OUT_KINDS`,
:func:`held_out_kind`): ``new_caption``, a new caption of a training image (the image "top above
bottom" is trained on with the other caption), and ``new_image``, an image never trained on (no
caption of the ordered pair is a training triple). ``test_{kind}_accuracy`` is the accuracy on the
test samples of that kind and ``n_test_{kind}_samples`` their number; a checkpoint with no test
sample of a kind (band, bipartite and the other families that train both captions of a pair have
no new captions) has NaN accuracy for it, never 0.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from diffcomp.io import write_csv
from diffcomp.relational.audit import FLAT_KEYS, flatten
from diffcomp.relational.data import triples_from_frame
from diffcomp.relational.icons import load_icons

log = logging.getLogger("diffcomp.relational.evaluate")

FAILURE_KINDS = ("swapped", "one_wrong", "both_wrong")
SPLITS = ("train", "test")
# Kinds of held-out triple: a new caption of a training image, or an image never trained on.
HELD_OUT_KINDS = ("new_caption", "new_image")

# Run description columns, in order; evaluate_run's ``info`` supplies them.
INFO_COLUMNS = [
    "run",
    "experiment",
    "split",
    "family",
    "vocab_size",
    "encoder",
    "pos_emb",
    "seed",
    "intervention",
    "intervention_params",
]
# Flattened audit key -> metrics column (n_triples is left out: the audit table has it).
AUDIT_COLUMNS = {key: key.replace(".", "_") for key in FLAT_KEYS if key != "n_triples"}

METRIC_COLUMNS = [
    *INFO_COLUMNS,
    "step",
    "train_accuracy",
    "test_accuracy",
    *(f"test_{kind}_accuracy" for kind in HELD_OUT_KINDS),
    "train_frac_swapped",
    "train_frac_one_wrong",
    "train_frac_both_wrong",
    "test_frac_swapped",
    "test_frac_one_wrong",
    "test_frac_both_wrong",
    "n_train_samples",
    "n_test_samples",
    *(f"n_test_{kind}_samples" for kind in HELD_OUT_KINDS),
    "visual_completeness_r1",
    "visual_completeness_r2",
    "visual_balance",
    "linguistic_completeness_r1",
    "linguistic_completeness_r2",
    "linguistic_balance",
    "coverage",
]

SAMPLE_KEYS = ("images", "top", "bottom", "relation", "split", "step")

# A half whose pixel standard deviation is below this (intensities in [0, 1]) counts as blank.
BLANK_STD = 1e-3
# Images scored per matrix product: bounds memory at about 2 * CHUNK * S^2 * 8 bytes per copy.
CHUNK = 4096

_STEP_FILE = re.compile(r"step(\d+)\.npz")


def _zscore_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows centred and scaled to unit norm (float64), and a mask of the rows with no shape.

    A row is shapeless when it has a non-finite pixel or a standard deviation below
    :data:`BLANK_STD`; its z-scored row is all zeros.
    """
    rows = np.array(rows, dtype=np.float64)  # a copy: rows are changed in place below
    shapeless = ~np.isfinite(rows).all(axis=1)
    rows[shapeless] = 0.0
    rows -= rows.mean(axis=1, keepdims=True)
    norm = np.sqrt(np.einsum("ij,ij->i", rows, rows))
    shapeless |= norm < BLANK_STD * np.sqrt(rows.shape[1])
    rows[shapeless] = 0.0
    norm[shapeless] = 1.0
    rows /= norm[:, None]
    return rows, shapeless


def _icon_templates(icons: np.ndarray) -> np.ndarray:
    """Z-scored icons as rows, (N, S*S) float64; a blank icon is an error."""
    icons = np.asarray(icons)
    if icons.ndim != 3 or icons.shape[1] != icons.shape[2] or len(icons) == 0:
        raise ValueError(f"icons must be a non-empty (N, S, S) array, got shape {icons.shape}")
    templates, blank = _zscore_rows(icons.reshape(len(icons), -1))
    if blank.any():
        raise ValueError(f"icon(s) {np.flatnonzero(blank).tolist()} are blank; nothing to match against")
    return templates


def ncc_scores(halves: np.ndarray, icons: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation of every S x S half with every icon: float64 (m, N).

    Same numbers as ``cv2.matchTemplate(half, icon, cv2.TM_CCOEFF_NORMED)``; a blank or
    non-finite half scores 0 against every icon.
    """
    halves = np.asarray(halves)
    templates = _icon_templates(icons)
    if halves.ndim != 3 or halves.shape[1:] != icons.shape[1:]:
        raise ValueError(f"halves must have shape (m, {icons.shape[1]}, {icons.shape[2]}), got {halves.shape}")
    rows, _ = _zscore_rows(halves.reshape(len(halves), -1))
    return rows @ templates.T


def predict_nouns(images: np.ndarray, icons: np.ndarray, chunk: int = CHUNK):
    """The noun each half of each image shows, by template matching (see the module docstring).

    images: (n, 2S, S) in [0, 1], any float dtype; icons: (N, S, S) in [0, 1].
    Returns ``(pred_top, pred_bottom, score_top, score_bottom)``: int64 (n,) icon indices, -1
    for a blank half, and float64 (n,) scores of the predicted icons, 0 for a blank half.
    """
    images = np.asarray(images)
    templates = _icon_templates(icons)
    size = np.shape(icons)[1]
    if images.ndim != 3 or images.shape[1:] != (2 * size, size):
        raise ValueError(
            f"images must have shape (n, {2 * size}, {size}) for {size}-pixel icons (one icon above another), "
            f"got {images.shape}"
        )
    n = len(images)
    pred = np.full((n, 2), -1, dtype=np.int64)
    score = np.zeros((n, 2), dtype=np.float64)
    for start in range(0, n, max(1, int(chunk))):
        block = images[start : start + chunk]
        m = len(block)
        # (m, 2S, S) -> (2m, S*S): row 2k is image k's top half, row 2k + 1 its bottom half.
        rows, shapeless = _zscore_rows(block.reshape(2 * m, size * size))
        scores = rows @ templates.T
        best = scores.argmax(axis=1)
        best_score = scores[np.arange(2 * m), best]
        best[shapeless] = -1
        best_score[shapeless] = 0.0
        pred[start : start + m] = best.reshape(m, 2)
        score[start : start + m] = best_score.reshape(m, 2)
    return pred[:, 0], pred[:, 1], score[:, 0], score[:, 1]


def score_predictions(pred_top, pred_bottom, top, bottom) -> dict[str, float]:
    """Accuracy (both halves right) and the fraction of samples in each failure kind.

    The four numbers sum to 1; with no samples they are all NaN.
    """
    pred_top, pred_bottom, top, bottom = (
        np.asarray(a, dtype=np.int64).ravel() for a in (pred_top, pred_bottom, top, bottom)
    )
    if not pred_top.shape == pred_bottom.shape == top.shape == bottom.shape:
        raise ValueError(
            f"predictions and labels must have one entry per sample, got shapes "
            f"{pred_top.shape}, {pred_bottom.shape}, {top.shape}, {bottom.shape}"
        )
    keys = ("accuracy", *(f"frac_{kind}" for kind in FAILURE_KINDS))
    if len(top) == 0:
        return dict.fromkeys(keys, float("nan"))
    right_top = pred_top == top
    right_bottom = pred_bottom == bottom
    correct = right_top & right_bottom
    swapped = ~correct & (pred_top == bottom) & (pred_bottom == top)
    one_wrong = (right_top != right_bottom) & ~swapped
    both_wrong = ~right_top & ~right_bottom & ~swapped
    return {
        key: float(np.mean(mask)) for key, mask in zip(keys, (correct, swapped, one_wrong, both_wrong), strict=True)
    }


def load_samples(path) -> dict:
    """A sampler's .npz: images (n, 2S, S), top, bottom, relation (n,) int64, split (n,) str, step.

    Raises ValueError naming the file when it cannot be read, a key is missing, or the arrays
    do not agree in shape.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in SAMPLE_KEYS if key not in data.files]
            samples = {key: data[key] for key in SAMPLE_KEYS if key in data.files}
    except Exception as err:
        raise ValueError(f"sample file {path} is corrupt or unreadable: {err}") from None
    if missing:
        raise ValueError(f"sample file {path}: missing array(s) {', '.join(missing)}")
    images = samples["images"]
    if images.ndim != 3 or images.shape[1] != 2 * images.shape[2]:
        raise ValueError(f"sample file {path}: images must have shape (n, 2S, S), got {images.shape}")
    n = len(images)
    for key in ("top", "bottom", "relation", "split"):
        if samples[key].shape != (n,):
            raise ValueError(
                f"sample file {path}: {key} has shape {samples[key].shape}, expected ({n},) for {n} images"
            )
    for key in ("top", "bottom", "relation"):
        if samples[key].dtype.kind not in "iu":
            raise ValueError(f"sample file {path}: {key} must be integers, got {samples[key].dtype}")
        samples[key] = samples[key].astype(np.int64)
    if samples["split"].dtype.kind != "U" or not np.isin(samples["split"], SPLITS).all():
        raise ValueError(f"sample file {path}: split must hold 'train' or 'test' only")
    if samples["step"].size != 1 or samples["step"].dtype.kind not in "iu":
        raise ValueError(f"sample file {path}: step must be one integer, got {samples['step']!r}")
    samples["step"] = int(samples["step"])
    return samples


def held_out_kind(top, bottom, train_triples) -> np.ndarray:
    """The kind of each held-out triple with image "``top`` above ``bottom``": str array (n,).

    ``"new_caption"`` when the ordered pair (top, bottom) is the image of a training triple (so
    the held-out triple is that image's other caption), ``"new_image"`` when no training triple
    shows it. ``train_triples``: the split's training index triples (top, bottom, relation).
    """
    top = np.asarray(top, dtype=np.int64).ravel()
    bottom = np.asarray(bottom, dtype=np.int64).ravel()
    if top.shape != bottom.shape:
        raise ValueError(f"top and bottom must have one entry per triple, got shapes {top.shape} and {bottom.shape}")
    train = np.asarray(train_triples, dtype=np.int64).reshape(-1, 3)
    size = int(max(top.max(initial=0), bottom.max(initial=0), train[:, :2].max(initial=0))) + 1
    trained = np.isin(top * size + bottom, train[:, 0] * size + train[:, 1])
    return np.where(trained, HELD_OUT_KINDS[0], HELD_OUT_KINDS[1])


def evaluate_checkpoint(samples: dict, icons: np.ndarray, train_triples=None) -> dict:
    """Accuracy and failure fractions of one checkpoint's samples, for train and test triples.

    Keys ``{train,test}_accuracy``, ``{train,test}_frac_{kind}`` and ``n_{train,test}_samples``;
    a split without samples has NaN fractions. With ``train_triples`` (the split's training index
    triples) also ``test_{kind}_accuracy`` and ``n_test_{kind}_samples`` for each kind of
    :data:`HELD_OUT_KINDS` (:func:`held_out_kind`), NaN accuracy for a kind without samples.
    """
    pred_top, pred_bottom, _, _ = predict_nouns(samples["images"], icons)
    split = np.asarray(samples["split"])
    row = {}
    for name in SPLITS:
        mask = split == name
        scores = score_predictions(pred_top[mask], pred_bottom[mask], samples["top"][mask], samples["bottom"][mask])
        row.update({f"{name}_{key}": value for key, value in scores.items()})
        row[f"n_{name}_samples"] = int(mask.sum())
    if train_triples is not None:
        kinds = np.full(len(split), "", dtype=object)
        test = split == "test"
        kinds[test] = held_out_kind(samples["top"][test], samples["bottom"][test], train_triples)
        for kind in HELD_OUT_KINDS:
            mask = kinds == kind
            scores = score_predictions(pred_top[mask], pred_bottom[mask], samples["top"][mask], samples["bottom"][mask])
            row[f"test_{kind}_accuracy"] = scores["accuracy"]
            row[f"n_test_{kind}_samples"] = int(mask.sum())
    return row


def _check_sides(samples: dict, train_triples: np.ndarray, path, train_csv) -> None:
    """ValueError unless every "train" sample is a training triple and no "test" sample is one."""
    sampled = np.stack([samples["top"], samples["bottom"], samples["relation"]], axis=1)
    size = int(max(sampled.max(initial=0), train_triples.max(initial=0))) + 1

    def code(triples: np.ndarray) -> np.ndarray:
        return (triples[:, 0] * size + triples[:, 1]) * size + triples[:, 2]

    trained = np.isin(code(sampled), code(train_triples))
    is_train = np.asarray(samples["split"]) == "train"
    wrong = np.flatnonzero(trained != is_train)
    if wrong.size:
        k = int(wrong[0])
        raise ValueError(
            f"{path}: sample {k} (top {sampled[k, 0]}, bottom {sampled[k, 1]}, relation {sampled[k, 2]}) is marked "
            f"{str(samples['split'][k])!r} but {'is' if trained[k] else 'is not'} a training triple of {train_csv}: "
            "the samples do not belong to this split"
        )


def _step_files(samples_dir) -> list[Path]:
    """The ``step<N>.npz`` files of a directory, in step order."""
    files = [path for path in Path(samples_dir).glob("step*.npz") if _STEP_FILE.fullmatch(path.name)]
    return sorted(files, key=lambda path: int(_STEP_FILE.fullmatch(path.name).group(1)))


def _read_audit(audit_json) -> dict:
    try:
        with open(audit_json) as handle:
            flat = flatten(json.load(handle))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"audit file {audit_json} is unreadable or not an audit: {err!r}") from None
    return {column: float(flat[key]) for key, column in AUDIT_COLUMNS.items()}


def _read_train_triples(train_csv, names: list[str]) -> np.ndarray:
    """The split's train.csv (subject, relation, object) as index triples; ValueError naming the file."""
    try:
        frame = pd.read_csv(train_csv, dtype=str, keep_default_na=False)
        return triples_from_frame(frame, names)
    except (OSError, ValueError, KeyError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ValueError(f"training triples {train_csv} are unreadable or not of this vocabulary: {err!r}") from None


def evaluate_run(samples_dir, icons_npz, audit_json, info: dict, out_csv, *, train_csv) -> pd.DataFrame:
    """Evaluate every ``step*.npz`` of a run's samples directory into one metrics table.

    ``info`` gives the run's description (:data:`INFO_COLUMNS`); ``audit_json`` is the audit of
    the run's split and ``train_csv`` its training triples (the split's train.csv, which tells
    the kinds of held-out triple apart); ``icons_npz`` the vocabulary's icons. One row per
    checkpoint in step order, written atomically to ``out_csv`` with :data:`METRIC_COLUMNS` and
    returned. Nothing is written when a file is missing, corrupt or does not fit the others, or
    when a sample marked "train" is not a training triple of ``train_csv`` or one marked "test"
    is (ValueError).
    """
    missing = [column for column in INFO_COLUMNS if column not in info]
    if missing:
        raise ValueError(f"run info lacks {', '.join(missing)}")
    files = _step_files(samples_dir)
    if not files:
        raise ValueError(f"no step*.npz sample files in {samples_dir} for run {info['run']}")
    try:
        icons, names = load_icons(icons_npz)
    except Exception as err:
        raise ValueError(f"icon file {icons_npz} is corrupt or unreadable: {err}") from None
    if len(icons) != int(info["vocab_size"]):
        raise ValueError(
            f"icon file {icons_npz} holds {len(icons)} icons, run {info['run']} has vocab_size {info['vocab_size']}"
        )
    audit = _read_audit(audit_json)
    train_triples = _read_train_triples(train_csv, names)
    description = {column: info[column] for column in INFO_COLUMNS}

    rows = []
    for path in files:
        started = time.perf_counter()
        samples = load_samples(path)
        size = samples["images"].shape[2]
        if icons.shape[1] != size:
            raise ValueError(
                f"icon size mismatch: {icons_npz} holds {icons.shape[1]}-pixel icons, "
                f"{path} holds images of {size}-pixel icons ({samples['images'].shape[1]} x {size})"
            )
        labels = np.concatenate([samples["top"], samples["bottom"]])
        if labels.size and (labels.min() < 0 or labels.max() >= len(icons)):
            raise ValueError(f"{path}: noun indices outside the {len(icons)} icons of {icons_npz}")
        _check_sides(samples, train_triples, path, train_csv)
        scores = evaluate_checkpoint(samples, icons, train_triples)
        row = {**description, "step": samples["step"], **scores, **audit}
        rows.append(row)
        log.info(
            "step %d: train accuracy %.3f (swapped %.3f), test accuracy %.3f (swapped %.3f; "
            "new captions of training images %s of %d, new images %s of %d) [%.1f s]",
            row["step"],
            row["train_accuracy"],
            row["train_frac_swapped"],
            row["test_accuracy"],
            row["test_frac_swapped"],
            _fraction_text(row["test_new_caption_accuracy"]),
            row["n_test_new_caption_samples"],
            _fraction_text(row["test_new_image_accuracy"]),
            row["n_test_new_image_samples"],
            time.perf_counter() - started,
        )
    table = pd.DataFrame(rows, columns=METRIC_COLUMNS).sort_values("step", kind="stable").reset_index(drop=True)
    duplicated = table["step"][table["step"].duplicated()].tolist()
    if duplicated:
        raise ValueError(f"{samples_dir}: more than one sample file for step(s) {duplicated}")
    write_csv(out_csv, table)
    return table


def _fraction_text(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{value:.3f}"


def read_metrics(path) -> pd.DataFrame:
    """A per-run (or combined) metrics table; ValueError naming the file and any missing column.

    Only empty cells are missing values, so string labels such as "none" or "NA" read back as
    written.
    """
    try:
        table = pd.read_csv(path, keep_default_na=False, na_values=[""])
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"metrics file {path} is unreadable: {err}") from None
    missing = [column for column in METRIC_COLUMNS if column not in table.columns]
    if missing:
        raise ValueError(f"metrics file {path}: missing column(s) {', '.join(missing)}")
    return table


def combine_metrics(paths, out_csv) -> pd.DataFrame:
    """Concatenate per-run metrics tables, in the order given, into one table written atomically."""
    paths = list(paths)
    if not paths:
        raise ValueError("no metrics files to combine")
    table = pd.concat([read_metrics(path) for path in paths], ignore_index=True)
    write_csv(out_csv, table)
    return table
