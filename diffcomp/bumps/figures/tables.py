"""The bump study's metrics table as the figures read it: dtypes, phases, holes, the isotropic grid."""

from __future__ import annotations

import os
import re

import numpy as np
import pandas as pd

from diffcomp.bumps.metrics import METRIC_COLUMNS

PHASES = ("A", "B", "C")
_RUN_SUFFIX = re.compile(r"_seed\d+$")


def load_metrics(metrics) -> pd.DataFrame:
    """The metrics table as a DataFrame (a copy), with a ``dataset`` column and numeric columns coerced.

    ``metrics`` is a DataFrame or a path to ``metrics.csv``. ``sigma`` is kept as given (it may be
    "sx/sy"); its numeric value, NaN for anisotropic bumps, is added as ``sigma_value``.
    """
    if isinstance(metrics, (str, os.PathLike)):
        metrics = pd.read_csv(metrics)
    table = metrics.copy()
    if "dataset" not in table.columns:
        if "run" not in table.columns:
            raise ValueError("metrics table needs a 'dataset' or a 'run' column")
        table["dataset"] = table["run"].astype(str).str.replace(_RUN_SUFFIX, "", regex=True)
    numeric = [c for c in METRIC_COLUMNS if c not in ("run", "dataset", "sigma", "hole", "seed", "phase")]
    for column in numeric:
        if column in table.columns:
            table[column] = pd.to_numeric(table[column], errors="coerce")
    if "sigma" in table.columns:
        table["sigma_value"] = pd.to_numeric(table["sigma"], errors="coerce")
    if "phase" in table.columns:
        table["phase"] = table["phase"].map(_phase_or_none)
    return table


def _phase_or_none(value):
    if value is None or (np.ndim(value) == 0 and pd.isna(value)):
        return None
    text = str(np.asarray(value)).strip().upper()
    return text if text in PHASES else None


def _has_hole(table: pd.DataFrame) -> pd.Series:
    if "hole" not in table.columns:
        return pd.Series(False, index=table.index)
    text = table["hole"].astype(str).str.strip().str.lower()
    return table["hole"].notna() & ~text.isin(["", "nan", "none"])


def _isotropic_grid(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of hole-free datasets with equal increments and a numeric (isotropic) sigma."""
    keep = (
        np.isclose(table["increment_x"], table["increment_y"])
        & table["sigma_value"].notna()
        & ~_has_hole(table)
        & table["step"].notna()
    )
    out = table[keep].copy()
    out["increment"] = out["increment_x"]
    out["r2_mean"] = (out["r2_x"] + out["r2_y"]) / 2.0
    return out
