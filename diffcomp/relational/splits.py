"""Split families of Chang et al. (2024): which (top, bottom, caption) triples go into training.

An example is an ordered pair of distinct nouns (i, j), drawn as icon i above icon j, with one
of two captions: relation 0, "a {i} is on top of a {j}.", or relation 1, "a {j} is at the bottom
of a {i}.". With N nouns there are 2 N (N - 1) such *index triples* ``(top, bottom, relation)``.
A split family picks the training triples; the test set is every other triple.

"First half" means nouns ``0 .. N // 2 - 1``, "second half" the rest (one more noun when N is
odd). Families and the skew each one builds (visual roles: o1 = top, o2 = bottom; linguistic
roles: o1 = first-mentioned noun, o2 = second):

- ``band(m)``: pairs at circular index distance ``min(|i - j|, N - |i - j|) <= m``, both
  captions, for 1 <= m < N // 2 (larger m would leave no test pairs). Every noun has 2m
  partners in each role: complete and balanced in both views, at coverage 2m / (N - 1) (about
  20% with the paper's m = N // 10).
- ``upper_triangle``: pairs with i < j, both captions. Noun 0 is never drawn at the bottom and
  noun N - 1 never on top: visually incomplete at the ends and unbalanced.
- ``bipartite``: i in the first half, j in the second, both captions. Visual completeness 50/50
  and balance 0 (every noun has one visual role only).
- ``one_sided``: j in the second half, any i, both captions. Only second-half nouns are drawn
  at the bottom.
- ``caption_by_order``: every pair with one caption, relation 1 if i > j else 0, so the noun
  with the smaller index is always mentioned first. Visually complete and balanced,
  linguistically skewed; the test set is each pair's other caption.
- ``caption_bipartite``: i in the first half and j in the second with relation 0 only; j in the
  first half and i in the second with relation 1 only. The first-mentioned noun is always from
  the first half: linguistic completeness 50/50 and balance 0, visually complete and balanced.
  Pairs within a half, and the other caption of each cross pair, are test triples.
- ``random(size)``: ``size`` distinct triples drawn uniformly without replacement, seeded by the
  split's seed (for coverage/skew scatter plots).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

# Columns of an index-triple array.
TOP, BOTTOM, RELATION = 0, 1, 2


def n_triples(vocab_size: int) -> int:
    """Size of the phenomenon space: ordered pairs of distinct nouns times two captions."""
    return 2 * vocab_size * (vocab_size - 1)


def all_triples(vocab_size: int) -> np.ndarray:
    """Every index triple (top, bottom, relation), sorted lexicographically. int64 (2N(N-1), 3)."""
    top, bottom, relation = np.meshgrid(np.arange(vocab_size), np.arange(vocab_size), [0, 1], indexing="ij")
    grid = np.stack([top.ravel(), bottom.ravel(), relation.ravel()], axis=1)
    return grid[grid[:, TOP] != grid[:, BOTTOM]]


def _halves(vocab_size: int) -> int:
    """Index of the first second-half noun."""
    return vocab_size // 2


def _band(t: np.ndarray, n: int, m: int) -> np.ndarray:
    distance = np.abs(t[:, TOP] - t[:, BOTTOM])
    return np.minimum(distance, n - distance) <= m


def _upper_triangle(t: np.ndarray, n: int) -> np.ndarray:
    return t[:, TOP] < t[:, BOTTOM]


def _bipartite(t: np.ndarray, n: int) -> np.ndarray:
    half = _halves(n)
    return (t[:, TOP] < half) & (t[:, BOTTOM] >= half)


def _one_sided(t: np.ndarray, n: int) -> np.ndarray:
    return t[:, BOTTOM] >= _halves(n)


def _caption_by_order(t: np.ndarray, n: int) -> np.ndarray:
    return t[:, RELATION] == (t[:, TOP] > t[:, BOTTOM])


def _caption_bipartite(t: np.ndarray, n: int) -> np.ndarray:
    half = _halves(n)
    top_first = (t[:, TOP] < half) & (t[:, BOTTOM] >= half) & (t[:, RELATION] == 0)
    bottom_first = (t[:, BOTTOM] < half) & (t[:, TOP] >= half) & (t[:, RELATION] == 1)
    return top_first | bottom_first


def _random(t: np.ndarray, n: int, size: int, seed: int) -> np.ndarray:
    chosen = np.random.default_rng(seed).choice(len(t), size=size, replace=False)
    mask = np.zeros(len(t), dtype=bool)
    mask[chosen] = True
    return mask


@dataclass(frozen=True)
class Family:
    """A split family: its parameters and the training mask over :func:`all_triples`."""

    name: str
    mask: Callable[..., np.ndarray]  # mask(triples, vocab_size, **params[, seed]) -> bool array
    params: tuple[str, ...] = ()
    seeded: bool = False  # whether the mask depends on the split's seed
    description: str = ""


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("band", _band, ("m",), description="pairs at circular index distance <= m, both captions"),
        Family("upper_triangle", _upper_triangle, description="pairs with top index < bottom index, both captions"),
        Family("bipartite", _bipartite, description="top in the first half, bottom in the second, both captions"),
        Family("one_sided", _one_sided, description="bottom in the second half, both captions"),
        Family("caption_by_order", _caption_by_order, description="every pair, the lower index mentioned first"),
        Family(
            "caption_bipartite",
            _caption_bipartite,
            description="cross-half pairs, the first-half noun mentioned first",
        ),
        Family("random", _random, ("size",), seeded=True, description="a seeded uniform sample of `size` triples"),
    )
}


class SplitSpecError(ValueError):
    """A split's parameters do not define a usable split; ``key`` names the offending parameter."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class Split:
    """One configured training split: a family, its parameters, a vocabulary size and a seed."""

    name: str
    family: str
    vocab_size: int
    seed: int = 0
    params: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, spec: dict) -> Split:
        family = FAMILIES.get(spec["family"])
        if family is None:
            raise SplitSpecError(f"unknown family {spec['family']!r}; known: {sorted(FAMILIES)}", "family")
        params = {key: spec[key] for key in family.params if key in spec}
        split = cls(spec["name"], spec["family"], int(spec["vocab_size"]), int(spec.get("seed", 0)), params)
        split.validate(extra_keys=set(spec) - {"name", "family", "vocab_size", "seed"} - set(family.params))
        return split

    def describe(self) -> str:
        """The family with its parameters, e.g. ``band(m=3)``."""
        args = ", ".join(f"{key}={value}" for key, value in self.params.items())
        return f"{self.family}({args})" if args else self.family

    def validate(self, extra_keys=frozenset()) -> None:
        """Raise SplitSpecError (naming the parameter) unless train and test are both non-empty."""
        family = FAMILIES[self.family]
        for key in sorted(extra_keys):
            takes = f"takes only {', '.join(family.params)}" if family.params else "takes no parameters"
            raise SplitSpecError(f"family {self.family!r} {takes}; {key!r} does not apply", key)
        for key in family.params:
            if key not in self.params:
                raise SplitSpecError(f"family {self.family!r} needs parameter {key!r}")
        n = self.vocab_size
        if n < 2:
            raise SplitSpecError(f"vocab_size = {n}: a pair needs at least 2 nouns", "vocab_size")
        if self.family == "band":
            m = self.params["m"]
            if m < 1:
                raise SplitSpecError(f"m = {m}: band(m) needs m >= 1 (m = 0 has no pairs)", "m")
            if m >= n // 2:  # N // 2 is the largest circular distance
                hint = f"use m <= {n // 2 - 1}" if n >= 4 else "band needs vocab_size >= 4"
                raise SplitSpecError(
                    f"m = {m} is too large for vocab_size = {n}: band(m) covers every pair once m >= N // 2, "
                    f"leaving no test triples ({hint})",
                    "m",
                )
        if self.family == "random":
            size, total = self.params["size"], n_triples(n)
            if not 1 <= size < total:
                raise SplitSpecError(
                    f"size = {size} must be between 1 and {total - 1}: vocab_size = {n} has {total} triples "
                    "and the test set must not be empty",
                    "size",
                )

    def train_mask(self) -> np.ndarray:
        """Boolean mask over :func:`all_triples` of this split's vocabulary: True = training."""
        family = FAMILIES[self.family]
        triples = all_triples(self.vocab_size)
        extra = {"seed": self.seed} if family.seeded else {}
        return family.mask(triples, self.vocab_size, **self.params, **extra)

    def triples(self) -> tuple[np.ndarray, np.ndarray]:
        """(train, test) index triples, each int64 (n, 3) in :func:`all_triples` order."""
        self.validate()
        universe = all_triples(self.vocab_size)
        mask = self.train_mask()
        train, test = universe[mask], universe[~mask]
        if len(train) == 0 or len(test) == 0:
            # Every family above leaves both sides non-empty for N >= 2; this guards new ones.
            raise SplitSpecError(f"split {self.name!r} has {len(train)} training and {len(test)} test triples")
        return train, test
