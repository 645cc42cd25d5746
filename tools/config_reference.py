"""Write docs/config.md, the reference of every config key, from the JSON schemas.

    python tools/config_reference.py            # rewrite docs/config.md
    python tools/config_reference.py --check    # exit 1 if docs/config.md is out of date

The schemas (diffcomp/schemas/*.schema.yaml) are what the workflow validates a config against
when the Snakefile is parsed, so a reference generated from them cannot describe a key the
workflow does not read. tests/test_docs.py runs the check.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from referencing import Resource
from referencing.jsonschema import DRAFT202012

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from diffcomp.config import load_schema, schema_registry  # noqa: E402

OUTPUT = REPO / "docs" / "config.md"

INTRO = """\
# Configuration reference

Generated from the JSON schemas in `diffcomp/schemas/` by `python tools/config_reference.py`
(`make docs`); `tests/test_docs.py` fails when this page and the schemas disagree. The shipped
configurations are [`config.yaml`](../config.yaml) (quick, CPU),
[`config.medium.yaml`](../config.medium.yaml) (the relational study over 3 seeds, CPU) and
[`config.paper.yaml`](../config.paper.yaml) (paper scale, GPU cluster).

A config is checked when the Snakefile is parsed, before any job runs, in three layers:

1. the JSON schema below: types, ranges, enums and unknown keys. A number YAML reads as a string
   gets a hint (`'3e-3' is not of type 'number' (YAML reads '3e-3' as a string; write 3.0e-3 for
   a number)`);
2. rules a schema cannot express (split families and their parameters, holes inside the canvas,
   names used twice, figure options naming increments or sigmas absent from the grid, encoders
   that cannot be loaded);
3. the code the jobs run, run cheaply (`diffcomp/checks.py`): each study's model is built on
   PyTorch's `meta` device and given one forward pass at the configured image size, the
   t5-scratch encoder tokenizes every caption, the samplers set their timesteps, and the numbers
   are checked (a finite learning rate, warm-up shorter than training, an EMA decay below 1).

An error names the config file and the full key path, e.g.
`bumps.grid.increments[0]: 0.0 is less than or equal to the minimum of 0` or
`bumps.model.norm_num_groups: 5 groups do not divide bumps.model.block_out_channels[0] = 16`.

Keys are listed as `section.key`; `[]` marks the items of a list. A key without a default is
required where its object is given, unless marked optional.
"""

# Top-level sections and the schema that validates each.
SECTIONS = (("", "config"), ("bumps", "bumps"), ("relational", "relational"))


class Resolver:
    """Follows ``$ref``s within a schema and into common.schema.yaml, with the registry the
    workflow's validator uses (``diffcomp.config``)."""

    def __init__(self, name: str):
        root = Resource.from_contents(load_schema(name), default_specification=DRAFT202012)
        self._resolver = schema_registry().with_resource(f"{name}.schema.yaml", root).resolver(f"{name}.schema.yaml")

    def resolve(self, node: dict) -> dict:
        while isinstance(node, dict) and "$ref" in node:
            target = self._resolver.lookup(node["$ref"]).contents
            # Keys written next to a $ref (a description) refine the target.
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return node


def _literal(value) -> str:
    return f"`{json.dumps(value)}`"


def _type_text(node: dict, resolver: Resolver) -> str:
    """A short type: ``integer >= 1``, ``one of `a`, `b` ``, ``list of number > 0``..."""
    node = resolver.resolve(node)
    if "oneOf" in node:
        return " or ".join(_type_text(option, resolver) for option in node["oneOf"])
    if "enum" in node:
        return "one of " + ", ".join(_literal(v) for v in node["enum"])
    kind = node.get("type", "any")
    kinds = kind if isinstance(kind, list) else [kind]
    text = " or ".join("null" if k == "null" else k for k in kinds)
    bounds = []
    for key, symbol in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if key in node:
            bounds.append(f"{symbol} {node[key]}")
    if "pattern" in node:
        bounds.append(f"matching `{node['pattern']}`")
    if bounds:
        text += " " + ", ".join(bounds)
    if "array" in kinds and "items" in node:
        items = resolver.resolve(node["items"])
        inner = "object" if items.get("type") == "object" else _type_text(items, resolver)
        text = text.replace("array", f"list of {inner}", 1)
        sizes = [(word, node[key]) for key, word in (("minItems", "at least"), ("maxItems", "at most")) if key in node]
        if node.get("minItems") == node.get("maxItems") and "minItems" in node:
            sizes = [("exactly", node["minItems"])]
        if sizes:
            text += " (" + ", ".join(f"{word} {n}" for word, n in sizes)
            text += " item)" if sizes[-1][1] == 1 else " items)"
    return text


def _describe(text: str | None) -> str:
    return " ".join((text or "").split())


def _entry(name: str, node: dict, required: bool, resolver: Resolver) -> str:
    node = resolver.resolve(node)
    facts = [_type_text(node, resolver)]
    if "default" in node:
        facts.append(f"default {_literal(node['default'])}")
    elif not required:
        facts.append("optional")
    else:
        facts.append("required")
    description = _describe(node.get("description"))
    return f"- **`{name}`** ({'; '.join(facts)}){': ' + description if description else ''}"


def _objects(path: str, node: dict, resolver: Resolver):
    """(path, object schema) for every object in the schema, depth first, in file order."""
    node = resolver.resolve(node)
    if node.get("type") == "array" and "items" in node:
        items = resolver.resolve(node["items"])
        if items.get("type") == "object" and "properties" in items:
            yield from _objects(f"{path}[]", items, resolver)
        return
    if "properties" not in node:
        return
    yield path, node
    for key, sub in node["properties"].items():
        yield from _objects(f"{path}.{key}" if path else key, sub, resolver)


def render() -> str:
    parts = [INTRO]
    for section, schema_name in SECTIONS:
        schema = load_schema(schema_name)
        resolver = Resolver(schema_name)
        for path, node in _objects(section, schema, resolver):
            heading = path or "top level"
            parts.append(f"\n## `{heading}`\n")
            description = _describe(node.get("description") or (schema.get("description") if path == section else None))
            if description:
                parts.append(f"\n{description}\n")
            required = set(node.get("required", ()))
            parts.append("\n")
            for key, sub in node["properties"].items():
                parts.append(_entry(key, sub, key in required, resolver) + "\n")
    return "".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(REPO)} is out of date: run python tools/config_reference.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(exist_ok=True)
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
