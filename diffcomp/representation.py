"""Representation quality: a seeded 3-D UMAP of hidden activations and how linearly it encodes labels."""

from __future__ import annotations

import numpy as np


def _cache_umap_compilation() -> None:
    """Turn on numba's on-disk cache for umap-learn's jitted functions.

    umap-learn compiles them without ``cache=True``, so every new process pays the compilation
    again; ``Dispatcher.enable_caching`` stores the machine code (in ``__pycache__`` beside
    umap's sources, or ``NUMBA_CACHE_DIR``) so only the first process on a machine does.
    """
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher
    from umap import distances, layouts, spectral, umap_, utils

    for module in (umap_, layouts, utils, distances, spectral):
        for value in vars(module).values():
            if isinstance(value, Dispatcher) and isinstance(value._cache, NullCache):
                value.enable_caching()


def umap_embedding(activations: np.ndarray, seed: int, n_neighbors: int = 15, n_components: int = 3):
    """UMAP (umap-learn) of an (N, D) matrix to (N, n_components), seeded for reproducibility.

    A fixed random_state makes umap-learn run single-threaded; that is the price of determinism.
    The exact k-nearest-neighbour graph comes from scikit-learn and is handed to UMAP as
    ``precomputed_knn``: for the few thousand points of a checkpoint it is fast, and it skips
    pynndescent, whose numba compilation is most of the ~20-40 s a first UMAP fit costs in a
    fresh process (bench/bench_bumps.py measures it).
    """
    import umap
    from sklearn.neighbors import NearestNeighbors

    _cache_umap_compilation()

    activations = np.asarray(activations, dtype=np.float32).reshape(len(activations), -1)
    if len(activations) <= n_components + 1:
        raise ValueError(f"UMAP needs more than {n_components + 1} points, got {len(activations)}")
    n_neighbors = min(n_neighbors, len(activations) - 1)
    # kneighbors on the fitted set returns each point as its own first neighbour, as UMAP expects.
    knn_dists, knn_indices = NearestNeighbors(n_neighbors=n_neighbors).fit(activations).kneighbors(activations)
    reducer = umap.UMAP(
        n_components=n_components,
        n_neighbors=n_neighbors,
        precomputed_knn=(knn_indices, knn_dists.astype(np.float32), None),
        random_state=seed,
        # The spectral initialisation fails on tiny or degenerate inputs; random init is seeded too.
        init="spectral" if len(activations) > 4 * n_components else "random",
    )
    return reducer.fit_transform(activations)


def linear_r2(embedding: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """R^2 of a linear regression from the embedding to each target column (in-sample)."""
    from sklearn.linear_model import LinearRegression

    targets = np.asarray(targets, dtype=np.float64)
    if targets.ndim == 1:
        targets = targets[:, None]
    scores = []
    for column in targets.T:
        if np.ptp(column) == 0:
            scores.append(float("nan"))  # a constant target has no variance to explain
            continue
        model = LinearRegression().fit(embedding, column)
        scores.append(float(model.score(embedding, column)))
    return np.array(scores)


def umap_r2(activations: np.ndarray, labels: np.ndarray, seed: int, n_neighbors: int = 15) -> dict:
    """UMAP to 3-D, then linear R^2 against mu_x and mu_y. Returns the embedding and both scores."""
    embedding = umap_embedding(activations, seed=seed, n_neighbors=n_neighbors)
    r2 = linear_r2(embedding, labels)
    return {"embedding": embedding, "r2_x": float(r2[0]), "r2_y": float(r2[1])}
