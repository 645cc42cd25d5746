"""Completeness/balance audit of a training set of relational triples (Chang et al. 2024).

A triple binds two nouns to two roles in each of two views:

- visual: o1 = the noun drawn first along the relation's axis (top, or left), o2 = the other;
- linguistic: o1 = the first-mentioned noun (the subject), o2 = the second (the object).

For one view, with vocabulary C, the training triples D (a multiset), n_k(c) the number of
triples with o_k = c and n(c) = n_1(c) + n_2(c) the number with c in either role:

- completeness@r_k = 100 |{c : n_k(c) > 0}| / |C|;
- balance = 100 sum_c sum_k -n_k(c) ln(n_k(c) / n(c)) / (2 |D| ln 2), with 0 ln 0 = 0: the
  role entropy of each noun in bits, averaged over nouns weighted by how often they occur
  (100 = every noun fills both roles equally often, 0 = every noun has one role only).

Duplicate triples count with multiplicity in completeness and balance (|D| is the number of
triples, as in the formula), and once in

- coverage = 100 unique bindings / (2 N (N - 1)) per relation axis present, the share of the
  phenomenon space the training set covers. A binding is (axis, visual o1, visual o2, whether
  the subject is o1): synonyms such as "on top of" and "above" describe the same binding.

A noun of the vocabulary that never occurs counts against completeness and adds nothing to
balance. Percentages are rounded to 10 decimals. The result is nested: ``{"visual":
{"completeness_r1", "completeness_r2", "balance"}, "linguistic": {...}, "coverage",
"n_triples"}``; :func:`flatten` gives the dotted keys (``visual.balance``) of the audit table.
"""

from __future__ import annotations

import csv
import math
import os

import numpy as np

from diffcomp.relational.relations import CAPTION_RELATIONS, RELATIONS
from diffcomp.relational.splits import BOTTOM, RELATION, TOP

TRIPLE_COLUMNS = ("subject", "relation", "object")
VIEWS = ("visual", "linguistic")
VIEW_METRICS = ("completeness_r1", "completeness_r2", "balance")
# Column order of flattened audits (the audit table, the CLI's table).
FLAT_KEYS = tuple(f"{view}.{metric}" for view in VIEWS for metric in VIEW_METRICS) + ("coverage", "n_triples")


class TriplesFileError(ValueError):
    """A triples CSV cannot be audited; the message names the file and, where known, the line."""


def role_metrics(first: np.ndarray, second: np.ndarray, vocab_size: int) -> dict[str, float]:
    """Completeness of each role and the balance for one view.

    first, second: noun indices in [0, vocab_size) of each triple's o1 and o2, one entry per
    triple (duplicates included).
    """
    first = np.asarray(first, dtype=np.int64)
    second = np.asarray(second, dtype=np.int64)
    if first.shape != second.shape or first.ndim != 1:
        raise ValueError("first and second must be 1-D arrays of the same length")
    if len(first) == 0:
        raise ValueError("no triples to audit")
    if min(first.min(), second.min()) < 0 or max(first.max(), second.max()) >= vocab_size:
        raise ValueError(f"noun indices must lie in [0, {vocab_size})")
    n_first = np.bincount(first, minlength=vocab_size).astype(np.float64)
    n_second = np.bincount(second, minlength=vocab_size).astype(np.float64)
    n_either = n_first + n_second
    # -n_k ln(n_k / n), with 0 ln 0 = 0: nouns absent from a role (or from the set) add nothing.
    entropy_terms = 0.0
    for n_role in (n_first, n_second):
        present = n_role > 0
        entropy_terms -= float(np.sum(n_role[present] * np.log(n_role[present] / n_either[present])))
    return {
        "completeness_r1": _percent(np.count_nonzero(n_first) / vocab_size),
        "completeness_r2": _percent(np.count_nonzero(n_second) / vocab_size),
        "balance": _percent(entropy_terms / (2 * len(first) * math.log(2))),
    }


def _percent(fraction: float) -> float:
    """100 * fraction, rounded to 10 decimals so that a perfectly balanced set reads 100.0, not 99.99999999999997."""
    return round(100.0 * float(fraction), 10)


def audit_bindings(subject, object_, subject_is_first, axis, vocab_size: int) -> dict:
    """The audit of triples given as parallel arrays (one entry per triple).

    subject, object_: noun indices in mention order; subject_is_first: whether the subject is
    the visual o1 (top/left); axis: an integer or string label of each triple's relation axis.
    """
    subject = np.asarray(subject, dtype=np.int64)
    object_ = np.asarray(object_, dtype=np.int64)
    subject_is_first = np.asarray(subject_is_first, dtype=bool)
    axis = np.asarray(axis)
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be at least 2, got {vocab_size}")
    if len(subject) == 0:
        raise ValueError("no triples to audit")
    if not subject.shape == object_.shape == subject_is_first.shape == axis.shape:
        raise ValueError("subject, object_, subject_is_first and axis must have one entry per triple")
    if np.any(subject == object_):
        raise ValueError("a triple relates a noun to itself")
    visual_first = np.where(subject_is_first, subject, object_)
    visual_second = np.where(subject_is_first, object_, subject)
    _, axis_codes = np.unique(axis, return_inverse=True)
    bindings = np.stack([axis_codes.ravel(), visual_first, visual_second, subject_is_first], axis=1)
    n_unique = len(np.unique(bindings, axis=0))
    n_axes = int(axis_codes.max()) + 1
    return {
        "visual": role_metrics(visual_first, visual_second, vocab_size),
        "linguistic": role_metrics(subject, object_, vocab_size),
        "coverage": _percent(n_unique / (n_axes * 2 * vocab_size * (vocab_size - 1))),
        "n_triples": len(subject),
    }


def audit_index_triples(triples: np.ndarray, vocab_size: int) -> dict:
    """The audit of index triples (top, bottom, relation 0/1) from :mod:`diffcomp.relational.splits`."""
    triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    top_first = triples[:, RELATION] == 0  # relation 0 mentions the top noun first
    subject = np.where(top_first, triples[:, TOP], triples[:, BOTTOM])
    object_ = np.where(top_first, triples[:, BOTTOM], triples[:, TOP])
    return audit_bindings(subject, object_, top_first, np.zeros(len(triples), dtype=np.int64), vocab_size)


def audit_named_triples(rows: list[tuple[str, str, str]], vocab_size: int, source: str = "triples") -> dict:
    """The audit of (subject, relation phrase, object) rows with nouns as strings."""
    names = sorted({noun for subject, _, object_ in rows for noun in (subject, object_)})
    if len(names) > vocab_size:
        raise ValueError(f"{source}: {len(names)} distinct nouns, more than the vocabulary size {vocab_size}")
    index = {name: k for k, name in enumerate(names)}
    relations = [RELATIONS[relation] for _, relation, _ in rows]
    return audit_bindings(
        [index[subject] for subject, _, _ in rows],
        [index[object_] for _, _, object_ in rows],
        [relation.subject_is_first for relation in relations],
        [relation.axis for relation in relations],
        vocab_size,
    )


def read_triples(path) -> list[tuple[str, str, str]]:
    """Read and check a triples CSV: columns subject, relation, object (others are ignored).

    Surrounding whitespace is stripped; relation phrases are matched case-insensitively against
    :data:`~diffcomp.relational.relations.RELATIONS`. Raises TriplesFileError naming the file,
    the line and the problem: missing file or columns, an empty file, a short row, an empty
    noun, an unknown relation, or a noun related to itself.
    """
    path = os.fspath(path)
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as err:
        raise TriplesFileError(f"{path}: cannot read: {err.strerror}") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            while header is not None and not any(cell.strip() for cell in header):
                header = next(reader, None)  # leading blank lines
            if header is None:
                raise TriplesFileError(
                    f"{path}: empty file; expected a header line '{','.join(TRIPLE_COLUMNS)}' and one triple per line"
                )
            header = [cell.strip() for cell in header]
            missing = [column for column in TRIPLE_COLUMNS if column not in header]
            if missing:
                raise TriplesFileError(
                    f"{path}, line {reader.line_num}: missing column(s) {', '.join(missing)} in the header "
                    f"(found: {', '.join(header)}); expected {','.join(TRIPLE_COLUMNS)}"
                )
            positions = [header.index(column) for column in TRIPLE_COLUMNS]
            rows = [
                _parse_row(path, reader.line_num, cells, positions)
                for cells in reader
                if any(cell.strip() for cell in cells)  # blank lines carry no triple
            ]
        except csv.Error as err:
            raise TriplesFileError(f"{path}, line {reader.line_num}: malformed CSV: {err}") from None
        except UnicodeDecodeError:
            raise TriplesFileError(f"{path}: not UTF-8 text") from None
    if not rows:
        raise TriplesFileError(f"{path}: no triples below the header")
    return rows


def _parse_row(path: str, line: int, cells: list[str], positions: list[int]) -> tuple[str, str, str]:
    if len(cells) <= max(positions):
        raise TriplesFileError(f"{path}, line {line}: {len(cells)} field(s), the header names more")
    subject, relation, object_ = (cells[k].strip() for k in positions)
    for column, value in (("subject", subject), ("object", object_)):
        if not value:
            raise TriplesFileError(f"{path}, line {line}: empty {column}")
    relation = " ".join(relation.lower().split())
    if relation not in RELATIONS:
        raise TriplesFileError(
            f"{path}, line {line}: unknown relation {cells[positions[1]].strip()!r}; "
            f"known: {', '.join(repr(name) for name in RELATIONS)}"
        )
    if subject == object_:
        raise TriplesFileError(f"{path}, line {line}: noun {subject!r} is related to itself")
    return subject, relation, object_


def audit_file(path, vocab_size: int) -> dict:
    """Read a triples CSV and audit it; every problem is a TriplesFileError."""
    rows = read_triples(path)
    try:
        return audit_named_triples(rows, vocab_size, source=os.fspath(path))
    except ValueError as err:
        raise TriplesFileError(str(err)) from None


def index_triples_to_rows(triples: np.ndarray, names: list[str]) -> list[tuple[str, str, str]]:
    """Index triples (top, bottom, relation) as (subject, relation phrase, object) rows."""
    rows = []
    for top, bottom, relation in np.asarray(triples, dtype=np.int64).reshape(-1, 3):
        subject, object_ = (top, bottom) if relation == 0 else (bottom, top)
        rows.append((names[subject], CAPTION_RELATIONS[relation], names[object_]))
    return rows


def flatten(audit: dict) -> dict:
    """Nested audit -> flat dict with dotted keys in :data:`FLAT_KEYS` order."""
    flat = {f"{view}.{metric}": audit[view][metric] for view in VIEWS for metric in VIEW_METRICS}
    flat["coverage"] = audit["coverage"]
    flat["n_triples"] = audit["n_triples"]
    return flat


def format_audit(audit: dict) -> str:
    """A readable table of an audit (the CLI's stdout)."""
    lines = [f"{'view':<12}{'completeness_r1':>17}{'completeness_r2':>17}{'balance':>10}"]
    for view in VIEWS:
        metrics = audit[view]
        lines.append(
            f"{view:<12}{metrics['completeness_r1']:>17.2f}{metrics['completeness_r2']:>17.2f}{metrics['balance']:>10.2f}"
        )
    lines.append(f"coverage: {audit['coverage']:.2f}%   n_triples: {audit['n_triples']}")
    return "\n".join(lines)
