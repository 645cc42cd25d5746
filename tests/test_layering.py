"""The import graph of the diffcomp package: no cycles, and the layers import only downwards.

Every import of a diffcomp module is read from the source with ``ast``: at module level and inside
functions (the lazy imports that keep torch out of parsing the Snakefile are still dependencies),
``import x`` and ``from x import y``, relative imports resolved. ``from pkg import name`` where
``pkg.name`` is a module is an import of that submodule; otherwise it is an import of ``pkg``'s
``__init__``. Importing a package's ``__init__`` counts as importing that module only, and importing
a submodule does not count as importing its parent packages' ``__init__``.

The layers, from the bottom:

- leaves (``errors``, ``runtime_keys``, ``io``, ...): import no diffcomp module;
- the shared core (training loop, packing, samplers, EMA, ...): imports only the shared core;
- the studies, ``diffcomp.bumps`` and ``diffcomp.relational``: never import the layer above nor
  each other (what both use, such as ``diffcomp.plotting`` and ``diffcomp.stats``, is a leaf);
- the top: ``diffcomp.config`` (validates a config and calls each study's checks),
  ``diffcomp.checks`` (parse-time build checks, which import the studies' models), and the entry
  points ``diffcomp.cli`` and ``diffcomp.workflow``. No diffcomp module imports ``diffcomp.config``,
  ``diffcomp.cli`` or ``diffcomp.workflow``; only ``diffcomp.config`` imports ``diffcomp.checks``.
"""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = "diffcomp"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# Modules that import no other diffcomp module.
LEAVES = {
    "diffcomp",
    "diffcomp.errors",
    "diffcomp.code_digest",
    "diffcomp.runtime_keys",
    "diffcomp.io",
    "diffcomp.diffusion",
    "diffcomp.ema",
    "diffcomp.representation",
    "diffcomp.plotting",
    "diffcomp.stats",
    "diffcomp.relational.relations",
    "diffcomp.relational.splits",
}
# The shared code below both studies; it imports only itself.
CORE = LEAVES | {
    "diffcomp.graphed_step",
    "diffcomp.training",
    "diffcomp.packing",
}
STUDIES = ("diffcomp.bumps", "diffcomp.relational")
# Above the studies: the config assembler, the parse-time build checks, the entry points.
TOP = {"diffcomp.config", "diffcomp.checks", "diffcomp.cli", "diffcomp.workflow"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def find_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _in_package(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def imports_of(name: str, path: Path, modules: dict) -> list[tuple[str, int]]:
    """(imported diffcomp module, line) for every import statement anywhere in the file."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names if _in_package(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # the package the import is relative to: the module's own package, up level - 1
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([node.module] if node.module else []))
            else:
                base = node.module
            if not _in_package(base):
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append((submodule if submodule in modules else base, node.lineno))
    return found


def build_graph() -> tuple[dict[str, Path], dict[str, dict[str, int]]]:
    """The modules, and for each the diffcomp modules it imports (with the first line doing so)."""
    modules = find_modules()
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        for target, line in imports_of(name, path, modules):
            if target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return modules, graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    return components


def shortest_cycle(start: str, component: set[str], graph: dict[str, dict[str, int]]) -> list[str]:
    """The shortest cycle through ``start`` within its component, ``start`` repeated at the end."""
    parents = {start: None}
    queue = [start]
    for node in queue:
        for child in sorted(graph[node]):
            if child == start:
                path = [node]
                while parents[path[-1]] is not None:
                    path.append(parents[path[-1]])
                return [*reversed(path), start]
            if child in component and child not in parents:
                parents[child] = node
                queue.append(child)
    raise AssertionError(f"no cycle through {start}")  # unreachable in a strongly connected component


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Cycles that together pass through every module caught in one: per strongly connected
    component, the shortest cycle through each module that no earlier cycle passed through."""
    cycles = []
    for component in strongly_connected(graph):
        covered: set[str] = set()
        for start in sorted(component):
            if start not in covered:
                cycle = shortest_cycle(start, component, graph)
                covered.update(cycle)
                cycles.append(cycle)
    return cycles


def describe_chain(chain: list[str], graph: dict[str, dict[str, int]], modules: dict[str, Path]) -> str:
    steps = [chain[0]]
    for source, target in itertools.pairwise(chain):
        where = modules[source].relative_to(ROOT.parent)
        steps.append(f"  -> {target}  ({where}:{graph[source][target]})")
    return "\n".join(steps)


def _under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@pytest.fixture(scope="module")
def graph():
    return build_graph()


def test_every_import_resolves_to_a_module(graph):
    modules, edges = graph
    missing = [
        f"{modules[source].relative_to(ROOT.parent)}:{line}: {target}"
        for source, targets in edges.items()
        for target, line in targets.items()
        if target not in modules
    ]
    assert not missing, "imports of diffcomp modules that do not exist:\n" + "\n".join(missing)


def test_no_import_cycles(graph):
    modules, edges = graph
    components = strongly_connected(edges)
    chains = "\n\n".join(describe_chain(chain, edges, modules) for chain in find_cycles(edges))
    members = "\n".join(f"  {sorted(component)}" for component in components)
    assert not components, (
        f"diffcomp modules that import each other in a circle (directly or through others):\n{members}\n"
        f"cycles through all of them:\n\n{chains}"
    )


def _violations(edges, modules, sources, forbidden) -> list[str]:
    return [
        f"{source} -> {target}  ({modules[source].relative_to(ROOT.parent)}:{line})"
        for source in sorted(edges)
        if sources(source)
        for target, line in sorted(edges[source].items())
        if forbidden(source, target)
    ]


def test_layers_exist(graph):
    modules, _ = graph
    named = LEAVES | CORE | TOP | set(STUDIES)
    assert named <= set(modules), f"modules named in the contracts are missing: {sorted(named - set(modules))}"


def test_leaves_import_no_diffcomp_module(graph):
    modules, edges = graph
    bad = _violations(edges, modules, lambda s: s in LEAVES, lambda s, t: True)
    assert not bad, "leaf modules import other diffcomp modules:\n" + "\n".join(bad)


def test_shared_core_imports_only_the_shared_core(graph):
    modules, edges = graph
    bad = _violations(edges, modules, lambda s: s in CORE, lambda s, t: t not in CORE)
    assert not bad, "the shared core imports a study, the config or an entry point:\n" + "\n".join(bad)


def test_studies_never_import_the_top_layer(graph):
    modules, edges = graph
    in_study = lambda name: any(_under(name, study) for study in STUDIES)  # noqa: E731
    bad = _violations(edges, modules, in_study, lambda s, t: t in TOP)
    assert not bad, "study modules import the config assembler, the build checks or an entry point:\n" + "\n".join(bad)


def test_studies_never_import_each_other(graph):
    modules, edges = graph
    bad = _violations(
        edges,
        modules,
        lambda s: any(_under(s, study) for study in STUDIES),
        lambda s, t: any(_under(t, study) for study in STUDIES if not _under(s, study)),
    )
    assert not bad, "one study imports the other (move what both use into a leaf module):\n" + "\n".join(bad)


def test_top_layer_is_imported_only_from_above(graph):
    modules, edges = graph
    allowed = {"diffcomp.checks": {"diffcomp.config"}}
    bad = _violations(edges, modules, lambda s: True, lambda s, t: t in TOP and s not in allowed.get(t, set()))
    assert not bad, (
        "diffcomp.config, diffcomp.cli and diffcomp.workflow are imported by no diffcomp module, "
        "diffcomp.checks only by diffcomp.config:\n" + "\n".join(bad)
    )


def test_finds_a_cycle_and_resolves_relative_imports(tmp_path):
    """The graph tools on a made-up package: a relative-import cycle is found and named."""
    modules = {"diffcomp": None, "diffcomp.a": None, "diffcomp.b": None, "diffcomp.pkg": None, "diffcomp.pkg.c": None}
    sources = {
        "diffcomp.a": "def f():\n    from .pkg import c\n",
        "diffcomp.pkg.c": "from .. import b\n",
        "diffcomp.b": "import diffcomp.a\nfrom diffcomp.pkg import CONSTANT\n",
        "diffcomp.pkg": "from . import c\n",
    }
    edges = {}
    for name, text in sources.items():
        path = tmp_path / (name.replace(".", "/") + ("/__init__.py" if name == "diffcomp.pkg" else ".py"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        edges[name] = {target: line for target, line in imports_of(name, path, modules)}
    assert edges == {
        "diffcomp.a": {"diffcomp.pkg.c": 2},
        "diffcomp.pkg.c": {"diffcomp.b": 1},
        "diffcomp.b": {"diffcomp.a": 1, "diffcomp.pkg": 2},
        "diffcomp.pkg": {"diffcomp.pkg.c": 1},
    }
    edges["diffcomp"] = {}
    assert find_cycles(edges) == [
        ["diffcomp.a", "diffcomp.pkg.c", "diffcomp.b", "diffcomp.a"],
        ["diffcomp.pkg", "diffcomp.pkg.c", "diffcomp.b", "diffcomp.pkg"],
    ]


def test_parsing_the_snakefile_does_not_import_torch():
    """What rules/common.smk imports at parse time stays free of torch (validating a config with
    models imports it, through diffcomp.checks, on purpose)."""
    code = (
        "import sys; import diffcomp.config, diffcomp.bumps.config, diffcomp.relational.config, "
        "diffcomp.relational.splits; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT.parent)


# The rule scripts whose jobs need no diffusion model: the pack unpackers only rename stacked
# weights and the caption-pretraining job trains a T5 encoder. Importing diffusers costs about
# 4 s of a job's start on a 2-core machine, so these jobs must not import it.
LIGHT_SCRIPTS = ("bumps_unpack.py", "relational_unpack.py", "relational_text_encoder.py")


def test_jobs_without_a_diffusion_model_do_not_import_diffusers(tmp_path):
    """Run each light script's diffcomp imports, and a 2-step caption pretraining, in a fresh
    interpreter, and check that diffusers was never imported."""
    scripts = Path(__file__).resolve().parents[1] / "scripts"
    imports = []
    for name in LIGHT_SCRIPTS:
        tree = ast.parse((scripts / name).read_text())
        imports += [
            ast.unparse(node)
            for node in tree.body
            if isinstance(node, ast.ImportFrom) and node.module and _in_package(node.module)
        ]
    assert any("pretrain_shared_encoder" in line for line in imports), imports
    spec = dict(
        name="t5-scratch", seed=0, trainable=False, d_model=8, num_layers=1, num_heads=2, d_ff=16,
        max_length=12, caption_pretraining_steps=2,
    )  # fmt: skip
    code = "\n".join(
        [
            *imports,
            "import sys",
            "from diffcomp.io import write_csv",
            "from diffcomp.relational.data import triples_frame",
            "from diffcomp.relational.icons import nouns",
            "from diffcomp.relational.splits import all_triples",
            f"write_csv({str(tmp_path / 'train.csv')!r}, triples_frame(all_triples(3), nouns(3)))",
            f"pretrain_shared_encoder({spec!r}, 3, {str(tmp_path / 'train.csv')!r}, "
            f"{str(tmp_path / 'encoder.safetensors')!r})",
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'diffusers'))",
        ]
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"these jobs import diffusers: {proc.stdout.strip()[:300]}"
    assert (tmp_path / "encoder.safetensors").stat().st_size > 0


def test_only_figure_code_imports_figure_code(graph):
    """The results tables (summary.py, metrics) are computed without the figures: a module outside a
    figures package, or the plotting helpers, never imports one, so a figure's code can change
    without rerunning or breaking a table."""
    modules, edges = graph
    figure_code = lambda name: ".figures" in name or name == "diffcomp.plotting"  # noqa: E731
    bad = _violations(edges, modules, lambda s: not figure_code(s), lambda s, t: figure_code(t))
    assert not bad, "modules outside the figures import figure code:\n" + "\n".join(bad)
