"""Caption pretraining of t5-scratch: teaching a randomly drawn encoder what a caption says.

:func:`pretrain_on_captions` trains a linear head on each noun's token state, with the encoder,
to name the noun and say whether it is the top or the bottom object, from the text of a split's
training captions (``PRETRAINING_*`` are its settings). The result is cached per process by the
inputs that determine it, and :func:`_pretraining_key` hashes them: the name by which a shared
file (:mod:`diffcomp.relational.text.shared`) holding the same weights is found.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from functools import cache

from diffcomp.relational.text import tokenizer as word_tokenizer
from diffcomp.relational.text.shared import KEY_METADATA, any_registered, read_shared_pretraining, registered_file

# the text encoders' logger, whichever of their modules logs
log = logging.getLogger("diffcomp.relational.text")

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
    return _pretraining_state(config, word_tokenizer.build_word_tokenizer(vocab, max_length), nouns, roles, seed, steps)


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
    path = registered_file(key)
    if path is not None:
        state = read_shared_pretraining(path)
        log.info("caption pretraining loaded from %s", path)
    else:
        if any_registered():  # files were given, none for this encoder: a slip in the workflow
            log.warning("no registered caption-pretrained file holds this encoder's pretraining; pretraining here")
        state = _cached_pretraining_state(
            config_json, tuple(tokenizer_words), max_length, tuple(nouns), roles, seed, steps
        )
    model.load_state_dict(state)
    setattr(model, KEY_METADATA, key)
    return model
