"""The captions a t5-scratch encoder knows and reads, built from a noun list.

:func:`all_captions` is the text its vocabulary covers; :func:`caption_roles` and
:func:`triple_roles` are captions with the index of their top and bottom noun, the rows caption
pretraining (:mod:`diffcomp.relational.text.pretraining`) learns from.
"""

from __future__ import annotations

from collections.abc import Sequence

from diffcomp.relational.relations import CAPTION_RELATIONS, caption, single_object_caption


def caption_roles(nouns: Sequence[str]) -> list[tuple[str, int, int]]:
    """Every two-object caption of ``nouns`` with the index of its top and of its bottom noun."""
    return [
        (caption(top, bottom, relation), i, j)
        for i, top in enumerate(nouns)
        for j, bottom in enumerate(nouns)
        if i != j
        for relation in range(len(CAPTION_RELATIONS))
    ]


def triple_roles(nouns: Sequence[str], triples) -> list[tuple[str, int, int]]:
    """The captions of index ``triples`` (top, bottom, relation), each with its top and bottom noun's index:
    what caption pretraining reads from a split's training triples."""
    return [
        (caption(nouns[top], nouns[bottom], int(relation)), int(top), int(bottom)) for top, bottom, relation in triples
    ]


def all_captions(nouns: Sequence[str]) -> list[str]:
    """Every pretraining caption and every two-object caption (both relations, distinct nouns)."""
    return [single_object_caption(noun) for noun in nouns] + [text for text, _, _ in caption_roles(nouns)]
