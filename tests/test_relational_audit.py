import math

import numpy as np
import pytest

from diffcomp.io import write_csv
from diffcomp.relational import audit as audit_module
from diffcomp.relational.audit import (
    BLOCK_BYTES,
    FLAT_KEYS,
    VIEWS,
    TriplesFileError,
    audit_bindings,
    audit_file,
    audit_index_triples,
    audit_named_triples,
    flatten,
    format_audit,
    index_triples_to_rows,
    read_triples,
    role_metrics,
)
from diffcomp.relational.data import triples_frame
from diffcomp.relational.icons import nouns
from diffcomp.relational.relations import RELATIONS, caption
from diffcomp.relational.splits import FAMILIES, Split

# Three triples on a vocabulary of 4 (noun 3 never appears), as (top, bottom, relation):
# "a 0 is on top of a 1.", "a 0 is on top of a 2.", "a 2 is at the bottom of a 1.".
SMALL = np.array([[0, 1, 0], [0, 2, 0], [1, 2, 1]])


def test_small_case_by_hand():
    audit = audit_index_triples(SMALL, vocab_size=4)
    # Visual roles: tops {0, 0, 1}, bottoms {1, 2, 2}. Noun 0 is only ever on top and noun 2 only at
    # the bottom (0 ln 0 = 0 in their terms); noun 1 is once each: 2 ln 2 out of 2 |D| ln 2 = 6 ln 2.
    assert audit["visual"] == pytest.approx({"completeness_r1": 50.0, "completeness_r2": 50.0, "balance": 100 / 3})
    # Linguistic roles: subjects {0, 0, 2}, objects {1, 2, 1}: noun 2 is once each.
    assert audit["linguistic"] == pytest.approx({"completeness_r1": 50.0, "completeness_r2": 50.0, "balance": 100 / 3})
    assert audit["coverage"] == pytest.approx(100 * 3 / (2 * 4 * 3))
    assert audit["n_triples"] == 3


def test_absent_noun_lowers_completeness_only():
    with_absent, without = audit_index_triples(SMALL, 4), audit_index_triples(SMALL, 3)
    for view in ("visual", "linguistic"):
        assert with_absent[view]["balance"] == pytest.approx(without[view]["balance"])
        assert with_absent[view]["completeness_r1"] == pytest.approx(without[view]["completeness_r1"] * 3 / 4)


def test_duplicates_count_with_multiplicity_except_in_coverage():
    doubled = np.vstack([SMALL, SMALL[:1]])  # "a 0 is on top of a 1." twice
    audit = audit_index_triples(doubled, vocab_size=4)
    assert audit["n_triples"] == 4
    assert audit["coverage"] == audit_index_triples(SMALL, 4)["coverage"]
    # Visual: noun 1 is on top once and at the bottom twice: -ln(1/3) - 2 ln(2/3) = 3 ln 3 - 2 ln 2.
    expected = 100 * (3 * math.log(3) - 2 * math.log(2)) / (2 * 4 * math.log(2))
    assert audit["visual"]["balance"] == pytest.approx(expected)
    assert audit["visual"]["completeness_r1"] == 50.0


def test_role_metrics_extremes():
    # Every noun in both roles equally often: exactly 100, not 99.99999999999997.
    assert role_metrics([0, 1, 2], [1, 2, 0], 3) == {
        "completeness_r1": 100.0,
        "completeness_r2": 100.0,
        "balance": 100.0,
    }
    # One role per noun: balance 0.
    assert role_metrics([0, 0, 1], [2, 3, 3], 4)["balance"] == 0.0
    with pytest.raises(ValueError, match="no triples"):
        role_metrics([], [], 3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        role_metrics([0], [3], 3)


def test_relation_table_roles():
    # "a is below b" is the image of b above a: the same visual binding as "b is on top of a".
    below = audit_named_triples([("a", "below", "b")], 2)
    assert below["visual"] == audit_named_triples([("b", "on top of", "a")], 2)["visual"]
    assert below["linguistic"] == audit_named_triples([("a", "on top of", "b")], 2)["linguistic"]
    assert RELATIONS["at the bottom of"].subject_is_first is False
    assert RELATIONS["left of"].subject_is_first and RELATIONS["left of"].axis == "horizontal"


def test_synonyms_share_a_binding_and_axes_add_a_space():
    same = audit_named_triples([("a", "on top of", "b"), ("a", "above", "b")], 2)
    assert same["coverage"] == pytest.approx(100 / 4) and same["n_triples"] == 2
    # A horizontal triple adds a second phenomenon space of 2 N (N - 1) = 4 bindings.
    mixed = audit_named_triples([("a", "on top of", "b"), ("a", "left of", "b")], 2)
    assert mixed["coverage"] == pytest.approx(100 * 2 / 8)


def test_self_relation_and_too_many_nouns_rejected():
    with pytest.raises(ValueError, match="itself"):
        audit_bindings([0], [0], [True], [0], 3)
    with pytest.raises(ValueError, match="3 distinct nouns, more than the vocabulary size 2"):
        audit_named_triples([("a", "above", "b"), ("a", "above", "c")], 2)


def test_named_and_index_audits_agree_on_a_split():
    train, _ = Split.from_config({"name": "u", "family": "upper_triangle", "vocab_size": 7}).triples()
    names = [f"noun{k}" for k in range(7)]
    assert audit_named_triples(index_triples_to_rows(train, names), 7) == audit_index_triples(train, 7)


def test_rows_follow_caption_templates():
    names = ["star", "heart"]
    rows = index_triples_to_rows(np.array([[0, 1, 0], [0, 1, 1]]), names)
    assert rows == [("star", "on top of", "heart"), ("heart", "at the bottom of", "star")]
    assert caption("star", "heart", 0) == "a star is on top of a heart."
    assert caption("star", "heart", 1) == "a heart is at the bottom of a star."


def test_flatten_and_format():
    audit = audit_index_triples(SMALL, 4)
    flat = flatten(audit)
    assert tuple(flat) == FLAT_KEYS
    assert flat["visual.balance"] == audit["visual"]["balance"]
    text = format_audit(audit)
    assert "visual" in text and "linguistic" in text and "coverage: 12.50%" in text


def _write(tmp_path, text, name="triples.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_read_triples_normalises_and_ignores_extra_columns(tmp_path):
    path = _write(tmp_path, "\ufeffid,subject,relation,object\n1, star ,On Top  Of,heart\n\n2,sun,below,star\n")
    assert read_triples(path) == [("star", "on top of", "heart"), ("sun", "below", "star")]
    # Nouns are any strings, including ones pandas would read as missing values.
    path = _write(tmp_path, "subject,relation,object\nnan,above,NULL\n")
    assert audit_file(path, 2)["n_triples"] == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"empty file"),
        ("\n\n", r"empty file"),
        ("subject,relation,object\n", r"no triples below the header"),
        ("subject,object\nstar,heart\n", r"line 1: missing column\(s\) relation .*found: subject, object"),
        ("subject,relation,object\nstar,on top of,heart\nstar,beside,heart\n", r"line 3: unknown relation 'beside'"),
        ("subject,relation,object\nstar,on top of,star\n", r"line 2: noun 'star' is related to itself"),
        ("subject,relation,object\nstar,on top of\n", r"line 2: 2 field\(s\)"),
        ("subject,relation,object\n,on top of,heart\n", r"line 2: empty subject"),
    ],
)
def test_bad_csv_errors_name_the_problem(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(TriplesFileError, match=message) as info:
        audit_file(path, 10)
    assert str(path) in str(info.value)


def test_missing_file_and_vocabulary_overflow(tmp_path):
    with pytest.raises(TriplesFileError, match="cannot read"):
        audit_file(tmp_path / "absent.csv", 4)
    path = _write(tmp_path, "subject,relation,object\na,above,b\nc,below,d\n")
    with pytest.raises(TriplesFileError, match="4 distinct nouns, more than the vocabulary size 3"):
        audit_file(path, 3)


# --- the streaming audit_file against the in-memory audit of read_triples' rows -------------------


def _in_memory_audit(path, vocab_size):
    """What audit_file computed before it streamed: every row in memory, then audit_named_triples."""
    rows = read_triples(path)
    try:
        return audit_named_triples(rows, vocab_size, source=str(path))
    except ValueError as err:
        raise TriplesFileError(str(err)) from None


def _outcome(audit, path, vocab_size, **kwargs):
    try:
        return audit(path, vocab_size, **kwargs)
    except TriplesFileError as err:
        return f"TriplesFileError: {err}"


# Block sizes: one block per file, a few lines a block, and a block shorter than a line.
BLOCKS = (BLOCK_BYTES, 4096, 100, 1)


def _assert_streams_as_before(path, vocab_size, blocks=BLOCKS):
    expected = _outcome(_in_memory_audit, path, vocab_size)
    for block_bytes in blocks:  # pandas' reading of the plain blocks, then the csv module's of every block
        assert _outcome(audit_file, path, vocab_size, block_bytes=block_bytes, fast_from_bytes=0) == expected
        assert _outcome(audit_file, path, vocab_size, block_bytes=block_bytes, fast_from_bytes=1 << 40) == expected
    return expected


PAPER_SIZES = (30, 60, 90)  # config.paper.yaml's vocabularies


@pytest.mark.parametrize("part", ["train", "test"])
@pytest.mark.parametrize("n", PAPER_SIZES)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_streaming_audit_equals_the_in_memory_audit_on_the_paper_splits(tmp_path, family, n, part):
    """The 42 cases: every split family at the paper's vocabularies, its train and its test set, as
    the pipeline writes them; the same numbers bit for bit (so the same printed table and JSON)."""
    params = {"m": n // 10} if family == "band" else {"size": 2 * n * (n - 1) // 5} if family == "random" else {}
    train, test = Split.from_config({"name": family, "family": family, "vocab_size": n, **params}).triples()
    path = tmp_path / f"{part}.csv"
    write_csv(path, triples_frame(train if part == "train" else test, nouns(n)))
    audit = _assert_streams_as_before(path, n, blocks=(BLOCK_BYTES, 1 << 13))
    assert audit == audit_index_triples(train if part == "train" else test, n)
    assert format_audit(audit_file(path, n, block_bytes=1 << 13, fast_from_bytes=0)) == format_audit(audit)


RELATION_SPELLINGS = {name: [name, name.upper(), f"  {name.title()} ", name.replace(" ", "   ")] for name in RELATIONS}


def _random_triples_file(path, n_rows, n_nouns, seed):
    """A file of random triples with what a real one may hold: padded nouns and relation phrases in
    any case and spacing, extra columns before and after, short rows that still name every column,
    blank and whitespace-only lines, CRLF stretches, quoted stretches (some fields spanning lines)
    and non-ASCII nouns. Returns the triples' noun and relation indices and the noun names."""
    rng = np.random.default_rng(seed)
    names = [f"noun{k}" for k in range(n_nouns - 3)] + ["café", "ice cream", "日本"]
    relations = list(RELATIONS)
    subject = rng.integers(0, n_nouns, n_rows)
    object_ = (subject + rng.integers(1, n_nouns, n_rows)) % n_nouns
    relation = rng.integers(0, len(relations), n_rows)
    spelling, chance = rng.integers(0, 4, n_rows), rng.random((n_rows, 4))
    stretch = rng.integers(0, 3, n_rows // 2000 + 1)
    lines = ["id,subject,relation,object,note\r\n"]
    for k in range(n_rows):
        kind = stretch[k // 2000]  # 0 plain, 1 CRLF, 2 quoted
        end = "\r\n" if kind == 1 else "\n"
        s, o = names[subject[k]], names[object_[k]]
        r = RELATION_SPELLINGS[relations[relation[k]]][spelling[k]]
        if chance[k, 0] < 0.1:
            s, o = f" {s}", f"{o}\t "
        if kind == 2:
            note = '"a ""note"",\nover two lines"' if chance[k, 1] < 0.05 else '"x"'
            lines.append(f'{k},"{s}","{r}","{o}",{note}{end}')
        else:
            lines.append(f"{k},{s},{r},{o}" + ("" if chance[k, 1] < 0.2 else ",note") + end)
        if chance[k, 2] < 0.01:
            lines.append(("", "  ,  ", " ,,,,, ")[int(chance[k, 3] * 3)] + end)
    path.write_text("".join(lines), encoding="utf-8", newline="")
    return subject, relation, object_, names


def _numpy_audit(subject, relation, object_, names, vocab_size):
    """The audit's formulas on index arrays: counts with np.bincount over the nouns in sorted order."""
    rank = np.argsort(np.argsort(np.array(names, dtype=object)))
    subject, object_ = rank[subject], rank[object_]
    relations = list(RELATIONS.values())
    first_mentioned = np.array([r.subject_is_first for r in relations])[relation]
    axis = np.array([r.axis == "vertical" for r in relations])[relation]
    first = np.where(first_mentioned, subject, object_)
    second = np.where(first_mentioned, object_, subject)

    def view(o1, o2):
        n1, n2 = (np.bincount(o, minlength=vocab_size).astype(float) for o in (o1, o2))
        terms = sum(np.sum(n[n > 0] * np.log(n[n > 0] / (n1 + n2)[n > 0])) for n in (n1, n2))
        return {
            "completeness_r1": 100 * np.count_nonzero(n1) / vocab_size,
            "completeness_r2": 100 * np.count_nonzero(n2) / vocab_size,
            "balance": -100 * terms / (2 * len(o1) * math.log(2)),
        }

    bindings = np.unique(np.stack([axis, first, second, first_mentioned], axis=1), axis=0)
    return {
        "visual": view(first, second),
        "linguistic": view(subject, object_),
        "coverage": 100 * len(bindings) / (len(np.unique(axis)) * 2 * vocab_size * (vocab_size - 1)),
        "n_triples": len(subject),
    }


def test_streaming_audit_of_a_large_random_file_matches_a_numpy_reference(tmp_path, monkeypatch):
    """120,000 random triples of 300 nouns (about 4 MB) in blocks of 32 KiB: about 140 blocks, read
    by pandas or, the quoted stretches, by the csv module, some quoted fields across block ends."""
    path = tmp_path / "random.csv"
    subject, relation, object_, names = _random_triples_file(path, 120_000, 300, seed=0)
    vocab_size = 320  # 20 nouns of the vocabulary never occur
    streamed = audit_file(path, vocab_size, block_bytes=1 << 15, fast_from_bytes=0)
    reference = _numpy_audit(subject, relation, object_, names, vocab_size)
    assert streamed["n_triples"] == reference["n_triples"] == 120_000
    for view in VIEWS:
        assert streamed[view] == pytest.approx(reference[view], rel=1e-12, abs=1e-9)
    assert streamed["coverage"] == pytest.approx(reference["coverage"], rel=1e-12)
    assert streamed == _in_memory_audit(path, vocab_size)  # bit for bit
    # The set of bindings as a sorted array (large vocabularies) instead of a bitmap: the same.
    monkeypatch.setattr(audit_module, "_DENSE_BINDINGS", 0)
    assert audit_file(path, vocab_size, block_bytes=1 << 15, fast_from_bytes=0) == streamed


@pytest.mark.parametrize(
    "body",
    [
        "star,on top of,heart\nsun,below,star\n",
        "star,on top of,heart\r\nsun,below,star",  # CRLF, no final line end
        'star,on top of,heart\n"sun","below","star"\n"moon","above","sun\r\n"\n',
        "star,on top of,heart\rsun,below,star\r",  # lines that end in \r alone
        "star,on top of,heart\n\n \n ,, \nsun,below,star\n\n",
        "star,on top of,heart\nsun,below,star,extra,more\nmoon,left of,sun,\n",
        "star,ON  TOP of,heart\n s t a r ,Right Of,\u00a0heart\u3000\n",
        "st\x00ar,above,heart\n\ufeffstar,above,heart\n",  # NUL, a byte-order mark inside the file
        "nan,above,NULL\nNA,below,None\n#c,above,x;y\n",
        "\u00e9toile,above,\u2665\n\x0bstar\x0c,above,\x1cheart\n",  # non-ASCII, other whitespace
    ],
)
def test_streaming_audit_reads_every_kind_of_line_as_before(tmp_path, body):
    path = tmp_path / "triples.csv"
    path.write_bytes(("subject,relation,object\n" + body).encode())
    assert isinstance(_assert_streams_as_before(path, 12), dict)


def _valid_lines(n, quoted=False):
    return "".join(
        f'"noun{k % 7}","above","noun{(k + 1) % 7}"\n' if quoted else f"noun{k % 7},above,noun{(k + 1) % 7}\n"
        for k in range(n)
    )


# A bad line after 3,000 good ones (many blocks of 2,000 bytes), with the lines before it plain,
# ending in CRLF or in CR alone, quoted (the csv module's reading), after a field spanning lines, or
# after blank lines.
@pytest.mark.parametrize(
    "before",
    [
        _valid_lines(3000),
        _valid_lines(3000).replace("\n", "\r\n"),
        _valid_lines(3000).replace("\n", "\r"),
        _valid_lines(3000, quoted=True),
        _valid_lines(1500) + 'a,above,"b\n\nc"\n' + _valid_lines(1500),
        _valid_lines(1500) + "\n\n  \n" + _valid_lines(1500),
    ],
    ids=["plain", "crlf", "cr", "quoted", "multiline-field", "blank-lines"],
)
@pytest.mark.parametrize(
    "bad",
    [
        "star,on top of\n",
        "star,beside,heart\n",
        "star,above,star\n",
        " ,above,heart\n",
        "star,above, \n",
        ",,x\n",
        "\xff\n",  # replaced by a byte that is not UTF-8
        '"star,above,heart\n',  # an unclosed quote to the end of the file
        "x" * 140_000 + ",above,heart\n",  # longer than the csv module's field limit
    ],
    ids=[
        *("short", "relation", "itself", "empty-subject", "empty-object"),
        *("blank-nouns", "not-utf8", "open-quote", "long"),
    ],
)
def test_streaming_audit_names_the_same_line_for_a_bad_row_far_into_the_file(tmp_path, before, bad):
    text = "subject,relation,object\n" + before + bad + _valid_lines(500)
    path = tmp_path / "bad.csv"
    path.write_bytes(text.encode().replace(b"\xc3\xbf", b"\xff"))
    expected = _assert_streams_as_before(path, 10, blocks=(BLOCK_BYTES, 2000))
    if bad != '"star,above,heart\n':  # an open quote swallows the rest of the file as one field
        assert isinstance(expected, str) and expected.startswith("TriplesFileError")


def test_streaming_audit_reports_a_bad_row_before_too_many_nouns(tmp_path):
    """Too many distinct nouns is known only at the end: a bad row anywhere is reported first, as
    before, and the count of distinct nouns is that of the whole file."""
    many = "".join(f"n{k},above,n{k + 1}\n" for k in range(2000))
    path = _write(tmp_path, "subject,relation,object\n" + many)
    assert _assert_streams_as_before(path, 50, blocks=(BLOCK_BYTES, 4096)) == (
        f"TriplesFileError: {path}: 2001 distinct nouns, more than the vocabulary size 50"
    )
    path = _write(tmp_path, "subject,relation,object\n" + many + "a,next to,b\n")
    assert "line 2002: unknown relation 'next to'" in _assert_streams_as_before(path, 50, blocks=(BLOCK_BYTES, 4096))


def test_a_plain_file_is_read_by_pandas_not_line_by_line(tmp_path, monkeypatch):
    """Past the header (read by the csv module), plain blocks, with CRLF line ends, blank lines and
    whitespace-only rows, never take the csv module's line-by-line path: that is what makes the
    audit fast."""

    def line_by_line(*args):
        raise AssertionError("read line by line")

    monkeypatch.setattr(audit_module._StreamingAudit, "read_lines", line_by_line)
    path = tmp_path / "plain.csv"
    path.write_bytes(b"\n subject , relation,object\r\n" + _valid_lines(5000).replace("\n", "\r\n\n  ,\n").encode())
    assert audit_file(path, 7, block_bytes=4096, fast_from_bytes=0) == _in_memory_audit(path, 7)


def test_streaming_audit_memory_does_not_grow_with_the_rows(tmp_path):
    """The counts are kept per noun: 50 times the rows, in blocks of 64 KiB, adds no memory beyond
    the blocks' (tracemalloc counts numpy's and pandas' allocations)."""
    import tracemalloc

    peaks = []
    for n_rows in (4_000, 200_000):
        path = tmp_path / f"{n_rows}.csv"
        path.write_text("subject,relation,object\n" + _valid_lines(n_rows).replace("noun", "n"))
        audit_file(path, 10, block_bytes=1 << 16, fast_from_bytes=0)  # imports pandas outside the measurement
        tracemalloc.start()
        audit_file(path, 10, block_bytes=1 << 16, fast_from_bytes=0)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 2 * peaks[0] + (1 << 20), peaks


def test_a_small_file_is_audited_without_importing_pandas(tmp_path):
    """The pipeline's split files are small: their audit job does not pay pandas' import."""
    import subprocess
    import sys

    path = _write(tmp_path, "subject,relation,object\n" + _valid_lines(1000))
    code = (
        "import sys; from diffcomp.relational.audit import audit_file; "
        f"assert audit_file({str(path)!r}, 7)['n_triples'] == 1000; print('pandas' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "False"
