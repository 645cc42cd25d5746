"""Configuration: JSON-schema validation with defaults, semantic checks, and the expanded run lists.

Everything here runs when the Snakefile is parsed, before any job, so a bad value stops the
workflow at once with a message naming the key and the rule it breaks.
"""

from __future__ import annotations

import copy
from functools import cache
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

# Both re-exported: the Snakefile, the rule scripts, the tests and the benchmarks import them from here.
from diffcomp.errors import ConfigError
from diffcomp.runtime_keys import RUNTIME_KEYS  # noqa: F401

SECTIONS = ("bumps", "relational")


@cache
def load_schema(name: str) -> dict:
    text = resources.files("diffcomp.schemas").joinpath(f"{name}.schema.yaml").read_text()
    return yaml.safe_load(text)


@cache
def schema_registry():
    """Lets a study's schema refer to the shared definitions as ``common.schema.yaml#/$defs/...``."""
    from referencing import Registry, Resource

    common = Resource.from_contents(load_schema("common"))
    return Registry().with_resource("common.schema.yaml", common)


def _with_defaults(validator_class):
    """A validator that fills in `default` values while validating (the jsonschema FAQ recipe)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def _key_path(prefix: str, path) -> str:
    out = prefix
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _yaml_hint(error) -> str:
    """A number YAML read as a string (PyYAML follows YAML 1.1: 3e-3 needs a dot, 3.0e-3)."""
    if error.validator != "type" or not isinstance(error.instance, str):
        return ""
    try:
        float(error.instance)
    except ValueError:
        return ""
    text = error.instance
    mantissa, _, exponent = text.lower().partition("e")
    fixed = f"{mantissa}.0e{exponent}" if exponent and "." not in mantissa else text
    return f" (YAML reads {text!r} as a string; write {fixed} for a number)"


def validate_section(instance: dict, schema_name: str, prefix: str = "") -> dict:
    """Validate (and fill defaults into) ``instance`` in place; raise ConfigError listing every problem."""
    schema = load_schema(schema_name)
    validator = _Validator(schema, registry=schema_registry())
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for error in errors:
            # oneOf/anyOf errors are clearer through their best sub-error
            best = jsonschema.exceptions.best_match([error])
            lines.append(f"  {_key_path(prefix, best.absolute_path)}: {best.message}{_yaml_hint(best)}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines))
    return instance


# Keys an older config may still hold, with what to do instead: named before the schema's
# generic "additional properties" error, so the message says what changed.
RETIRED_KEYS = {
    "relational.model.self_attention": (
        "this key was removed: diffusers' UNetMidBlock2DCrossAttn, the only attention block of the "
        "shipped relational models, always keeps its self-attention, so the key changed nothing there; delete it"
    ),
}

# keys renamed for what they train: old dotted path -> new one ("[]" stands for every list item)
RENAMED_KEYS = {
    "relational.pretraining_steps": "relational.single_object_pretraining_steps",
    "relational.text_encoder.pretraining_steps": "relational.text_encoder.caption_pretraining_steps",
    "relational.experiments[].text_encoder_pretraining_steps": (
        "relational.experiments[].text_encoder_caption_pretraining_steps"
    ),
}


def _holds(node, parts: list[str]) -> list[str]:
    """Where in ``node`` the dotted path ``parts`` exists, as printable paths ("a.b[2].c")."""
    if not parts:
        return [""]
    part, rest = parts[0], parts[1:]
    many = part.endswith("[]")
    key = part.removesuffix("[]")
    if not isinstance(node, dict) or key not in node:
        return []
    if not many:
        return [f".{key}{tail}" for tail in _holds(node[key], rest)]
    items = node[key] if isinstance(node[key], list) else []
    return [f".{key}[{i}]{tail}" for i, item in enumerate(items) for tail in _holds(item, rest)]


def check_retired_keys(config: dict) -> None:
    """ConfigError naming each retired (:data:`RETIRED_KEYS`) or renamed (:data:`RENAMED_KEYS`)
    key the config still holds, with what to do instead."""
    found = []
    for dotted, advice in RETIRED_KEYS.items():
        found += [f"  {where[1:]}: {advice}" for where in _holds(config, dotted.split("."))]
    for dotted, new in RENAMED_KEYS.items():
        new_key = new.rsplit(".", 1)[-1]
        for where in _holds(config, dotted.split(".")):
            old_path = where[1:]
            found.append(f"  {old_path}: this key is now {old_path.rsplit('.', 1)[0]}.{new_key}; rename it")
    if found:
        raise ConfigError("invalid configuration:\n" + "\n".join(found))


def build_check_key(config: dict) -> str:
    """What the build checks' verdict on ``config`` depends on, hashed: the validated config, the
    code the checks run (diffcomp.code_digest of diffcomp/checks.py) and the versions of the
    libraries that build the models. Reads no module it hashes (no torch import)."""
    import hashlib
    import json
    from importlib.metadata import PackageNotFoundError, version

    from diffcomp.code_digest import code_index

    versions = {}
    for package in ("torch", "diffusers", "transformers", "tokenizers"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    code = code_index(Path(__file__).resolve().parents[1]).digest("diffcomp/checks.py")
    blob = json.dumps({"config": config, "code": code, "versions": versions}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def validate_config(config: dict, build_check_cache=None) -> dict:
    """Validate a whole workflow config; returns a deep copy with defaults filled in.

    The last check builds every model on the meta device (diffcomp.checks: torch and diffusers
    are imported, several seconds). With ``build_check_cache`` (a folder; the workflow passes one
    under ``.snakemake/``), a config that passed them is remembered by :func:`build_check_key`
    and not built again: a dry run, and every job of a cluster run, which parses the workflow
    again, then costs no model build."""
    config = copy.deepcopy(dict(config))
    check_retired_keys(config)
    validate_section(config, "config")
    if "bumps" in config:
        validate_section(config["bumps"], "bumps", "bumps")
        from diffcomp.bumps.config import check_bumps

        check_bumps(config["bumps"])
    if "relational" in config:
        validate_section(config["relational"], "relational", "relational")
        from diffcomp.relational.config import check_relational

        check_relational(config["relational"])
    marker = Path(build_check_cache) / build_check_key(config) if build_check_cache is not None else None
    if marker is not None and marker.is_file():
        return config
    from diffcomp.checks import check_buildable

    check_buildable(config)
    if marker is not None:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    return config


def load_config(path) -> dict:
    """Read a YAML config file and validate it (for use outside Snakemake)."""
    with open(path) as handle:
        return validate_config(yaml.safe_load(handle) or {})
