"""Scaling of ``diffcomp audit``: time and peak memory against the number of triples, before and
after the audit streamed its file, each measured as a whole process (the machines are shared, so
both run in the same sitting, alternating).

    python bench/bench_audit.py [--sizes 1e6,1e7] [--big 1e8] [--quoted 1e6] [--nouns 1000]
                                [--rounds 3] [--before REV] [--out bench_out/audit]
                                [--json OUT] [--md OUT]

For each size, a file of random triples (``--nouns`` nouns named ``noun0``, ``noun1``, ..., the six
relation phrases, subject and object distinct; about 25 bytes a triple) is written under ``--out``
once and reused. It is audited by the command line, ``python -m diffcomp.cli audit FILE
--vocab-size NOUNS --json OUT``, in a fresh process: its wall time and its peak resident memory
(the process's own maximum resident set size, from ``wait4``). "before" runs the same command with
``diffcomp/relational/audit.py`` of commit ``--before`` (the audit that read every row into memory)
in place of today's module; "after" runs today's. The rounds alternate which goes first; the
table gives medians, the ratios before / after, and whether the two printed the same table and
wrote the same JSON, byte for byte.

The files are written by a child process, so this one stays small: on Linux a child's maximum
resident set size counts the peak of the process that started it.

--big N adds one size that the in-memory audit cannot hold (it needs about 0.45 GB a million
triples): after only, one round. --quoted N adds a file of N triples with every field quoted, which
the streaming audit reads line by line with the csv module, as the in-memory audit read every file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from diffcomp.relational.relations import RELATIONS  # noqa: E402

# The last commit whose audit read every row into memory.
IN_MEMORY_AUDIT = "7d9b34996f3dcacf04976c955fbfca8757440e3f"

# Runs the command line with another file in place of diffcomp/relational/audit.py.
_SWAP_AUDIT = """
import importlib.util, sys
import diffcomp.relational
spec = importlib.util.spec_from_file_location("diffcomp.relational.audit", sys.argv.pop(1))
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.modules[spec.name] = diffcomp.relational.audit = module
from diffcomp.cli import main
sys.exit(main(sys.argv[1:]))
"""


def write_triples(path: Path, n_triples: int, n_nouns: int, seed: int = 0, quoted: bool = False) -> None:
    """``n_triples`` random triples (subject, relation, object) under a header, written a million at a time."""
    rng = np.random.default_rng(seed)
    quote = '"' if quoted else ""
    nouns = [f"{quote}noun{k}{quote}".encode() for k in range(n_nouns)]
    relations = [f"{quote}{name}{quote}".encode() for name in RELATIONS]
    # a row is one of N * R heads "subject,relation," and one of N tails "object\n"
    heads = [noun + b"," + relation + b"," for noun in nouns for relation in relations]
    tails = [noun + b"\n" for noun in nouns]
    pieces = np.frombuffer(b"".join(heads + tails), dtype=np.uint8)
    lengths = np.array([len(piece) for piece in heads + tails], dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        out.write(b"subject,relation,object\n")
        for done in range(0, n_triples, 1_000_000):
            n = min(1_000_000, n_triples - done)
            subject = rng.integers(0, n_nouns, n)
            object_ = (subject + rng.integers(1, n_nouns, n)) % n_nouns
            piece = np.empty(2 * n, dtype=np.int64)
            piece[0::2] = subject * len(relations) + rng.integers(0, len(relations), n)
            piece[1::2] = len(heads) + object_
            ends = np.cumsum(lengths[piece])
            index = np.arange(ends[-1]) - np.repeat(ends - lengths[piece] - starts[piece], lengths[piece])
            out.write(pieces[index].tobytes())
    tmp.replace(path)


def run_audit(triples: Path, n_nouns: int, work: Path, audit_module: Path | None) -> dict:
    """One ``diffcomp audit`` process: wall seconds, peak resident memory, what it printed and wrote."""
    name = "before" if audit_module else "after"
    out_json, out_text = work / f"{name}.json", work / f"{name}.txt"
    out_json.unlink(missing_ok=True)
    prefix = [sys.executable, "-c", _SWAP_AUDIT, str(audit_module)] if audit_module else [sys.executable, "-m"]
    command = [*prefix, *([] if audit_module else ["diffcomp.cli"])]
    command += ["audit", str(triples), "--vocab-size", str(n_nouns), "--json", str(out_json)]
    with open(out_text, "wb") as stdout:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=REPO, stdout=stdout, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"{name}: exit {process.returncode}: {process.stderr.read().decode()}")
    process.stderr.close()
    return {
        "seconds": seconds,
        "peak_rss_bytes": usage.ru_maxrss * 1024,  # kilobytes on Linux
        "output": out_text.read_bytes() + out_json.read_bytes(),
    }


def measure(triples: Path, n_nouns: int, rounds: int, before: Path | None, work: Path) -> dict:
    """Median time and memory of ``rounds`` runs of each, alternating which goes first."""
    runs = {"before": [], "after": []}
    for round_ in range(rounds):
        order = ["before", "after"] if round_ % 2 == 0 else ["after", "before"]
        for name in order:
            if name == "before" and before is None:
                continue
            runs[name].append(run_audit(triples, n_nouns, work, before if name == "before" else None))
            print(f"  {triples.name} {name}: {runs[name][-1]['seconds']:.2f} s", file=sys.stderr, flush=True)
    row = {"triples": None, "file_bytes": triples.stat().st_size, "rounds": rounds}
    for name, results in runs.items():
        if results:
            row[name] = {
                "seconds": statistics.median(r["seconds"] for r in results),
                "peak_rss_bytes": statistics.median(r["peak_rss_bytes"] for r in results),
                "seconds_all": [round(r["seconds"], 3) for r in results],
            }
    if runs["before"]:
        row["time_ratio"] = row["before"]["seconds"] / row["after"]["seconds"]
        row["memory_ratio"] = row["before"]["peak_rss_bytes"] / row["after"]["peak_rss_bytes"]
        outputs = {r["output"] for results in runs.values() for r in results}
        row["same_output"] = len(outputs) == 1
    return row


def markdown(rows: list[dict]) -> str:
    def gib(row, name):
        return f"{row[name]['peak_rss_bytes'] / 2**30:.2f} GiB" if name in row else "not run"

    def sec(row, name):
        return f"{row[name]['seconds']:.1f} s" if name in row else "not run"

    lines = [
        "| triples | file | before: time | before: peak memory | after: time | after: peak memory "
        "| time ratio | memory ratio | same output |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratios = (
            (f"{row['time_ratio']:.1f}x", f"{row['memory_ratio']:.1f}x", "yes" if row["same_output"] else "NO")
            if "before" in row
            else ("", "", "")
        )
        lines.append(
            f"| {row['label']} | {row['file_bytes'] / 1e9:.2f} GB | {sec(row, 'before')} | {gib(row, 'before')} "
            f"| {sec(row, 'after')} | {gib(row, 'after')} | {' | '.join(ratios)} |"
        )
    return "\n".join(lines)


def _count(text: str) -> int:
    return int(float(text))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1e6,1e7", help="comma-separated numbers of triples")
    parser.add_argument("--big", type=_count, default=0, help="one more size, streaming audit only (e.g. 1e8)")
    parser.add_argument("--quoted", type=_count, default=1_000_000, help="triples of the all-quoted file (0: none)")
    parser.add_argument("--nouns", type=int, default=1000, help="nouns in the files and the vocabulary size")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", default=IN_MEMORY_AUDIT, help="commit of the in-memory audit ('': after only)")
    parser.add_argument("--out", type=Path, default=REPO / "bench_out" / "audit", help="folder of the triples files")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--md", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    cases = [(_count(size), False, args.rounds, True) for size in args.sizes.split(",") if size]
    if args.quoted:
        cases.append((args.quoted, True, args.rounds, True))
    if args.big:
        cases.append((args.big, False, 1, False))
    rows = []
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        before = None
        if args.before:
            before = work / "audit_before.py"
            show = ["git", "show", f"{args.before}:diffcomp/relational/audit.py"]
            before.write_bytes(subprocess.run(show, cwd=REPO, capture_output=True, check=True).stdout)
        for n_triples, quoted, rounds, with_before in cases:
            triples = args.out / f"triples_{n_triples}_{args.nouns}{'_quoted' if quoted else ''}.csv"
            if not triples.exists():
                start = time.perf_counter()
                write = f"write_triples(Path({str(triples)!r}), {n_triples}, {args.nouns}, quoted={quoted})"
                code = f"from pathlib import Path; from bench_audit import write_triples; {write}"
                subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, check=True)
                print(f"wrote {triples} in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
            row = measure(triples, args.nouns, rounds, before if with_before else None, work)
            row["triples"], row["quoted"] = n_triples, quoted
            row["label"] = f"{n_triples:,}" + (", every field quoted" if quoted else "")
            rows.append(row)
    table = markdown(rows)
    print(table)
    if args.md:
        args.md.write_text(table + "\n")
    if args.json:
        result = {
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
            "date": time.strftime("%Y-%m-%d"),
            "nouns": args.nouns,
            "before": args.before,
            "rows": rows,
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
