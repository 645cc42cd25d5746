"""diffcomp: controlled experiments on how diffusion models learn, and fail, to compose concepts."""

__version__ = "0.1.0"
