import numpy as np
import pytest

from diffcomp.representation import linear_r2, umap_r2


def test_linear_r2_known_answers():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(200, 3))
    exact = emb @ np.array([1.0, -2.0, 0.5]) + 3.0
    noise = rng.normal(size=200)
    r2 = linear_r2(emb, np.stack([exact, noise], axis=1))
    assert r2[0] == pytest.approx(1.0)
    assert r2[1] < 0.1


def test_umap_r2_recovers_ordered_manifold_and_is_seeded():
    rng = np.random.default_rng(0)
    labels = rng.uniform(0, 16, size=(300, 2))
    # activations: a smooth nonlinear embedding of (x, y) into 20 dimensions
    proj = rng.normal(size=(4, 20))
    feats = np.concatenate([labels / 16, np.sin(labels / 5)], axis=1) @ proj
    ordered = umap_r2(feats, labels, seed=3)
    assert ordered["embedding"].shape == (300, 3)
    assert ordered["r2_x"] > 0.8 and ordered["r2_y"] > 0.8
    again = umap_r2(feats, labels, seed=3)
    np.testing.assert_array_equal(ordered["embedding"], again["embedding"])
    # activations unrelated to the labels: no linear structure
    shuffled = umap_r2(rng.normal(size=(300, 20)), labels, seed=3)
    assert shuffled["r2_x"] < 0.2 and shuffled["r2_y"] < 0.2
