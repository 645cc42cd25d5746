"""Per-checkpoint evaluation of a run: accuracy, failure modes, representation quality, phase."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from diffcomp.bumps.data import BumpDataset, sigma_label
from diffcomp.bumps.evaluate import accuracy, contour_fractions, predict_positions
from diffcomp.io import atomic_path, write_csv
from diffcomp.representation import umap_r2

log = logging.getLogger("diffcomp.metrics")

METRIC_COLUMNS = [
    "run",
    "increment_x",
    "increment_y",
    "sigma",
    "hole",
    "seed",
    "step",
    "accuracy",
    "accuracy_x",
    "accuracy_y",
    "r2_x",
    "r2_y",
    "frac_none",
    "frac_single",
    "frac_multi",
    "phase",
    "accuracy_ood",
    "accuracy_offgrid",  # not in the paper's table: accuracy at shared labels off the training grid
    "dataset",  # not in the paper's table; keeps grouping by dataset simple
    # samples behind accuracy, accuracy_ood and accuracy_offgrid (their binomial noise)
    "n_samples",
    "n_ood",
    "n_offgrid",
]


def classify_phase(frac_single: float, accuracy_joint: float, r2_mean: float, thresholds: dict) -> str:
    """The three learning phases of Liang et al.

    A: no structure yet (fewer than ``phase_single_min`` of the samples show exactly one bump);
    C: accurate and ordered (accuracy >= ``phase_accuracy_min`` and mean R^2 >= ``phase_r2_min``);
    B: in between (single bumps, but at wrong places or on an unordered manifold).
    """
    if frac_single < thresholds["phase_single_min"]:
        return "A"
    if accuracy_joint >= thresholds["phase_accuracy_min"] and r2_mean >= thresholds["phase_r2_min"]:
        return "C"
    return "B"


def run_name(dataset: str, seed: int) -> str:
    return f"{dataset}_seed{seed}"


def load_samples(path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except Exception as err:
        raise ValueError(f"sample file {path} is corrupt or unreadable: {err}") from None


def evaluate_checkpoint(samples: dict, thresholds: dict, umap_neighbors: int, seed: int) -> tuple[dict, np.ndarray]:
    """Metrics of one checkpoint's samples and the 3-D UMAP embedding of its training-label samples."""
    images = samples["images"].astype(np.float32)
    train = samples["split"] == "train"
    positions, counts = predict_positions(images)
    acc = accuracy(samples["labels"][train], positions[train])
    row = {"accuracy": acc["joint"], "accuracy_x": acc["x"], "accuracy_y": acc["y"], **contour_fractions(counts[train])}
    rep = umap_r2(samples["activations"][train].astype(np.float32), samples["labels"][train], seed, umap_neighbors)
    row["r2_x"], row["r2_y"] = rep["r2_x"], rep["r2_y"]
    row["n_samples"] = int(train.sum())
    for split in ("ood", "offgrid"):
        chosen = samples["split"] == split
        row[f"accuracy_{split}"] = (
            accuracy(samples["labels"][chosen], positions[chosen])["joint"] if chosen.any() else np.nan
        )
        row[f"n_{split}"] = int(chosen.sum())
    r2_mean = np.nanmean([row["r2_x"], row["r2_y"]])
    row["phase"] = classify_phase(row["frac_single"], row["accuracy"], r2_mean, thresholds)
    return row, rep["embedding"].astype(np.float32)


def evaluate_run(
    evaluation: dict, dataset_spec: dict, seed: int, sample_files, metrics_csv, embeddings_npz
) -> pd.DataFrame:
    """Evaluate every checkpoint of a run in one process (UMAP's numba JIT is paid once per run).

    ``evaluation`` is the config's bumps.evaluation section; ``dataset_spec`` the dataset's
    definition including ``image_size``.
    """
    dataset = BumpDataset.from_config(dataset_spec, dataset_spec["image_size"])
    thresholds = evaluation
    files = sorted(Path(f) for f in sample_files)
    if not files:
        raise ValueError(f"no sample files to evaluate for {dataset.name} seed {seed}")
    rows, embeddings, labels, steps = [], [], [], []
    for path in files:
        started = time.perf_counter()
        samples = load_samples(path)
        row, embedding = evaluate_checkpoint(samples, thresholds, thresholds["umap_neighbors"], seed)
        step = int(samples["step"])
        rows.append(
            {
                "run": run_name(dataset.name, seed),
                "dataset": dataset.name,
                "increment_x": dataset.increment_x,
                "increment_y": dataset.increment_y,
                "sigma": sigma_label(dataset.sigma),
                "hole": dataset.hole_names or np.nan,
                "seed": seed,
                "step": step,
                **row,
            }
        )
        embeddings.append(embedding)
        labels.append(samples["labels"][samples["split"] == "train"])
        steps.append(step)
        log.info(
            "step %d: accuracy %.3f, R2 (%.2f, %.2f), phase %s [%.1f s]",
            step,
            row["accuracy"],
            row["r2_x"],
            row["r2_y"],
            row["phase"],
            time.perf_counter() - started,
        )
    table = pd.DataFrame(rows, columns=METRIC_COLUMNS).sort_values("step")
    with atomic_path(embeddings_npz) as tmp:
        np.savez_compressed(tmp, steps=np.array(steps), embeddings=np.stack(embeddings), labels=np.stack(labels))
    write_csv(metrics_csv, table)
    return table


def read_metrics(path) -> pd.DataFrame:
    table = pd.read_csv(path)
    missing = set(METRIC_COLUMNS) - set(table.columns)
    if missing:
        raise ValueError(f"{path}: missing metric column(s) {sorted(missing)}")
    return table


def combine_metrics(paths, out_csv) -> pd.DataFrame:
    """Concatenate per-run metric tables into the tidy study table, sorted by run and step."""
    table = pd.concat([read_metrics(p) for p in paths], ignore_index=True)
    table = table.sort_values(["dataset", "seed", "step"], kind="stable").reset_index(drop=True)
    write_csv(out_csv, table)
    return table
