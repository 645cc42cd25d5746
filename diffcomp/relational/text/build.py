"""Building a caption encoder: an encoder name and its settings -> a :class:`CaptionEncoder`.

:func:`build_caption_encoder` makes t5-scratch (its word-level tokenizer, seeded weights and
caption pretraining), minilm or a ``pretrained:<dir>`` encoder; :func:`caption_encoder` makes a
run definition's; :func:`pretrain_shared_encoder` is the job of rule relational_text_encoder,
which writes a split's caption-pretrained encoder for the jobs that use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from diffcomp.relational.icons import MAX_VOCAB_SIZE
from diffcomp.relational.icons import nouns as noun_names
from diffcomp.relational.text import tokenizer as word_tokenizer
from diffcomp.relational.text.captions import all_captions, caption_roles, triple_roles
from diffcomp.relational.text.encoder import define_caption_encoder
from diffcomp.relational.text.names import minilm_folder, model_class_name, parse_encoder, pretrained_problem
from diffcomp.relational.text.pretraining import pretrain_on_captions
from diffcomp.relational.text.shared import write_shared_pretraining
from diffcomp.relational.text.tokenizer import EOS, PAD


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
    """The :class:`CaptionEncoder` named by ``name`` (see :mod:`diffcomp.relational.text`).

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
    encoder_cls = define_caption_encoder()

    if kind == "t5-scratch":
        from transformers import T5Config, T5EncoderModel

        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of num_heads ({num_heads})")
        known = list(nouns) + (noun_names(len(nouns) + foreign_nouns)[len(nouns) :] if foreign_nouns else [])
        words = word_tokenizer.vocabulary_words(known)
        length = (
            max_length
            if max_length is not None
            else 1 + max(len(word_tokenizer.word_pre_tokenizer().pre_tokenize_str(t)) for t in all_captions(known))
        )
        tokenizer = word_tokenizer.build_word_tokenizer(words, length)
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
        problem = pretrained_problem(folder_path)
        if problem is not None:
            raise ValueError(f"text encoder {name!r}: {problem}")
        import transformers

        config = transformers.AutoConfig.from_pretrained(str(folder_path), local_files_only=True)
        model_cls = getattr(transformers, model_class_name(config) or "AutoModel")
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
