"""The noun vocabulary: one black glyph icon on white per noun, rendered from DejaVu Sans.

DejaVu Sans ships with matplotlib, so rendering needs nothing from the network. Each glyph is
drawn large, cropped to its ink and scaled (aspect kept) to fill the S x S box less a small
margin. Chang et al. (2024) draw glyphs at font size 28 in a 32-pixel box instead; filling the
box gives every icon the same footprint, so the template-matching evaluator compares shapes
rather than glyph sizes. The glyph list was pruned so that no two icons correlate above 0.8
(normalised cross-correlation) at any icon size from 16 to 64 pixels: the cards' club and
diamond, the hexagon, the ring, psi and sigma were dropped for looking like kept glyphs.

Pixel convention (the bump study's): float32 in [0, 1], 1 = white background, 0 = black ink;
arrays are indexed ``[noun, row, column]``.
"""

from __future__ import annotations

import os
from functools import cache

import numpy as np

# (noun, glyph) in vocabulary order: a vocabulary of N nouns is the first N entries, so bold
# everyday objects come first, faint ones (snowman, comet: thin dots at 32 pixels) later and the
# letter-like glyphs last.
GLYPHS: tuple[tuple[str, str], ...] = (
    ("star", "\u2605"),
    ("heart", "\u2665"),
    ("spade", "\u2660"),
    ("sun", "\u2600"),
    ("cloud", "\u2601"),
    ("umbrella", "\u2602"),
    ("phone", "\u260e"),
    ("skull", "\u2620"),
    ("anchor", "\u2693"),
    ("scissors", "\u2702"),
    ("airplane", "\u2708"),
    ("envelope", "\u2709"),
    ("pencil", "\u270f"),
    ("gear", "\u2699"),
    ("atom", "\u269b"),
    ("flag", "\u2691"),
    ("king", "\u265a"),
    ("queen", "\u265b"),
    ("rook", "\u265c"),
    ("bishop", "\u265d"),
    ("knight", "\u265e"),
    ("pawn", "\u265f"),
    ("note", "\u266a"),
    ("moon", "\u263e"),
    ("snowflake", "\u2744"),
    ("lightning", "\u26a1"),
    ("warning", "\u26a0"),
    ("radiation", "\u2622"),
    ("biohazard", "\u2623"),
    ("peace", "\u262e"),
    ("yinyang", "\u262f"),
    ("smiley", "\u263a"),
    ("notes", "\u266b"),
    ("flat", "\u266d"),
    ("sharp", "\u266f"),
    ("swords", "\u2694"),
    ("scales", "\u2696"),
    ("lily", "\u269c"),
    ("recycle", "\u267b"),
    ("wheelchair", "\u267f"),
    ("hotspring", "\u2668"),
    ("victory", "\u270c"),
    ("pen", "\u2712"),
    ("check", "\u2714"),
    ("cross", "\u2716"),
    ("keyboard", "\u2328"),
    ("square", "\u25a0"),
    ("circle", "\u25cf"),
    ("pickaxe", "\u2692"),
    ("coffee", "\u2615"),
    ("shamrock", "\u2618"),
    ("flower", "\u273f"),
    ("finger", "\u261d"),
    ("hand", "\u261b"),
    ("eject", "\u23cf"),
    ("coffin", "\u26b0"),
    ("urn", "\u26b1"),
    ("trigram", "\u2630"),
    ("ankh", "\u2625"),
    ("caduceus", "\u2695"),
    ("wheel", "\u2638"),
    ("crescent", "\u262a"),
    ("sickle", "\u262d"),
    ("orthodox", "\u2626"),
    ("outline", "\u2606"),
    ("snowman", "\u2603"),
    ("comet", "\u2604"),
    ("venus", "\u2640"),
    ("mars", "\u2642"),
    ("mercury", "\u263f"),
    ("jupiter", "\u2643"),
    ("saturn", "\u2644"),
    ("uranus", "\u2645"),
    ("neptune", "\u2646"),
    ("pluto", "\u2647"),
    ("aries", "\u2648"),
    ("taurus", "\u2649"),
    ("gemini", "\u264a"),
    ("cancer", "\u264b"),
    ("leo", "\u264c"),
    ("virgo", "\u264d"),
    ("libra", "\u264e"),
    ("scorpio", "\u264f"),
    ("sagittarius", "\u2650"),
    ("capricorn", "\u2651"),
    ("aquarius", "\u2652"),
    ("pisces", "\u2653"),
    ("asterism", "\u2042"),
    ("pilcrow", "\u00b6"),
    ("section", "\u00a7"),
    ("infinity", "\u221e"),
    ("integral", "\u222b"),
    ("sum", "\u2211"),
    ("nabla", "\u2207"),
    ("root", "\u221a"),
    ("dagger", "\u2020"),
    ("alpha", "\u03b1"),
    ("beta", "\u03b2"),
    ("gamma", "\u03b3"),
    ("delta", "\u03b4"),
    ("epsilon", "\u03b5"),
    ("zeta", "\u03b6"),
    ("eta", "\u03b7"),
    ("theta", "\u03b8"),
    ("iota", "\u03b9"),
    ("kappa", "\u03ba"),
    ("lambda", "\u03bb"),
    ("mu", "\u03bc"),
    ("nu", "\u03bd"),
    ("xi", "\u03be"),
    ("omicron", "\u03bf"),
    ("pi", "\u03c0"),
    ("rho", "\u03c1"),
    ("tau", "\u03c4"),
    ("upsilon", "\u03c5"),
    ("phi", "\u03c6"),
    ("chi", "\u03c7"),
    ("omega", "\u03c9"),
)

MAX_VOCAB_SIZE = len(GLYPHS)
MIN_ICON_SIZE = 16  # below this the glyphs blur into each other (checked down to 16 by the tests)

# Glyphs are drawn at this font size (pixels) or larger and then scaled down: area averaging of
# a large rendering gives clean anti-aliasing at any icon size.
_RENDER_FONT_SIZE = 256


def nouns(vocab_size: int) -> list[str]:
    """The first ``vocab_size`` noun names."""
    check_vocab_size(vocab_size)
    return [noun for noun, _ in GLYPHS[:vocab_size]]


def check_vocab_size(vocab_size: int) -> None:
    if not 2 <= vocab_size <= MAX_VOCAB_SIZE:
        raise ValueError(f"vocabulary size must be between 2 and {MAX_VOCAB_SIZE} (the glyph list), got {vocab_size}")


def font_path() -> str:
    """DejaVu Sans as shipped inside matplotlib."""
    import matplotlib

    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")


@cache
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.truetype(font_path(), size)


def render_glyph(glyph: str, size: int) -> np.ndarray:
    """One glyph filling an S x S icon (aspect kept, centred, margin of S/16). float32 (S, S)."""
    import cv2
    from PIL import Image, ImageDraw

    if size < MIN_ICON_SIZE:
        raise ValueError(f"icon size must be at least {MIN_ICON_SIZE}, got {size}")
    font_size = max(_RENDER_FONT_SIZE, 4 * size)
    canvas_side = 2 * font_size  # room for wide glyphs and for ink left of the pen position
    canvas = Image.new("L", (canvas_side, canvas_side), 255)
    ImageDraw.Draw(canvas).text((font_size // 2, font_size // 2), glyph, font=_font(font_size), fill=0)
    ink = 1.0 - np.asarray(canvas, dtype=np.float32) / 255.0
    rows = np.flatnonzero(ink.max(axis=1) > 0)
    cols = np.flatnonzero(ink.max(axis=0) > 0)
    if rows.size == 0:
        raise ValueError(f"glyph {glyph!r} (U+{ord(glyph):04X}) renders no ink in {font_path()}")
    ink = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]

    margin = max(1, round(size / 16))
    box = size - 2 * margin
    scale = box / max(ink.shape)
    height, width = (max(1, round(side * scale)) for side in ink.shape)
    small = cv2.resize(ink, (width, height), interpolation=cv2.INTER_AREA)
    icon_ink = np.zeros((size, size), dtype=np.float32)
    top, left = (size - height) // 2, (size - width) // 2
    icon_ink[top : top + height, left : left + width] = np.clip(small, 0.0, 1.0)
    return 1.0 - icon_ink


def render_icons(vocab_size: int, size: int) -> np.ndarray:
    """The icons of the first ``vocab_size`` nouns. float32 (N, S, S), 1 = white."""
    check_vocab_size(vocab_size)
    return np.stack([render_glyph(glyph, size) for _, glyph in GLYPHS[:vocab_size]])


def pair_images(icons: np.ndarray, top, bottom) -> np.ndarray:
    """Images of icon ``top[k]`` stacked above icon ``bottom[k]``: float32 (n, 2S, S)."""
    top = np.atleast_1d(np.asarray(top, dtype=np.int64))
    bottom = np.atleast_1d(np.asarray(bottom, dtype=np.int64))
    return np.concatenate([icons[top], icons[bottom]], axis=1)


def save_icons(path, icons: np.ndarray, names: list[str]) -> None:
    """Cache a vocabulary's icons (uint8, 255 = white) and noun names as a compressed .npz."""
    from diffcomp.io import atomic_path

    if len(names) != len(icons):
        raise ValueError(f"{len(icons)} icons but {len(names)} names")
    pixels = np.round(np.clip(icons, 0.0, 1.0) * 255).astype(np.uint8)
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, icons=pixels, nouns=np.array(names, dtype=str))


def load_icons(path) -> tuple[np.ndarray, list[str]]:
    """Icons (float32 (N, S, S), 1 = white) and noun names from :func:`save_icons`'s file."""
    with np.load(path, allow_pickle=False) as data:
        return data["icons"].astype(np.float32) / 255.0, [str(name) for name in data["nouns"]]


def icon_sheet(icons: np.ndarray, names: list[str], ncols: int = 10):
    """A matplotlib figure of every icon with its noun name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nrows = max(1, -(-len(icons) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * 0.9, nrows * 1.05), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if k < len(icons):
            ax.imshow(icons[k], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"{k}: {names[k]}", fontsize=6, pad=2)
    fig.subplots_adjust(wspace=0.1, hspace=0.35)
    return fig
