"""Caption-pretrained weights shared between jobs: the file and this process's registry of them.

The workflow pretrains each caption-pretrained t5-scratch encoder once (rule
relational_text_encoder, :func:`diffcomp.relational.text.build.pretrain_shared_encoder`), which
writes its weights with the key of the pretraining they hold (:func:`write_shared_pretraining`).
A job registers the files it is given (:func:`use_shared_pretraining`), and caption pretraining
(:func:`diffcomp.relational.text.pretraining.pretrain_on_captions`) loads the one that holds its
key (:func:`registered_file`, :func:`read_shared_pretraining`) instead of pretraining again.
"""

from __future__ import annotations

from pathlib import Path

# The registered files, by the key of the pretraining they hold (process-global).
_SHARED_PRETRAINING: dict[str, Path] = {}
# The file's metadata entry, and the encoder model's attribute, that hold the pretraining's key.
KEY_METADATA = "caption_pretraining_key"


def use_shared_pretraining(paths) -> None:
    """Register caption-pretrained weight files (:func:`write_shared_pretraining`'s) for this
    process: an encoder whose pretraining one of them holds loads it instead of pretraining.
    ``paths``: a path, a list of them, or None. An unreadable file is a ValueError naming it."""
    from safetensors import safe_open

    if paths is None:
        return
    for path in [paths] if isinstance(paths, str | Path) else paths:
        try:
            with safe_open(str(path), framework="pt") as handle:
                key = (handle.metadata() or {}).get(KEY_METADATA)
        except Exception as err:
            raise ValueError(f"caption-pretrained encoder {path} is corrupt or unreadable: {err}") from None
        if not key:
            raise ValueError(f"{path} holds no {KEY_METADATA}: not written by write_shared_pretraining")
        _SHARED_PRETRAINING[key] = Path(path)


def registered_file(key: str) -> Path | None:
    """The registered file that holds the pretraining ``key``, or None."""
    return _SHARED_PRETRAINING.get(key)


def any_registered() -> bool:
    """Whether this process has registered any file."""
    return bool(_SHARED_PRETRAINING)


def write_shared_pretraining(encoder, path) -> str:
    """Write a caption-pretrained t5-scratch ``encoder``'s weights to ``path`` (safetensors,
    atomically) with the key of its pretraining; returns the key."""
    from safetensors.torch import save_file

    from diffcomp.io import atomic_path

    key = getattr(encoder.model, KEY_METADATA, None)
    if key is None:
        raise ValueError(f"text encoder {encoder.name!r} has no caption pretraining to share")
    # cloned: T5's input embedding is tied (two names, one tensor), which safetensors refuses
    state = {name: tensor.detach().cpu().clone() for name, tensor in encoder.model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={KEY_METADATA: key})
    return key


def read_shared_pretraining(path: Path) -> dict:
    """The weights in a registered file; ValueError naming it when it cannot be read."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as err:
        raise ValueError(f"caption-pretrained encoder {path} is corrupt or unreadable: {err}") from None
