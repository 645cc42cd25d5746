"""The code digest of a rule's jobs (diffcomp.code_digest): what counts as a job's code, what a
change to it is, and that every rule of the workflow passes it to its jobs as ``params.code``.

Through real Snakemake on a finished run: tests/test_code_reruns.py.
"""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from diffcomp.bumps.figure_jobs import FIGURES, figure_function, figure_module
from diffcomp.code_digest import CodeIndex, canonical_source, code_digest, source_digest

REPO = Path(__file__).resolve().parents[1]

MODULE = '''\
"""A module."""

import math

LIMIT = 3  # the largest


def area(radius):
    """The area of a disc."""
    return math.pi * radius ** 2


class Shape:
    """A shape."""

    sides = 0
    "How many sides it has."

    def describe(self):
        "What it is."
'''


def test_comments_docstrings_and_formatting_leave_the_digest_unchanged():
    same = [
        MODULE.replace("  # the largest", ""),  # a comment
        MODULE.replace('"""The area of a disc."""', '"""The area of a disc of any size."""'),  # a docstring
        MODULE.replace('"How many sides it has."', ""),  # an attribute docstring
        MODULE.replace('"What it is."', "pass"),  # a body that was only a docstring
        MODULE.replace("math.pi * radius ** 2", "(math.pi * (radius**2))").replace("LIMIT = 3", "LIMIT = (\n    3\n)"),
        MODULE.replace('"""A module."""\n', "# a module\n\n\n"),
        MODULE.replace("LIMIT = 3", "LIMIT = 0x3"),  # another spelling of the same constant
    ]
    for source in same:
        assert source_digest(source) == source_digest(MODULE), source


def test_a_change_to_what_the_code_does_changes_the_digest():
    different = [
        MODULE.replace("LIMIT = 3", "LIMIT = 4"),
        MODULE.replace("radius ** 2", "radius ** 3"),
        MODULE.replace("sides = 0", "sides = 0\n    corners = 0"),
        MODULE.replace("import math", "import math\nimport os"),
        MODULE + "\nprint(LIMIT)\n",
        MODULE.replace("def describe(self):", "def describe(self, verbose=False):"),
    ]
    digests = {source_digest(source) for source in different}
    assert len(digests) == len(different) and source_digest(MODULE) not in digests


def test_docstrings_count_in_code_that_reads_them():
    reads = MODULE + "\nHELP = area.__doc__\n"
    assert source_digest(reads) != source_digest(reads.replace("The area of a disc.", "The disc's area."))
    assert "The area of a disc." in canonical_source(reads)


def write_package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


PACKAGE = {
    "diffcomp/__init__.py": '"""Top."""\n',
    "diffcomp/a.py": "def run():\n    from diffcomp.b import B  # lazy: counts\n    return B\n",
    "diffcomp/b.py": "from .pkg import c\nB = c.C\n",
    "diffcomp/unused.py": "U = 1\n",
    "diffcomp/pkg/__init__.py": "from diffcomp.pkg.c import C\nfrom diffcomp.pkg.d import D\nSHARED = 1\n",
    "diffcomp/pkg/c.py": "C = 1\n",
    "diffcomp/pkg/d.py": "D = 2\n",
    "scripts/uses_a.py": "from diffcomp import a\na.run()\n",
    "scripts/uses_c.py": "from diffcomp.pkg.c import C\nprint(C)\n",
    "scripts/uses_pkg.py": "from diffcomp.pkg import D\nprint(D)\n",
    "scripts/plain.py": "import diffcomp.pkg.d\nprint(diffcomp.pkg.d.D)\n",
}


def test_a_scripts_code_is_what_it_imports_transitively(tmp_path):
    write_package(tmp_path, PACKAGE)
    index = CodeIndex(tmp_path)
    # from a package: a submodule; a lazy import inside a function; a relative import
    assert set(index.modules_of("scripts/uses_a.py")) == {
        "diffcomp",
        "diffcomp.a",
        "diffcomp.b",
        "diffcomp.pkg",
        "diffcomp.pkg.c",
    }
    # importing pkg.c runs pkg/__init__.py, whose own code counts but whose imports (pkg.d) do not
    assert set(index.modules_of("scripts/uses_c.py")) == {"diffcomp", "diffcomp.pkg", "diffcomp.pkg.c"}
    assert set(index.modules_of("scripts/plain.py")) == {"diffcomp", "diffcomp.pkg", "diffcomp.pkg.d"}
    # a name from the package itself: its __init__ and everything that imports
    assert set(index.modules_of("scripts/uses_pkg.py")) == {
        "diffcomp",
        "diffcomp.pkg",
        "diffcomp.pkg.c",
        "diffcomp.pkg.d",
    }
    # a module the script imports by name at run time
    assert set(index.modules_of("scripts/uses_c.py", "diffcomp.pkg.d")) == {
        "diffcomp",
        "diffcomp.pkg",
        "diffcomp.pkg.c",
        "diffcomp.pkg.d",
    }
    with pytest.raises(ValueError, match="diffcomp.nothing"):
        index.modules_of("scripts/uses_c.py", "diffcomp.nothing")
    write_package(tmp_path, {"scripts/broken.py": "from diffcomp.gone import G\n"})
    with pytest.raises(ValueError, match="imports diffcomp.gone, which is not a module"):
        CodeIndex(tmp_path).modules_of("scripts/broken.py")


def test_an_edit_changes_the_digest_of_the_scripts_that_run_it_only(tmp_path):
    write_package(tmp_path, PACKAGE)
    scripts = ["uses_a.py", "uses_c.py", "uses_pkg.py", "plain.py"]

    def digests():
        index = CodeIndex(tmp_path)  # a fresh read: code_index() reads each file once per process
        return {name: index.digest(f"scripts/{name}") for name in scripts}

    before = digests()

    def changed_after(name: str, text: str) -> set[str]:
        path = tmp_path / name
        old = path.read_text()
        path.write_text(text)
        try:
            now = digests()
        finally:
            path.write_text(old)
        return {script for script in scripts if now[script] != before[script]}

    assert changed_after("diffcomp/pkg/d.py", "D = 3\n") == {"uses_pkg.py", "plain.py"}
    assert changed_after("diffcomp/pkg/c.py", "C = 3\n") == {"uses_a.py", "uses_c.py", "uses_pkg.py"}
    # every script imports something under pkg, so runs its __init__
    assert changed_after("diffcomp/pkg/__init__.py", "from diffcomp.pkg.c import C\nSHARED = 2\n") == set(scripts)
    assert changed_after("diffcomp/b.py", "from .pkg import c\n\n\nB = c.C  # the same\n") == set()
    assert changed_after("diffcomp/unused.py", "U = 2\n") == set()
    assert changed_after("scripts/uses_c.py", "from diffcomp.pkg.c import C\nprint(C, 1)\n") == {"uses_c.py"}
    assert changed_after("scripts/uses_c.py", '"""Doc."""\nfrom diffcomp.pkg.c import C\n\nprint(C)  # C\n') == set()


# ---- the workflow's rules ------------------------------------------------------------------------


def workflow_rules() -> dict[str, dict]:
    """{rule: {"script": path, "code": [the code_digest calls' arguments]}} of rules/*.smk, read as text."""
    found = {}
    for path in sorted((REPO / "rules").glob("*.smk")):
        text = path.read_text()
        starts = list(re.finditer(r"^[ \t]*rule (\w+):", text, flags=re.M))
        for k, start in enumerate(starts):
            block = text[start.end() : starts[k + 1].start() if k + 1 < len(starts) else len(text)]
            script = re.search(r'^\s+script:\s*\n\s+"\.\./(scripts/[^"]+)"', block, flags=re.M)
            calls = re.findall(r"code=(?:lambda wc: )?code_digest\(\s*([^)]*?),?\s*\)", block)
            found[start.group(1)] = {
                "file": path.name,
                "script": script.group(1) if script else None,
                "code": [[arg.strip() for arg in call.split(",")] for call in calls],
            }
    return found


def test_every_rule_passes_its_jobs_the_digest_of_the_code_they_run():
    rules = workflow_rules()
    some = {"bumps_train", "bumps_train_pack", "bumps_unpack", "relational_train_pack", "relational_figure"}
    assert len(rules) >= 20 and some <= set(rules)
    problems = []
    for name, rule in rules.items():
        if rule["script"] is None:
            problems.append(f"{rule['file']}: rule {name} runs no script (give it one, and params.code)")
        elif len(rule["code"]) != 1:
            problems.append(f'{rule["file"]}: rule {name} lacks params code=code_digest("{rule["script"]}")')
        elif rule["code"][0][0] != f'"{rule["script"]}"':
            problems.append(f"{rule['file']}: rule {name} runs {rule['script']} but digests {rule['code'][0][0]}")
        elif not (REPO / rule["script"]).is_file():
            problems.append(f"{rule['file']}: rule {name}: no {rule['script']}")
    assert not problems, "\n".join(problems)


def test_a_bump_figure_job_counts_only_its_own_figures_module():
    rules = workflow_rules()
    assert rules["bumps_figure_phases"]["code"] == [['"scripts/bumps_figure.py"', '"diffcomp.bumps.figures.phases"']]
    per_kind = 'f"diffcomp.bumps.figures.{wc.kind}"'
    assert rules["bumps_figure_metrics"]["code"] == [['"scripts/bumps_figure.py"', per_kind]]
    modules = {kind: figure_module(kind) for kind in FIGURES}
    assert modules == {kind: f"diffcomp.bumps.figures.{kind}" for kind in FIGURES}
    index = CodeIndex(REPO)
    for kind in FIGURES:
        assert callable(figure_function(kind))
        others = {modules[k] for k in FIGURES if k != kind}
        counted = set(index.modules_of("scripts/bumps_figure.py", modules[kind]))
        assert modules[kind] in counted and not counted & others, kind
    with pytest.raises(ValueError, match="unknown figure"):
        figure_module("nothing")


# Jobs and the library modules whose code they do not run: an edit there leaves them alone.
NOT_RUN = {
    "diffcomp.training": [
        "bumps_dataset.py",
        "bumps_audit.py",
        "bumps_evaluate.py",
        "bumps_metrics.py",
        "bumps_figure.py",
        "relational_vocabulary.py",
        "relational_split.py",
        "relational_audit.py",
        "relational_audit_table.py",
        "relational_audit_figure.py",
        "relational_evaluate.py",
        "relational_metrics.py",
        "relational_summary.py",
    ],
    "diffcomp.relational.evaluate": ["relational_train.py", "relational_train_pack.py", "relational_sample.py"],
    "diffcomp.relational.splits": [name.name for name in sorted((REPO / "scripts").glob("bumps_*.py"))],
}


def test_jobs_do_not_count_code_they_do_not_run():
    index = CodeIndex(REPO)
    counted = [
        f"{script} counts {module}"
        for module, scripts in NOT_RUN.items()
        for script in scripts
        if module in index.modules_of(f"scripts/{script}")
    ]
    assert not counted, "\n".join(counted)
    assert "diffcomp.training" in index.modules_of("scripts/bumps_train.py")
    assert "diffcomp.training" in index.modules_of("scripts/relational_train.py")
    assert "diffcomp.relational.evaluate" in index.modules_of("scripts/relational_evaluate.py")


def test_digests_are_read_without_importing_the_modules():
    """What parsing the Snakefile adds: every rule script's digest, without torch, numpy or the modules."""
    code = (
        "import sys, pathlib; from diffcomp.code_digest import code_digest\n"
        "digests = {p.name: code_digest(p) for p in sorted(pathlib.Path('scripts').glob('*.py'))}\n"
        "assert len(set(digests.values())) >= 20, digests\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'pandas', 'diffusers'))\n"
        "ours = sorted(m for m in sys.modules if m.startswith('diffcomp'))\n"
        "print(heavy, ours)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert proc.stdout.strip() == "[] ['diffcomp', 'diffcomp.code_digest']"


def test_the_command_line_lists_a_scripts_modules(capsys, monkeypatch):
    from diffcomp.code_digest import main

    monkeypatch.chdir(REPO)
    assert main(["scripts/bumps_figure.py", "diffcomp.bumps.figures.sigma"]) == 0
    out = capsys.readouterr().out
    assert "diffcomp.bumps.figures.sigma\n" in out and "diffcomp.bumps.figures.phases\n" not in out
    assert code_digest("scripts/bumps_figure.py", "diffcomp.bumps.figures.sigma", root=REPO) in out
