import re

import cv2
import numpy as np
import pytest
from matplotlib.ft2font import FT2Font

from diffcomp.relational.data import pretraining_table
from diffcomp.relational.icons import (
    GLYPHS,
    MAX_VOCAB_SIZE,
    font_path,
    load_icons,
    nouns,
    pair_images,
    render_glyph,
    render_icons,
    save_icons,
)


def ncc_matrix(icons: np.ndarray) -> np.ndarray:
    """TM_CCOEFF_NORMED of every icon (as template) against every icon (as image); same sizes give one score."""
    n = len(icons)
    scores = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            scores[i, j] = cv2.matchTemplate(icons[j], icons[i], cv2.TM_CCOEFF_NORMED)[0, 0]
    return scores


@pytest.fixture(scope="module")
def icons32():
    return render_icons(MAX_VOCAB_SIZE, 32)


def test_vocabulary_names_and_glyphs():
    names = [noun for noun, _ in GLYPHS]
    assert MAX_VOCAB_SIZE >= 90  # the paper's largest vocabulary
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[a-z]+", noun) for noun in names)  # one word in captions and CSVs
    assert len({glyph for _, glyph in GLYPHS}) == len(GLYPHS)
    charmap = FT2Font(font_path()).get_charmap()
    missing = [noun for noun, glyph in GLYPHS if ord(glyph) not in charmap]
    assert not missing, f"not in DejaVu Sans: {missing}"
    assert nouns(3) == names[:3]
    with pytest.raises(ValueError, match="between 2 and"):
        nouns(MAX_VOCAB_SIZE + 1)


def test_icons_are_black_on_white(icons32):
    assert icons32.shape == (MAX_VOCAB_SIZE, 32, 32) and icons32.dtype == np.float32
    assert icons32.min() >= 0 and icons32.max() <= 1
    # White margin all round, real black ink inside, touching the margin on at least one side.
    assert np.all(icons32[:, :2, :] == 1) and np.all(icons32[:, -2:, :] == 1)
    assert np.all(icons32[:, :, :2] == 1) and np.all(icons32[:, :, -2:] == 1)
    assert np.all(icons32.reshape(len(icons32), -1).min(axis=1) < 0.2)
    touches_rows = (icons32[:, 2, :].min(axis=1) < 1) | (icons32[:, 29, :].min(axis=1) < 1)
    touches_cols = (icons32[:, :, 2].min(axis=1) < 1) | (icons32[:, :, 29].min(axis=1) < 1)
    assert np.all(touches_rows | touches_cols)


def test_rendering_is_deterministic(icons32):
    np.testing.assert_array_equal(render_icons(5, 32), icons32[:5])


@pytest.mark.parametrize("size", [16, 32])
def test_every_icon_is_recognised_as_itself_with_a_margin(size, icons32):
    icons = icons32 if size == 32 else render_icons(MAX_VOCAB_SIZE, size)
    scores = ncc_matrix(icons)
    np.testing.assert_allclose(np.diag(scores), 1.0, atol=1e-4)
    off_diagonal = scores[~np.eye(len(icons), dtype=bool)]
    worst = np.unravel_index(np.argmax(np.where(np.eye(len(icons), dtype=bool), -1, scores)), scores.shape)
    assert off_diagonal.max() < 0.8, f"{GLYPHS[worst[0]][0]} looks like {GLYPHS[worst[1]][0]}"


def test_pair_image_halves_identify_top_and_bottom(icons32):
    top, bottom = 3, 17
    image = pair_images(icons32, top, bottom)[0]
    assert image.shape == (64, 32)
    # The evaluator's view: slide each icon down the pair image; the top one peaks at row 0, the bottom at row S.
    assert int(np.argmax(cv2.matchTemplate(image, icons32[top], cv2.TM_CCOEFF_NORMED))) == 0
    assert int(np.argmax(cv2.matchTemplate(image, icons32[bottom], cv2.TM_CCOEFF_NORMED))) == 32
    # ...and among all icons, each half is best matched by its own.
    for half, expected in ((image[:32], top), (image[32:], bottom)):
        scores = [cv2.matchTemplate(half, icon, cv2.TM_CCOEFF_NORMED)[0, 0] for icon in icons32]
        assert int(np.argmax(scores)) == expected
    assert pair_images(icons32, [0, 1], [2, 3]).shape == (2, 64, 32)


def test_save_and_load_round_trip(tmp_path, icons32):
    path = tmp_path / "icons.npz"
    save_icons(path, icons32[:6], nouns(6))
    icons, names = load_icons(path)
    assert names == nouns(6)
    np.testing.assert_allclose(icons, icons32[:6], atol=0.5 / 255 + 1e-6)  # stored as uint8


def test_small_icons_rejected():
    with pytest.raises(ValueError, match="at least 16"):
        render_glyph(GLYPHS[0][1], 8)


def test_pretraining_table():
    table = pretraining_table(nouns(4))
    assert list(table.columns) == ["index", "noun", "caption"]
    assert table["caption"].tolist()[0] == "an image of a star."
    assert table["index"].tolist() == [0, 1, 2, 3]
