import math

import numpy as np
import pytest

from diffcomp.relational.audit import audit_index_triples
from diffcomp.relational.data import triples_frame, triples_from_frame
from diffcomp.relational.splits import FAMILIES, Split, SplitSpecError, all_triples, n_triples

SIZES = [4, 7, 10, 30]
FULL = {"completeness_r1": 100.0, "completeness_r2": 100.0, "balance": 100.0}


def split(family, n, **params):
    return Split.from_config({"name": family, "family": family, "vocab_size": n, **params})


def train_audit(family, n, **params):
    train, _ = split(family, n, **params).triples()
    return train, audit_index_triples(train, n)


@pytest.mark.parametrize("n", SIZES)
def test_universe(n):
    triples = all_triples(n)
    assert len(triples) == n_triples(n) == 2 * n * (n - 1)
    assert not np.any(triples[:, 0] == triples[:, 1])
    assert len(np.unique(triples, axis=0)) == len(triples)


def _params(family, n):
    return {"m": max(1, n // 10)} if family == "band" else {"size": n} if family == "random" else {}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("n", SIZES)
def test_train_and_test_partition_the_universe(family, n):
    train, test = split(family, n, **_params(family, n)).triples()
    assert len(train) and len(test)
    rows = {tuple(t) for t in train} | {tuple(t) for t in test}
    assert len(rows) == len(train) + len(test) == n_triples(n)


# (N, m) from the smallest band to the widest one that still leaves test pairs (m = N // 2 - 1).
@pytest.mark.parametrize(("n", "m"), [(4, 1), (7, 1), (7, 2), (10, 1), (10, 4), (30, 3), (30, 14)])
def test_band_is_complete_and_balanced(n, m):
    train, audit = train_audit("band", n, m=m)
    assert audit["visual"] == FULL and audit["linguistic"] == FULL
    # Every noun has 2m partners, each pair with both captions: coverage 2m / (N - 1).
    assert audit["coverage"] == pytest.approx(100 * 2 * m / (n - 1))
    distance = np.abs(train[:, 0] - train[:, 1])
    assert np.minimum(distance, n - distance).max() == m


def test_paper_band_is_about_a_fifth_of_the_space():
    assert train_audit("band", 30, m=3)[1]["coverage"] == pytest.approx(20.69, abs=0.01)


def ordered_pairs_balance(n: int) -> float:
    """The balance of roles where noun k fills o1 in 2 (n - 1 - k) triples and o2 in 2 k, out of
    n (n - 1): the README's formula written out (upper_triangle's visual roles, caption_by_order's
    linguistic ones). 61.00 for n = 8, 69.55 for n = 30."""
    total = 0.0
    for k in range(n):
        both = 2 * (n - 1)
        for count in (2 * (n - 1 - k), 2 * k):
            if count:
                total -= count * math.log(count / both)
    return 100 * total / (2 * n * (n - 1) * math.log(2))


@pytest.mark.parametrize("n", SIZES)
def test_upper_triangle_is_visually_incomplete_and_unbalanced(n):
    train, audit = train_audit("upper_triangle", n)
    assert np.all(train[:, 0] < train[:, 1])
    end_missing = 100 * (n - 1) / n  # noun N - 1 is never on top, noun 0 never at the bottom
    assert audit["visual"]["completeness_r1"] == pytest.approx(end_missing)
    assert audit["visual"]["completeness_r2"] == pytest.approx(end_missing)
    assert audit["visual"]["balance"] == pytest.approx(ordered_pairs_balance(n))
    # Both captions of every pair: each noun is mentioned first and second equally often.
    assert audit["linguistic"] == FULL
    assert audit["coverage"] == 50.0


@pytest.mark.parametrize("n", SIZES)
def test_bipartite_has_one_visual_role_per_noun(n):
    _, audit = train_audit("bipartite", n)
    half = n // 2
    assert audit["visual"] == pytest.approx(
        {"completeness_r1": 100 * half / n, "completeness_r2": 100 * (n - half) / n, "balance": 0.0}
    )
    if n % 2 == 0:
        assert audit["visual"]["completeness_r1"] == audit["visual"]["completeness_r2"] == 50.0
    assert audit["linguistic"] == FULL


@pytest.mark.parametrize("n", SIZES)
def test_one_sided_draws_only_second_half_at_the_bottom(n):
    train, audit = train_audit("one_sided", n)
    assert np.all(train[:, 1] >= n // 2)
    assert audit["visual"]["completeness_r1"] == 100.0
    assert audit["visual"]["completeness_r2"] == pytest.approx(100 * (n - n // 2) / n)
    assert 0 < audit["visual"]["balance"] < 100
    assert audit["linguistic"] == FULL


@pytest.mark.parametrize("n", SIZES)
def test_caption_by_order_is_visually_complete_with_linguistic_skew(n):
    train, audit = train_audit("caption_by_order", n)
    _, test = split("caption_by_order", n).triples()
    assert audit["visual"] == FULL
    assert audit["linguistic"]["completeness_r1"] == pytest.approx(100 * (n - 1) / n)
    assert audit["linguistic"]["balance"] == pytest.approx(ordered_pairs_balance(n))
    assert audit["coverage"] == 50.0
    # Each image once in training; its other caption is the test triple.
    pairs = train[:, :2]
    assert len(np.unique(pairs, axis=0)) == n * (n - 1)
    np.testing.assert_array_equal(pairs, test[:, :2])
    np.testing.assert_array_equal(train[:, 2], 1 - test[:, 2])


@pytest.mark.parametrize("n", SIZES)
def test_caption_bipartite_has_one_linguistic_role_per_noun(n):
    train, audit = train_audit("caption_bipartite", n)
    half = n // 2
    assert audit["linguistic"] == pytest.approx(
        {"completeness_r1": 100 * half / n, "completeness_r2": 100 * (n - half) / n, "balance": 0.0}
    )
    assert audit["visual"] == FULL
    # Only cross-half pairs, one caption each.
    assert np.all((train[:, 0] < half) != (train[:, 1] < half))
    assert len(np.unique(train[:, :2], axis=0)) == len(train)


def test_random_is_seeded_and_exact_in_size():
    first, _ = split("random", 30, size=348, seed=3).triples()
    again, _ = split("random", 30, size=348, seed=3).triples()
    other, _ = split("random", 30, size=348, seed=4).triples()
    assert len(first) == 348 and len(np.unique(first, axis=0)) == 348
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert audit_index_triples(first, 30)["coverage"] == 20.0


@pytest.mark.parametrize(
    ("spec", "key", "message"),
    [
        ({"family": "band", "vocab_size": 30, "m": 15}, "m", r"m = 15 is too large.*use m <= 14"),
        ({"family": "band", "vocab_size": 7, "m": 2}, None, None),  # the largest valid m at N = 7
        ({"family": "band", "vocab_size": 7, "m": 3}, "m", r"m = 3 is too large.*use m <= 2"),
        ({"family": "band", "vocab_size": 3, "m": 1}, "m", r"band needs vocab_size >= 4"),
        ({"family": "band", "vocab_size": 30}, None, r"needs parameter 'm'"),
        ({"family": "bipartite", "vocab_size": 30, "m": 3}, "m", r"takes no parameters; 'm' does not apply"),
        ({"family": "band", "vocab_size": 30, "m": 3, "size": 9}, "size", r"takes only m; 'size'"),
        ({"family": "random", "vocab_size": 4, "size": 24}, "size", r"between 1 and 23"),
        ({"family": "spiral", "vocab_size": 4}, "family", r"unknown family 'spiral'"),
    ],
)
def test_invalid_specs_name_the_parameter(spec, key, message):
    spec = {"name": "s", **spec}
    if message is None:
        Split.from_config(spec).triples()
        return
    with pytest.raises(SplitSpecError, match=message) as info:
        Split.from_config(spec)
    assert info.value.key == key


def test_describe():
    assert split("band", 30, m=3).describe() == "band(m=3)"
    assert split("bipartite", 30).describe() == "bipartite"


@pytest.mark.parametrize("family", ["band", "caption_by_order", "random"])
def test_csv_table_round_trip(family):
    train, _ = split(family, 10, **_params(family, 10)).triples()
    names = [f"noun{k}" for k in range(10)]
    frame = triples_frame(train, names)
    assert list(frame.columns) == ["subject", "relation", "object"]
    assert set(frame["relation"]) <= {"on top of", "at the bottom of"}
    np.testing.assert_array_equal(triples_from_frame(frame, names), train)
