"""Whether a quick run still shows the findings its figures are about.

    python bench/quick_findings.py [RESULTS]      (default results/; exit 1 when one does not hold)

A change that makes `make run` faster (fewer steps, checkpoints or samples) must not lose them:

- bumps: every run's phases come in the order A -> B -> C (none goes back);
- bumps: off-grid accuracy falls with the grid increment, Spearman's rho <= -0.8 between increment
  and accuracy_offgrid (the sigma-1 square grids) at every checkpoint from the middle one on, as
  the phase diagram's verdict states it (diffcomp.bumps.figures.trend);
- relational: the baseline's band run fits its training triples (train accuracy >= 0.8) and
  generalises where bipartite does not (band test accuracy >= bipartite test accuracy + 0.5), at
  the final checkpoint.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffcomp.bumps.figures.trend import TREND_RHO, _middle_on, increment_trend  # noqa: E402
from diffcomp.relational.results import final_rows  # noqa: E402

PHASE_ORDER = {"A": 0, "B": 1, "C": 2}
BAND_TRAIN = 0.8
BAND_OVER_BIPARTITE = 0.5


def bump_findings(metrics: pd.DataFrame, sigma: float = 1.0) -> list[tuple[str, bool, str]]:
    """(finding, holds, the numbers behind it) for the bump study's metrics table."""
    out = []
    for run, rows in metrics.sort_values("step").groupby("run"):
        ranks = [PHASE_ORDER[p] for p in rows["phase"]]
        phases = " ".join(rows["phase"])
        out.append((f"{run}: phases in order", all(a <= b for a, b in itertools.pairwise(ranks)), phases))
    offgrid = metrics.assign(accuracy=metrics["accuracy_offgrid"])
    trend = increment_trend(offgrid, sigma).dropna(subset=["rho"])
    late = _middle_on(trend)
    rhos = ", ".join(f"{r.rho:+.2f} at {int(r.step)}" for r in trend.itertuples())
    holds = not late.empty and bool((late["rho"] <= -TREND_RHO).all())
    out.append((f"off-grid rho <= -{TREND_RHO} from step {int(late['step'].iloc[0])} on", holds, rhos))
    return out


def relational_findings(metrics: pd.DataFrame, baseline: str = "baseline") -> list[tuple[str, bool, str]]:
    """(finding, holds, numbers) for the relational study's metrics table (its final checkpoint)."""
    rows = final_rows(metrics[metrics["experiment"] == baseline])
    final = rows.groupby("split")[["train_accuracy", "test_accuracy"]].mean()
    band, bipartite = final.loc["band"], final.loc["bipartite"]
    return [
        (f"band train accuracy >= {BAND_TRAIN}", band["train_accuracy"] >= BAND_TRAIN, f"{band['train_accuracy']:.2f}"),
        (
            f"band test >= bipartite test + {BAND_OVER_BIPARTITE}",
            band["test_accuracy"] >= bipartite["test_accuracy"] + BAND_OVER_BIPARTITE,
            f"{band['test_accuracy']:.2f} vs {bipartite['test_accuracy']:.2f}",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    findings = bump_findings(pd.read_csv(args.results / "bumps" / "metrics.csv"))
    findings += relational_findings(pd.read_csv(args.results / "relational" / "metrics.csv"))
    for name, holds, numbers in findings:
        print(f"{'holds' if holds else 'FAILS'}  {name}: {numbers}")
    return 0 if all(holds for _, holds, _ in findings) else 1


if __name__ == "__main__":
    sys.exit(main())
