import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from diffcomp.bumps import figures as F
from diffcomp.bumps import render
from diffcomp.io import save_figure

STEPS = [0, 1000, 2000, 4000]
T_975_DF2 = 4.302652729911275  # Student t, two-sided 95%, 2 degrees of freedom


def _rows(dataset, inc_x, inc_y, sigma, hole, seeds, steps, rng):
    rows = []
    for seed in seeds:
        for k, step in enumerate(steps):
            progress = (k + 1) / len(steps)
            acc = float(np.clip(progress * (1.5 - inc_x / 4) + rng.normal(0, 0.05), 0, 1))
            rows.append(
                {
                    "run": f"{dataset}_seed{seed}",
                    "dataset": dataset,
                    "increment_x": inc_x,
                    "increment_y": inc_y,
                    "sigma": sigma,
                    "hole": hole,
                    "seed": seed,
                    "step": step,
                    "accuracy": acc,
                    "accuracy_x": min(1.0, acc + 0.1),
                    "accuracy_y": acc * 0.8,
                    "r2_x": acc - 0.3,  # negative early: the colour scale must cope
                    "r2_y": acc * 0.9,
                    "frac_none": 0.0,
                    "frac_single": 1.0,
                    "frac_multi": 0.0,
                    "phase": "A" if progress < 0.4 else ("B" if progress < 0.8 else "C"),
                    "accuracy_ood": acc * 0.5 if hole is not None else np.nan,
                }
            )
    return rows


@pytest.fixture(scope="module")
def metrics():
    rng = np.random.default_rng(0)
    rows = []
    for inc in (0.5, 1.0, 2.0):
        for sigma in (0.5, 1.0):
            rows += _rows(f"inc{inc:g}_sig{sigma:g}", inc, inc, sigma, None, [0, 1, 2], STEPS, rng)
    rows += _rows("imb_1x2", 1.0, 2.0, 1.0, None, [0, 1], STEPS, rng)
    rows += _rows("imb_aniso", 0.5, 1.0, "1/2", None, [0], STEPS, rng)  # one seed, non-numeric sigma
    rows += _rows("hole_centre", 1.0, 1.0, 1.0, "centre", [0, 1, 2], STEPS, rng)
    rows += _rows("hole_rect", 1.0, 1.0, 1.0, "r", [3], [500], rng)  # one seed, single step
    return pd.DataFrame(rows)


def _save(fig, tmp_path, name="fig"):
    paths = [tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"]
    save_figure(fig, paths)
    for path in paths:
        assert path.stat().st_size > 0
    import matplotlib.image

    png = matplotlib.image.imread(paths[0])
    assert png.shape[0] > 0 and png.shape[1] > 0
    return paths[0]


# -------------------------------------------------------------------------------- aggregate_seeds


def test_aggregate_mean_and_t_interval_by_hand():
    table = pd.DataFrame(
        {
            "dataset": ["d"] * 3 + ["e"],
            "seed": [0, 1, 2, 0],
            "step": [10, 10, 10, 10],
            "accuracy": [0.2, 0.4, 0.9, 0.7],
        }
    )
    agg = F.aggregate_seeds(table.iloc[::-1], ["dataset", "step"], ["accuracy"])
    d = agg.set_index("dataset").loc["d"]
    sd = np.sqrt(((0.2 - 0.5) ** 2 + (0.4 - 0.5) ** 2 + (0.9 - 0.5) ** 2) / 2)
    half = T_975_DF2 * sd / np.sqrt(3)
    assert d["accuracy"] == pytest.approx(0.5)
    assert d["accuracy_lo"] == pytest.approx(0.5 - half)
    assert d["accuracy_hi"] == pytest.approx(0.5 + half)
    assert d["accuracy_n"] == 3 and d["n_seeds"] == 3
    # one seed: the value, and no interval
    e = agg.set_index("dataset").loc["e"]
    assert e["accuracy"] == pytest.approx(0.7) and np.isnan(e["accuracy_lo"]) and np.isnan(e["accuracy_hi"])
    assert list(agg["dataset"]) == ["d", "e"]


def test_aggregate_best_is_max_nan_ignored_and_deterministic(metrics):
    best = F.aggregate_seeds(metrics, ["dataset", "step"], ["accuracy", "accuracy_ood"], how="best")
    expected = metrics.groupby(["dataset", "step"])["accuracy"].max()
    got = best.set_index(["dataset", "step"])["accuracy"]
    assert np.allclose(got.loc[expected.index], expected)
    no_hole = best[best["dataset"] == "inc1_sig1"]
    assert no_hole["accuracy_ood"].isna().all() and (no_hole["accuracy_ood_n"] == 0).all()
    shuffled = metrics.sample(frac=1.0, random_state=3)
    pd.testing.assert_frame_equal(
        best, F.aggregate_seeds(shuffled, ["dataset", "step"], ["accuracy", "accuracy_ood"], how="best")
    )
    mean = F.aggregate_seeds(metrics, ["dataset", "step"], ["accuracy"])
    pd.testing.assert_frame_equal(mean, F.aggregate_seeds(shuffled, ["dataset", "step"], ["accuracy"]))


def test_aggregate_all_nan_and_mixed_keys():
    table = pd.DataFrame(
        {"sigma": [1.0, "1/2", 1.0, np.nan], "seed": [0, 0, 1, 0], "r2_x": [np.nan, np.nan, np.nan, 0.5]}
    )
    agg = F.aggregate_seeds(table, ["sigma"], ["r2_x"])
    assert agg["sigma"].tolist()[:2] == [1.0, "1/2"] and pd.isna(agg["sigma"].iloc[2])
    assert agg["r2_x"].isna().tolist() == [True, True, False]
    assert agg["r2_x_lo"].isna().tolist() == [True, True, True]  # one value: no interval
    with pytest.raises(ValueError, match="how"):
        F.aggregate_seeds(table, ["sigma"], ["r2_x"], how="median")


def test_load_metrics_derives_dataset_and_reads_csv(metrics, tmp_path):
    path = tmp_path / "metrics.csv"
    metrics.drop(columns="dataset").to_csv(path, index=False)
    table = F.load_metrics(path)
    assert set(table["dataset"]) == set(metrics["dataset"])
    assert table.loc[table["dataset"] == "imb_aniso", "sigma_value"].isna().all()
    assert table.loc[table["dataset"] == "inc1_sig1", "sigma_value"].eq(1.0).all()


# -------------------------------------------------------------------------------- phases


def test_choose_phase_checkpoints_in_order():
    table = pd.DataFrame({"step": [0, 100, 200, 300, 400, 500], "phase": ["A", "A", "B", "B", "C", "C"]})
    assert list(F.choose_phase_checkpoints(table).items()) == [("A", 100), ("B", 300), ("C", 400)]
    # rows in any order; a noisy late B does not push B past the first C
    noisy = pd.DataFrame({"step": [500, 0, 300, 200, 100], "phase": ["B", "A", "C", "B", "A"]})
    assert F.choose_phase_checkpoints(noisy) == {"A": 100, "B": 200, "C": 300}


def test_choose_phase_checkpoints_missing_phase_omitted():
    assert F.choose_phase_checkpoints(pd.DataFrame({"step": [0, 10], "phase": ["A", "B"]})) == {"A": 0, "B": 10}
    assert F.choose_phase_checkpoints(pd.DataFrame({"step": [0, 10], "phase": ["A", "C"]})) == {"A": 0, "C": 10}
    assert F.choose_phase_checkpoints(pd.DataFrame({"step": [5], "phase": [np.nan]})) == {}
    with pytest.raises(ValueError, match="one run"):
        F.choose_phase_checkpoints(pd.DataFrame({"run": ["a", "b"], "step": [0, 1], "phase": ["A", "B"]}))


def _checkpoint(phase, step, n=40, size=16, quality=1.0, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.uniform(1, size, size=(n, 2))
    images = render(labels, size, 1.0)
    embedding = np.column_stack([labels[:, 0], labels[:, 1] * quality, rng.normal(size=n)])
    return {"step": step, "phase": phase, "images": images, "labels": labels, "embedding": embedding}


def test_phases_figure_three_rows(tmp_path):
    cks = {s: _checkpoint(p, s, seed=s) for p, s in [("A", 0), ("A", 100), ("B", 200), ("C", 300), ("C", 400)]}
    fig = F.phases_figure(cks, "inc1_sig1_seed0")
    assert isinstance(fig, Figure)
    assert sum(ax.name == "3d" for ax in fig.axes) == 3
    assert len(fig.axes) == 3 * 3  # per row: the 5x5 sample mosaic, the UMAP, its colorbar
    mosaic = fig.axes[0].images[0].get_array()
    assert mosaic.shape == (5 * 16, 5 * 16)  # 25 tiles of 16 px
    assert len(fig.axes[0].patches) == 25  # tile frames
    assert len(fig.axes[0].lines[0].get_xdata()) == 25
    titles = [sf.get_suptitle() for sf in fig.subfigs]
    assert [t.split(":")[0] for t in titles] == ["phase A", "phase B", "phase C"]
    assert "step 100" in titles[0] and "step 300" in titles[2] and "accuracy 1.00" in titles[2]
    _save(fig, tmp_path)


def test_phases_figure_missing_phase_and_degenerate(tmp_path):
    # sequence input, one checkpoint without an embedding, phase C never reached, fewer than 25 images
    cks = [_checkpoint("A", 0, n=10), dict(_checkpoint("B", 50, n=10), embedding=None, accuracy=0.25)]
    fig = F.phases_figure(cks, "run")
    assert sum(ax.name == "3d" for ax in fig.axes) == 2
    assert len(fig.axes) == 3 + 2  # the row without an embedding has no colorbar
    assert "accuracy 0.25" in fig.subfigs[1].get_suptitle()
    _save(fig, tmp_path)
    empty = F.phases_figure({0: {"images": np.ones((2, 8, 8)), "labels": np.ones((2, 2)), "phase": None}}, "run")
    assert len(empty.axes) == 1 and "no checkpoint" in empty.axes[0].texts[0].get_text()


# -------------------------------------------------------------------------------- heat maps


def test_phase_diagram_figure(metrics, tmp_path):
    fig = F.phase_diagram_figure(metrics, sigma=1.0)
    assert len(fig.axes) == 4  # two heat maps, two colorbars
    acc_ax = fig.axes[0]
    assert [t.get_text() for t in acc_ax.get_yticklabels()] == ["0.5", "1", "2"]
    assert [t.get_text() for t in acc_ax.get_xticklabels()] == ["0", "1k", "2k", "4k"]
    # best of seeds in the annotations; hole and imbalanced datasets are left out
    best = metrics[metrics["dataset"] == "inc1_sig1"].groupby("step")["accuracy"].max()
    texts = [t.get_text() for t in acc_ax.texts]
    assert len(texts) == 12 and f"{best.loc[4000]:.2f}" in texts
    _save(fig, tmp_path)
    assert len(F.phase_diagram_figure(metrics, sigma=1.0, how="mean").axes) == 4


def test_phase_diagram_degenerate(metrics, tmp_path):
    one = metrics[(metrics["step"] == 2000) & (metrics["seed"] == 0)].copy()
    one["r2_x"] = np.nan
    one["r2_y"] = np.nan
    fig = F.phase_diagram_figure(one, sigma=0.5)
    assert len(fig.axes) == 4
    assert len(fig.axes[1].texts) == 0  # all-NaN R^2: no annotations, grey cells
    _save(fig, tmp_path)
    nothing = F.phase_diagram_figure(metrics, sigma=7.0)
    assert len(nothing.axes) == 4 and nothing.axes[0].texts[0].get_text() == "no data"


def test_sigma_figure(metrics, tmp_path):
    fig = F.sigma_figure(metrics, increments=[0.5, 2.0])
    assert len(fig.axes) == 2 * 2 + 2
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["0.5", "1"]
    _save(fig, tmp_path)
    default = F.sigma_figure(metrics)  # every isotropic increment, plus one with no data
    assert len(default.axes) == 3 * 2 + 2
    missing = F.sigma_figure(metrics, increments=[3.0])
    assert len(missing.axes) == 4 and missing.axes[0].texts[0].get_text() == "no data"


# -------------------------------------------------------------------------------- curves


def test_imbalance_figure(metrics, tmp_path):
    fig = F.imbalance_figure(metrics)
    assert len(fig.axes) == 2 * 2  # imb_1x2 and imb_aniso
    assert fig.axes[0].get_title(loc="left").startswith("imb_1x2")
    # the shaded band is the t-interval: one seed (imb_aniso) has none
    assert len(fig.axes[0].lines) == 3
    _save(fig, tmp_path)
    # degenerate: all-NaN R^2 in one dataset, a single step of a single seed in the other
    nan_r2 = metrics[metrics["dataset"] == "imb_1x2"].assign(r2_x=np.nan, r2_y=np.nan)
    single = metrics[(metrics["dataset"] == "imb_aniso") & (metrics["step"] == 0)]
    degenerate = F.imbalance_figure(pd.concat([nan_r2, single]))
    assert len(degenerate.axes) == 4 and degenerate.axes[1].texts[0].get_text() == "no $R^2$"
    assert list(degenerate.axes[2].get_xticks()) == [0.0]  # the single step is centred
    _save(degenerate, tmp_path, "degenerate")
    none = F.imbalance_figure(metrics[metrics["dataset"] == "inc1_sig1"])
    assert len(none.axes) == 1


def test_holes_figure(metrics, tmp_path):
    disc = {"name": "centre", "shape": "disc", "center": [8, 8], "radius": 1.8}
    rect = {"name": "r", "shape": "rect", "x": [3, 6], "y": [10, 14]}
    panels = {
        "hole_centre": (render([[4.0, 12.0]], 16, 1.0)[0], [disc]),
        "hole_rect": (render([[12.0, 4.0]], 16, 1.0)[0], [rect]),
        "hole_only_panel": (render([[8.0, 8.0]], 16, 1.0)[0], [disc, rect]),
    }
    fig = F.holes_figure(metrics, panels)
    assert len(fig.axes) == 3 * 2
    image_ax = fig.axes[1]
    (circle,) = image_ax.patches
    assert circle.center == (7.0, 7.0) and circle.radius == pytest.approx(1.8)
    (rectangle,) = fig.axes[3].patches
    assert rectangle.get_xy() == (2.0, 9.0)
    assert (rectangle.get_width(), rectangle.get_height()) == (3.0, 4.0)
    _save(fig, tmp_path)
    # without sample panels; without any hole dataset
    assert len(F.holes_figure(metrics).axes) == 2 * 2
    assert len(F.holes_figure(metrics[metrics["hole"].isna()]).axes) == 1


def test_hole_patch_accepts_hole_dataclass():
    from diffcomp.bumps import Hole

    patch = F.hole_patch(Hole.from_config({"name": "r", "shape": "rect", "x": [1, 2], "y": [1, 3]}))
    assert patch.get_xy() == (0.0, 0.0) and patch.get_height() == 2.0
    with pytest.raises(ValueError, match="shape"):
        F.hole_patch({"name": "t", "shape": "triangle"})


def test_phases_figure_has_no_zero_font_size():
    """The UMAP panels hide their tick labels with a formatter, never with a font size FreeType rejects."""
    import matplotlib.text
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    cks = {s: _checkpoint(p, s, n=60, seed=s) for p, s in [("A", 0), ("B", 200), ("C", 300)]}
    fig = F.phases_figure(cks, "run")
    FigureCanvasAgg(fig).draw()
    sizes = [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text)]
    assert min(sizes) >= 5
    for ax in fig.axes:
        if ax.name == "3d":
            assert all(label.get_text() == "" for label in ax.get_xticklabels() + ax.get_zticklabels())


def _trend_metrics(accuracy: dict, steps=(200, 400, 600)) -> pd.DataFrame:
    """Grid rows with given accuracies: ``accuracy[(increment, seed)]`` = one value per step."""
    rows = []
    for (inc, seed), values in accuracy.items():
        for step, acc in zip(steps, values, strict=True):
            rows.append(
                {
                    "run": f"inc{inc:g}_sig1_seed{seed}",
                    "increment_x": inc,
                    "increment_y": inc,
                    "sigma": 1.0,
                    "hole": None,
                    "seed": seed,
                    "step": step,
                    "accuracy": acc,
                    "r2_x": acc,
                    "r2_y": acc,
                    "phase": "B",
                }
            )
    # a hole dataset and another sigma: left out of the trend
    rows.append({**rows[0], "run": "hole_seed0", "hole": "centre", "accuracy": 0.0})
    rows.append({**rows[0], "run": "inc9_sig2_seed0", "increment_x": 9.0, "increment_y": 9.0, "sigma": 2.0})
    return pd.DataFrame(rows)


def test_increment_trend_states_spearman_rho(tmp_path):
    from scipy.stats import spearmanr

    accuracy = {
        (0.25, 0): [0.50, 0.90, 0.95],
        (0.25, 1): [0.40, 0.80, 0.97],
        (0.5, 0): [0.45, 0.70, 0.93],
        (0.5, 1): [0.50, 0.75, 0.91],
        (1.0, 0): [0.30, 0.60, 0.80],
        (1.0, 1): [0.20, 0.50, 0.90],
        (2.0, 0): [0.35, 0.40, 0.70],
        (2.0, 1): [0.30, 0.45, 0.60],
    }
    metrics = _trend_metrics(accuracy)
    trend = F.increment_trend(metrics, sigma=1.0)
    assert trend["step"].tolist() == [200, 400, 600]
    assert trend["n_increments"].tolist() == [4, 4, 4] and trend["n_seeds"].tolist() == [2, 2, 2]
    incs = [0.25, 0.5, 1.0, 2.0]
    for k in range(3):
        mean = [np.mean([accuracy[(inc, s)][k] for s in (0, 1)]) for inc in incs]
        assert trend["rho"].iloc[k] == pytest.approx(spearmanr(incs, mean).statistic)
        per_seed = [spearmanr(incs, [accuracy[(inc, s)][k] for inc in incs]).statistic for s in (0, 1)]
        half = 12.706204736174707 * np.std(per_seed, ddof=1) / np.sqrt(2)  # t_{0.975, 1}
        assert trend["rho_seed_mean"].iloc[k] == pytest.approx(np.mean(per_seed))
        assert trend["rho_seed_lo"].iloc[k] == pytest.approx(max(-1.0, np.mean(per_seed) - half))
        assert trend["rho_seed_hi"].iloc[k] == pytest.approx(min(1.0, np.mean(per_seed) + half))
    # step 200: means 0.45, 0.475, 0.25, 0.325 -> rho -0.6; steps 400 and 600: a perfect order
    assert trend["rho"].tolist() == pytest.approx([-0.6, -1.0, -1.0])
    text = F.trend_text(trend)
    assert text.startswith("smaller increments learn faster")
    assert "-1.00 at step 400 (middle), -1.00 at step 600 (final)" in text
    assert "2 seeds, 4 increments" in text and "per-seed" in text and "95% CI" in text
    fig = F.phase_diagram_figure(metrics, sigma=1.0, how="mean")
    assert text in fig.get_suptitle()
    top = fig.axes[0].child_axes[0]
    assert [t.get_text() for t in top.get_xticklabels()] == ["-0.60", "-1.00", "-1.00"]
    _save(fig, tmp_path)


def _interval_rows(accuracy: dict, n: int) -> pd.DataFrame:
    return pd.DataFrame(
        [{"increment": inc, "seed": seed, "accuracy": acc, "n_samples": n} for (inc, seed), acc in accuracy.items()]
    )


@pytest.mark.filterwarnings("ignore:An input array is constant")  # scipy, on the reference's tied draws
def test_sampling_interval_is_the_percentiles_of_redrawn_spearman_rhos():
    from scipy.stats import spearmanr

    accuracy = {(0.5, 0): 0.30, (0.5, 1): 0.20, (1.0, 0): 0.25, (1.0, 1): 0.22, (2.0, 0): 0.2, (2.0, 1): 0.1}
    rows = _interval_rows(accuracy, 40)
    low, high = F.sampling_interval(rows)
    assert (low, high) == F.sampling_interval(rows)  # seeded
    # by hand: the same draws, each seed's accuracy redrawn, the mean per increment, scipy's rho
    draws = np.random.default_rng(0).binomial(40, rows["accuracy"].to_numpy(), (F.NOISE_DRAWS, len(rows))) / 40
    means = np.stack([draws[:, rows["increment"].to_numpy() == inc].mean(axis=1) for inc in (0.5, 1.0, 2.0)], axis=1)
    rhos = np.array([spearmanr([0.5, 1.0, 2.0], m).statistic for m in means])
    expected = np.percentile(rhos[np.isfinite(rhos)], [2.5, 97.5])
    assert (low, high) == pytest.approx(tuple(expected))
    assert low <= spearman_of_means(accuracy) <= high and high - low > 1.0  # 40 samples each: wide
    # many samples per accuracy: the interval shrinks to the order itself
    assert F.sampling_interval(_interval_rows(accuracy, 100_000)) == (-1.0, -1.0)
    # no counts, or fewer than three increments: no interval
    assert np.isnan(F.sampling_interval(rows.drop(columns="n_samples"))).all()
    assert np.isnan(F.sampling_interval(rows.assign(n_samples=np.nan))).all()
    assert np.isnan(F.sampling_interval(rows[rows["increment"] < 2])).all()


def spearman_of_means(accuracy: dict) -> float:
    incs = sorted({inc for inc, _ in accuracy})
    return F.spearman_rho(incs, [np.mean([a for (i, _), a in accuracy.items() if i == inc]) for inc in incs])


def test_trend_text_states_the_sampling_interval_with_sample_counts():
    accuracy = {(inc, 0): [0.05 * k, 0.1 * k, 0.2 * k] for k, inc in enumerate([4.0, 2.0, 1.0, 0.5], 1)}
    metrics = _trend_metrics(accuracy)
    assert "sampling noise" not in F.trend_text(F.increment_trend(metrics, sigma=1.0))
    trend = F.increment_trend(metrics.assign(n_samples=500), sigma=1.0)
    assert trend["rho"].tolist() == pytest.approx([-1.0] * 3)
    assert (trend["rho_noise_hi"] <= trend["rho"] + 1.5).all() and (trend["rho_noise_lo"] >= -1.0).all()
    text = F.trend_text(trend)
    lo, hi = trend["rho_noise_lo"].iloc[-1], trend["rho_noise_hi"].iloc[-1]
    assert "95% interval of $\\rho$ under sampling noise: " in text and f"{lo:+.2f} to {hi:+.2f} at step 600" in text
    # the off-grid diagram takes the off-grid counts
    table = metrics.assign(accuracy_offgrid=metrics["accuracy"], n_samples=5, n_offgrid=100_000)
    title = F.phase_diagram_figure(table, 1.0, accuracy="accuracy_offgrid").get_suptitle()
    assert "-1.00 to -1.00 at step 400" in title


def test_trend_verdict_counts_from_the_middle_checkpoint():
    """Six checkpoints: the middle one is the fourth (the later of the two middle ones). A reversed
    order before it does not matter; one from it on does."""
    steps = [200, 400, 600, 800, 1000, 1200]
    right, reversed_ = [0.6, 0.4, 0.2], [0.2, 0.4, 0.6]  # accuracy of increments 0.5, 1, 2

    def table(orders):
        return _trend_metrics(
            {(inc, 0): [order[k] for order in orders] for k, inc in enumerate([0.5, 1.0, 2.0])}, steps=steps
        )

    early = F.trend_text(F.increment_trend(table([reversed_] * 3 + [right] * 3), sigma=1.0))
    assert early.startswith("smaller increments learn faster") and "-1.00 at step 800 (middle)" in early
    late = F.trend_text(F.increment_trend(table([right] * 3 + [reversed_] + [right] * 2), sigma=1.0))
    assert late.startswith("no clear order") and "+1.00 from the middle step on" in late


def test_increment_trend_verdicts():
    rising = {(inc, 0): [0.1 * k * inc, 0.2 * k * inc, 0.3 * k * inc] for k, inc in enumerate([1.0, 2.0, 4.0], 1)}
    trend = F.increment_trend(_trend_metrics(rising), sigma=1.0)
    assert trend["rho"].tolist() == pytest.approx([1.0, 1.0, 1.0])
    text = F.trend_text(trend)
    assert text.startswith("larger increments learn faster") and "per-seed" not in text  # one seed
    # the order flips at the final step: no verdict
    mixed = {(1.0, 0): [0.9, 0.9, 0.2], (2.0, 0): [0.5, 0.5, 0.5], (4.0, 0): [0.1, 0.1, 0.9]}
    text = F.trend_text(F.increment_trend(_trend_metrics(mixed), sigma=1.0))
    assert text.startswith("no clear order") and "+1.00 at step 600 (final)" in text
    two = {(1.0, 0): [0.9, 0.9, 0.9], (2.0, 0): [0.5, 0.5, 0.5]}
    trend = F.increment_trend(_trend_metrics(two), sigma=1.0)
    assert trend["rho"].isna().all() and F.trend_text(trend).startswith("trend: fewer than 3 increments")
    assert F.increment_trend(_trend_metrics(two), sigma=7.0).empty


def test_phases_figure_500_samples_has_no_freetype_warning(caplog, tmp_path):
    """The paper config's 500 samples per checkpoint must not produce sub-1-pt font sizes."""
    import logging

    import matplotlib.text
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    cks = {s: _checkpoint(p, s, n=500, size=32, seed=s) for p, s in [("A", 0), ("B", 200), ("C", 300)]}
    with caplog.at_level(logging.DEBUG, logger="matplotlib"):
        fig = F.phases_figure(cks, "inc0.5_sig1_seed0")
        FigureCanvasAgg(fig).draw()
        _save(fig, tmp_path)
    assert not [r for r in caplog.records if "FreeType" in r.getMessage()]
    assert min(t.get_fontsize() for t in fig.findobj(matplotlib.text.Text)) >= 5


def test_phase_diagram_on_offgrid_accuracy_ranks_that_column(tmp_path):
    rows = []
    for increment, (on_grid, off_grid) in {0.5: (0.2, 0.9), 1.0: (0.5, 0.6), 2.0: (0.8, 0.3)}.items():
        for step in (100, 200):
            rows.append(
                {
                    "run": f"inc{increment:g}_sig1_seed0",
                    "increment_x": increment,
                    "increment_y": increment,
                    "sigma": "1",
                    "hole": np.nan,
                    "seed": 0,
                    "step": step,
                    "accuracy": on_grid,
                    "accuracy_offgrid": off_grid,
                    "r2_x": 0.5,
                    "r2_y": 0.5,
                }
            )
    table = pd.DataFrame(rows)
    on_grid = F.phase_diagram_figure(table, 1.0)
    assert "larger increments learn faster" in on_grid._suptitle.get_text()
    off_grid = F.phase_diagram_figure(table, 1.0, accuracy="accuracy_offgrid")
    title = off_grid._suptitle.get_text()
    assert "accuracy at off-grid labels" in title and "smaller increments learn faster" in title
    with pytest.raises(ValueError, match="no accuracy_offgrid column"):
        F.phase_diagram_figure(table.drop(columns=["accuracy_offgrid"]), 1.0, accuracy="accuracy_offgrid")
