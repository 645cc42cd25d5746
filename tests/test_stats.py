"""Intervals over seeds (diffcomp.stats): bounded for proportions and their paired differences, none for one seed."""

import itertools

import numpy as np
import pandas as pd
import pytest

from diffcomp.stats import aggregate_seeds, paired_difference_interval, proportion_interval, wilson_interval

T_975_DF1 = 12.706204736174707
T_975_DF2 = 4.302652729749464

# per-seed proportions: all wrong, all right, mixed, one seed at each end, on 2 and 3 seeds
EXTREMES = [
    values
    for n in (2, 3)
    for values in (
        [0.0] * n,
        [1.0] * n,
        [0.0] * (n - 1) + [1.0],
        [1.0] * (n - 1) + [0.0],
        list(np.linspace(0.1, 0.9, n)),
    )
]


@pytest.mark.parametrize("values", EXTREMES)
@pytest.mark.parametrize("samples", [1, 16, 64])
def test_proportion_interval_stays_in_the_unit_interval_with_a_width(values, samples):
    estimate, low, high = proportion_interval(values, [samples] * len(values))
    assert estimate == pytest.approx(np.mean(values))
    assert 0.0 <= low <= estimate <= high <= 1.0
    assert high - low > 0.0  # also when every seed is at 0 or every seed at 1


def test_proportion_interval_by_hand():
    """Seeds at 2/4, 3/4 and 4/4: pooled 9/12 = 0.75.

    Between-seed variance of the ratio estimator: residuals m_i (p_i - p) / M = -1/12, 0, 1/12,
    k / (k - 1) * sum of squares = 3/2 * 2/144 = 1/48; binomial p (1 - p) / M = 0.1875 / 12 = 1/64;
    design effect 64/48 = 4/3, effective sample size 12 / (4/3) = 9; Wilson at q = t_{0.975, 2}.
    """
    estimate, low, high = proportion_interval([0.5, 0.75, 1.0], [4, 4, 4])
    p, n, q = 0.75, 9.0, T_975_DF2
    centre = (p + q**2 / (2 * n)) / (1 + q**2 / n)
    half = q / (1 + q**2 / n) * np.sqrt(p * (1 - p) / n + q**2 / (4 * n**2))
    assert estimate == pytest.approx(0.75)
    assert (low, high) == pytest.approx((centre - half, centre + half), abs=1e-12)
    assert (low, high) == pytest.approx((0.188762, 0.974798), abs=1e-6)


def test_design_effect_is_floored_at_one():
    """Seeds that agree more than binomial noise allows get the binomial Wilson interval of all samples."""
    _, low, high = proportion_interval([0.5, 0.5, 0.5], [20, 20, 20])
    expected = wilson_interval(0.5, 60, T_975_DF2)
    assert (low, high) == pytest.approx(tuple(float(v) for v in expected))
    # every seed right: the interval of 0 errors in 2 x 64 samples at t_{0.975, 1}, not a point
    _, low, high = proportion_interval([1.0, 1.0], [64, 64])
    assert high == pytest.approx(1.0) and low == pytest.approx(1 / (1 + T_975_DF1**2 / 128))


def test_proportion_interval_pools_by_samples_and_skips_unknown_seeds():
    # 1 of 2 and 9 of 10: pooled 10 / 12, not the mean of the two proportions
    estimate, low, high = proportion_interval([0.5, 0.9], [2, 10])
    assert estimate == pytest.approx(10 / 12) and low < estimate < high
    # a seed with no samples of the kind (NaN value, count 0) or without a count does not enter
    assert proportion_interval([0.5, 0.9, np.nan, 0.2], [2, 10, 0, np.nan]) == (estimate, low, high)


def test_one_seed_has_no_interval():
    estimate, low, high = proportion_interval([0.7], [64])
    assert estimate == pytest.approx(0.7) and np.isnan(low) and np.isnan(high)
    assert all(np.isnan(proportion_interval([np.nan, np.nan], [0, 0])))
    difference, low, high = paired_difference_interval([0.7], [64], [0.2], [64])
    assert difference == pytest.approx(0.5) and np.isnan(low) and np.isnan(high)


def test_values_outside_the_unit_interval_are_refused():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        proportion_interval([0.5, 1.5], [10, 10])
    with pytest.raises(ValueError, match="one sample count per value"):
        proportion_interval([0.5, 0.5], [10])


@pytest.mark.parametrize("a, b", list(itertools.product(EXTREMES[:5], EXTREMES[:5])))
def test_paired_difference_stays_in_its_range(a, b):
    difference, low, high = paired_difference_interval(a, [64] * len(a), b, [64] * len(b))
    assert difference == pytest.approx(np.mean(a) - np.mean(b))
    assert -1.0 <= low <= difference <= high <= 1.0
    if a != b:
        assert high - low > 0.0
    # identical arms: every seed's difference is exactly 0, and the pairing removes what the arms
    # share; the interval keeps only the asymmetry of the arms' intervals (none at exactly 0.5)


def test_paired_difference_is_newcombes_interval_from_the_arms():
    """Arms whose seeds do not co-vary (r = 0): Newcombe's hybrid score interval of the two arms'
    intervals, d -/+ sqrt of the sum of the squared distances to the opposite limits."""
    a, b = [0.5, 0.75, 1.0], [0.5, 0.5, 0.5]  # b has no spread: covariance 0
    counts = [4, 4, 4]
    pa, la, ua = proportion_interval(a, counts)
    pb, lb, ub = proportion_interval(b, counts)
    difference, low, high = paired_difference_interval(a, counts, b, counts)
    assert difference == pytest.approx(0.25)
    assert low == pytest.approx(difference - np.sqrt((pa - la) ** 2 + (ub - pb) ** 2))
    assert high == pytest.approx(difference + np.sqrt((ua - pa) ** 2 + (pb - lb) ** 2))


def test_pairing_narrows_the_interval_of_runs_that_move_together():
    base = [0.2, 0.5, 0.8]  # the seeds differ a lot, the effect (+0.1) does not
    other = [0.3, 0.6, 0.9]
    difference, low, high = paired_difference_interval(other, [64] * 3, base, [64] * 3)
    _, la, ua = proportion_interval(other, [64] * 3)
    _, lb, ub = proportion_interval(base, [64] * 3)
    unpaired = np.hypot(0.6 - la, ub - 0.5) + np.hypot(ua - 0.6, 0.5 - lb)
    assert difference == pytest.approx(0.1)
    assert high - low < 0.5 * unpaired


def test_aggregate_seeds_pools_proportions_and_leaves_other_columns_on_the_t_interval():
    table = pd.DataFrame(
        {
            "split": ["a", "a", "a", "b"],
            "seed": [0, 1, 2, 0],
            "accuracy": [0.5, 0.75, 1.0, 0.3],
            "n": [4, 4, 4, 10],
            "r2": [0.2, 0.4, 0.9, 0.5],
        }
    )
    agg = aggregate_seeds(table.iloc[::-1], ["split"], ["accuracy", "r2"], counts={"accuracy": "n"}).set_index("split")
    assert tuple(agg.loc["a", ["accuracy", "accuracy_lo", "accuracy_hi"]]) == proportion_interval(
        [0.5, 0.75, 1.0], [4] * 3
    )
    sd = np.std([0.2, 0.4, 0.9], ddof=1)
    assert agg.loc["a", "r2_lo"] == pytest.approx(0.5 - T_975_DF2 * sd / np.sqrt(3))
    assert agg.loc["a", "accuracy_n"] == 3 and agg.loc["a", "n_seeds"] == 3
    # one seed: the value, no interval
    assert agg.loc["b", "accuracy"] == pytest.approx(0.3) and agg.loc["b", "r2"] == pytest.approx(0.5)
    assert agg.loc["b", ["accuracy_lo", "accuracy_hi", "r2_lo", "r2_hi"]].isna().all()
    with pytest.raises(ValueError, match="not value columns"):
        aggregate_seeds(table, ["split"], ["r2"], counts={"accuracy": "n"})
    with pytest.raises(ValueError, match="lacks"):
        aggregate_seeds(table, ["split"], ["accuracy"], counts={"accuracy": "n_samples"})
