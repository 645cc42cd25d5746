"""The ``diffcomp`` command line.

``diffcomp audit TRIPLES.csv --vocab-size N [--json OUT]`` audits a training set of relational
triples (see :mod:`diffcomp.relational.audit`): it prints a table to stdout and, with
``--json``, writes the nested result ``{"visual": {...}, "linguistic": {...}, "coverage",
"n_triples"}``. A file that cannot be audited exits with status 2, a message on stderr naming
the file, line and problem, and no JSON file. The file is streamed: memory grows with the number
of distinct nouns, not with the number of triples.
"""

from __future__ import annotations

import argparse
import sys


def _vocab_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2 (a pair needs two nouns), got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffcomp", description="Controlled experiments on how diffusion models learn to compose concepts."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    audit = commands.add_parser(
        "audit",
        help="completeness/balance audit of a training set of relational triples",
        description=(
            "Audit a training set of relational triples (Chang et al. 2024): completeness of each role and "
            "balance, in the visual view (o1 = top/left object) and the linguistic view (o1 = first-mentioned "
            "noun), and coverage of the 2 N (N - 1) triples. Duplicate triples count with multiplicity, "
            "except in coverage. The file is streamed: its length does not change the memory needed."
        ),
    )
    audit.add_argument(
        "triples",
        metavar="TRIPLES.csv",
        help="CSV with columns subject,relation,object in mention order; relation is 'on top of', "
        "'at the bottom of', 'above', 'below', 'left of' or 'right of'",
    )
    audit.add_argument("--vocab-size", type=_vocab_size, required=True, metavar="N", help="vocabulary size |C|")
    audit.add_argument("--json", metavar="OUT", help="also write the audit as nested JSON to OUT")
    return parser


def run_audit(args: argparse.Namespace) -> int:
    from diffcomp.io import write_json
    from diffcomp.relational.audit import TriplesFileError, audit_file, format_audit

    try:
        result = audit_file(args.triples, args.vocab_size)
    except TriplesFileError as err:
        print(f"diffcomp audit: error: {err}", file=sys.stderr)
        return 2
    print(f"{args.triples}: {result['n_triples']} triples, vocabulary of {args.vocab_size} nouns")
    print(format_audit(result))
    if args.json:
        try:
            write_json(args.json, result)
        except OSError as err:
            print(f"diffcomp audit: error: cannot write {args.json}: {err.strerror}", file=sys.stderr)
            return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "audit":
        return run_audit(args)
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
