import numpy as np
import pytest

from diffcomp.bumps import BumpDataset, Hole, render, tile
from diffcomp.bumps.audit import audit, marginal_coverage, neighbour_overlap
from diffcomp.bumps.data import grid_values, preview_grid, read_labels, select_preview, sigma_label, write_dataset


def test_render_matches_formula_and_convention():
    size, mu, sigma = 8, (3.0, 6.0), (1.0, 2.0)
    img = render([mu], size, sigma)[0]
    assert img.dtype == np.float32 and img.shape == (size, size)
    for j in range(size):  # row -> y = j + 1
        for i in range(size):  # column -> x = i + 1
            x, y = i + 1, j + 1
            expected = 1 - np.exp(-((x - mu[0]) ** 2) / (4 * sigma[0] ** 2) - (y - mu[1]) ** 2 / (4 * sigma[1] ** 2))
            assert img[j, i] == pytest.approx(expected, abs=1e-6)
    # The darkest pixel is column mu_x - 1, row mu_y - 1; (1, 1) is top-left.
    assert np.unravel_index(img.argmin(), img.shape) == (5, 2)
    assert render([[1, 1]], size, 1.0)[0, 0, 0] == 0.0


def test_render_range_and_scalar_sigma():
    imgs = render(np.random.default_rng(0).uniform(0, 32, (50, 2)), 32, 0.7)
    assert imgs.shape == (50, 32, 32)
    assert imgs.min() >= 0 and imgs.max() <= 1


def test_render_rejects_bad_sigma():
    with pytest.raises(ValueError, match="sigma"):
        render([[1, 1]], 8, 0.0)


@pytest.mark.parametrize(("increment", "size", "count"), [(1.0, 32, 33), (0.1, 32, 321), (2.0, 16, 9), (3.0, 16, 6)])
def test_grid_counts(increment, size, count):
    values = grid_values(increment, size)
    assert len(values) == count
    assert values[0] == 0 and values[-1] <= size


def test_tile_counts_paper_sizes():
    assert len(tile(1.0, 1.0, 32)) == 1089
    assert len(tile(0.1, 0.1, 32)) == 103041
    assert len(tile(0.5, 2.0, 16)) == 33 * 9


def test_tile_rejects_bad_increment():
    with pytest.raises(ValueError, match="larger than the canvas"):
        tile(40.0, 1.0, 32)
    with pytest.raises(ValueError, match="> 0"):
        tile(0.0, 1.0, 32)


def test_holes_split_labels():
    disc = Hole(name="c", shape="disc", center=(16.0, 16.0), radius=3.0)
    rect = Hole(name="r", shape="rect", x=(0.0, 4.0), y=(0.0, 4.0))
    ds = BumpDataset("d", 32, 1.0, 1.0, (1.0, 1.0), (disc, rect))
    table = ds.labels()
    ood = table[table.split == "ood"]
    # disc of radius 3 on the integer grid: 29 points; 5x5 corner square: 25 points
    assert len(ood) == 29 + 25
    d2 = (ood.mu_x - 16) ** 2 + (ood.mu_y - 16) ** 2
    assert ((d2 <= 9) | ((ood.mu_x <= 4) & (ood.mu_y <= 4))).all()


def test_paper_central_hole_fraction():
    # A central disc of radius 5.7 removes about 10% of label space: exactly the grid points
    # (0, 0.5, ..., 32)^2 within 5.7 of the centre, 405 of 4,225 (0.0959).
    ds = BumpDataset("d", 32, 0.5, 0.5, (1.0, 1.0), (Hole(name="c", shape="disc", center=(16, 16), radius=5.7),))
    frac = (ds.labels().split == "ood").mean()
    x, y = np.meshgrid(np.arange(65) * 0.5, np.arange(65) * 0.5)
    inside = int(((x - 16) ** 2 + (y - 16) ** 2 <= 5.7**2).sum())
    assert inside == 405
    assert frac == inside / 65**2


def test_hole_validation():
    outside = BumpDataset("d", 16, 1.0, 1.0, (1.0, 1.0), (Hole(name="o", shape="disc", center=(15, 8), radius=3),))
    with pytest.raises(ValueError, match="outside the canvas"):
        outside.validate()
    everything = BumpDataset("d", 16, 1.0, 1.0, (1.0, 1.0), (Hole(name="a", shape="rect", x=(0, 16), y=(0, 16)),))
    with pytest.raises(ValueError, match="cover every label"):
        everything.validate()
    between = BumpDataset("d", 16, 4.0, 4.0, (1.0, 1.0), (Hole(name="b", shape="rect", x=(1, 3), y=(1, 3)),))
    with pytest.raises(ValueError, match="no grid label"):
        between.validate()


def test_marginal_coverage():
    even = marginal_coverage(np.arange(16) + 0.5, 16)
    assert even["counts"] == [1] * 16 and even["normalised_entropy"] == pytest.approx(1.0)
    one_bin = marginal_coverage(np.full(10, 3.2), 16)
    assert one_bin["normalised_entropy"] == 0 and one_bin["empty_bins"] == 15
    # A label at exactly S lands in the last bin.
    assert marginal_coverage(np.array([16.0]), 16)["counts"][-1] == 1


def test_neighbour_overlap_limits():
    assert neighbour_overlap(32, 1.0, (0.0, 0.0)) == pytest.approx(1.0)
    near, far = neighbour_overlap(32, 1.0, (0.5, 0.0)), neighbour_overlap(32, 1.0, (4.0, 0.0))
    assert 1.0 > near > far > 0.0
    # sqrt(a b) is a bump at the midpoint scaled by exp(-d^2 / (16 s^2)), so that is the ratio.
    assert neighbour_overlap(32, 1.0, (1.0, 0.0)) == pytest.approx(np.exp(-1 / 16), abs=1e-6)


def test_audit_counts(tmp_path):
    ds = BumpDataset("d", 16, 0.5, 2.0, (1.0, 1.0), (Hole(name="c", shape="disc", center=(8, 8), radius=1.8),))
    table = ds.labels()
    path = tmp_path / "labels.csv"
    table.to_csv(path, index=False)
    report = audit(ds, read_labels(path))
    assert report["n_images"] == 33 * 9
    assert report["n_train"] + report["n_ood"] == report["n_images"]
    assert report["hole_fraction"] == pytest.approx(report["n_ood"] / report["n_images"])
    assert sum(report["coverage_x"]["counts"]) == report["n_train"]
    assert report["neighbour_overlap_x"] > report["neighbour_overlap_y"]


def test_read_labels_rejects_bad_csv(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("mu_x,split\n1,train\n")
    with pytest.raises(ValueError, match="missing column"):
        read_labels(path)
    path.write_text("mu_x,mu_y,split\n1,2,test\n")
    with pytest.raises(ValueError, match="unknown split"):
        read_labels(path)


def test_dataset_from_config_reads_every_key_of_a_spec():
    # the spec as dataset_specs writes it for config.yaml's "hole" and "imbalanced" datasets
    spec = {
        "name": "hole",
        "increment_x": 0.5,
        "increment_y": 2.0,
        "sigma": [1.0, 1.5],
        "holes": [
            {"name": "centre", "shape": "disc", "center": [8.0, 7.0], "radius": 1.8},
            {"name": "corner", "shape": "rect", "x": [0.0, 2.0], "y": [1.0, 3.0]},
        ],
    }
    ds = BumpDataset.from_config(spec, 16)
    assert (ds.name, ds.size, ds.increment_x, ds.increment_y, ds.sigma) == ("hole", 16, 0.5, 2.0, (1.0, 1.5))
    disc, rect = ds.holes
    assert (disc.name, disc.shape, disc.center, disc.radius) == ("centre", "disc", (8.0, 7.0), 1.8)
    assert (rect.name, rect.shape, rect.x, rect.y) == ("corner", "rect", (0.0, 2.0), (1.0, 3.0))
    assert ds.hole_names == "centre+corner"
    assert disc.bounds() == pytest.approx((6.2, 9.8, 5.2, 8.8), abs=1e-12)
    assert rect.bounds() == (0.0, 2.0, 1.0, 3.0)
    # a scalar sigma is isotropic; no holes key means no holes
    plain = BumpDataset.from_config({"name": "p", "increment_x": 1, "increment_y": 1, "sigma": 2.0}, 8)
    assert plain.sigma == (2.0, 2.0) and plain.holes == () and plain.hole_names == ""


def test_hole_edges_are_inside():
    rect = Hole(name="r", shape="rect", x=(1.0, 3.0), y=(2.0, 4.0))
    assert rect.contains([[1.0, 2.0], [3.0, 4.0], [0.99, 3.0], [2.0, 4.01]]).tolist() == [True, True, False, False]
    disc = Hole(name="d", shape="disc", center=(4.0, 6.0), radius=2.0)
    inside = [[6.0, 6.0], [4.0, 4.0], [6.01, 6.0], [5.5, 7.5], [6.0, 4.0]]
    assert disc.contains(inside).tolist() == [True, True, False, False, False]


def test_hole_touching_the_canvas_edge_is_inside_it():
    BumpDataset("d", 16, 1.0, 1.0, (1.0, 1.0), (Hole(name="e", shape="rect", x=(0, 16), y=(0, 2)),)).validate()
    for x, y in (((2, 2), (0, 2)), ((0, 2), (3, 3))):
        flat = BumpDataset("d", 16, 1.0, 1.0, (1.0, 1.0), (Hole(name="f", shape="rect", x=x, y=y),))
        with pytest.raises(ValueError, match="hole 'f' is empty"):
            flat.validate()
    left = BumpDataset("d", 16, 1.0, 1.0, (1.0, 1.0), (Hole(name="l", shape="disc", center=(1, 8), radius=2),))
    with pytest.raises(ValueError, match=r"hole 'l' reaches outside the canvas .* x=\[-1, 3\]"):
        left.validate()
    # an increment of the whole canvas is allowed: the two edges
    BumpDataset("d", 16, 16.0, 1.0, (1.0, 1.0)).validate()
    assert grid_values(16.0, 16).tolist() == [0.0, 16.0]
    for bad in (0.0, 16.5):
        with pytest.raises(ValueError, match=r"increment_y = .* must be in \(0, 16\]"):
            BumpDataset("d", 16, 1.0, bad, (1.0, 1.0)).validate()


def test_select_preview_is_seeded_sorted_and_shows_a_quarter_ood():
    hole = Hole(name="c", shape="disc", center=(8, 8), radius=3)
    table = BumpDataset("d", 16, 1.0, 1.0, (1.0, 1.0), (hole,)).labels()
    n_ood = int((table.split == "ood").sum())
    assert n_ood == 29
    shown = select_preview(table, 32, seed=3)
    assert len(shown) == 32 and shown.index.is_unique and shown.index.is_monotonic_increasing
    assert (shown.split == "ood").sum() == 8  # count // 4
    assert shown.equals(select_preview(table, 32, seed=3))
    assert not shown.index.equals(select_preview(table, 32, seed=4).index)
    # fewer labels than asked for: every label once; no OOD rows: none shown
    small = BumpDataset("d", 4, 2.0, 2.0, (1.0, 1.0)).labels()
    assert select_preview(small, 32, seed=0).index.tolist() == list(range(9))


def test_preview_grid_draws_each_image_with_its_dot_on_the_darkest_pixel():
    import matplotlib.pyplot as plt

    labels = np.array([[3.0, 6.0], [7.0, 2.0], [1.0, 1.0]])
    images = render(labels, 8, 1.0)
    fig = preview_grid(images, labels, ncols=2)
    axes = fig.axes
    assert len(axes) == 4  # 2 rows x 2 columns, the last one empty
    for k, ax in enumerate(axes[:3]):
        (shown,) = ax.get_images()
        np.testing.assert_array_equal(shown.get_array(), images[k])
        (dot,) = ax.get_lines()
        row, col = np.unravel_index(images[k].argmin(), images[k].shape)
        assert (dot.get_xdata()[0], dot.get_ydata()[0]) == (col, row)
    assert not axes[3].get_images() and not axes[3].axison
    plt.close(fig)


def test_write_dataset_writes_the_label_table_and_a_preview(tmp_path):
    ds = BumpDataset("d", 8, 1.0, 2.0, (1.0, 1.0), (Hole(name="c", shape="disc", center=(4, 4), radius=1),))
    write_dataset(ds, tmp_path / "labels.csv", tmp_path / "preview.png", preview_count=8, seed=0)
    written = read_labels(tmp_path / "labels.csv")
    expected = ds.labels()
    np.testing.assert_array_equal(written[["mu_x", "mu_y"]].to_numpy(), expected[["mu_x", "mu_y"]].to_numpy())
    assert written.split.tolist() == expected.split.tolist()
    assert (tmp_path / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_write_dataset_refuses_an_invalid_dataset_before_writing(tmp_path):
    bad = BumpDataset("d", 8, 1.0, 1.0, (1.0, 1.0), (Hole(name="o", shape="disc", center=(7, 4), radius=2),))
    with pytest.raises(ValueError, match="outside the canvas"):
        write_dataset(bad, tmp_path / "labels.csv", tmp_path / "preview.png")
    assert list(tmp_path.iterdir()) == []


def test_sigma_label():
    assert sigma_label((1.0, 1.0)) == 1.0 and isinstance(sigma_label((2, 2)), float)
    assert sigma_label((0.5, 2.0)) == "0.5/2"
