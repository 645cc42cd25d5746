"""The results tables of the README and docs/ are written from committed snapshots of runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("results_tables", REPO / "tools" / "results_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_results_table_in_the_docs_is_the_one_its_snapshot_gives():
    tool = _tool()
    tables = tool.render_tables()
    for page in tool.PAGES:
        text = page.read_text()
        assert tool.render_page(text, tables) == text, (
            f"{page.relative_to(REPO)}: a results table differs from its snapshot: run "
            "`python tools/results_tables.py write`"
        )


def _summary_row(experiment, split, family, reference, test, lo, hi, diff=None, n_seeds=3):
    return {
        "experiment": experiment,
        "split": split,
        "family": family,
        "intervention": "baseline",
        "reference": reference,
        "step": 1200,
        "n_seeds": n_seeds,
        "train_accuracy": 1.0,
        "train_accuracy_lo": 0.9,
        "train_accuracy_hi": 1.0,
        "test_accuracy": test,
        "test_accuracy_lo": lo,
        "test_accuracy_hi": hi,
        "test_new_caption_accuracy": float("nan"),
        "test_new_image_accuracy": test,
        "test_diff": diff,
        "test_diff_lo": None if diff is None else diff - 0.1,
        "test_diff_hi": None if diff is None else diff + 0.1,
        "n_paired": 0 if diff is None else 3,
    }


@pytest.fixture
def snapshot(tmp_path):
    folder = tmp_path / "medium"
    folder.mkdir()
    rows = [
        _summary_row("baseline", "band", "band(m=2)", "baseline", 0.97, 0.9, 1.0),
        _summary_row("baseline", "bipartite", "bipartite", "baseline", 0.0, 0.0, 0.02),
        _summary_row("t5_random", "band", "band(m=2)", "baseline", 0.2, 0.1, 0.35, diff=-0.77),
    ]
    pd.DataFrame(rows).to_csv(folder / "relational_summary.csv", index=False)
    final = [
        {
            "experiment": e,
            "split": s,
            "seed": seed,
            "step": 1200,
            "train_accuracy": 1.0,
            "test_accuracy": t + seed / 100,
        }
        for e, s, t in (("baseline", "band", 0.96), ("baseline", "bipartite", 0.0), ("t5_random", "band", 0.19))
        for seed in range(3)
    ]
    pd.DataFrame(final).assign(
        test_new_caption_accuracy=None, test_new_image_accuracy=0.5, test_frac_swapped=0.0
    ).to_csv(folder / "relational_final.csv", index=False)
    provenance = {"command": "make run-medium", "seconds": 4621, "date": "2026-12-07", "machine": "2-core x86_64"}
    (folder / "provenance.json").write_text(json.dumps({**provenance, "commit": "abc1234"}))
    return tmp_path


def test_tables_are_rendered_from_the_snapshot(snapshot):
    tool = _tool()
    tables = tool.render_tables(snapshot, with_workflow_tables=False)
    assert set(tables) == {"provenance-medium", "relational-medium", "relational-medium-effects"}
    assert tables["provenance-medium"] == (
        "`make run-medium` in 77 min 1 s on a 2-core x86_64, 2026-12-07, commit abc1234.\n"
    )
    families = tables["relational-medium"].splitlines()
    assert families[2] == (
        "| band (complete, balanced) | 1.00 | **0.97** [0.90, 1.00] | 0.96 / 0.97 / 0.98 |  | 0.97 | 96.9-99.1 |"
    )
    effects = tables["relational-medium-effects"].splitlines()
    assert (
        effects[2]
        == "| t5_random | band | baseline | 1.00 | 0.20 (0.19 / 0.20 / 0.21) | 0.97 | **-0.77** [-0.87, -0.67] |"
    )


def test_a_page_block_is_replaced_and_an_unknown_one_refused(snapshot):
    tool = _tool()
    tables = tool.render_tables(snapshot, with_workflow_tables=False)
    page = "intro\n<!-- results:provenance-medium -->\nold\n<!-- /results:provenance-medium -->\nend\n"
    assert tool.render_page(page, tables) == (
        "intro\n<!-- results:provenance-medium -->\n" + tables["provenance-medium"]
        + "<!-- /results:provenance-medium -->\nend\n"
    )  # fmt: skip
    with pytest.raises(KeyError, match="no results table named 'nope'"):
        tool.render_page("<!-- results:nope -->\nx\n<!-- /results:nope -->", tables)


def test_a_snapshot_needs_a_finished_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the workflow first"):
        _tool().take_snapshot("quick", tmp_path / "results", "make run", None, out=tmp_path / "out")
