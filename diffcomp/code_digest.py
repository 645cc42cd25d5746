"""The code a rule's job runs, as one digest: what decides whether a code change reruns the job.

A job runs its rule's script and every ``diffcomp`` module that script imports, transitively:
imports at the top of a module and inside its functions alike (a lazy import runs when the
function does), ``import x`` and ``from x import y``, relative ones resolved. ``from pkg import
name``, where ``pkg.name`` is a module, imports that module; otherwise it imports ``pkg``'s
``__init__`` and everything that imports. Importing ``a.b.c`` also runs the ``__init__`` of the
packages ``a`` and ``a.b``: their own code counts, but the modules they import count only for a
job whose code imports the package itself (``from a import b``, ``from a.b import name``), since
only such a job can reach what they re-export.

Each module counts by what its code does, not by its bytes: the digest is taken of the module's
syntax tree without docstrings (and without any other bare string statement), written back out
as canonical source (``ast.unparse``), so comments, docstrings and formatting never change it. A
module whose code reads ``__doc__`` keeps its docstrings. The job's digest hashes the script's
and each module's digest with the module's name, in name order.

Nothing here imports the modules it reads (no torch, no diffusers): parsing the Snakefile stays
fast, and each file is read once per process (:func:`code_index`).

``python -m diffcomp.code_digest scripts/x.py [module ...]`` prints the modules a script's jobs
run and their digest.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import sys
from pathlib import Path

PACKAGE = "diffcomp"
# Characters of the hex digest a rule's params carry (64 bits).
DIGEST_LENGTH = 16

# The nodes with statement lists, where a bare string statement may sit.
_BLOCKS = tuple(
    getattr(ast, name)
    for name in (
        "Module FunctionDef AsyncFunctionDef ClassDef For AsyncFor While If With AsyncWith Try TryStar "
        "ExceptHandler match_case"
    ).split()
    if hasattr(ast, name)
)


def _in_package(name: str | None) -> bool:
    return bool(name) and (name == PACKAGE or name.startswith(PACKAGE + "."))


def _parents(name: str) -> list[str]:
    """The packages whose ``__init__`` importing ``name`` runs first: a.b.c -> [a, a.b]."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _is_string_statement(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _drop_string_statements(blocks) -> None:
    """Remove the bare string statements (docstrings, attribute docstrings) of every block, in place."""
    for node in blocks:
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if body and any(_is_string_statement(stmt) for stmt in body):
                kept = [stmt for stmt in body if not _is_string_statement(stmt)]
                if not kept and field == "body" and not isinstance(node, ast.Module):
                    kept = [ast.Pass()]  # a body that was only a docstring does what `pass` does
                setattr(node, field, kept)


def _read(tree: ast.Module) -> tuple[list[ast.stmt], bool, list[ast.AST]]:
    """One walk over ``tree``: its import statements, whether it reads ``__doc__``, its blocks."""
    found, reads_doc, blocks = [], False, []
    for node in ast.walk(tree):
        if isinstance(node, _BLOCKS):
            blocks.append(node)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.Name):
            reads_doc = reads_doc or node.id == "__doc__"
        elif isinstance(node, ast.Attribute):
            reads_doc = reads_doc or node.attr == "__doc__"
    return found, reads_doc, blocks


def canonical_source(source: str, filename: str = "<code>") -> str:
    """What of ``source`` can change behaviour, as source: parsed, bare string statements dropped
    (unless the code reads ``__doc__``), unparsed. Comments and formatting do not survive parsing."""
    tree = ast.parse(source, filename=filename)
    _, reads_doc, blocks = _read(tree)
    if not reads_doc:
        _drop_string_statements(blocks)
    return ast.unparse(tree)


def source_digest(source: str, filename: str = "<code>") -> str:
    """sha256 of :func:`canonical_source`."""
    return hashlib.sha256(canonical_source(source, filename).encode()).hexdigest()


def resolve_imports(statements, name: str | None, is_package: bool, modules) -> list[str]:
    """The package's modules that import ``statements`` of module ``name`` (a script: None) run,
    each resolved as the module docstring says."""
    found = []
    for node in statements:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _in_package(alias.name):
                    # the longest prefix that is a module: `import a.b.c` runs a.b.c
                    parts = alias.name.split(".")
                    while len(parts) > 1 and ".".join(parts) not in modules:
                        parts.pop()
                    found.append(".".join(parts))
            continue
        if node.level:
            if name is None:
                continue  # a script's relative import is not of the package
            package = name.split(".") if is_package else name.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join(package + ([node.module] if node.module else []))
        else:
            base = node.module
        if _in_package(base):
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append(submodule if submodule in modules else base)
    return found


def analyse(
    source: str, name: str | None, is_package: bool, modules, filename: str = "<code>"
) -> tuple[str, list[str]]:
    """(digest of the code, imported modules) of one module or script, from one parse."""
    tree = ast.parse(source, filename=filename)
    statements, reads_doc, blocks = _read(tree)
    imported = resolve_imports(statements, name, is_package, modules)
    if not reads_doc:
        _drop_string_statements(blocks)
    return hashlib.sha256(ast.unparse(tree).encode()).hexdigest(), imported


class CodeIndex:
    """The ``diffcomp`` package under ``root`` (the workflow's directory), read lazily: each module's
    digest and imports once, then the digest of any script's jobs."""

    def __init__(self, root):
        self.root = Path(root).resolve()
        package = self.root / PACKAGE
        if not (package / "__init__.py").is_file():
            raise FileNotFoundError(f"{package}: no {PACKAGE} package here")
        self.modules: dict[str, Path] = {}
        for path in sorted(package.rglob("*.py")):
            parts = list(path.relative_to(self.root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            self.modules[".".join(parts)] = path
        self._read: dict[str, tuple[str, list[str]]] = {}

    def _file(self, path: Path, name: str | None) -> tuple[str, list[str]]:
        """(digest, imported modules) of a module or script, each file read once."""
        key = name or f"script:{path}"
        if key not in self._read:
            source = path.read_text()
            self._read[key] = analyse(source, name, path.name == "__init__.py", self.modules, str(path))
        return self._read[key]

    def _script_path(self, script) -> Path:
        path = Path(script)
        return path if path.is_absolute() else self.root / path

    def modules_of(self, script, *entries: str) -> dict[str, str]:
        """{module: digest} of every module a job of ``script`` runs, with ``entries`` (modules the
        script's code imports by name at run time, e.g. the one figure a job draws) and theirs."""
        unknown = [e for e in entries if e not in self.modules]
        if unknown:
            raise ValueError(f"not modules of {PACKAGE} under {self.root}: {unknown}")
        _, todo = self._file(self._script_path(script), None)
        todo = [*todo, *entries]
        followed: set[str] = set()
        while todo:
            module = todo.pop()
            if module in followed:
                continue
            followed.add(module)
            if module not in self.modules:
                raise ValueError(f"{script} runs code that imports {module}, which is not a module under {self.root}")
            todo.extend(self._file(self.modules[module], module)[1])
        # the packages on the way run their __init__: its own code counts
        ran = followed | {parent for module in followed for parent in _parents(module)}
        return {module: self._file(self.modules[module], module)[0] for module in sorted(ran)}

    def digest(self, script, *entries: str) -> str:
        """The digest of the code a job of ``script`` runs: its script and :meth:`modules_of`."""
        own, _ = self._file(self._script_path(script), None)
        lines = [f"script {own}", *(f"{m} {d}" for m, d in self.modules_of(script, *entries).items())]
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:DIGEST_LENGTH]


@functools.cache
def code_index(root) -> CodeIndex:
    """One :class:`CodeIndex` per directory and process (files are read once)."""
    return CodeIndex(root)


def code_digest(script, *entries: str, root=".") -> str:
    """The digest of the code a job of ``script`` (a path, relative to ``root``) runs; ``entries``
    name modules it imports by name at run time. See the module docstring."""
    return code_index(Path(root).resolve()).digest(script, *entries)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m diffcomp.code_digest SCRIPT [MODULE ...]", file=sys.stderr)
        return 2
    index = code_index(Path(".").resolve())
    for module, digest in index.modules_of(*args).items():
        print(f"{digest[:DIGEST_LENGTH]}  {module}")
    print(f"{index.digest(*args)}  (code digest of {' '.join(args)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
