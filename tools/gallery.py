"""Copy the README's gallery figures from a finished run's results/ into docs/img/, downscaled.

    python tools/gallery.py [--results results] [--width 900]     (make gallery)

Run it after `make run` so the README's pictures are the current code's quick-scale figures.
A figure missing from results/ is an error naming it (run the workflow first); nothing is
written until every figure is found.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "docs" / "img"

# README image -> the workflow's figure it shows.
FIGURES = {
    "bumps_phase_diagram.png": "bumps/figures/phase_diagram.png",
    "bumps_phases.png": "bumps/figures/phases.png",
    "relational_samples.png": "relational/figures/samples.png",
    "relational_curves.png": "relational/figures/curves.png",
    "relational_skew.png": "relational/figures/skew.png",
    "relational_interventions.png": "relational/figures/interventions.png",
}


def downscale(source: Path, target: Path, width: int) -> None:
    """Write ``source`` at most ``width`` pixels wide as an 8-bit palette PNG (a few hundred kB)."""
    with Image.open(source) as image:
        image = image.convert("RGB")
        if image.width > width:
            height = round(image.height * width / image.width)
            image = image.resize((width, height), Image.Resampling.LANCZOS)
        image = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        tmp = target.with_suffix(".tmp.png")
        image.save(tmp, optimize=True)
        tmp.replace(target)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=REPO / "results")
    parser.add_argument("--width", type=int, default=900)
    args = parser.parse_args(argv)
    missing = [str(args.results / rel) for rel in FIGURES.values() if not (args.results / rel).is_file()]
    if missing:
        print("missing figures (run `make run` first):\n  " + "\n  ".join(missing), file=sys.stderr)
        return 1
    OUTPUT.mkdir(parents=True, exist_ok=True)
    for name, rel in FIGURES.items():
        downscale(args.results / rel, OUTPUT / name, args.width)
        print(f"{OUTPUT.relative_to(REPO) / name}: {(OUTPUT / name).stat().st_size // 1024} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
