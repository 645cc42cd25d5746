import numpy as np
import pytest

from diffcomp.bumps import accuracy, contour_fractions, predict_positions, render


@pytest.mark.parametrize("size", [16, 32])
def test_clean_renders_recovered_within_half_pixel(size):
    rng = np.random.default_rng(1)
    labels = rng.uniform(2, size - 2, size=(2000, 2))
    positions, counts = predict_positions(render(labels, size, 1.0))
    assert (counts == 1).all()
    assert np.abs(positions - labels).max() <= 0.5 + 1e-9


def test_blank_image_reported_as_none():
    positions, counts = predict_positions(np.ones((3, 16, 16), dtype=np.float32))
    assert counts.tolist() == [0, 0, 0]
    assert np.isnan(positions).all()


def test_two_bumps_reported_as_several():
    two = render([[4.5, 4.5], [12.5, 12.5]], 16, 1.0).min(axis=0, keepdims=True)
    positions, counts = predict_positions(two)
    assert counts[0] == 2
    # fallback: intensity centroid of the inverted image, midway between the (symmetric) bumps
    assert positions[0] == pytest.approx([8.5, 8.5], abs=1e-6)


def test_accuracy_definitions():
    true = np.array([[5.0, 5.0], [5.0, 5.0], [5.0, 5.0], [5.0, 5.0]])
    pred = np.array([[5.5, 5.5], [6.5, 5.0], [5.0, 3.0], [np.nan, np.nan]])
    acc = accuracy(true, pred)
    assert acc == {"joint": 0.25, "x": 0.5, "y": 0.5}
    # the bound is strict: an error of exactly 1 is wrong
    assert accuracy([[1.0, 1.0]], [[2.0, 1.0]])["joint"] == 0.0


def test_accuracy_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        accuracy(np.zeros((3, 2)), np.zeros((2, 2)))


def test_contour_fractions():
    assert contour_fractions(np.array([0, 1, 1, 3])) == {"frac_none": 0.25, "frac_single": 0.5, "frac_multi": 0.25}
