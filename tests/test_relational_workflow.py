"""End to end: the real workflow CLI on a config with only a (tiny) relational section."""

import json

import pandas as pd
import pytest
import yaml
from conftest import run_snakemake

from diffcomp.relational.audit import FLAT_KEYS, audit_file, audit_index_triples, flatten
from diffcomp.relational.icons import load_icons, nouns
from diffcomp.relational.splits import Split, n_triples

N = 8
SPLITS = [
    {"name": "band1", "family": "band", "vocab_size": N, "m": 1},
    {"name": "bipartite", "family": "bipartite", "vocab_size": N},
    {"name": "by_order", "family": "caption_by_order", "vocab_size": N},
    {"name": "random", "family": "random", "vocab_size": N, "size": 20, "seed": 5},
]


@pytest.mark.slow
def test_workflow_builds_splits_audits_and_figures(workdir):
    config = {"relational": {"icon_size": 16, "preview_count": 4, "splits": SPLITS}}
    (workdir / "relational.yaml").write_text(yaml.safe_dump(config))
    run_snakemake(workdir, "--configfile", "relational.yaml", "--cores", "2")
    results = workdir / "results" / "relational"

    table = pd.read_csv(results / "audit.csv")
    assert list(table.columns) == ["split", "family", "vocab_size", *FLAT_KEYS]
    assert table["split"].tolist() == [spec["name"] for spec in SPLITS]
    assert table["family"].tolist() == ["band(m=1)", "bipartite", "caption_by_order", "random(size=20)"]
    assert (results / "audit.png").stat().st_size > 10_000
    assert (workdir / "results" / "logs" / "relational" / "audit_figure.log").exists()

    icons, names = load_icons(results / "vocab" / f"N{N}_S16" / "icons.npz")
    assert icons.shape == (N, 16, 16) and names == nouns(N)
    assert pd.read_csv(results / "vocab" / f"N{N}_S16" / "pretrain.csv")["noun"].tolist() == nouns(N)

    for k, spec in enumerate(SPLITS):
        split_dir = results / "splits" / spec["name"]
        expected_train, _ = Split.from_config(spec).triples()
        expected = flatten(audit_index_triples(expected_train, N))
        # audit.json is exactly what `diffcomp audit train.csv --vocab-size N --json` writes ...
        written = json.loads((split_dir / "audit.json").read_text())
        assert written == audit_file(split_dir / "train.csv", N)
        # ... it matches the library's audit of the split's index triples, and so does its table row.
        assert flatten(written) == pytest.approx(expected)
        assert table.iloc[k][list(FLAT_KEYS)].to_dict() == pytest.approx(expected)
        train, test = pd.read_csv(split_dir / "train.csv"), pd.read_csv(split_dir / "test.csv")
        assert list(train.columns) == ["subject", "relation", "object"]
        assert len(train) == len(expected_train) and len(train) + len(test) == n_triples(N)
        assert (split_dir / "preview.png").stat().st_size > 5_000

    bipartite = table.set_index("split").loc["bipartite"]
    assert bipartite["visual.completeness_r1"] == 50.0 and bipartite["visual.balance"] == 0.0
    assert table.set_index("split").loc["band1", "linguistic.balance"] == 100.0

    # Nothing is left to do, and the dry run of a second call agrees.
    again = run_snakemake(workdir, "--configfile", "relational.yaml", "--cores", "2", "-n")
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.slow
def test_bad_relational_config_stops_the_workflow_naming_the_key(workdir):
    config = {"relational": {"splits": [{"name": "b", "family": "band", "vocab_size": N, "m": 4}]}}
    (workdir / "relational.yaml").write_text(yaml.safe_dump(config))
    proc = run_snakemake(workdir, "--configfile", "relational.yaml", "--cores", "1", "-n", check=False)
    assert proc.returncode != 0
    assert "relational.splits[0].m (split 'b'): m = 4 is too large for vocab_size = 8" in proc.stdout + proc.stderr
