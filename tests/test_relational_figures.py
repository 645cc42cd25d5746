import re

import matplotlib.container
import matplotlib.image
import matplotlib.text
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import FillBetweenPolyCollection
from matplotlib.colors import to_hex
from scipy.stats import spearmanr

from diffcomp.relational import figures as F
from diffcomp.relational.icons import pair_images, render_icons, save_icons
from diffcomp.stats import proportion_interval

STEPS = [0, 500, 1000]
SEEDS = [0, 1]
# split -> (family, visual c_r1, c_r2, visual balance, linguistic c_r1, c_r2, linguistic balance, coverage, final acc)
SPLITS = {
    "band": ("band(m=1)", 100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 30.0, 0.9),
    "bipartite": ("bipartite", 50.0, 50.0, 0.0, 100.0, 100.0, 100.0, 50.0, 0.2),
    "random": ("random(size=20)", 90.0, 80.0, 70.0, 90.0, 90.0, 85.0, 20.0, 0.6),
    "caption_by_order": ("caption_by_order", 100.0, 100.0, 100.0, 90.0, 90.0, 40.0, 50.0, 0.7),
}
EXPERIMENTS = {"baseline": ("t5-scratch", "sinusoidal", 1.0), "no_pos_emb": ("t5-scratch", "none", 0.3)}


def _kind_columns(split: str, test: float, seed: int) -> dict:
    """Test accuracy by kind of held-out triple: band and bipartite hold out new images only,
    caption_by_order new captions only, random both (more new captions on seed 1); new captions
    are the easier kind."""
    new_caption = {"band": 0, "bipartite": 0, "caption_by_order": 60, "random": 20 + 10 * seed}[split]
    caption_accuracy = min(1.0, test + 0.1) if split == "random" else test
    image_accuracy = (test * 60 - caption_accuracy * new_caption) / (60 - new_caption) if new_caption < 60 else np.nan
    return {
        "test_new_caption_accuracy": caption_accuracy if new_caption else np.nan,
        "test_new_image_accuracy": image_accuracy,
        "n_test_new_caption_samples": new_caption,
        "n_test_new_image_samples": 60 - new_caption,
    }


def _table(seeds=SEEDS) -> pd.DataFrame:
    rows = []
    for experiment, (encoder, pos_emb, factor) in EXPERIMENTS.items():
        for split, (family, v1, v2, vb, l1, l2, lb, cov, acc) in SPLITS.items():
            for seed in seeds:
                for k, step in enumerate(STEPS):
                    test = float(np.clip(factor * acc * k / (len(STEPS) - 1) + 0.03 * seed, 0, 1))
                    train = float(np.clip(test + 0.2, 0, 1))
                    wrong = 1 - test
                    rows.append(
                        {
                            "run": f"{experiment}_{split}_seed{seed}",
                            "experiment": experiment,
                            "split": split,
                            "family": family,
                            "vocab_size": 10,
                            "encoder": encoder,
                            "pos_emb": pos_emb,
                            "seed": seed,
                            "step": step,
                            "train_accuracy": train,
                            "test_accuracy": test,
                            "train_frac_swapped": (1 - train) / 2,
                            "train_frac_one_wrong": (1 - train) / 4,
                            "train_frac_both_wrong": (1 - train) / 4,
                            "test_frac_swapped": wrong * 0.6,
                            "test_frac_one_wrong": wrong * 0.3,
                            "test_frac_both_wrong": wrong * 0.1,
                            "n_train_samples": 40,
                            "n_test_samples": 60,
                            **_kind_columns(split, test, seed),
                            "visual_completeness_r1": v1,
                            "visual_completeness_r2": v2,
                            "visual_balance": vb,
                            "linguistic_completeness_r1": l1,
                            "linguistic_completeness_r2": l2,
                            "linguistic_balance": lb,
                            "coverage": cov,
                        }
                    )
    return pd.DataFrame(rows, columns=list(F.METRICS_COLUMNS))


@pytest.fixture(scope="module")
def metrics():
    return _table()


@pytest.fixture
def metrics_csv(tmp_path, metrics):
    path = tmp_path / "metrics.csv"
    metrics.to_csv(path, index=False)
    return path


def _seed_lines(fig) -> list:
    """The per-seed markers a figure draws (lines whose gid starts with "seeds:")."""
    return [line for ax in fig.axes for line in ax.get_lines() if str(line.get_gid()).startswith("seeds:")]


def _texts(fig) -> list[matplotlib.text.Text]:
    return [t for t in fig.findobj(matplotlib.text.Text) if t.get_text()]


def _assert_fonts(fig):
    fig.canvas.draw()  # tick labels exist after drawing
    sizes = [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text)]
    assert sizes and min(sizes) >= F.MIN_FONT_SIZE


def _assert_images(paths):
    for path in paths:
        assert path.exists() and path.stat().st_size > 5000, path
    png = matplotlib.image.imread(paths[0])
    assert png.shape[0] > 200 and png.shape[1] > 200
    assert png[..., :3].std() > 0.05  # not a blank canvas


def _samples(n_per_split=5, vocab=6, size=16):
    icons = render_icons(vocab, size)
    rng = np.random.default_rng(1)
    n = 2 * n_per_split
    top = rng.integers(0, vocab, n)
    bottom = (top + rng.integers(1, vocab, n)) % vocab
    samples = {
        "images": pair_images(icons, top, bottom).astype(np.float16),
        "top": top.astype(np.int64),
        "bottom": bottom.astype(np.int64),
        "relation": (np.arange(n) % 2).astype(np.int64),
        "split": np.array(["train"] * n_per_split + ["test"] * n_per_split),
        "step": np.int64(1000),
    }
    return samples, icons


# ------------------------------------------------------------------------------------ figures


@pytest.mark.parametrize("kind", ["curves", "scatter", "skew", "ablation"])
def test_metric_figures_build_and_save(tmp_path, metrics_csv, kind):
    outputs = [tmp_path / f"{kind}.png", tmp_path / f"{kind}.pdf"]
    fig = F.write_relational_figure(kind, metrics_csv, outputs, baseline="baseline")
    _assert_images(outputs)
    _assert_fonts(fig)


def test_samples_figure_from_files(tmp_path):
    samples, icons = _samples()
    # the first two training samples are drawn with their halves swapped: both nouns, wrong order
    samples["images"][:2] = pair_images(icons, samples["bottom"][:2], samples["top"][:2])
    run_dir = tmp_path / "baseline" / "band" / "seed0" / "samples"
    run_dir.mkdir(parents=True)
    np.savez(run_dir / "step1000.npz", **samples)
    names = [f"noun{k}" for k in range(len(icons))]
    save_icons(tmp_path / "icons.npz", icons, names)
    outputs = [tmp_path / "samples.png", tmp_path / "samples.pdf"]
    fig = F.write_relational_figure(
        "samples",
        None,
        outputs,
        baseline="baseline",
        samples_npz=run_dir / "step1000.npz",
        icons_npz=tmp_path / "icons.npz",
    )
    _assert_images(outputs)
    _assert_fonts(fig)
    assert fig._suptitle.get_text().startswith("baseline/band/seed0: generated samples at step 1000")
    frames = {ax.get_label(): to_hex(ax.spines["left"].get_edgecolor()) for ax in fig.axes if ":" in ax.get_label()}
    assert len(frames) == 10
    for label, colour in frames.items():
        index = int(label.split(":")[1])
        assert colour == (F.WRONG_COLOUR if index < 2 else F.CORRECT_COLOUR), label


def test_curves_one_line_per_split_solid_and_dashed(metrics):
    fig = F.curves_figure(metrics, "baseline")
    ax = fig.axes[0]
    styles = [line.get_linestyle() for line in ax.get_lines()]
    assert styles.count("-") == len(SPLITS) and styles.count("--") == len(SPLITS)
    legend_texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "band (band(m=1))" in legend_texts and "random (random(size=20))" in legend_texts
    assert "2 seeds" in fig._suptitle.get_text()


def test_scatter_rho_matches_scipy_on_aggregated_points(metrics):
    final = metrics[(metrics["experiment"] == "baseline") & (metrics["step"] == STEPS[-1])]
    by_split = final.groupby("split", sort=False).mean(numeric_only=True)
    x = {
        "visual_completeness": (by_split["visual_completeness_r1"] + by_split["visual_completeness_r2"]) / 2,
        "visual_balance": by_split["visual_balance"],
        "coverage": by_split["coverage"],
    }
    rhos = F.scatter_rhos(metrics, "baseline")
    fig = F.scatter_figure(metrics, "baseline")
    titles = [ax.get_title() for ax in fig.axes]
    for (column, _), title in zip(F.SCATTER_AXES, titles, strict=True):
        expected = spearmanr(x[column], by_split["test_accuracy"]).statistic
        assert rhos[column] == pytest.approx(expected)
        shown = float(re.search(r"= (-?\d\.\d\d)", title).group(1))
        assert shown == pytest.approx(round(expected, 2)), title
    # the visual completeness axis says it averages r1 and r2
    assert "mean of r1 and r2" in fig.axes[0].get_xlabel()
    # random splits use another marker
    markers = {line.get_marker() for line in fig.axes[0].get_lines() if line.get_marker() not in (None, "None", "")}
    assert {"o", "^"} <= markers


def test_final_points_mean_and_interval(metrics):
    points = F.final_points(metrics, "baseline").set_index("split")
    assert list(points.index) == list(SPLITS)
    final = metrics[(metrics["experiment"] == "baseline") & (metrics["step"] == 1000)].set_index("split")
    values = final.loc["band", "test_accuracy"].to_numpy()
    expected = proportion_interval(values, [60, 60])  # 60 test samples a seed
    assert points.loc["band", "test_accuracy"] == pytest.approx(values.mean())
    assert tuple(points.loc["band", ["test_accuracy", "test_accuracy_lo", "test_accuracy_hi"]]) == pytest.approx(
        expected
    )
    assert 0.0 <= points.loc["band", "test_accuracy_lo"] and points.loc["band", "test_accuracy_hi"] <= 1.0
    # the audit's percents: the mean
    assert points.loc["band", "visual_completeness"] == pytest.approx(100.0)
    assert points.loc["random", "visual_completeness"] == pytest.approx(85.0)
    # by kind of held-out triple: pooled over seeds by their samples; NaN where a split has none of a kind
    random = final.loc["random"]
    caption = random["test_new_caption_accuracy"].to_numpy()
    caption_n = random["n_test_new_caption_samples"].to_numpy()
    assert points.loc["random", "test_new_caption_accuracy"] == pytest.approx(
        (caption * caption_n).sum() / caption_n.sum()
    )
    assert np.isnan(points.loc["band", "test_new_caption_accuracy"])
    assert np.isnan(points.loc["caption_by_order", "test_new_image_accuracy"])
    assert points.loc["caption_by_order", "test_new_caption_accuracy"] == pytest.approx(
        points.loc["caption_by_order", "test_accuracy"]
    )


def test_spearman_na_cases():
    assert np.isnan(F.spearman_rho([1, 2], [0.1, 0.2]))
    assert np.isnan(F.spearman_rho([5, 5, 5], [0.1, 0.2, 0.3]))  # constant x
    assert np.isnan(F.spearman_rho([1, 1, 2, 2], [0.1, 0.1, 0.3, 0.3]))  # two distinct points
    assert np.isnan(F.spearman_rho([1, 2, np.nan], [0.1, 0.2, 0.3]))
    assert F.spearman_rho([1, 2, 3], [0.3, 0.2, 0.1]) == pytest.approx(-1.0)


def test_one_seed_has_no_interval_but_draws(tmp_path):
    table = _table(seeds=[0])
    points = F.final_points(table, "baseline")
    assert points["test_accuracy"].notna().all()
    assert points[["test_accuracy_lo", "test_accuracy_hi", "train_accuracy_lo"]].isna().all(axis=None)
    for kind in ("curves", "scatter", "skew", "ablation"):
        fig = getattr(F, f"{kind}_figure")(table, "baseline")
        assert "1 seed, no interval" in fig._suptitle.get_text()
        assert not _seed_lines(fig)  # one seed: no per-seed markers
        for ax in fig.axes:  # nor any error bar or band
            for container in ax.containers:
                if isinstance(container, matplotlib.container.ErrorbarContainer):
                    assert all(len(segment) == 0 for segment in container.lines[2][0].get_segments())
            bands = [c for c in ax.collections if isinstance(c, FillBetweenPolyCollection)]
            assert all(not band.get_paths() for band in bands)  # a band of NaN limits: nothing drawn
        F.save_figure(fig, [tmp_path / f"{kind}.png"])
        assert (tmp_path / f"{kind}.png").stat().st_size > 5000


def test_empty_table_and_missing_baseline_draw_no_data(tmp_path, metrics):
    empty = metrics.iloc[0:0]
    for table, baseline in ((empty, "baseline"), (metrics, "no_such_experiment")):
        for kind in ("curves", "scatter", "skew"):
            fig = getattr(F, f"{kind}_figure")(table, baseline)
            assert any(t.get_text().startswith("no ") for t in _texts(fig)), kind
            _assert_fonts(fig)
            F.save_figure(fig, [tmp_path / f"{kind}.png", tmp_path / f"{kind}.pdf"])
    fig = F.ablation_figure(empty, "baseline")
    assert any(t.get_text().startswith("no ") for t in _texts(fig))
    # the ablation still draws the other experiments without the baseline, and says so
    fig = F.ablation_figure(metrics, "no_such_experiment")
    assert "no runs" in fig._suptitle.get_text()
    # a header-only CSV goes through the file entry point too
    path = tmp_path / "empty.csv"
    empty.to_csv(path, index=False)
    F.write_relational_figure("scatter", path, [tmp_path / "e.png", tmp_path / "e.pdf"], baseline="baseline")
    assert (tmp_path / "e.png").exists() and (tmp_path / "e.pdf").exists()
    samples = {"images": np.zeros((0, 32, 16)), "top": [], "bottom": [], "relation": [], "split": [], "step": 0}
    fig = F.sample_grid_figure(samples, None, [], [], [])
    assert any(t.get_text() == "no samples" for t in _texts(fig))
    # a run without sample files yet: the samples figure says so instead of failing
    outputs = [tmp_path / "s.png", tmp_path / "s.pdf"]
    F.write_relational_figure("samples", path, outputs, baseline="baseline", samples_npz=None, icons_npz=None)
    assert all(p.stat().st_size > 0 for p in outputs)


def test_only_baseline_ablation_still_draws(metrics):
    fig = F.ablation_figure(metrics[metrics["experiment"] == "baseline"], "baseline")
    assert "only the baseline" in fig._suptitle.get_text()
    assert len(fig.axes[0].patches) == len(SPLITS)


def test_ablation_names_what_differs(metrics):
    fig = F.ablation_figure(metrics, "baseline")
    title = fig._suptitle.get_text()
    assert "pos_emb" in title and "encoder" not in title.split("\n")[1]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[0].startswith("baseline:") and "(baseline)" in labels[0]
    assert labels[1].startswith("no_pos_emb:") and "pos_emb none" in labels[1]
    assert len(fig.axes[0].patches) == len(SPLITS) * len(EXPERIMENTS)


def test_missing_column_raises_naming_file_and_column(tmp_path, metrics):
    path = tmp_path / "bad.csv"
    metrics.drop(columns=["coverage", "visual_balance"]).to_csv(path, index=False)
    outputs = [tmp_path / "x.png", tmp_path / "x.pdf"]
    with pytest.raises(ValueError, match=r"bad\.csv.*visual_balance, coverage"):
        F.write_relational_figure("scatter", path, outputs, baseline="baseline")
    assert not any(p.exists() for p in outputs)
    with pytest.raises(ValueError, match="coverage"):
        F.scatter_figure(metrics.drop(columns=["coverage"]), "baseline")
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(b"")
    with pytest.raises(ValueError, match="garbage.csv"):
        F.write_relational_figure("curves", garbage, outputs, baseline="baseline")
    with pytest.raises(ValueError, match="missing.csv"):
        F.write_relational_figure("curves", tmp_path / "missing.csv", outputs, baseline="baseline")
    assert not any(p.exists() for p in outputs)
    with pytest.raises(ValueError, match="unknown"):
        F.write_relational_figure("nope", path, outputs, baseline="baseline")


def test_pos_emb_none_survives_csv(metrics_csv):
    table = F.read_relational_metrics(metrics_csv)
    assert set(table["pos_emb"]) == {"sinusoidal", "none"}


def test_sample_grid_colours_from_given_predictions():
    samples, icons = _samples(n_per_split=4)
    names = [f"noun{k}" for k in range(len(icons))]
    pred_top = samples["top"].copy()
    pred_bottom = samples["bottom"].copy()
    pred_bottom[[1, 6]] = (pred_bottom[[1, 6]] + 1) % len(icons)  # one train and one test wrong
    pred_top[7] = -1  # a blank half
    fig = F.sample_grid_figure(samples, icons, names, pred_top, pred_bottom, max_per_split=8)
    _assert_fonts(fig)
    shown = {ax.get_label(): ax for ax in fig.axes if ":" in ax.get_label()}
    assert sorted(shown) == sorted([f"train:{k}" for k in range(4)] + [f"test:{k}" for k in range(4, 8)])
    for label, ax in shown.items():
        index = int(label.split(":")[1])
        expected = F.WRONG_COLOUR if index in (1, 6, 7) else F.CORRECT_COLOUR
        assert to_hex(ax.spines["top"].get_edgecolor()) == expected
        assert to_hex(ax.title.get_color()) == expected
        assert ax.get_xlabel().startswith("pred:")
    assert "blank" in shown["test:7"].get_xlabel()
    assert "noun" in shown["train:0"].get_title()
    subtitles = [sub._suptitle.get_text() for sub in fig.subfigs]
    assert subtitles[0].startswith("train") and "accuracy 0.75" in subtitles[0]
    assert subtitles[1].startswith("test") and "accuracy 0.50" in subtitles[1]
    # at most max_per_split per row
    fig = F.sample_grid_figure(samples, icons, names, pred_top, pred_bottom, max_per_split=2)
    assert sum(":" in ax.get_label() for ax in fig.axes) == 4
    with pytest.raises(ValueError, match="one entry per image"):
        F.sample_grid_figure(samples, icons, names, pred_top[:3], pred_bottom, max_per_split=2)


# ------------------------------------------------------------------------------- interventions

PROJECTION_STEPS = [0, 50, 100]
# experiment -> (intervention, splits, steps, final test accuracy)
INTERVENTIONS = {
    "wiclp": ("projection-window", ["band", "bipartite", "random"], PROJECTION_STEPS, 0.8),
    "wiclp_wide": ("projection-window", ["band"], PROJECTION_STEPS, 0.7),
    "contrast": ("contrastive-both", ["band", "bipartite"], STEPS, 0.5),
}
BAR_LABELS = [
    "baseline",
    "wiclp (projection-window)",
    "wiclp_wide (projection-window)",
    "contrast (contrastive-both)",
]
SHOWN_SPLITS = ["band", "bipartite", "random"]  # the baseline's order; caption_by_order has no intervention


def _intervention_rows(experiment, intervention, splits, steps, acc, seeds):
    rows = []
    for split in splits:
        for seed in seeds:
            for k, step in enumerate(steps):
                test = float(np.clip(acc * (k + 1) / len(steps) + 0.05 * seed, 0, 1))
                rows.append(
                    {
                        "run": f"{experiment}_{split}_seed{seed}",
                        "experiment": experiment,
                        "split": split,
                        "family": SPLITS[split][0] if split in SPLITS else split,
                        "encoder": "t5-scratch",
                        "pos_emb": "sinusoidal",
                        "intervention": intervention,
                        "seed": seed,
                        "step": step,
                        "train_accuracy": float(np.clip(test + 0.1 + 0.02 * seed, 0, 1)),
                        "test_accuracy": test,
                        "n_train_samples": 32,
                        "n_test_samples": 48,
                    }
                )
    return rows


def _interventions_table(seeds=SEEDS, extra=True) -> pd.DataFrame:
    """_table (baseline and the no_pos_emb ablation) plus the intervention experiments."""
    base = _table(seeds).assign(intervention="baseline")
    rows = []
    for experiment, (intervention, splits, steps, acc) in INTERVENTIONS.items():
        rows += _intervention_rows(experiment, intervention, splits, steps, acc, seeds)
    if extra:
        # a seed and a split the baseline never ran: not compared, so not drawn
        rows += _intervention_rows("contrast", "contrastive-both", ["band"], STEPS, 0.0, [7])
        rows += _intervention_rows("contrast", "contrastive-both", ["only_here"], STEPS, 0.1, seeds)
    extra_rows = pd.DataFrame(rows).reindex(columns=list(F.METRICS_COLUMNS))
    return pd.concat([base, extra_rows], ignore_index=True)


@pytest.fixture(scope="module")
def intervention_metrics():
    return _interventions_table()


def _expected_final(table, experiment, split, column):
    """Pooled value over the baseline's seeds at the run's last step, with its 95% interval."""
    samples = _table_counts(experiment, column)
    rows = table[(table["experiment"] == experiment) & (table["split"] == split) & table["seed"].isin(SEEDS)]
    values = rows.loc[rows["step"] == rows["step"].max(), column].to_numpy(dtype=np.float64)
    return proportion_interval(values, [samples] * len(values))


def _table_counts(experiment, column):
    """Samples a seed behind each accuracy: _table's (the baseline) or _intervention_rows'."""
    if experiment == "baseline":
        return 60 if column == "test_accuracy" else 40
    return 48 if column == "test_accuracy" else 32


def _final_values(table, experiment, split, column="test_accuracy"):
    rows = table[(table["experiment"] == experiment) & (table["split"] == split) & table["seed"].isin(SEEDS)]
    return rows.loc[rows["step"] == rows["step"].max(), column].to_numpy(dtype=np.float64)


def _bar_containers(ax):
    return [c for c in ax.containers if isinstance(c, matplotlib.container.BarContainer)]


def _line(ax, gid):
    lines = [line for line in ax.get_lines() if line.get_gid() == gid]
    assert len(lines) == 1, gid
    return lines[0]


def test_interventions_bars_are_final_means_with_intervals_and_train_ticks(intervention_metrics):
    table = intervention_metrics
    fig = F.interventions_figure(table, "baseline")
    _assert_fonts(fig)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == SHOWN_SPLITS
    bars = _bar_containers(ax)
    assert [c.get_label() for c in bars] == BAR_LABELS
    errorbars = [c for c in ax.containers if isinstance(c, matplotlib.container.ErrorbarContainer)]
    assert len(errorbars) == len(BAR_LABELS)
    experiments = ["baseline", *INTERVENTIONS]
    n_missing = 0
    for experiment, container, errorbar in zip(experiments, bars, errorbars, strict=True):
        assert len(container.patches) == len(SHOWN_SPLITS)
        segments = errorbar.lines[2][0].get_segments()
        ticks = _line(ax, f"train:{experiment}").get_ydata()
        for k, (split, patch) in enumerate(zip(SHOWN_SPLITS, container.patches, strict=True)):
            ran = experiment == "baseline" or split in INTERVENTIONS[experiment][1]
            if not ran:
                assert patch.get_height() == 0.0 and np.isnan(ticks[k])
                n_missing += 1
                continue
            mean, low, high = _expected_final(table, experiment, split, "test_accuracy")
            assert patch.get_height() == pytest.approx(mean), (experiment, split)
            assert segments[k][:, 1] == pytest.approx([low, high]), (experiment, split)
            assert 0.0 <= low <= high <= 1.0
            train = _expected_final(table, experiment, split, "train_accuracy")
            assert ticks[k] == pytest.approx(train[0])
            seeds = _line(ax, f"seeds:{experiment}:{split}")
            assert sorted(seeds.get_ydata()) == pytest.approx(sorted(_final_values(table, experiment, split)))
            assert ticks[k] > patch.get_height()  # the synthetic runs fit their training triples better
    # "n/a" for each bar of a split the experiment did not run: wiclp_wide x2, contrast x1
    assert n_missing == 3
    assert sum(t.get_text() == "n/a" for t in ax.texts) == 3
    # the seed-7 run of contrast (test accuracy ~0.35 at the end, no baseline run) is not averaged in
    contrast_band = bars[3].patches[0].get_height()
    assert contrast_band == pytest.approx(_expected_final(table, "contrast", "band", "test_accuracy")[0])
    title = fig._suptitle.get_text()
    assert "2 seeds" in title and "95% interval" in title and "splits: band, bipartite, random" in title
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[: len(BAR_LABELS)] == BAR_LABELS and "final train accuracy" in legend


def test_interventions_curves_offset_projections_and_share_colours(intervention_metrics):
    fig = F.interventions_figure(intervention_metrics, "baseline")
    bars, curves = fig.axes[0], fig.axes[1]
    base_end = float(STEPS[-1])
    for experiment, (intervention, splits, steps, _) in INTERVENTIONS.items():
        offset = base_end if intervention.startswith("projection-") else 0.0
        for split in splits:
            line = _line(curves, f"curve:{experiment}:{split}")
            assert list(line.get_xdata()) == pytest.approx([offset + s for s in steps]), (experiment, split)
            rows = intervention_metrics[
                (intervention_metrics["experiment"] == experiment)
                & (intervention_metrics["split"] == split)
                & intervention_metrics["seed"].isin(SEEDS)
            ]
            expected = rows.groupby("step")["test_accuracy"].mean().to_numpy()
            assert list(line.get_ydata()) == pytest.approx(list(expected))
    assert list(_line(curves, "curve:baseline:band").get_xdata()) == pytest.approx(STEPS)
    assert not [line for line in curves.get_lines() if "only_here" in str(line.get_gid())]
    # the projection continues the baseline: its first point (step 0) sits at the baseline's last step
    assert [line.get_xdata()[0] for line in curves.get_lines() if line.get_gid() == "base_end"] == [base_end]
    assert "projection steps added after the base run's last step" in curves.get_xlabel()
    # one colour per experiment, the same as its bars; one line style per split
    for experiment, container in zip(["baseline", *INTERVENTIONS], _bar_containers(bars), strict=True):
        colour = to_hex(container.patches[0].get_facecolor())
        assert to_hex(_line(curves, f"curve:{experiment}:band").get_color()) == colour
    styles = {split: _line(curves, f"curve:baseline:{split}").get_linestyle() for split in SHOWN_SPLITS}
    assert len(set(styles.values())) == len(SHOWN_SPLITS)
    # shaded 95% bands with two seeds: one per drawn curve
    n_curves = sum(str(line.get_gid()).startswith("curve:") for line in curves.get_lines())
    assert n_curves == len(SHOWN_SPLITS) + 3 + 1 + 2
    assert len(curves.collections) == n_curves


def test_interventions_leave_out_other_experiments(intervention_metrics):
    table, interventions, reason = F.intervention_runs(intervention_metrics, "baseline")
    assert reason == ""
    assert interventions == {e: v[0] for e, v in INTERVENTIONS.items()}
    assert set(table["experiment"]) == {"baseline", *INTERVENTIONS}  # not the no_pos_emb ablation
    assert set(table["split"]) == set(SHOWN_SPLITS) and set(table["seed"]) == set(SEEDS)
    fig = F.interventions_figure(intervention_metrics, "baseline")
    texts = " ".join(t.get_text() for t in _texts(fig))
    assert "no_pos_emb" not in texts and "only_here" not in texts and "caption_by_order" not in texts
    # a projection's plotted step is its own step after the baseline's final step
    wiclp = table[table["experiment"] == "wiclp"]
    assert (wiclp["plot_step"] == wiclp["step"] + STEPS[-1]).all()
    contrast = table[table["experiment"] == "contrast"]
    assert (contrast["plot_step"] == contrast["step"]).all()


def test_interventions_one_seed_no_interval(tmp_path):
    table = _interventions_table(seeds=[0], extra=False)
    fig = F.interventions_figure(table, "baseline")
    assert "(1 seed, no interval)" in fig._suptitle.get_text()
    assert len(fig.axes[1].collections) == 0  # no shaded band
    errorbars = [c for c in fig.axes[0].containers if isinstance(c, matplotlib.container.ErrorbarContainer)]
    for errorbar in errorbars:
        assert all(len(segment) == 0 for segment in errorbar.lines[2][0].get_segments())  # nothing drawn
    assert not _seed_lines(fig)
    F.save_figure(fig, [tmp_path / "one.png"])
    assert (tmp_path / "one.png").stat().st_size > 5000


def test_interventions_no_data_cases(tmp_path, metrics, intervention_metrics):
    cases = {
        "no intervention experiments": metrics.assign(intervention="baseline"),
        "no runs of the baseline": intervention_metrics.iloc[0:0],
        "no split run by both": pd.concat(
            [
                metrics.assign(intervention="baseline"),
                pd.DataFrame(_intervention_rows("c", "contrastive-both", ["elsewhere"], STEPS, 0.5, SEEDS)).reindex(
                    columns=list(F.METRICS_COLUMNS)
                ),
            ],
            ignore_index=True,
        ),
    }
    for text, table in cases.items():
        fig = F.interventions_figure(table, "baseline")
        shown = [t.get_text() for t in _texts(fig)]
        assert len(shown) == 1 and shown[0].startswith(text), shown
        assert not fig.axes[0].patches and not fig.axes[0].get_lines()
        _assert_fonts(fig)
    fig = F.interventions_figure(intervention_metrics, "no_such_experiment")
    assert [t.get_text() for t in _texts(fig)][0].startswith("no runs of the baseline experiment 'no_such_experiment'")
    # an older table without the intervention column
    with pytest.raises(ValueError, match="missing column.*intervention"):
        F.interventions_figure(metrics.drop(columns=["intervention"]), "baseline")


def test_interventions_written_through_the_file_entry_point(tmp_path, intervention_metrics):
    path = tmp_path / "metrics.csv"
    intervention_metrics.to_csv(path, index=False)
    outputs = [tmp_path / "interventions.png", tmp_path / "interventions.pdf"]
    fig = F.write_relational_figure("interventions", path, outputs, baseline="baseline")
    _assert_images(outputs)
    _assert_fonts(fig)
    assert [c.get_label() for c in _bar_containers(fig.axes[0])] == BAR_LABELS


def test_every_mean_over_seeds_draws_its_seeds(metrics):
    final = metrics[metrics["step"] == STEPS[-1]]

    def seeds_of(experiment, split, column="test_accuracy"):
        rows = final[(final["experiment"] == experiment) & (final["split"] == split)]
        return sorted(rows[column])

    def ydata(ax, gid):
        return sorted(_line(ax, gid).get_ydata())

    scatter = F.scatter_figure(metrics, "baseline")
    skew = F.skew_figure(metrics, "baseline")
    for ax in [*scatter.axes, *skew.axes[:2]]:
        for split in SPLITS:
            assert ydata(ax, f"seeds:{split}") == pytest.approx(seeds_of("baseline", split)), split
    kinds = skew.axes[2]
    assert ydata(kinds, "seeds:new_caption:random") == pytest.approx(
        seeds_of("baseline", "random", "test_new_caption_accuracy")
    )
    assert ydata(kinds, "seeds:new_image:band") == pytest.approx(
        seeds_of("baseline", "band", "test_new_image_accuracy")
    )
    assert not [line for line in kinds.get_lines() if line.get_gid() == "seeds:new_caption:band"]  # none of that kind
    ablation = F.ablation_figure(metrics, "baseline").axes[0]
    for experiment in EXPERIMENTS:
        for split in SPLITS:
            assert ydata(ablation, f"seeds:{experiment}:{split}") == pytest.approx(seeds_of(experiment, split))
    curves = F.curves_figure(metrics, "baseline").axes[0]
    band = metrics[(metrics["experiment"] == "baseline") & (metrics["split"] == "band")]
    assert ydata(curves, "seeds:test:band") == pytest.approx(sorted(band["test_accuracy"]))
    assert ydata(curves, "seeds:train:band") == pytest.approx(sorted(band["train_accuracy"]))
    # the markers are small, drawn over the means
    assert max(line.get_markersize() for line in _seed_lines(scatter)) < 4


def test_skew_figure_shows_test_accuracy_by_kind_of_held_out_triple(metrics, tmp_path):
    fig = F.skew_figure(metrics, "baseline")
    assert len(fig.axes) == 4
    ax = fig.axes[2]
    assert ax.get_title() == "test accuracy by kind of held-out triple"
    points = F.final_points(metrics, "baseline")
    for kind in ("new_caption", "new_image"):
        shown = _line(ax, f"kind:{kind}").get_ydata()
        np.testing.assert_allclose(shown, points[f"test_{kind}_accuracy"].to_numpy(dtype=np.float64))
    # no accuracy where a split has no test sample of a kind: band and bipartite hold out no new
    # caption, caption_by_order no new image
    assert sum(t.get_text() == "n/a" for t in ax.texts) == 3
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["new caption of a training image", "new image"]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(SPLITS)
    _assert_fonts(fig)
    F.save_figure(fig, [tmp_path / "skew.png"])
    # a table of one kind only still draws; a split with neither kind's accuracy says "no data"
    only_images = metrics[metrics["split"].isin(["band", "bipartite"])]
    fig = F.skew_figure(only_images, "baseline")
    assert sum(t.get_text() == "n/a" for t in fig.axes[2].texts) == 2
    no_kinds = metrics.assign(test_new_caption_accuracy=np.nan, test_new_image_accuracy=np.nan)
    assert any(t.get_text() == "no data" for t in F.skew_figure(no_kinds, "baseline").axes[2].texts)


def test_interventions_compare_a_projection_with_its_base(tmp_path):
    """A projection fine-tuned on another experiment (t5_random) is drawn beside that base, and its
    curve continues from the base's last point, not the baseline's."""
    rows = []
    for seed in (0, 1):
        for experiment, steps, params, test in (
            ("baseline", (600, 1200), "none", (0.5, 0.9)),
            ("t5_random", (600, 1200), "none", (0.1, 0.2)),
            ("wiclp_random", (150, 300), "base=t5_random variant=window window=2", (0.25, 0.3)),
        ):
            for step, accuracy in zip(steps, test, strict=True):
                rows.append(
                    {
                        "experiment": experiment,
                        "split": "band",
                        "seed": seed,
                        "step": step,
                        "train_accuracy": 1.0,
                        "test_accuracy": accuracy,
                        "n_train_samples": 64,
                        "n_test_samples": 64,
                        "intervention": "projection-window" if experiment == "wiclp_random" else "baseline",
                        "intervention_params": params,
                    }
                )
    table, interventions, reason = F.intervention_runs(pd.DataFrame(rows), "baseline")
    assert reason == "" and interventions == {"t5_random": "baseline", "wiclp_random": "projection-window"}
    projected = table[table["experiment"] == "wiclp_random"]
    assert sorted(set(projected["plot_step"])) == [1350.0, 1500.0]  # after t5_random's final step
    fig = F.interventions_figure(pd.DataFrame(rows), "baseline")
    ax_bar, ax_curve = fig.axes[:2]
    labels = [t.get_text() for t in ax_bar.get_legend_handles_labels()[1]] if ax_bar.get_legend() else []
    labels += [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert any("t5_random (base)" in label for label in labels), labels
    link = _line(ax_curve, "link:wiclp_random:band")
    assert list(link.get_ydata()) == pytest.approx([0.2, 0.25])  # from t5_random's final mean


def test_labels_of_nearby_points_share_one_stacked_label_and_never_overlap(metrics):
    """Splits at almost the same balance and accuracy (band and a twin 0.01 below it) are named in
    one label; no two labels of the skew and scatter figures overlap."""
    twin = metrics[metrics["split"] == "band"].assign(
        split="band_twin", test_accuracy=lambda t: t["test_accuracy"] - 0.01
    )
    table = pd.concat([metrics, twin], ignore_index=True)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    for fig in (F.skew_figure(table, "baseline"), F.scatter_figure(table, "baseline")):
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        for ax in fig.axes:
            labels = [t for t in ax.texts if t.get_gid() == "label"]
            boxes = [t.get_window_extent(renderer) for t in labels]
            for i in range(len(boxes)):
                for j in range(i + 1, len(boxes)):
                    assert not boxes[i].overlaps(boxes[j]), (labels[i].get_text(), labels[j].get_text())
            texts = [t.get_text() for t in labels]
            if texts:
                assert any("band\nband_twin" in text for text in texts), texts


def test_a_label_that_would_cover_a_neighbours_marker_moves_above_or_left():
    """Points as in the medium scatter (one_sided at 75, upper_triangle at 87.5, caption_bipartite
    at 100, all near 0): "upper_triangle" to the right of its point runs into caption_bipartite's
    marker, so it moves; afterwards no label covers another point's marker or another label."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from diffcomp.relational.figures.style import _place_labels

    xs, ys = pd.Series([50.0, 75.0, 87.5, 100.0]), pd.Series([0.0, 0.0, 0.0, 0.01])
    names = ["bipartite", "one_sided", "upper_triangle", "caption_bipartite"]
    fig = Figure(figsize=(4.5, 3.5))
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(xs, ys, "o")
    ax.set_ylim(-0.05, 1.1)
    ax.margins(x=0.15)
    labels = [
        ax.annotate(n, (x, y), xytext=(4, 4), textcoords="offset points", va="bottom", fontsize=6.5)
        for n, x, y in zip(names, xs, ys, strict=True)
    ]
    _place_labels(ax, labels, xs, ys, ys + 0.09)
    canvas.draw()
    renderer = canvas.get_renderer()
    points = ax.transData.transform(np.column_stack([xs, ys]))
    boxes = [label.get_window_extent(renderer) for label in labels]
    for k, box in enumerate(boxes):
        others = [p for j, p in enumerate(points) if j != k]
        assert not any(box.x0 <= px <= box.x1 and box.y0 <= py <= box.y1 for px, py in others), names[k]
        assert not any(box.overlaps(b) for j, b in enumerate(boxes) if j != k), names[k]
    assert labels[2].get_horizontalalignment() != "left"  # upper_triangle moved off its right side
