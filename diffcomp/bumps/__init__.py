"""The Gaussian-bump study: public interface."""

from diffcomp.bumps.data import BumpDataset, Hole, render, tile
from diffcomp.bumps.evaluate import accuracy, contour_fractions, predict_positions

__all__ = ["BumpDataset", "Hole", "accuracy", "contour_fractions", "predict_positions", "render", "tile"]
