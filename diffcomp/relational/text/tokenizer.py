"""The word-level tokenizer of t5-scratch (a ``tokenizers.Tokenizer``; imported when called).

Its vocabulary is every word of every caption and pretraining caption of the noun list
(:func:`vocabulary_words`), after ``[PAD]`` (id 0), ``[UNK]`` and ``[EOS]``; it appends ``[EOS]``
to each caption and pads to a fixed length (:func:`build_word_tokenizer`).

The encoder (:mod:`diffcomp.relational.text.build`) and caption pretraining
(:mod:`diffcomp.relational.text.pretraining`) call ``build_word_tokenizer`` through this module,
so that replacing it here (a test's spy) reaches every tokenizer they build.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from diffcomp.relational.text.captions import all_captions

if TYPE_CHECKING:  # pragma: no cover
    import tokenizers

# Special tokens of the word-level tokenizer, in id order.
PAD, UNK, EOS = "[PAD]", "[UNK]", "[EOS]"
SPECIAL_TOKENS = (PAD, UNK, EOS)


def word_pre_tokenizer():
    """Split on whitespace, then isolate every punctuation character ("heart." -> "heart", ".")."""
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")])


def vocabulary_words(nouns: Sequence[str]) -> list[str]:
    """Sorted distinct words of all captions of ``nouns`` (see :func:`all_captions`)."""
    pre = word_pre_tokenizer()
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
    tokenizer.pre_tokenizer = word_pre_tokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, vocab[EOS])])
    tokenizer.enable_padding(pad_id=vocab[PAD], pad_token=PAD, length=max_length)
    return tokenizer
