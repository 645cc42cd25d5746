"""The relational study's section of the config: semantic checks and the expanded split list.

The schema (relational.schema.yaml) checks types; the rules here need the split families:
a family's own parameters (band's ``m``, random's ``size``) present and no others, band's ``m``
small enough to leave test pairs, a vocabulary no larger than the glyph list, unique names.
"""

from __future__ import annotations

from diffcomp.config import ConfigError
from diffcomp.relational.icons import MAX_VOCAB_SIZE
from diffcomp.relational.splits import Split, SplitSpecError


def split_specs(section: dict) -> dict[str, dict]:
    """Every configured split by name, as plain dicts (what the rules pass as params)."""
    return {spec["name"]: dict(spec) for spec in section.get("splits", [])}


def vocab_sizes(section: dict) -> list[int]:
    """The distinct vocabulary sizes of the configured splits: one icon set is rendered for each."""
    return sorted({spec["vocab_size"] for spec in section.get("splits", [])})


def check_relational(section: dict) -> None:
    """Rules the schema cannot express; each message names the key path."""
    first_use: dict[str, int] = {}
    for k, spec in enumerate(section.get("splits", [])):
        where = f"relational.splits[{k}]"
        name = spec["name"]
        if name in first_use:
            raise ConfigError(
                f"{where}.name: split name {name!r} is used twice (first at relational.splits[{first_use[name]}])"
            )
        first_use[name] = k
        if spec["vocab_size"] > MAX_VOCAB_SIZE:
            raise ConfigError(
                f"{where}.vocab_size: {spec['vocab_size']} nouns requested, but the icon vocabulary has "
                f"{MAX_VOCAB_SIZE} glyphs (diffcomp.relational.icons.GLYPHS)"
            )
        try:
            Split.from_config(spec)
        except SplitSpecError as err:
            key = f".{err.key}" if err.key else ""
            raise ConfigError(f"{where}{key} (split {name!r}): {err}") from None
