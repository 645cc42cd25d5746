"""Relation phrases, their visual role order, and the two caption templates of the dataset.

Each triple ``(subject, relation, object)`` names its nouns in mention order. The audit needs a
second, visual, role order: which noun is drawn first along the relation's axis (the top one
for a vertical relation, the left one for a horizontal one). ``RELATIONS`` is the one table
that maps a phrase to that order; add a phrase there and the audit and the CLI accept it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Relation:
    """How a relation phrase binds its subject and object to the image's roles."""

    axis: str  # "vertical" (o1 = top object) or "horizontal" (o1 = left object)
    subject_is_first: bool  # True when the subject is the visual o1 (top or left)


RELATIONS: dict[str, Relation] = {
    "on top of": Relation(axis="vertical", subject_is_first=True),
    "at the bottom of": Relation(axis="vertical", subject_is_first=False),
    "above": Relation(axis="vertical", subject_is_first=True),
    "below": Relation(axis="vertical", subject_is_first=False),
    "left of": Relation(axis="horizontal", subject_is_first=True),
    "right of": Relation(axis="horizontal", subject_is_first=False),
}

# The dataset's two captions of one image (top noun i above bottom noun j), by relation index:
# 0 mentions the top noun first, 1 mentions the bottom noun first.
CAPTION_RELATIONS = ("on top of", "at the bottom of")


def caption(top: str, bottom: str, relation: int) -> str:
    """The caption of the image "``top`` above ``bottom``" with relation index 0 or 1."""
    if relation == 0:
        return f"a {top} is on top of a {bottom}."
    if relation == 1:
        return f"a {bottom} is at the bottom of a {top}."
    raise ValueError(f"relation index must be 0 or 1, got {relation!r}")


def single_object_caption(noun: str) -> str:
    """Caption of a single-object pretraining example."""
    return f"an image of a {noun}."
