import copy
from pathlib import Path

import pytest
import yaml

from diffcomp.config import ConfigError, load_config, load_schema, validate_config
from diffcomp.relational.config import packs, split_specs, vocab_sizes
from diffcomp.relational.splits import FAMILIES, Split

REPO = Path(__file__).resolve().parents[1]


def quick_section() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())["relational"]


@pytest.mark.parametrize("name", ["config.yaml", "config.medium.yaml", "config.paper.yaml"])
def test_shipped_sections_build_every_split(name):
    section = load_config(REPO / name)["relational"]
    specs = split_specs(section)
    assert specs and vocab_sizes(section)
    families = {spec["family"] for spec in specs.values()}
    assert families == set(FAMILIES)  # each shipped config shows every family
    for spec in specs.values():
        train, test = Split.from_config(spec).triples()
        assert len(train) and len(test)


def test_defaults_are_filled_in():
    config = validate_config({"relational": {"splits": [{"name": "b", "family": "bipartite", "vocab_size": 10}]}})
    assert config["relational"]["icon_size"] == 32
    assert config["relational"]["preview_count"] == 12
    assert config["relational"]["splits"][0]["seed"] == 0


def test_schema_families_match_the_library_and_every_key_is_described():
    schema = load_schema("relational")
    assert set(schema["$defs"]["split"]["properties"]["family"]["enum"]) == set(FAMILIES)

    def undescribed(properties, where):
        for key, sub in properties.items():
            if "description" not in sub:
                yield f"{where}.{key}"
            yield from undescribed(sub.get("properties", {}), f"{where}.{key}")

    missing = [
        *undescribed(schema["properties"], "relational"),
        *undescribed(schema["$defs"]["split"]["properties"], "split"),
    ]
    assert not missing
    assert schema["additionalProperties"] is False and schema["$defs"]["split"]["additionalProperties"] is False


def _broken(edit):
    section = quick_section()
    edit(section)
    return {"relational": section}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s["splits"][0].update(m=15), r"relational\.splits\[0\]\.m \(split 'band'\): m = 15 is too large"),
        (
            lambda s: s["splits"][0].pop("m"),
            r"relational\.splits\[0\] \(split 'band'\): family 'band' needs parameter 'm'",
        ),
        (
            lambda s: s["splits"][2].update(m=3),
            r"relational\.splits\[2\]\.m \(split 'bipartite'\): .*takes no parameters",
        ),
        (lambda s: s["splits"][6].update(size=112), r"relational\.splits\[6\]\.size .*between 1 and 111"),
        (
            lambda s: s["splits"].append(copy.deepcopy(s["splits"][1])),
            r"relational\.splits\[7\]\.name: split name 'upper_triangle' is used twice "
            r"\(first at relational\.splits\[1\]\)",
        ),
        (lambda s: s["splits"][1].update(vocab_size=500), r"relational\.splits\[1\]\.vocab_size: 500 nouns requested"),
        (
            lambda s: s["splits"][1].update(vocab_size=1),
            r"relational\.splits\[1\]\.vocab_size: 1 is less than the minimum of 2",
        ),
        (lambda s: s["splits"][0].update(family="spiral"), r"relational\.splits\[0\]\.family: 'spiral' is not one of"),
        (lambda s: s["splits"][0].update(name="a/b"), r"relational\.splits\[0\]\.name: 'a/b' does not match"),
        (lambda s: s.update(icon_size=8), r"relational\.icon_size: 8 is less than the minimum of 16"),
        (lambda s: s.update(colour="red"), r"relational: Additional properties .*'colour'"),
        (lambda s: s.update(splits=[]), r"relational\.splits: \[\] should be non-empty"),
        (lambda s: s.update(pack_size=0), r"relational\.pack_size: 0 is less than the minimum of 1"),
    ],
)
def test_bad_values_name_key_and_rule(edit, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(_broken(edit))


def test_packs_cut_each_packable_experiments_runs_in_config_order():
    section = load_config(REPO / "config.paper.yaml")["relational"]
    assert packs(section) == {}  # pack_size 1: every run trains alone
    section["pack_size"] = 4
    plan = packs(section)
    # t5_trained (a trained encoder) and the two contrastive experiments train alone
    assert list(plan) == ["baseline", "no_pos_emb", "t5_random", "wiclp"]
    baseline = [run for pack in plan["baseline"] for run in pack]
    assert [len(pack) for pack in plan["baseline"]] == [4] * 22 + [2]
    assert baseline[:4] == [("n30_band", 0), ("n30_band", 1), ("n30_band", 2), ("n30_upper_triangle", 0)]
    assert len(baseline) == len(set(baseline)) == 30 * 3
    assert [len(pack) for pack in plan["wiclp"]] == [4, 4, 1]
