import math

import numpy as np
import pytest

from diffcomp.relational.audit import (
    FLAT_KEYS,
    TriplesFileError,
    audit_bindings,
    audit_file,
    audit_index_triples,
    audit_named_triples,
    flatten,
    format_audit,
    index_triples_to_rows,
    read_triples,
    role_metrics,
)
from diffcomp.relational.relations import RELATIONS, caption
from diffcomp.relational.splits import Split

# Three triples on a vocabulary of 4 (noun 3 never appears), as (top, bottom, relation):
# "a 0 is on top of a 1.", "a 0 is on top of a 2.", "a 2 is at the bottom of a 1.".
SMALL = np.array([[0, 1, 0], [0, 2, 0], [1, 2, 1]])


def test_small_case_by_hand():
    audit = audit_index_triples(SMALL, vocab_size=4)
    # Visual roles: tops {0, 0, 1}, bottoms {1, 2, 2}. Noun 0 is only ever on top and noun 2 only at
    # the bottom (0 ln 0 = 0 in their terms); noun 1 is once each: 2 ln 2 out of 2 |D| ln 2 = 6 ln 2.
    assert audit["visual"] == pytest.approx({"completeness_r1": 50.0, "completeness_r2": 50.0, "balance": 100 / 3})
    # Linguistic roles: subjects {0, 0, 2}, objects {1, 2, 1}: noun 2 is once each.
    assert audit["linguistic"] == pytest.approx({"completeness_r1": 50.0, "completeness_r2": 50.0, "balance": 100 / 3})
    assert audit["coverage"] == pytest.approx(100 * 3 / (2 * 4 * 3))
    assert audit["n_triples"] == 3


def test_absent_noun_lowers_completeness_only():
    with_absent, without = audit_index_triples(SMALL, 4), audit_index_triples(SMALL, 3)
    for view in ("visual", "linguistic"):
        assert with_absent[view]["balance"] == pytest.approx(without[view]["balance"])
        assert with_absent[view]["completeness_r1"] == pytest.approx(without[view]["completeness_r1"] * 3 / 4)


def test_duplicates_count_with_multiplicity_except_in_coverage():
    doubled = np.vstack([SMALL, SMALL[:1]])  # "a 0 is on top of a 1." twice
    audit = audit_index_triples(doubled, vocab_size=4)
    assert audit["n_triples"] == 4
    assert audit["coverage"] == audit_index_triples(SMALL, 4)["coverage"]
    # Visual: noun 1 is on top once and at the bottom twice: -ln(1/3) - 2 ln(2/3) = 3 ln 3 - 2 ln 2.
    expected = 100 * (3 * math.log(3) - 2 * math.log(2)) / (2 * 4 * math.log(2))
    assert audit["visual"]["balance"] == pytest.approx(expected)
    assert audit["visual"]["completeness_r1"] == 50.0


def test_role_metrics_extremes():
    # Every noun in both roles equally often: exactly 100, not 99.99999999999997.
    assert role_metrics([0, 1, 2], [1, 2, 0], 3) == {
        "completeness_r1": 100.0,
        "completeness_r2": 100.0,
        "balance": 100.0,
    }
    # One role per noun: balance 0.
    assert role_metrics([0, 0, 1], [2, 3, 3], 4)["balance"] == 0.0
    with pytest.raises(ValueError, match="no triples"):
        role_metrics([], [], 3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        role_metrics([0], [3], 3)


def test_relation_table_roles():
    # "a is below b" is the image of b above a: the same visual binding as "b is on top of a".
    below = audit_named_triples([("a", "below", "b")], 2)
    assert below["visual"] == audit_named_triples([("b", "on top of", "a")], 2)["visual"]
    assert below["linguistic"] == audit_named_triples([("a", "on top of", "b")], 2)["linguistic"]
    assert RELATIONS["at the bottom of"].subject_is_first is False
    assert RELATIONS["left of"].subject_is_first and RELATIONS["left of"].axis == "horizontal"


def test_synonyms_share_a_binding_and_axes_add_a_space():
    same = audit_named_triples([("a", "on top of", "b"), ("a", "above", "b")], 2)
    assert same["coverage"] == pytest.approx(100 / 4) and same["n_triples"] == 2
    # A horizontal triple adds a second phenomenon space of 2 N (N - 1) = 4 bindings.
    mixed = audit_named_triples([("a", "on top of", "b"), ("a", "left of", "b")], 2)
    assert mixed["coverage"] == pytest.approx(100 * 2 / 8)


def test_self_relation_and_too_many_nouns_rejected():
    with pytest.raises(ValueError, match="itself"):
        audit_bindings([0], [0], [True], [0], 3)
    with pytest.raises(ValueError, match="3 distinct nouns, more than the vocabulary size 2"):
        audit_named_triples([("a", "above", "b"), ("a", "above", "c")], 2)


def test_named_and_index_audits_agree_on_a_split():
    train, _ = Split.from_config({"name": "u", "family": "upper_triangle", "vocab_size": 7}).triples()
    names = [f"noun{k}" for k in range(7)]
    assert audit_named_triples(index_triples_to_rows(train, names), 7) == audit_index_triples(train, 7)


def test_rows_follow_caption_templates():
    names = ["star", "heart"]
    rows = index_triples_to_rows(np.array([[0, 1, 0], [0, 1, 1]]), names)
    assert rows == [("star", "on top of", "heart"), ("heart", "at the bottom of", "star")]
    assert caption("star", "heart", 0) == "a star is on top of a heart."
    assert caption("star", "heart", 1) == "a heart is at the bottom of a star."


def test_flatten_and_format():
    audit = audit_index_triples(SMALL, 4)
    flat = flatten(audit)
    assert tuple(flat) == FLAT_KEYS
    assert flat["visual.balance"] == audit["visual"]["balance"]
    text = format_audit(audit)
    assert "visual" in text and "linguistic" in text and "coverage: 12.50%" in text


def _write(tmp_path, text, name="triples.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_read_triples_normalises_and_ignores_extra_columns(tmp_path):
    path = _write(tmp_path, "\ufeffid,subject,relation,object\n1, star ,On Top  Of,heart\n\n2,sun,below,star\n")
    assert read_triples(path) == [("star", "on top of", "heart"), ("sun", "below", "star")]
    # Nouns are any strings, including ones pandas would read as missing values.
    path = _write(tmp_path, "subject,relation,object\nnan,above,NULL\n")
    assert audit_file(path, 2)["n_triples"] == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"empty file"),
        ("\n\n", r"empty file"),
        ("subject,relation,object\n", r"no triples below the header"),
        ("subject,object\nstar,heart\n", r"line 1: missing column\(s\) relation .*found: subject, object"),
        ("subject,relation,object\nstar,on top of,heart\nstar,beside,heart\n", r"line 3: unknown relation 'beside'"),
        ("subject,relation,object\nstar,on top of,star\n", r"line 2: noun 'star' is related to itself"),
        ("subject,relation,object\nstar,on top of\n", r"line 2: 2 field\(s\)"),
        ("subject,relation,object\n,on top of,heart\n", r"line 2: empty subject"),
    ],
)
def test_bad_csv_errors_name_the_problem(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(TriplesFileError, match=message) as info:
        audit_file(path, 10)
    assert str(path) in str(info.value)


def test_missing_file_and_vocabulary_overflow(tmp_path):
    with pytest.raises(TriplesFileError, match="cannot read"):
        audit_file(tmp_path / "absent.csv", 4)
    path = _write(tmp_path, "subject,relation,object\na,above,b\nc,below,d\n")
    with pytest.raises(TriplesFileError, match="4 distinct nouns, more than the vocabulary size 3"):
        audit_file(path, 3)
