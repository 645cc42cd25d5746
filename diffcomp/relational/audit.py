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

:func:`audit_file` streams a triples CSV: it reads the file in blocks of ``block_bytes`` and keeps
only counts per noun and the set of bindings seen, so its memory grows with the vocabulary, not
with the number of triples. Its numbers are those of :func:`audit_named_triples` on
:func:`read_triples`' rows, bit for bit, and its errors are the same (the first problem in the
file, named with its line).
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
import stat
from collections.abc import Iterator

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
    return _view_metrics(
        np.bincount(first, minlength=vocab_size), np.bincount(second, minlength=vocab_size), len(first), vocab_size
    )


def _view_metrics(count_first: np.ndarray, count_second: np.ndarray, n_triples: int, vocab_size: int) -> dict:
    """role_metrics from the counts n_1(c), n_2(c) of the nouns (one entry per noun, in the
    vocabulary's order; nouns past the end count 0) and the number of triples."""
    n_first = np.asarray(count_first).astype(np.float64)
    n_second = np.asarray(count_second).astype(np.float64)
    n_either = n_first + n_second
    # -n_k ln(n_k / n), with 0 ln 0 = 0: nouns absent from a role (or from the set) add nothing.
    entropy_terms = 0.0
    for n_role in (n_first, n_second):
        present = n_role > 0
        entropy_terms -= float(np.sum(n_role[present] * np.log(n_role[present] / n_either[present])))
    return {
        "completeness_r1": _percent(np.count_nonzero(n_first) / vocab_size),
        "completeness_r2": _percent(np.count_nonzero(n_second) / vocab_size),
        "balance": _percent(entropy_terms / (2 * n_triples * math.log(2))),
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
    noun, an unknown relation, or a noun related to itself. Holds every row in memory:
    :func:`audit_file` audits a file of any length without doing so.
    """
    path = os.fspath(path)
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as err:
        raise TriplesFileError(f"{path}: cannot read: {err.strerror}") from None
    with handle:
        reader = csv.reader(handle)
        try:
            positions = _read_header(path, reader)
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


def _read_header(path: str, reader) -> list[int]:
    """Skip leading blank lines, check the header line; the positions of subject, relation, object."""
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
    return [header.index(column) for column in TRIPLE_COLUMNS]


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


# audit_file reads this many bytes at a time (cut back to the last line end): about 330,000 triples.
BLOCK_BYTES = 1 << 23
# Files smaller than this are read by the csv module alone: importing pandas would cost more time
# (about half a second) than its parser saves on them.
FAST_FROM_BYTES = 1 << 22
# Above 4 N^2 = this many possible bindings, the set of bindings seen is a sorted array, not a bitmap.
_DENSE_BINDINGS = 1 << 26
_UTF8_BOM = b"\xef\xbb\xbf"


def audit_file(path, vocab_size: int, block_bytes: int = BLOCK_BYTES, fast_from_bytes: int = FAST_FROM_BYTES) -> dict:
    """Read a triples CSV and audit it; every problem is a TriplesFileError.

    The same result and the same errors as ``audit_named_triples(read_triples(path), vocab_size)``,
    streamed: the file is read ``block_bytes`` at a time and only per-noun counts and the set of
    bindings are kept, so memory does not grow with the number of triples. A block without
    quotes, lone carriage returns, NUL bytes, byte-order marks or lines longer than the csv
    module's field limit is split by pandas' C parser into categorical columns and checked per
    distinct cell; a row that parser flags (blank, short, an empty noun, an unknown relation, a
    noun related to itself) is read again by the csv module, which skips it or names its line.
    Every other block, and every block of a file smaller than ``fast_from_bytes``, is read line by
    line by the csv module, as :func:`read_triples` reads a file.
    """
    path = os.fspath(path)
    try:
        handle = open(path, "rb")
    except OSError as err:
        raise TriplesFileError(f"{path}: cannot read: {err.strerror}") from None
    with handle:
        try:
            status = os.fstat(handle.fileno())
            fast = not stat.S_ISREG(status.st_mode) or status.st_size >= fast_from_bytes  # a pipe may be long
            blocks = _blocks(handle, max(int(block_bytes), 1))
            feed = _LineFeed(path, b"", blocks)
            reader = csv.reader(feed)
            try:
                positions = _read_header(path, reader)
            except csv.Error as err:
                raise TriplesFileError(f"{path}, line {reader.line_num}: malformed CSV: {err}") from None
            counts = _StreamingAudit(path, vocab_size, positions, fast)
            line = reader.line_num
            for block in itertools.chain([feed.rest()], blocks):
                if block:
                    line = counts.read_block(block, blocks, line)
        except OSError as err:
            raise TriplesFileError(f"{path}: cannot read: {err.strerror}") from None
    return counts.result()


def _blocks(handle, size: int) -> Iterator[bytes]:
    """The bytes of a file, a leading UTF-8 byte-order mark dropped, in pieces of about ``size``
    bytes that end at a line end (the last at the end of the file); the first piece is at most
    64 KiB, which the header is read from. A piece ends at a \n, or where there is none at a \r
    that is not the piece's last byte (so never between the \r and \n of a CRLF)."""
    carry = handle.read(max(min(size, 1 << 16), len(_UTF8_BOM)))
    if carry.startswith(_UTF8_BOM):
        carry = carry[len(_UTF8_BOM) :]
    while True:
        cut = (carry.rfind(b"\n") + 1) or (carry.rfind(b"\r", 0, len(carry) - 1) + 1)
        if cut:
            yield carry[:cut]
            carry = carry[cut:]
        more = handle.read(size)
        if not more:
            break
        carry += more
    if carry:
        yield carry


def _decode(block: bytes) -> tuple[str, bool]:
    """The text of a block, or of its lines before the first byte that is not UTF-8 (and False)."""
    try:
        return block.decode("utf-8"), True
    except UnicodeDecodeError as err:
        return block[: block.rfind(b"\n", 0, err.start) + 1].decode("utf-8"), False


class _LineFeed:
    """The lines of the blocks, as a file opened with ``newline=""`` yields them, for csv.reader:
    those of ``first``, then of the blocks after it only when a quoted field spans a block end."""

    def __init__(self, path: str, first: bytes, blocks: Iterator[bytes]):
        self.path, self.blocks = path, blocks
        self._load(first)

    def _load(self, block: bytes) -> None:
        text, self.decodes = _decode(block)
        self.block, self.lines, self.next, self.offset = block, list(io.StringIO(text, newline="")), 0, 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        while self.next == len(self.lines):
            if not self.decodes:
                raise TriplesFileError(f"{self.path}: not UTF-8 text")
            self._load(next(self.blocks))  # StopIteration at the end of the file ends the reader
        line = self.lines[self.next]
        self.next += 1
        self.offset += len(line.encode("utf-8"))
        return line

    def at_block_end(self) -> bool:
        return self.next == len(self.lines) and self.decodes

    def rest(self) -> bytes:
        """The bytes of the current block not read yet."""
        return self.block[self.offset :]


class _StreamingAudit:
    """Counts of the triples read so far: per noun (in order of first appearance) its number of
    triples as subject, object, visual o1 and visual o2; the axes and the bindings seen."""

    def __init__(self, path: str, vocab_size: int, positions: list[int], fast: bool = True):
        names = tuple(RELATIONS)
        axes = sorted({relation.axis for relation in RELATIONS.values()})
        self.path, self.vocab_size, self.positions, self.fast = path, vocab_size, positions, fast
        self.relation_index = {name: k for k, name in enumerate(names)}
        self.relation_axis = np.array([axes.index(RELATIONS[name].axis) for name in names], dtype=np.int64)
        self.relation_subject_first = np.array([RELATIONS[name].subject_is_first for name in names], dtype=bool)
        self.axes_seen = np.zeros(len(axes), dtype=bool)
        self.nouns: dict[str, int] = {}
        self.counts = np.zeros((4, 0), dtype=np.int64)  # subject, object, visual o1, visual o2
        self.n_triples = 0
        # A binding (axis, visual o1, visual o2, subject first) as one integer; nouns are numbered
        # below vocab_size for as long as the file has no more distinct nouns than that.
        self.stride = min(vocab_size, 1 << 30)
        n_codes = len(axes) * self.stride * self.stride * 2
        self.seen = np.zeros(n_codes, dtype=bool) if n_codes <= _DENSE_BINDINGS else None
        self.seen_sorted = np.zeros(0, dtype=np.int64)
        self.seen_pending: list[np.ndarray] = []

    def noun_id(self, noun: str) -> int:
        return self.nouns.setdefault(noun, len(self.nouns))

    def add(self, subject: np.ndarray, relation: np.ndarray, object_: np.ndarray) -> None:
        """Count triples given as noun ids and relation indices."""
        self.n_triples += len(subject)
        if len(self.nouns) > self.vocab_size or not len(subject):
            return  # an error at the end: the counts are not needed
        subject_first = self.relation_subject_first[relation]
        axis = self.relation_axis[relation]
        first = np.where(subject_first, subject, object_)
        second = np.where(subject_first, object_, subject)
        size = len(self.nouns)
        if self.counts.shape[1] < size:
            grown = np.zeros((4, max(size, 2 * self.counts.shape[1])), dtype=np.int64)
            grown[:, : self.counts.shape[1]] = self.counts
            self.counts = grown
        width = self.counts.shape[1]
        for row, ids in enumerate((subject, object_, first, second)):
            self.counts[row] += np.bincount(ids, minlength=width)
        self.axes_seen |= np.bincount(axis, minlength=len(self.axes_seen)) > 0
        codes = ((axis * self.stride + first) * self.stride + second) * 2 + subject_first
        if self.seen is not None:
            self.seen[codes] = True
        else:
            self.seen_pending.append(np.unique(codes))
            if sum(len(codes) for codes in self.seen_pending) > max(len(self.seen_sorted), 1 << 22):
                self._merge_seen()

    def _merge_seen(self) -> None:
        self.seen_sorted = np.unique(np.concatenate([self.seen_sorted, *self.seen_pending]))
        self.seen_pending = []

    def add_rows(self, rows: list[tuple[str, str, str]]) -> None:
        """Count checked (subject, relation, object) rows."""
        ids = np.array(
            [(self.noun_id(s), self.relation_index[r], self.noun_id(o)) for s, r, o in rows], dtype=np.int64
        ).reshape(-1, 3)
        self.add(ids[:, 0], ids[:, 1], ids[:, 2])

    def read_block(self, block: bytes, blocks: Iterator[bytes], line: int) -> int:
        """Check and count the rows of a block whose first line is ``line + 1``; the number of the
        last line read (further blocks are read only when a quoted field spans the block's end)."""
        if (
            not self.fast
            or b'"' in block  # a quoted field may span lines and blocks
            or b"\0" in block
            or _UTF8_BOM in block
            or (b"\r" in block and block.count(b"\r") != block.count(b"\r\n"))  # a line that ends in \r alone
            or not _decode(block)[1]  # its valid lines, then the error
        ):
            return self.read_lines(block, blocks, line)
        done = self.read_fast(block, line)
        return done if done is not None else self.read_lines(block, blocks, line)

    def read_lines(self, block: bytes, blocks: Iterator[bytes], line: int) -> int:
        """The csv module's reading of the block, as :func:`read_triples` reads it."""
        feed = _LineFeed(self.path, block, blocks)
        reader = csv.reader(feed)
        rows: list[tuple[str, str, str]] = []
        try:
            while not feed.at_block_end():
                cells = next(reader, None)
                if cells is None:
                    break
                if any(cell.strip() for cell in cells):  # blank lines carry no triple
                    rows.append(_parse_row(self.path, line + reader.line_num, cells, self.positions))
                    if len(rows) == 1 << 16:
                        self.add_rows(rows)
                        rows = []
        except csv.Error as err:
            raise TriplesFileError(f"{self.path}, line {line + reader.line_num}: malformed CSV: {err}") from None
        self.add_rows(rows)
        return line + reader.line_num

    def read_fast(self, block: bytes, line: int) -> int | None:
        """pandas' reading of a block of plain lines; None where it cannot be used."""
        import pandas as pd

        data = np.frombuffer(block, dtype=np.uint8)
        ends = np.flatnonzero(data == ord("\n"))
        if not len(ends) or ends[-1] != len(block) - 1:
            ends = np.append(ends, len(block) - 1)  # the last line of the file, without a line end
        if int(np.max(np.diff(ends, prepend=-1))) > csv.field_size_limit():
            return None  # the csv module refuses a field that long: let it name the line
        columns = list(range(max(self.positions) + 1))
        try:
            frame = pd.read_csv(
                io.BytesIO(block),
                header=None,
                names=columns,
                usecols=sorted(set(self.positions)),
                index_col=False,
                dtype="category",
                na_filter=False,
                skip_blank_lines=False,
                engine="c",
                encoding="utf-8",
            )
        except (ValueError, UnicodeDecodeError):  # pandas' ParserError is a ValueError
            return None
        if len(frame) != len(ends):
            return None
        subject, relation, object_ = (frame[column].array for column in self.positions)
        blank = -1  # a row pandas leaves short gets no category (code -1)
        subject = self._lookup(subject, lambda cell: self.noun_id(cell) if cell else blank, str.strip)
        object_ = self._lookup(object_, lambda cell: self.noun_id(cell) if cell else blank, str.strip)
        relation = self._lookup(
            relation, lambda cell: self.relation_index.get(cell, blank), lambda cell: " ".join(cell.lower().split())
        )
        flagged = np.flatnonzero((subject < 0) | (object_ < 0) | (relation < 0) | (subject == object_))
        rows = []
        for row in flagged:  # in file order: the first bad one raises
            start = int(ends[row - 1]) + 1 if row else 0
            cells = next(csv.reader([block[start : int(ends[row]) + 1].decode("utf-8")]), [])
            if any(cell.strip() for cell in cells):
                rows.append(_parse_row(self.path, line + int(row) + 1, cells, self.positions))
        if len(flagged):
            keep = np.ones(len(subject), dtype=bool)
            keep[flagged] = False
            subject, relation, object_ = subject[keep], relation[keep], object_[keep]
            self.add_rows(rows)
        self.add(subject, relation, object_)
        return line + len(ends)

    @staticmethod
    def _lookup(column, value_of, normalise) -> np.ndarray:
        """Per row, ``value_of(normalise(cell))``, computed once per distinct cell; -1 where no cell."""
        table = np.array([value_of(normalise(cell)) for cell in column.categories] + [-1], dtype=np.int64)
        return table[np.asarray(column.codes, dtype=np.int64)]

    def result(self) -> dict:
        if not self.n_triples:
            raise TriplesFileError(f"{self.path}: no triples below the header")
        if len(self.nouns) > self.vocab_size:
            raise TriplesFileError(
                f"{self.path}: {len(self.nouns)} distinct nouns, more than the vocabulary size {self.vocab_size}"
            )
        # Nouns in sorted order, as audit_named_triples numbers them: the same sums in the same order.
        order = np.array([self.nouns[name] for name in sorted(self.nouns)], dtype=np.int64)
        counts = np.zeros((4, len(self.nouns)), dtype=np.int64)
        width = min(self.counts.shape[1], len(self.nouns))
        counts[:, :width] = self.counts[:, :width]
        subject, object_, first, second = counts[:, order]
        if self.seen is not None:
            n_unique = int(np.count_nonzero(self.seen))
        else:
            self._merge_seen()
            n_unique = len(self.seen_sorted)
        n_axes = int(np.count_nonzero(self.axes_seen))
        vocab_size = self.vocab_size
        return {
            "visual": _view_metrics(first, second, self.n_triples, vocab_size),
            "linguistic": _view_metrics(subject, object_, self.n_triples, vocab_size),
            "coverage": _percent(n_unique / (n_axes * 2 * vocab_size * (vocab_size - 1))),
            "n_triples": self.n_triples,
        }


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
