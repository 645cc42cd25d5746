"""Mutation testing of the core math with mutmut 3, one module at a time against its own fast tests.

    .venv/bin/python tools/mutation.py [MODULE ...] [--max-children N]     (make mutation)

MODULE is a path (diffcomp/diffusion.py) or a short name (diffusion, bumps/evaluate); no MODULE means
every module of MODULE_TESTS. Each module runs in its own staging directory, mutants/runs/<name>/: a
snapshot of diffcomp/, tests/ and the configs with a pyproject.toml whose [tool.mutmut] section is the
project's, restricted to that module (only_mutate) and to its tests (pytest_add_cli_args_test_selection),
so mutmut's stats run is seconds, not the whole suite, and edits made meanwhile do not leak into a run.

Writes results/mutation/<name>.json per module and regenerates results/mutation/summary.md from all of
them (table: mutants, killed, survived, timeout, no tests, other, score, wall time; then every
survivor's file:line and diff). The table also goes to stdout. Score = (killed + timeout) / mutants:
a mutant no test reaches ("no tests") counts against it, like a survivor.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "mutants" / "runs"
RESULTS = REPO / "results" / "mutation"

# Each module's focused tests. Anything here must also be in [tool.mutmut]
# pytest_add_cli_args_test_selection of pyproject.toml (checked below). Measured on an idle 2-core
# machine: diffusion 6.4 min, bumps/evaluate 2.6 min, relational/audit 4.4 min; the other mappings
# are from grep (docs/testing.md gives each module's time with its score).
MODULE_TESTS = {
    "diffcomp/diffusion.py": [
        "tests/test_diffusion_math.py",
        "tests/test_core_math_edges.py",
        "tests/test_relational_contrastive.py",
        "tests/test_config_build_checks.py::test_the_shipped_configs_pass",
    ],
    "diffcomp/bumps/data.py": ["tests/test_bumps_data.py", "tests/test_diffusion_math.py"],
    "diffcomp/bumps/model.py": [
        "tests/test_bumps_model.py",
        "tests/test_diffusion_math.py",
        "tests/test_packing.py",
        "tests/test_it_learns.py::test_bump_model_draws_each_label_at_its_position_and_not_at_the_others",
    ],
    "diffcomp/bumps/evaluate.py": ["tests/test_bumps_evaluate.py", "tests/test_core_math_edges.py"],
    "diffcomp/bumps/metrics.py": ["tests/test_bumps_metrics.py"],
    "diffcomp/relational/model.py": [
        "tests/test_relational_contrastive.py",
        "tests/test_relational_train.py::test_learned_position_embedding_is_applied_and_trained",
        "tests/test_relational_train.py::test_zero_initialised_learned_position_embedding_is_a_no_op_at_step_zero",
        "tests/test_relational_train.py::test_sinusoidal_position_embedding_values_tell_every_pixel_apart",
        "tests/test_relational_train.py::test_text_position_embedding_tells_swapped_captions_apart",
        "tests/test_relational_train.py::test_sinusoidal_text_position_embedding_values",
    ],
    "diffcomp/relational/evaluate.py": ["tests/test_relational_evaluate.py"],
    "diffcomp/relational/audit.py": ["tests/test_relational_audit.py", "tests/test_core_math_edges.py"],
}

# What a staging directory holds besides the generated pyproject.toml.
SNAPSHOT = ["diffcomp", "tests", "config.yaml", "config.medium.yaml", "config.paper.yaml"]
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "slurm")

# mutmut's exit-code meanings (mutmut.stats.status_by_exit_code), folded into the table's columns.
STATUS = {1: "killed", 3: "killed", 37: "killed", 0: "survived", 5: "no tests", 33: "no tests"}
STATUS.update(dict.fromkeys([36, 24, -24, 152, 255], "timeout"))
COLUMNS = ["killed", "survived", "timeout", "no tests", "other"]


def module_path(name: str) -> str:
    candidates = [name, f"diffcomp/{name}", f"diffcomp/{name}.py", f"{name}.py"]
    for candidate in candidates:
        if candidate in MODULE_TESTS:
            return candidate
    raise SystemExit(f"unknown module {name!r}; one of: {', '.join(MODULE_TESTS)}")


def slug(module: str) -> str:
    return module.removeprefix("diffcomp/").removesuffix(".py").replace("/", "-")


def toml_value(value) -> str:
    # json's strings, numbers, booleans and lists are valid TOML for the values mutmut's section holds.
    return json.dumps(value)


def stage(module: str, base: dict, pytest_ini: dict) -> Path:
    """A fresh staging directory for ``module``: the snapshot plus its own pyproject.toml."""
    run = RUNS / slug(module)
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    for name in SNAPSHOT:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, run / name, ignore=IGNORE)
        elif source.exists():
            shutil.copy2(source, run / name)
    section = {**base, "only_mutate": [module], "pytest_add_cli_args_test_selection": MODULE_TESTS[module]}
    lines = ["[tool.pytest.ini_options]"]
    lines += [f"{key} = {toml_value(value)}" for key, value in pytest_ini.items()]
    lines += ["", "[tool.mutmut]"]
    lines += [f"{key} = {toml_value(value)}" for key, value in section.items()]
    (run / "pyproject.toml").write_text("\n".join(lines) + "\n")
    return run


def function_start_lines(source: str) -> dict[str, int]:
    """'name' or 'Class.name' -> first line (decorators included) of each function in a module."""
    starts = {}

    def visit(body, prefix):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                starts[prefix + node.name] = first
            elif isinstance(node, ast.ClassDef):
                visit(node.body, prefix + node.name + ".")

    visit(ast.parse(source).body, "")
    return starts


def mutant_function(mutant: str) -> str:
    """diffcomp.diffusion.xǁEpsilonLossǁnoised__mutmut_3 -> EpsilonLoss.noised; x_render__mutmut_1 -> render."""
    tail = mutant.rpartition(".")[2].rsplit("__mutmut_", 1)[0]
    if tail.startswith("xǁ"):
        return ".".join(tail[2:].split("ǁ"))
    return tail.removeprefix("x_")


def changed_line(diff: str, start: int) -> int | None:
    """Line in the module of the first line a mutant's diff (of one function, from its start) removes."""
    old = None
    for line in diff.splitlines():
        match = re.match(r"@@ -(\d+)", line)
        if match:
            old = int(match.group(1))
        elif old is not None:
            if line.startswith("-"):
                return start + old - 1
            if not line.startswith("+"):
                old += 1
    return None


def survivor_diffs(run: Path, module: str, names: list[str]) -> list[dict]:
    """file:line and diff of each named mutant, read with mutmut's own diff from the staging directory."""
    if not names:
        return []
    code = (
        "import json, sys\n"
        "from mutmut.mutation.diff_apply import get_diff_for_mutant\n"
        "print(json.dumps({n: get_diff_for_mutant(n, path=sys.argv[1]) for n in sys.argv[2:]}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, module, *names], cwd=run, capture_output=True, text=True, check=True
    ).stdout
    diffs = json.loads(out)
    starts = function_start_lines((run / module).read_text())
    survivors = []
    for name in names:
        start = starts.get(mutant_function(name))
        line = changed_line(diffs[name], start) if start else None
        survivors.append({"mutant": name, "where": f"{module}:{line if line else '?'}", "diff": diffs[name]})
    return survivors


def run_module(module: str, base: dict, pytest_ini: dict, max_children: int) -> dict:
    run = stage(module, base, pytest_ini)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env.setdefault(var, "1")  # one core per test process: the machine may be busy with other work
    env.pop("MUTANT_UNDER_TEST", None)
    print(f"== {module}: mutmut run in {run.relative_to(REPO)} (tests: {' '.join(MODULE_TESTS[module])})", flush=True)
    started = time.monotonic()
    log = run / "mutmut.log"
    with log.open("w") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)],
            cwd=run,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wall = time.monotonic() - started
    meta = run / "mutants" / (module + ".meta")
    if proc.returncode != 0 or not meta.exists():
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"mutmut failed on {module} (exit {proc.returncode}); {log}:\n{tail}")
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    counts = dict.fromkeys(COLUMNS, 0)
    for code in codes.values():
        counts[STATUS.get(code, "other")] += 1
    others = {name: code for name, code in codes.items() if STATUS.get(code, "other") == "other"}
    survived = sorted((n for n, c in codes.items() if STATUS.get(c) in ("survived", "no tests")), key=mutant_sort)
    detected = counts["killed"] + counts["timeout"]
    result = {
        "module": module,
        "tests": MODULE_TESTS[module],
        "mutants": len(codes),
        **counts,
        "score": detected / len(codes) if codes else float("nan"),
        "wall_s": round(wall, 1),
        "other_exit_codes": others,
        "survivors": survivor_diffs(run, module, survived),
        "no_tests": [n for n in survived if STATUS.get(codes[n]) == "no tests"],
        "command": f"{sys.executable} tools/mutation.py {module}",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{slug(module)}.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def mutant_sort(name: str):
    base, _, number = name.rpartition("__mutmut_")
    return base, int(number) if number.isdigit() else 0


def table(results: list[dict]) -> str:
    head = "| module | mutants | killed | survived | timeout | no tests | other | score | wall |"
    rows = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        rows.append(
            f"| {r['module']} | {r['mutants']} | {r['killed']} | {r['survived']} | {r['timeout']} | "
            f"{r['no tests']} | {r['other']} | {100 * r['score']:.1f}% | {r['wall_s'] / 60:.1f} min |"
        )
    return "\n".join(rows)


def write_summary() -> str:
    order = {module: i for i, module in enumerate(MODULE_TESTS)}
    results = [json.loads(p.read_text()) for p in RESULTS.glob("*.json")]
    results.sort(key=lambda r: order.get(r["module"], len(order)))
    parts = [
        "# Mutation testing of the core math",
        "",
        "`make mutation` (`.venv/bin/python tools/mutation.py [MODULE ...]`): mutmut 3 per module against",
        "its own tests (tools/mutation.py MODULE_TESTS). Score = (killed + timeout) / mutants.",
        "",
        table(results),
        "",
    ]
    for r in results:
        if not r["survivors"]:
            continue
        parts += [f"## Survivors in {r['module']} (tests: {', '.join(r['tests'])})", ""]
        for s in r["survivors"]:
            kind = " (no test reaches it)" if s["mutant"] in r.get("no_tests", []) else ""
            parts += [f"### {s['where']} `{s['mutant']}`{kind}", "", "```diff", s["diff"], "```", ""]
    text = "\n".join(parts)
    (RESULTS / "summary.md").write_text(text)
    return table(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="paths or short names (default: all)")
    parser.add_argument("--max-children", type=int, default=1, help="mutants tested at once (default 1)")
    args = parser.parse_args()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    base = project["tool"]["mutmut"]
    pytest_ini = project["tool"]["pytest"]["ini_options"]
    union = set(base["pytest_add_cli_args_test_selection"])
    missing = {t for tests in MODULE_TESTS.values() for t in tests} - union
    if missing:
        raise SystemExit(f"not in [tool.mutmut] pytest_add_cli_args_test_selection: {sorted(missing)}")
    modules = [module_path(m) for m in args.modules] or list(MODULE_TESTS)
    results = []
    for module in modules:
        results.append(run_module(module, base, pytest_ini, args.max_children))
        print(table(results[-1:]), flush=True)
    print()
    print(write_summary())
    for r in results:
        for s in r["survivors"]:
            print(f"\nsurvived: {s['where']} {s['mutant']}\n{s['diff']}")
    print(f"\nsummary: {(RESULTS / 'summary.md').relative_to(REPO)}")


if __name__ == "__main__":
    main()
