"""The README's and docs/' results tables, written from a committed snapshot of a run's results.

    python tools/results_tables.py snapshot medium --command "make run-medium" --seconds 4620
    python tools/results_tables.py write          (make results-tables)
    python tools/results_tables.py check          (tests/test_docs.py runs this)

``snapshot SCALE`` copies the small result tables of a finished run (``results/``) into
``docs/results/SCALE/`` with its provenance: the command, its wall time, the date, the machine
and the commit. ``write`` renders every table from the snapshots into the pages, between the
markers ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->``; ``check`` fails when a page's
table differs from what ``write`` would put there. So a number in a results table always comes
from a run, and changes only when a new snapshot does.

Tables (NAME):
- ``relational-medium``: each split family's baseline at the medium scale, train and test accuracy
  pooled over seeds with its interval, each seed's test accuracy, test accuracy by kind of held-out
  triple, and the paper's number;
- ``relational-medium-effects``: each ablation and intervention against its reference experiment
  (the baseline, or a projection's base), the paired difference with its interval, per seed;
- ``relational-quick``: the quick scale's relational runs at their final checkpoint;
- ``bumps-SCALE``: each bump run's accuracy and off-grid accuracy at its last three checkpoints and
  its phase at every checkpoint; ``bumps-SCALE-rho``: Spearman's rho of the off-grid accuracy
  against the grid increment (the sigma-1 square grids) at those checkpoints;
- ``provenance-SCALE``: the snapshot's command, wall time, date, machine and commit, one line;
- ``slurm-jobs`` and ``slurm-job-count``: not from a run but from a dry run of the paper
  configuration (``snakemake -n --quiet rules --configfile config.paper.yaml``) and the SLURM
  profile: every rule, where it runs, what one job asks for and how many jobs it plans;
- ``figure-map``: not from a run but from the workflow (``snakemake --summary`` of config.yaml)
  and the code: every figure file -> its rule -> the rule's script -> the function that draws it.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SNAPSHOTS = REPO / "docs" / "results"
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- results:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)", re.DOTALL)

# The relational files a snapshot keeps (results/relational/...), and the per-seed columns of metrics.csv.
RELATIONAL_FILES = {"summary.csv": "relational_summary.csv", "audit.csv": "relational_audit.csv"}
FINAL_COLUMNS = [
    "experiment",
    "split",
    "family",
    "seed",
    "step",
    "encoder",
    "pos_emb",
    "intervention",
    "intervention_params",
    "train_accuracy",
    "test_accuracy",
    "test_new_caption_accuracy",
    "test_new_image_accuracy",
    "test_frac_swapped",
]

# Chang et al. 2024, test accuracy (%) at N = 30 for the split family's analogue.
PAPER = {
    "band": "96.9-99.1",
    "random": "",  # the paper's random splits are its coverage scatter, not one number
    "upper_triangle": "38",
    "one_sided": "0.7-3.7",
    "bipartite": "0.7-3.7",
    "caption_bipartite": "17.0",
    "caption_by_order": "96.4",
}
SKEW = {
    "band": "complete, balanced",
    "random": "random sample",
    "upper_triangle": "visual, partial",
    "one_sided": "visual",
    "bipartite": "visual, 50 / 50, balance 0",
    "caption_by_order": "linguistic, partial",
    "caption_bipartite": "linguistic, 50 / 50, balance 0",
}


# --------------------------------------------------------------------------------------------
# Snapshots


def machine() -> str:
    """The CPU model and core count, e.g. "2-core x86_64 (AMD EPYC 7B13)"."""
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores}-core {platform.machine()}" + (f" ({model})" if model else "")


def commit(results: Path) -> str:
    proc = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=results.parent, capture_output=True, text=True, check=False
    )
    return proc.stdout.strip() or "unknown"


def take_snapshot(
    scale: str, results: Path, command: str, seconds: float | None, out: Path = SNAPSHOTS, note: str = ""
) -> Path:
    """Copy a finished run's small tables into ``out/scale`` with its provenance; returns the folder."""
    relational = results / "relational"
    target = out / scale
    bumps = results / "bumps" / "metrics.csv"
    if not (relational / "summary.csv").is_file() and not bumps.is_file():
        raise FileNotFoundError(f"{relational / 'summary.csv'} does not exist: run the workflow first")
    target.mkdir(parents=True, exist_ok=True)
    if bumps.is_file():
        (target / "bumps_metrics.csv").write_text(bumps.read_text())
    if not (relational / "summary.csv").is_file():
        return _write_provenance(target, results, command, seconds, note)
    for source, name in RELATIONAL_FILES.items():
        (target / name).write_text((relational / source).read_text())
    metrics = pd.read_csv(relational / "metrics.csv", keep_default_na=False, na_values=[""])
    last = metrics.groupby(["experiment", "split"])["step"].transform("max")
    final = metrics.loc[metrics["step"] == last, FINAL_COLUMNS]
    final.to_csv(target / "relational_final.csv", index=False)
    return _write_provenance(target, results, command, seconds, note)


def _write_provenance(target: Path, results: Path, command: str, seconds: float | None, note: str = "") -> Path:
    provenance = {
        "command": command,
        "seconds": seconds,
        "date": date.today().isoformat(),
        "machine": machine(),
        "commit": commit(results.resolve()),
        "note": note,
    }
    (target / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return target


# --------------------------------------------------------------------------------------------
# Tables


def _number(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}f}"


def _signed(value) -> str:
    text = _number(value)
    return text if not text or text.startswith("-") else f"+{text}"


def _interval(row, column: str, signed: bool = False) -> str:
    low, high = row.get(f"{column}_lo"), row.get(f"{column}_hi")
    form = _signed if signed else _number
    if low is None or (isinstance(low, float) and math.isnan(low)):
        return ""
    return f"[{form(low)}, {form(high)}]"


def _per_seed(final: pd.DataFrame, experiment: str, split: str, column: str = "test_accuracy") -> str:
    rows = final[(final["experiment"] == experiment) & (final["split"] == split)].sort_values("seed")
    return " / ".join(_number(v) for v in rows[column])


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _load(scale: str, root: Path = SNAPSHOTS) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    folder = root / scale
    summary = pd.read_csv(folder / "relational_summary.csv", keep_default_na=False, na_values=[""])
    final = pd.read_csv(folder / "relational_final.csv", keep_default_na=False, na_values=[""])
    provenance = json.loads((folder / "provenance.json").read_text())
    return summary, final, provenance


def _baseline(summary: pd.DataFrame) -> str:
    return summary["experiment"].iloc[0]


def relational_families(scale: str, root: Path = SNAPSHOTS) -> str:
    """The baseline on every split: accuracies pooled over seeds, each seed's test accuracy, by kind, the paper."""
    summary, final, _ = _load(scale, root)
    baseline = _baseline(summary)
    rows = []
    for _, row in summary[summary["experiment"] == baseline].iterrows():
        rows.append(
            [
                f"{row['split']} ({SKEW.get(row['family'].split('(')[0], row['family'])})",
                f"{_number(row['train_accuracy'])}",
                f"**{_number(row['test_accuracy'])}** {_interval(row, 'test_accuracy')}".strip(),
                _per_seed(final, baseline, row["split"]),
                _number(row["test_new_caption_accuracy"]),
                _number(row["test_new_image_accuracy"]),
                PAPER.get(row["family"].split("(")[0], ""),
            ]
        )
    header = [
        "split (skew)",
        "train",
        "test [95% interval]",
        "test per seed",
        "new caption of a training image",
        "new image",
        "paper (N = 30, %)",
    ]
    return _table(header, rows)


def _test_of(summary: pd.DataFrame, experiment: str, split: str) -> str:
    rows = summary[(summary["experiment"] == experiment) & (summary["split"] == split)]
    return _number(rows["test_accuracy"].iloc[0]) if len(rows) else ""


def relational_effects(scale: str, root: Path = SNAPSHOTS) -> str:
    """Every experiment but the baseline, against its reference: test accuracy per seed and the paired difference."""
    summary, final, _ = _load(scale, root)
    baseline = _baseline(summary)
    rows = []
    for _, row in summary[summary["experiment"] != baseline].iterrows():
        rows.append(
            [
                row["experiment"],
                row["split"],
                row["reference"],
                _number(row["train_accuracy"]),
                f"{_number(row['test_accuracy'])} ({_per_seed(final, row['experiment'], row['split'])})",
                _test_of(summary, row["reference"], row["split"]),
                f"**{_signed(row['test_diff'])}** {_interval(row, 'test_diff', signed=True)}".strip(),
            ]
        )
    header = ["experiment", "split", "against", "train", "test (per seed)", "its reference's test", "difference [95%]"]
    return _table(header, rows)


def relational_runs(scale: str, root: Path = SNAPSHOTS) -> str:
    """Every run at its final checkpoint (one seed), in the summary's order: train / test, by kind, swapped."""
    summary, final, _ = _load(scale, root)
    rows = []
    for experiment, split in zip(summary["experiment"], summary["split"], strict=True):
        for _, row in final[(final["experiment"] == experiment) & (final["split"] == split)].iterrows():
            rows.append(
                [
                    f"{experiment} / {split}",
                    f"{_number(row['train_accuracy'])} / **{_number(row['test_accuracy'])}**",
                    _number(row["test_new_caption_accuracy"]),
                    _number(row["test_new_image_accuracy"]),
                    _number(row["test_frac_swapped"]),
                    str(int(row["step"])),
                ]
            )
    header = ["run", "train / test", "new caption of a training image", "new image", "test swapped", "step"]
    return _table(header, rows)


def _bump_runs(scale: str, root: Path) -> pd.DataFrame:
    return pd.read_csv(root / scale / "bumps_metrics.csv", keep_default_na=False, na_values=[""])


def bumps_runs(scale: str, root: Path = SNAPSHOTS) -> str:
    """Per bump run: accuracy and off-grid accuracy at its last three checkpoints, its phases, and
    its accuracy inside a hole when it has one."""
    metrics = _bump_runs(scale, root)
    rows = []
    for run, table in metrics.groupby("run", sort=False):
        table = table.sort_values("step")
        last = table.tail(3)
        hole = ""
        if table["hole"].notna().any() and str(table["hole"].iloc[-1]) not in ("", "none", "nan"):
            hole = f"; {_number(last['accuracy_ood'].iloc[-1])} in the hole at {int(last['step'].iloc[-1]):,}"
        rows.append(
            [
                table["dataset"].iloc[0] if "dataset" in table else run,
                " / ".join(_number(v) for v in last["accuracy"]),
                " / ".join(_number(v) for v in last["accuracy_offgrid"]),
                " ".join(str(p) for p in table["phase"]) + hole,
            ]
        )
    steps = " / ".join(f"{int(s):,}" for s in sorted(metrics["step"].unique())[-3:])
    header = ["run", f"accuracy at {steps}", "off-grid accuracy", "phases"]
    return _table(header, rows)


def bumps_rho(scale: str, root: Path = SNAPSHOTS) -> str:
    """Spearman's rho of off-grid accuracy against the increment of the square sigma-1 grids, per checkpoint."""
    from scipy.stats import spearmanr

    metrics = _bump_runs(scale, root)
    square = metrics[(metrics["increment_x"] == metrics["increment_y"]) & (metrics["sigma"] == 1.0)]
    square = square[square["hole"].isna() | square["hole"].astype(str).isin(["", "none"])]
    steps = sorted(square["step"].unique())[-3:]
    values = []
    for step in steps:
        at = square[square["step"] == step].groupby("increment_x")["accuracy_offgrid"].mean()
        values.append(_signed(spearmanr(at.index, at.to_numpy()).statistic))
    increments = ", ".join(f"{v:g}" for v in sorted(square["increment_x"].unique()))
    return (
        f"Spearman's rho of off-grid accuracy against the increment ({increments}; sigma 1) at steps "
        f"{' / '.join(f'{int(s):,}' for s in steps)}: {' / '.join(values)}.\n"
    )


def provenance(scale: str, root: Path = SNAPSHOTS) -> str:
    """One line: the command, its wall time, the date, the machine and the commit of a snapshot."""
    info = json.loads((root / scale / "provenance.json").read_text())
    took = ""
    if info.get("seconds"):
        minutes, seconds = divmod(round(info["seconds"]), 60)
        took = f" in {minutes} min {seconds} s"
    note = f" {info['note']}" if info.get("note") else ""
    return f"`{info['command']}`{took} on a {info['machine']}, {info['date']}, commit {info['commit']}.{note}\n"


def _rule_scripts() -> dict[str, str]:
    """rule name -> its script (``rules/*.smk``, the path relative to the repository)."""
    scripts = {}
    for name, block in _rule_blocks().items():
        script = re.search(r"^\s+script:\n\s+\"\.\./(\S+)\"", block, re.MULTILINE)
        if script:
            scripts[name] = script.group(1)
    return scripts


def _drawing_function(figure: str, script: str) -> str:
    """The library function that draws ``figure``: a study's ``figures/{kind}`` module's ``*_figure``
    for the figure sets (their scripts dispatch on the kind), else the function the script imports."""
    import ast

    match = re.search(r"results/(\w+)/figures/(\w+)\.png$", figure)
    if match:
        module = REPO / "diffcomp" / match.group(1) / "figures" / f"{match.group(2)}.py"
        names = [n.name for n in ast.parse(module.read_text()).body if isinstance(n, ast.FunctionDef)]
        drawing = [n for n in names if n.endswith("_figure") and not n.startswith("_")]
        return f"`diffcomp.{match.group(1)}.figures.{match.group(2)}.{drawing[0]}`"
    tree = ast.parse((REPO / script).read_text())
    imported = {
        alias.asname or alias.name: f"{node.module}.{alias.name}"
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        and node.module.startswith("diffcomp.")
        and node.module != "diffcomp.workflow"
        for alias in node.names
    }
    # the library call that is handed the rule's outputs
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in imported:
            if "output" in ast.dump(node):
                return f"`{imported[node.func.id]}`"
    return ""


def _rule_blocks() -> dict[str, str]:
    """rule name -> the text of its definition in ``rules/*.smk`` (up to the next rule)."""
    blocks = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"^(?=\s*rule \w+:)", smk.read_text(), flags=re.MULTILINE):
            name = re.match(r"\s*rule (\w+):", block)
            if name:
                blocks[name.group(1)] = block
    return blocks


def dry_run_jobs(configfile: str = "config.paper.yaml") -> dict[str, int]:
    """rule -> the number of jobs ``snakemake -n`` plans for ``configfile`` (from nothing done)."""
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), "-n", "--quiet", "rules", "--configfile", configfile],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = proc.stdout.splitlines()
    start = lines.index("Job stats:") + 3  # the header and its rule
    counts = {}
    for line in lines[start:]:
        fields = line.split()
        if len(fields) != 2 or fields[0] == "total":  # the counts end at their total
            break
        counts[fields[0]] = int(fields[1])
    return counts


def _amount(expression, unit: str, scale: float = 1.0) -> str:
    """A profile resource (``240``, ``"120 * attempt"``) as text: "240 min per attempt", "120 min x attempt"."""
    text = str(expression).replace(" ", "")
    grows = text.endswith("*attempt")
    value = float(text.removesuffix("*attempt")) * scale
    number = f"{value:g}"
    return f"{number} {unit} x attempt" if grows else f"{number} {unit}"


def slurm_plan(counts: dict[str, int]) -> list[dict]:
    """One entry per rule: where it runs under ``profiles/slurm``, what a job asks for, its jobs in
    the dry run (``counts``: :func:`dry_run_jobs`) and the SLURM jobs they make."""
    import yaml

    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    default = profile.get("default-resources", {})
    specific = profile.get("set-resources", {})
    groups = profile.get("groups", {})
    plan = []
    for rule, block in _rule_blocks().items():
        local = re.search(r"^\s*localrule: True", block, re.MULTILINE) is not None
        resources = {**default, **specific.get(rule, {})}
        if local:
            where, asks = "submit host", ""
        else:
            gpu = resources.get("gpu")
            where = "SLURM, GPU partition" if gpu else "SLURM, CPU partition"
            partners = [r for r, g in groups.items() if g == groups.get(rule) and r != rule]
            if partners:
                where += f", one job with `{partners[0]}`"
            cpus = f"{gpu} GPU, {resources['cpus_per_gpu']} CPUs per GPU" if gpu else "1 CPU"
            memory = _amount(resources["mem_mb"], "GB", 1 / 1000)
            asks = f"{cpus}, {memory}, {_amount(resources['runtime'], 'min')}"
            if "x attempt" not in asks.rsplit(",", 1)[1]:
                asks += " per attempt"
        # a group (a dataset or split with its audit) is one SLURM job, counted with its first rule
        grouped_behind = rule in groups and next(r for r, g in groups.items() if g == groups[rule]) != rule
        submitted = 0 if local or grouped_behind else counts.get(rule, 0)
        plan.append({"rule": rule, "where": where, "asks": asks, "jobs": counts.get(rule, 0), "submitted": submitted})
    return plan


def slurm_jobs(plan: list[dict]) -> str:
    """The table of :func:`slurm_plan`."""
    rows = [[f"`{p['rule']}`", p["where"], p["asks"] or "-", f"{p['jobs']:,}"] for p in plan]
    return _table(["rule", "runs on", "one job asks for", "jobs (paper config)"], rows)


def slurm_job_count(counts: dict[str, int], plan: list[dict]) -> str:
    """The dry run's totals (``counts``: :func:`dry_run_jobs`): jobs planned, and the SLURM jobs per
    study of :func:`slurm_plan` (a group counts once)."""
    planned = sum(counts.values())
    submitted = {"bumps": 0, "relational": 0}
    for p in plan:
        submitted[p["rule"].split("_")[0]] += p["submitted"]
    jobs = {p["rule"]: p["jobs"] for p in plan}
    return (
        f"`snakemake -n --configfile config.paper.yaml` plans **{planned:,}** jobs. "
        f"{jobs['bumps_dataset']:,} bump datasets and {jobs['bumps_train']:,} bump runs (three jobs per run: "
        f"train, sample every checkpoint, evaluate every checkpoint), {jobs['relational_train']:,} relational "
        f"pair runs and {jobs['relational_pretrain']:,} single-object pretraining runs make "
        f"**{submitted['bumps'] + submitted['relational']:,}** SLURM jobs ({submitted['bumps']:,} for the bump "
        f"study, {submitted['relational']:,} for the relational one; a dataset or a split and its audit are one "
        "job); the rest run on the submit host.\n"
    )


def figure_map(summary_lines: list[str] | None = None) -> str:
    """Every figure (PNG) of the quick configuration: file, rule, script, drawing function."""
    if summary_lines is None:
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "snakemake"), "--summary", "--quiet"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        summary_lines = proc.stdout.splitlines()
    scripts = _rule_scripts()
    rows, seen = [], set()
    for line in summary_lines:
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) < 3 or not fields[0].endswith(".png"):
            continue
        # one row per kind of file: a dataset's or a split's preview once, with its wildcard
        figure = re.sub(r"/(datasets|splits)/[^/]+/", r"/\1/{name}/", fields[0])
        figure = re.sub(r"/vocab/[^/]+/", "/vocab/N{N}_S{S}/", figure)
        rule = fields[2]
        if figure in seen:
            continue
        seen.add(figure)
        script = scripts.get(rule, "")
        rows.append([f"`{figure}`", f"`{rule}`", f"`{script}`", _drawing_function(figure, script)])
    return _table(["figure", "rule", "script", "drawn by"], rows)


def render_tables(root: Path = SNAPSHOTS, *, with_workflow_tables: bool = True) -> dict[str, str]:
    """Every table NAME -> its markdown, for the scales that have a snapshot (and the figure map)."""
    tables = {}
    if with_workflow_tables:
        counts = dry_run_jobs()
        plan = slurm_plan(counts)
        tables = {
            "figure-map": figure_map(),
            "slurm-jobs": slurm_jobs(plan),
            "slurm-job-count": slurm_job_count(counts, plan),
        }
    for folder in sorted(p for p in root.glob("*") if (p / "provenance.json").is_file()):
        scale = folder.name
        tables[f"provenance-{scale}"] = provenance(scale, root)
        if (folder / "bumps_metrics.csv").is_file():
            tables[f"bumps-{scale}"] = bumps_runs(scale, root)
            tables[f"bumps-{scale}-rho"] = bumps_rho(scale, root)
        if not (folder / "relational_summary.csv").is_file():
            continue
        summary, _, _ = _load(scale, root)
        if summary["n_seeds"].max() > 1:
            tables[f"relational-{scale}"] = relational_families(scale, root)
            tables[f"relational-{scale}-effects"] = relational_effects(scale, root)
        else:
            tables[f"relational-{scale}"] = relational_runs(scale, root)
    return tables


def render_page(text: str, tables: dict[str, str]) -> str:
    """``text`` with each results block's body replaced by its table; an unknown NAME is an error."""

    def body(match: re.Match) -> str:
        name = match.group("name")
        if name not in tables:
            raise KeyError(f"no results table named {name!r} (known: {', '.join(sorted(tables))})")
        return match.group(1) + tables[name] + match.group(4)

    return BLOCK.sub(body, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    snap = sub.add_parser("snapshot", help="copy a finished run's tables into docs/results/SCALE")
    snap.add_argument("scale")
    snap.add_argument("--results", type=Path, default=REPO / "results")
    snap.add_argument("--command", required=True, help="the command that made the results, as run")
    snap.add_argument("--seconds", type=float, default=None, help="its wall time")
    snap.add_argument("--note", default="", help="how the run went, in a sentence (e.g. what else shared the machine)")
    sub.add_parser("write", help="render every results table into the pages")
    sub.add_parser("check", help="exit 1 when a page's table differs from the snapshot's")
    args = parser.parse_args(argv)
    if args.action == "snapshot":
        print(take_snapshot(args.scale, args.results, args.command, args.seconds, note=args.note))
        return 0
    tables = render_tables()
    stale = []
    for page in PAGES:
        text = page.read_text()
        new = render_page(text, tables)
        if new != text:
            stale.append(page)
            if args.action == "write":
                page.write_text(new)
    if args.action == "check" and stale:
        names = ", ".join(str(p.relative_to(REPO)) for p in stale)
        print(f"results tables out of date in {names}: run `python tools/results_tables.py write`", file=sys.stderr)
        return 1
    if args.action == "write":
        print(f"updated {len(stale)} page(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
