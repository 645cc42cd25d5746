"""The caption encoder module: a caption's token states from a Hugging Face text encoder.

:class:`CaptionEncoder` is a ``torch.nn.Module`` whose Hugging Face model is the submodule
``model``; it tokenizes captions (rejecting one too long or, for t5-scratch, with a word outside
the vocabulary) and encodes them, and a frozen one caches the states of each distinct caption in
memory, so every caption is encoded once per process. :mod:`diffcomp.relational.text.build` makes
one for an encoder name.

Importing this module does not import torch (the Snakefile imports the package at parse time):
:class:`CaptionEncoder` is defined on first access (:func:`define_caption_encoder`).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from diffcomp.relational.text.tokenizer import PAD, UNK


def _clear_cache_after_load(module, _incompatible_keys) -> None:
    """load_state_dict post-hook: new weights make cached states stale."""
    module.clear_cache()


@cache
def define_caption_encoder():
    """The :class:`CaptionEncoder` class, defined when first needed (it imports torch): one class object per process."""
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

        def token_ids(self, captions: list[str]) -> list[list[int]]:
            """Unpadded token ids (special tokens included) of each caption.

            ValueError when a caption has more than ``max_length`` tokens (instead of truncating it),
            or, for t5-scratch, holds a word outside the vocabulary.
            """
            if isinstance(captions, str):
                raise TypeError("token_ids() and tokenize() take a list of captions, not a string")
            captions = list(captions)
            ids = self._token_ids(captions)
            too_long = [(text, len(row)) for text, row in zip(captions, ids, strict=True) if len(row) > self.max_length]
            if too_long:
                text, length = max(too_long, key=lambda item: item[1])
                raise ValueError(
                    f"text encoder {self.name!r}: caption {text!r} has {length} tokens, more than "
                    f"max_length={self.max_length} ({len(too_long)} caption(s) too long); raise max_length"
                )
            return ids

        def tokenize(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
            """``(input_ids, attention_mask)``: LongTensors ``(B, max_length)`` on the model's device;
            ValueError as :meth:`token_ids`."""
            ids = self.token_ids(captions)
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
        cls = define_caption_encoder()  # cached: one class object per process
        globals()["CaptionEncoder"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
