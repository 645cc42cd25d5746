import cv2
import numpy as np
import pandas as pd
import pytest

from diffcomp.io import write_json
from diffcomp.relational.audit import FLAT_KEYS, audit_index_triples, flatten
from diffcomp.relational.data import triples_frame
from diffcomp.relational.evaluate import (
    FAILURE_KINDS,
    HELD_OUT_KINDS,
    METRIC_COLUMNS,
    combine_metrics,
    evaluate_checkpoint,
    evaluate_run,
    held_out_kind,
    load_samples,
    ncc_scores,
    predict_nouns,
    read_metrics,
    score_predictions,
)
from diffcomp.relational.icons import load_icons, nouns, pair_images, render_icons, save_icons
from diffcomp.relational.splits import Split, all_triples

SIZE = 16


@pytest.fixture(scope="module")
def icons8():
    return render_icons(8, SIZE)


@pytest.fixture(scope="module")
def icons30():
    return render_icons(30, SIZE)


def ordered_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    top, bottom = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    keep = top != bottom
    return top[keep], bottom[keep]


def score_images(images, icons, top, bottom) -> dict:
    pred_top, pred_bottom, _, _ = predict_nouns(images, icons)
    return score_predictions(pred_top, pred_bottom, top, bottom)


@pytest.mark.parametrize("fixture", ["icons8", "icons30"])
def test_ground_truth_renders_are_recognised(fixture, request):
    icons = request.getfixturevalue(fixture)
    top, bottom = ordered_pairs(len(icons))
    images = pair_images(icons, top, bottom)
    pred_top, pred_bottom, score_top, score_bottom = predict_nouns(images, icons)
    assert pred_top.dtype == np.int64 and pred_bottom.dtype == np.int64
    np.testing.assert_array_equal(pred_top, top)
    np.testing.assert_array_equal(pred_bottom, bottom)
    np.testing.assert_allclose(score_top, 1.0, atol=1e-9)
    np.testing.assert_allclose(score_bottom, 1.0, atol=1e-9)
    assert score_predictions(pred_top, pred_bottom, top, bottom) == {
        "accuracy": 1.0,
        "frac_swapped": 0.0,
        "frac_one_wrong": 0.0,
        "frac_both_wrong": 0.0,
    }
    # Labels read the other way round: every sample is the swap of its caption.
    assert score_predictions(pred_top, pred_bottom, bottom, top) == {
        "accuracy": 0.0,
        "frac_swapped": 1.0,
        "frac_one_wrong": 0.0,
        "frac_both_wrong": 0.0,
    }


def test_noisy_renders_still_recognised(icons30):
    rng = np.random.default_rng(0)
    top, bottom = ordered_pairs(len(icons30))
    images = pair_images(icons30, top, bottom)
    noisy = np.clip(images + rng.normal(0.0, 0.1, images.shape), 0.0, 1.0).astype(np.float16)
    pred_top, pred_bottom, score_top, score_bottom = predict_nouns(noisy, icons30)
    assert score_predictions(pred_top, pred_bottom, top, bottom)["accuracy"] == 1.0
    assert score_top.max() < 1.0 and score_bottom.max() < 1.0  # the noise costs some correlation
    assert min(score_top.min(), score_bottom.min()) > 0.5


def test_chunking_gives_the_same_answer(icons8):
    rng = np.random.default_rng(1)
    top, bottom = ordered_pairs(len(icons8))
    images = np.clip(pair_images(icons8, top, bottom) + rng.normal(0.0, 0.3, (len(top), 2 * SIZE, SIZE)), 0, 1)
    whole = predict_nouns(images, icons8)
    chunked = predict_nouns(images, icons8, chunk=5)
    for a, b in zip(whole, chunked, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_failure_kinds(icons8):
    top = np.array([0, 0, 0, 0, 0, 2])
    bottom = np.array([1, 1, 1, 1, 1, 3])
    shown_top = [0, 1, 0, 5, 6, 3]
    shown_bottom = [1, 0, 4, 1, 7, 2]
    images = pair_images(icons8, shown_top, shown_bottom)
    images[4, :SIZE] = 1.0  # blank top half
    images[4, SIZE:] = 0.5  # uniformly grey bottom half: no shape either
    pred_top, pred_bottom, score_top, score_bottom = predict_nouns(images, icons8)
    assert pred_top.tolist() == [0, 1, 0, 5, -1, 3]
    assert pred_bottom.tolist() == [1, 0, 4, 1, -1, 2]
    assert score_top[4] == 0.0 and score_bottom[4] == 0.0
    scores = score_predictions(pred_top, pred_bottom, top, bottom)
    assert scores == pytest.approx(
        {"accuracy": 1 / 6, "frac_swapped": 2 / 6, "frac_one_wrong": 2 / 6, "frac_both_wrong": 1 / 6}
    )
    assert sum(scores.values()) == pytest.approx(1.0)
    assert FAILURE_KINDS == ("swapped", "one_wrong", "both_wrong")


def test_blank_and_non_finite_images_are_both_wrong(icons8):
    images = np.ones((3, 2 * SIZE, SIZE), dtype=np.float32)
    images[1] = 0.0
    images[2] = np.nan
    pred_top, pred_bottom, score_top, score_bottom = predict_nouns(images, icons8)
    assert pred_top.tolist() == pred_bottom.tolist() == [-1, -1, -1]
    assert score_top.tolist() == score_bottom.tolist() == [0.0, 0.0, 0.0]
    scores = score_predictions(pred_top, pred_bottom, [0, 1, 2], [3, 4, 5])
    assert scores == {"accuracy": 0.0, "frac_swapped": 0.0, "frac_one_wrong": 0.0, "frac_both_wrong": 1.0}


def test_empty_input():
    scores = score_predictions([], [], [], [])
    assert set(scores) == {"accuracy", "frac_swapped", "frac_one_wrong", "frac_both_wrong"}
    assert all(np.isnan(value) for value in scores.values())
    pred_top, pred_bottom, score_top, score_bottom = predict_nouns(np.ones((0, 2 * SIZE, SIZE)), render_icons(2, SIZE))
    assert pred_top.shape == pred_bottom.shape == score_top.shape == score_bottom.shape == (0,)


def test_shape_errors(icons8):
    with pytest.raises(ValueError, match=r"\(n, 32, 16\)"):
        predict_nouns(np.ones((2, 40, 20)), icons8)
    with pytest.raises(ValueError, match="one entry per sample"):
        score_predictions([0, 1], [1, 0], [0], [1])


def test_scores_match_opencv_template_matching(icons30):
    rng = np.random.default_rng(2)
    top, bottom = rng.integers(0, len(icons30), size=(2, 6))
    images = np.clip(pair_images(icons30, top, bottom) + rng.normal(0.0, 0.2, (6, 2 * SIZE, SIZE)), 0, 1)
    images = images.astype(np.float32)
    halves = np.concatenate([images[:, :SIZE], images[:, SIZE:]])
    ours = ncc_scores(halves, icons30)
    theirs = np.array(
        [[cv2.matchTemplate(half, icon, cv2.TM_CCOEFF_NORMED)[0, 0] for icon in icons30] for half in halves]
    )
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    pred_top, pred_bottom, score_top, score_bottom = predict_nouns(images, icons30)
    np.testing.assert_array_equal(np.concatenate([pred_top, pred_bottom]), theirs.argmax(axis=1))
    np.testing.assert_allclose(np.concatenate([score_top, score_bottom]), theirs.max(axis=1), atol=1e-4)


# --- per-run evaluation -------------------------------------------------------------------------

INFO = {
    "run": "band_N8_clip_learned_seed0",
    "experiment": "skew",
    "split": "band_N8",
    "family": "band(1)",
    "vocab_size": 8,
    "encoder": "clip",
    "pos_emb": "none",
    "seed": 0,
    "intervention": "baseline",
    "intervention_params": "none",
}


def write_samples(path, images, top, bottom, split, step, drop=()):
    arrays = {
        "images": np.asarray(images, dtype=np.float16),
        "top": np.asarray(top, dtype=np.int64),
        "bottom": np.asarray(bottom, dtype=np.int64),
        "relation": np.zeros(len(top), dtype=np.int64),
        "split": np.asarray(split, dtype=str),
        "step": np.int64(step),
    }
    arrays = {key: value for key, value in arrays.items() if key not in drop}
    np.savez_compressed(path, **arrays)


@pytest.fixture
def run_dir(tmp_path, icons8):
    """Icons, an audit, a train.csv and two checkpoints (written out of step order) of an N = 8 run.

    The samples show every ordered pair with relation 0: the first 40 pairs are training triples;
    of the 16 test samples, the first 8 (pairs 40-47) are new captions of training images (their
    relation-1 caption is a training triple) and the last 8 (pairs 48-55) new images.
    """
    save_icons(tmp_path / "icons.npz", icons8, nouns(8))
    icons, _ = load_icons(tmp_path / "icons.npz")
    triples = all_triples(8)
    audit = audit_index_triples(triples[: len(triples) // 3], 8)
    write_json(tmp_path / "audit.json", audit)
    samples = tmp_path / "samples"
    samples.mkdir()
    top, bottom = ordered_pairs(8)  # 56 pairs: the first 40 are "train", the rest "test"
    split = np.where(np.arange(len(top)) < 40, "train", "test")
    train = np.concatenate(
        [
            np.stack([top[:40], bottom[:40], np.zeros(40, dtype=np.int64)], axis=1),
            np.stack([top[40:48], bottom[40:48], np.ones(8, dtype=np.int64)], axis=1),
        ]
    )
    triples_frame(train, nouns(8)).to_csv(tmp_path / "train.csv", index=False)
    # step 1000: everything right.
    write_samples(samples / "step000001000.npz", pair_images(icons, top, bottom), top, bottom, split, 1000)
    # step 200: train all swapped but the first 4 (both wrong); test right but the first 4 (one wrong).
    shown_top, shown_bottom = bottom.copy(), top.copy()
    shown_top[40:], shown_bottom[40:] = top[40:], bottom[40:]
    shown_top[:4], shown_bottom[:4] = (top[:4] + 3) % 8, (bottom[:4] + 2) % 8
    shown_bottom[40:44] = (bottom[40:44] + 1) % 8
    images = pair_images(icons, shown_top, shown_bottom)
    write_samples(samples / "step000000200.npz", images, top, bottom, split, 200)
    return tmp_path, audit


def test_evaluate_run(run_dir):
    root, audit = run_dir
    out = root / "metrics.csv"
    table = evaluate_run(
        root / "samples", root / "icons.npz", root / "audit.json", INFO, out, train_csv=root / "train.csv"
    )
    assert list(table.columns) == METRIC_COLUMNS
    assert table["step"].tolist() == [200, 1000]
    early, late = table.iloc[0], table.iloc[1]
    assert early["train_accuracy"] == 0.0
    assert early["train_frac_swapped"] == pytest.approx(36 / 40)
    assert early["train_frac_both_wrong"] == pytest.approx(4 / 40)
    assert early["train_frac_one_wrong"] == 0.0
    assert early["test_accuracy"] == pytest.approx(12 / 16)
    assert early["test_frac_one_wrong"] == pytest.approx(4 / 16)
    assert early["test_frac_swapped"] == early["test_frac_both_wrong"] == 0.0
    assert late["train_accuracy"] == late["test_accuracy"] == 1.0
    assert (table["n_train_samples"] == 40).all() and (table["n_test_samples"] == 16).all()
    # by kind of held-out triple: the 4 one-wrong test samples at step 200 are new captions
    assert (table["n_test_new_caption_samples"] == 8).all() and (table["n_test_new_image_samples"] == 8).all()
    assert early["test_new_caption_accuracy"] == pytest.approx(4 / 8) and early["test_new_image_accuracy"] == 1.0
    assert late["test_new_caption_accuracy"] == late["test_new_image_accuracy"] == 1.0
    for column, value in INFO.items():
        assert (table[column] == value).all()
    flat = flatten(audit)
    for key in FLAT_KEYS[:-1]:
        assert (table[key.replace(".", "_")] == flat[key]).all()

    written = read_metrics(out)
    assert list(written.columns) == METRIC_COLUMNS
    assert written["pos_emb"].tolist() == ["none", "none"]  # not read back as a missing value
    pd.testing.assert_frame_equal(written, table, check_dtype=False)


def test_split_without_samples_gives_nan(icons8):
    top, bottom = ordered_pairs(3)
    samples = {
        "images": pair_images(icons8, top, bottom),
        "top": top,
        "bottom": bottom,
        "relation": np.zeros(len(top), dtype=np.int64),
        "split": np.full(len(top), "train"),
        "step": 0,
    }
    row = evaluate_checkpoint(samples, icons8)
    assert row["train_accuracy"] == 1.0 and row["n_train_samples"] == 6
    assert np.isnan(row["test_accuracy"]) and np.isnan(row["test_frac_swapped"]) and row["n_test_samples"] == 0


def _kind_counts(split: Split) -> dict[str, int]:
    train, test = split.triples()
    kinds = held_out_kind(test[:, 0], test[:, 1], train).tolist()
    return {kind: kinds.count(kind) for kind in HELD_OUT_KINDS}


@pytest.mark.parametrize(
    ("family", "params", "expected"),
    [
        # one caption of every pair trained: every test triple is the other caption of a training image
        ("caption_by_order", {}, {"new_caption": 56, "new_image": 0}),
        # both captions of the cross-half pairs trained: every other triple shows an untrained image
        ("bipartite", {}, {"new_caption": 0, "new_image": 80}),
        ("band", {"m": 1}, {"new_caption": 0, "new_image": 80}),
        ("upper_triangle", {}, {"new_caption": 0, "new_image": 56}),
        # one caption of the 32 ordered cross-half pairs; the 24 within-half pairs, both captions, untrained
        ("caption_bipartite", {}, {"new_caption": 32, "new_image": 48}),
    ],
)
def test_held_out_kinds_of_each_family(family, params, expected):
    assert _kind_counts(Split(family, family, 8, 0, params)) == expected


def test_held_out_kind_is_whether_the_other_caption_is_trained():
    train, test = Split("random", "random", 8, 3, {"size": 40}).triples()
    kinds = held_out_kind(test[:, 0], test[:, 1], train)
    trained = {tuple(t) for t in train.tolist()}
    expected = [
        "new_caption" if (top, bottom, 1 - rel) in trained else "new_image" for top, bottom, rel in test.tolist()
    ]
    assert kinds.tolist() == expected
    assert 0 < (kinds == "new_caption").sum() < len(test)  # a random split has both kinds


def test_kind_without_test_samples_is_nan_not_zero(icons8):
    top, bottom = ordered_pairs(3)
    samples = {
        "images": pair_images(icons8, top, bottom),
        "top": top,
        "bottom": bottom,
        "relation": np.zeros(len(top), dtype=np.int64),
        "split": np.array(["train"] * 3 + ["test"] * 3),
        "step": 0,
    }
    train = np.stack([top[:3], bottom[:3], np.zeros(3, dtype=np.int64)], axis=1)
    row = evaluate_checkpoint(samples, icons8, train)
    assert row["n_test_new_image_samples"] == 3 and row["test_new_image_accuracy"] == 1.0
    assert row["n_test_new_caption_samples"] == 0 and np.isnan(row["test_new_caption_accuracy"])
    # without the training triples the kinds are not known, and not reported
    assert "test_new_image_accuracy" not in evaluate_checkpoint(samples, icons8)


def test_samples_of_another_split_are_refused(run_dir):
    root, _ = run_dir
    frame = pd.read_csv(root / "train.csv")
    frame.iloc[1:].to_csv(root / "short.csv", index=False)  # a "train" sample is no longer a training triple
    out = root / "metrics.csv"
    with pytest.raises(ValueError, match=r"marked 'train' but is not a training triple of .*short\.csv"):
        evaluate_run(root / "samples", root / "icons.npz", root / "audit.json", INFO, out, train_csv=root / "short.csv")
    top, bottom = ordered_pairs(8)
    names = nouns(8)
    sample_50 = pd.DataFrame([[names[top[50]], "on top of", names[bottom[50]]]], columns=frame.columns)
    frame_plus = pd.concat([frame, sample_50], ignore_index=True)  # a test sample's triple, now trained
    frame_plus.to_csv(root / "plus.csv", index=False)
    with pytest.raises(ValueError, match="marked 'test' but is a training triple"):
        evaluate_run(root / "samples", root / "icons.npz", root / "audit.json", INFO, out, train_csv=root / "plus.csv")
    with pytest.raises(ValueError, match=r"missing\.csv"):
        evaluate_run(
            root / "samples", root / "icons.npz", root / "audit.json", INFO, out, train_csv=root / "missing.csv"
        )
    assert not out.exists()


def test_corrupt_sample_file_writes_nothing(run_dir):
    root, _ = run_dir
    bad = root / "samples" / "step000000500.npz"
    bad.write_bytes((root / "samples" / "step000000200.npz").read_bytes()[:300])  # truncated
    out = root / "metrics.csv"
    with pytest.raises(ValueError, match="step000000500.npz"):
        evaluate_run(root / "samples", root / "icons.npz", root / "audit.json", INFO, out, train_csv=root / "train.csv")
    assert not out.exists()
    bad.write_bytes(b"not an npz file")
    with pytest.raises(ValueError, match="step000000500.npz.*corrupt"):
        load_samples(bad)


def test_load_samples_checks_keys_and_shapes(tmp_path, icons8):
    top, bottom = ordered_pairs(3)
    images = pair_images(icons8, top, bottom)
    split = np.full(len(top), "train")
    path = tmp_path / "step000000001.npz"
    write_samples(path, images, top, bottom, split, 1)
    samples = load_samples(path)
    assert samples["step"] == 1 and samples["images"].dtype == np.float16
    assert samples["top"].dtype == np.int64 and samples["split"].tolist() == split.tolist()

    write_samples(path, images, top, bottom, split, 1, drop=("split",))
    with pytest.raises(ValueError, match=r"step000000001\.npz.*missing.*split"):
        load_samples(path)
    write_samples(path, images, top[:-1], bottom, split, 1)
    with pytest.raises(ValueError, match=r"step000000001\.npz.*top"):
        load_samples(path)
    write_samples(path, images[:, :, :-1], top, bottom, split, 1)
    with pytest.raises(ValueError, match=r"step000000001\.npz.*images"):
        load_samples(path)
    write_samples(path, images, top, bottom, np.full(len(top), "val"), 1)
    with pytest.raises(ValueError, match=r"step000000001\.npz.*split"):
        load_samples(path)


def test_icon_size_mismatch(run_dir):
    root, _ = run_dir
    save_icons(root / "icons20.npz", render_icons(8, 20), nouns(8))
    with pytest.raises(ValueError, match=r"icons20\.npz.*step000000200\.npz"):
        evaluate_run(
            root / "samples",
            root / "icons20.npz",
            root / "audit.json",
            INFO,
            root / "m.csv",
            train_csv=root / "train.csv",
        )
    assert not (root / "m.csv").exists()
    with pytest.raises(ValueError, match=r"icons\.npz.*vocab_size"):
        evaluate_run(
            root / "samples",
            root / "icons.npz",
            root / "audit.json",
            {**INFO, "vocab_size": 9},
            root / "m.csv",
            train_csv=root / "train.csv",
        )


def test_no_samples(tmp_path):
    with pytest.raises(ValueError, match="no step"):
        evaluate_run(
            tmp_path,
            tmp_path / "icons.npz",
            tmp_path / "audit.json",
            INFO,
            tmp_path / "m.csv",
            train_csv=tmp_path / "t",
        )


def test_read_and_combine_metrics(run_dir, tmp_path):
    root, _ = run_dir
    first = evaluate_run(
        root / "samples", root / "icons.npz", root / "audit.json", INFO, root / "a.csv", train_csv=root / "train.csv"
    )
    other = {**INFO, "run": "other", "seed": 1}
    second = evaluate_run(
        root / "samples", root / "icons.npz", root / "audit.json", other, root / "b.csv", train_csv=root / "train.csv"
    )
    combined = combine_metrics([root / "b.csv", root / "a.csv"], root / "all.csv")
    assert combined["run"].tolist() == ["other", "other", INFO["run"], INFO["run"]]
    assert len(combined) == len(first) + len(second)
    pd.testing.assert_frame_equal(read_metrics(root / "all.csv"), combined)

    pd.read_csv(root / "a.csv").drop(columns=["coverage", "test_accuracy"]).to_csv(root / "bad.csv", index=False)
    with pytest.raises(ValueError, match=r"bad\.csv.*test_accuracy, coverage"):
        read_metrics(root / "bad.csv")


def test_audit_columns_follow_the_audit():
    assert METRIC_COLUMNS[-7:] == [key.replace(".", "_") for key in FLAT_KEYS if key != "n_triples"]
    assert len(set(METRIC_COLUMNS)) == len(METRIC_COLUMNS)


def test_zscore_rows_blanks_exactly_the_shapeless_rows_and_normalises_the_rest():
    """A non-finite pixel blanks its row only; the blank threshold is a standard deviation of
    BLANK_STD per pixel (a row at half of it is blank, one at twice it is not); every other row is
    centred and scaled to unit norm, as computed here in float64."""
    from diffcomp.relational.evaluate import BLANK_STD, _zscore_rows

    rng = np.random.default_rng(0)
    width = 64
    shaped = rng.normal(size=width)
    with_nan = rng.normal(size=width)
    with_nan[3] = np.nan
    pattern = np.tile([1.0, -1.0], width // 2)  # standard deviation 1 per pixel
    faint, clear = 0.5 + 0.5 * BLANK_STD * pattern, 0.5 + 2.0 * BLANK_STD * pattern
    z, shapeless = _zscore_rows(np.stack([shaped, with_nan, faint, clear]).astype(np.float32))
    assert shapeless.tolist() == [False, True, True, False]
    assert np.all(np.isfinite(z))
    assert np.array_equal(z[1], np.zeros(width)) and np.array_equal(z[2], np.zeros(width))
    for row, source in ((0, shaped.astype(np.float32)), (3, clear.astype(np.float32))):
        centred = source.astype(np.float64) - source.astype(np.float64).mean()
        np.testing.assert_allclose(z[row], centred / np.linalg.norm(centred), atol=1e-12)
