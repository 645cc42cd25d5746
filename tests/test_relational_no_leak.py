"""Nothing that learns sees held-out data: for every split family, each learned component of the
relational study trains only on the split's training triples (their captions and their images)
and the single-object set.

The learned components, each run through the function its rule calls:
- the caption-pretrained t5-scratch encoder (rule relational_text_encoder);
- the frozen image encoder of the contrastive losses (rule relational_image_encoder);
- the single-object pretraining run, the pair run, a projection (WiCLP) fine-tuned on the pair
  run, and a run with both contrastive losses (rules relational_pretrain / relational_train).

What each one reads is recorded where no data can bypass it: every text reaches a t5-scratch
encoder through its word-level tokenizer (spied on), every image reaches the denoiser's loss
through ``EpsilonLoss.noised`` and the image encoder through ``_pair_images`` (their icons are
matched back to nouns). A held-out caption or image anywhere fails the test.
"""

import numpy as np
import pytest
import torch
from conftest import TINY_RELATIONAL_MODEL, TINY_TEXT_ENCODER

from diffcomp.config import RUNTIME_KEYS, validate_config
from diffcomp.diffusion import EpsilonLoss
from diffcomp.io import write_csv
from diffcomp.relational import contrastive, text
from diffcomp.relational.config import pretrain_definition, run_definition, run_text_encoder
from diffcomp.relational.contrastive import train_image_encoder, training_pairs
from diffcomp.relational.data import read_split_triples, triples_frame
from diffcomp.relational.icons import load_icons, nouns, render_icons, save_icons
from diffcomp.relational.relations import caption, single_object_caption
from diffcomp.relational.splits import Split
from diffcomp.relational.text import pretrain_shared_encoder, shared
from diffcomp.relational.text import pretraining as caption_pretraining
from diffcomp.relational.text import tokenizer as word_tokenizer
from diffcomp.relational.train import train_relational_run

N = 4
FAMILIES = [
    {"family": "band", "m": 1},
    {"family": "upper_triangle"},
    {"family": "bipartite"},
    {"family": "one_sided"},
    {"family": "caption_by_order"},
    {"family": "caption_bipartite"},
    {"family": "random", "size": 8, "seed": 0},
]
TWO_STEPS = {
    "steps": 2,
    "batch_size": 8,
    "learning_rate": 0.001,
    "warmup_steps": 1,
    "checkpoint_every": 2,
    "log_every": 1,
}


class RecordingTokenizer:
    """A tokenizers.Tokenizer that records every text it encodes (it is a Rust type: wrapped, not patched)."""

    def __init__(self, tokenizer, seen: list):
        self._tokenizer, self._seen = tokenizer, seen

    def encode(self, text_, *args, **kwargs):
        self._seen.append(text_)
        return self._tokenizer.encode(text_, *args, **kwargs)

    def encode_batch(self, texts, *args, **kwargs):
        self._seen.extend(texts)
        return self._tokenizer.encode_batch(texts, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


class Recorder:
    """Texts and images the learned components read while ``active``."""

    def __init__(self, monkeypatch, icons: np.ndarray):
        self.active = False
        self.texts: list[str] = []
        self.images: set[tuple[int | None, int | None]] = set()
        self._icons = torch.from_numpy(icons).float() * 2 - 1
        seen_texts = []

        real_tokenizer = word_tokenizer.build_word_tokenizer
        monkeypatch.setattr(
            word_tokenizer,
            "build_word_tokenizer",
            lambda *a, **k: RecordingTokenizer(real_tokenizer(*a, **k), seen_texts),
        )
        self._seen_texts = seen_texts

        real_noised = EpsilonLoss.noised

        def noised(loss, clean, generator):
            if self.active:
                self._record_images(clean)
            return real_noised(loss, clean, generator)

        monkeypatch.setattr(EpsilonLoss, "noised", noised)

        real_pair_images = contrastive._pair_images

        def pair_images(icons, top, bottom):
            images = real_pair_images(icons, top, bottom)
            if self.active:
                self._record_images(images)
            return images

        monkeypatch.setattr(contrastive, "_pair_images", pair_images)
        caption_pretraining._cached_pretraining_state.cache_clear()  # nothing pretrained before the spy
        monkeypatch.setattr(shared, "_SHARED_PRETRAINING", {})

    def _noun(self, half: torch.Tensor) -> int | None:
        """The icon drawn in an image half (None when blank)."""
        if torch.all(half == 1):
            return None
        matches = [k for k, icon in enumerate(self._icons) if torch.equal(half, icon)]
        assert len(matches) == 1, "an image half that is neither blank nor one icon"
        return matches[0]

    def _record_images(self, images: torch.Tensor) -> None:
        size = images.shape[-1]
        for image in images.detach().float().cpu()[:, 0]:
            self.images.add((self._noun(image[:size]), self._noun(image[size:])))

    def __enter__(self):
        self._seen_texts.clear()
        self.images = set()
        self.active = True
        return self

    def __exit__(self, *exc):
        self.active = False
        self.texts = list(self._seen_texts)


@pytest.mark.parametrize("family", FAMILIES, ids=[f["family"] for f in FAMILIES])
def test_every_learned_component_reads_only_the_splits_training_triples(tmp_path, monkeypatch, family):
    names = nouns(N)
    split = {"name": "split", "vocab_size": N, **family}
    config = validate_config(
        {
            "relational": {
                "icon_size": 16,
                "splits": [split],
                "text_encoder": {**TINY_TEXT_ENCODER, "caption_pretraining_steps": 3},
                "model": {**TINY_RELATIONAL_MODEL, "norm_num_groups": 4},
                "diffusion": {"num_train_timesteps": 10},
                "training": TWO_STEPS,
                "single_object_pretraining_steps": 2,
                "sampling": {"num_train": 2, "num_test": 2, "num_inference_steps": 2, "batch_size": 4},
                "experiments": [
                    {"name": "baseline"},
                    {"name": "wiclp", "projection": {"base": "baseline", "variant": "window", "steps": 2}},
                    {"name": "contrastive", "contrastive": {"fake_to_fake": 0.2, "fake_to_real": 0.2}},
                ],
                "image_encoder": {"width": 4, "embedding_dim": 8, "steps": 3, "batch_size": 16},
            }
        }
    )
    section = config["relational"]
    runtime = {k: section["training"][k] for k in RUNTIME_KEYS}
    icons = tmp_path / "icons.npz"
    save_icons(icons, render_icons(N, 16), names)
    icons_np, _ = load_icons(icons)  # as the jobs read them
    train, test = Split.from_config(split).triples()
    train_csv = tmp_path / "train.csv"
    write_csv(train_csv, triples_frame(train, names))
    assert (read_split_triples(train_csv, names) == train).all()

    training_captions = {caption(names[t], names[b], r) for t, b, r in train}
    held_out_captions = {caption(names[t], names[b], r) for t, b, r in test}
    single_object = {single_object_caption(n) for n in names}
    training_images = {(int(t), int(b)) for t, b, _ in train}
    held_out_images = {(int(t), int(b)) for t, b, _ in test} - training_images
    one_object_images = {(k, None) for k in range(N)} | {(None, k) for k in range(N)}

    def assert_reads_only(recorder, captions: set, images: set, what: str):
        leaked = sorted(set(recorder.texts) & held_out_captions)
        assert not leaked, f"{what} read held-out captions: {leaked[:3]}"
        assert set(recorder.texts) <= captions | {""}, f"{what} read {sorted(set(recorder.texts) - captions)[:3]}"
        assert not recorder.images & held_out_images, f"{what} saw held-out images"
        assert recorder.images <= images, f"{what} saw {sorted(recorder.images - images, key=str)[:3]}"

    recorder = Recorder(monkeypatch, icons_np)
    pair_run = run_definition(section, "baseline", "split", 0)

    # the caption-pretrained text encoder, as rule relational_text_encoder writes it
    with recorder:
        pretrain_shared_encoder(pair_run["text_encoder"], N, train_csv, tmp_path / "encoder.safetensors")
    assert recorder.texts, "caption pretraining read no caption"
    assert_reads_only(recorder, training_captions, set(), "caption pretraining")

    # the image encoder of the contrastive losses (rule relational_image_encoder)
    image_encoder_spec = dict(section["image_encoder"])
    with recorder:
        train_image_encoder(icons_np, training_pairs(train), image_encoder_spec, tmp_path / "image_encoder")
    assert recorder.images
    assert_reads_only(recorder, set(), training_images, "the image encoder")

    # the single-object pretraining run of this split
    pretrain = pretrain_definition(section, "baseline", "split", 0)
    with recorder:
        train_relational_run(pretrain, runtime, icons, tmp_path / "pretrain", train_csv=train_csv)
    assert_reads_only(recorder, training_captions | single_object, one_object_images, "single-object pretraining")

    # the pair run, from the pretraining run's weights
    with recorder:
        train_relational_run(
            pair_run, runtime, icons, tmp_path / "pairs", train_csv=train_csv, init_dir=tmp_path / "pretrain"
        )
    assert recorder.images
    assert_reads_only(recorder, training_captions, training_images, "pair training")

    # a WiCLP projection fine-tuned on the pair run
    projection = run_definition(section, "wiclp", "split", 0)
    with recorder:
        train_relational_run(
            projection, runtime, icons, tmp_path / "wiclp", train_csv=train_csv, init_dir=tmp_path / "pairs"
        )
    assert_reads_only(recorder, training_captions, training_images, "the projection")

    # both contrastive losses (fake-to-fake conditions on each image's other caption when it is trained)
    with recorder:
        train_relational_run(
            run_definition(section, "contrastive", "split", 0),
            runtime,
            icons,
            tmp_path / "contrastive",
            train_csv=train_csv,
            init_dir=tmp_path / "pretrain",
            image_encoder_dir=tmp_path / "image_encoder",
        )
    assert_reads_only(recorder, training_captions, training_images, "contrastive training")


def test_each_run_seed_draws_its_own_text_encoder():
    """The encoder's seed follows the run's, so an interval over seeds includes the encoder."""
    encoder = {"name": "t5-scratch", "seed": 5, "caption_pretraining_steps": 10}
    assert [run_text_encoder(encoder, seed)["seed"] for seed in (0, 1, 2)] == [5, 6, 7]
    config = validate_config(
        {
            "relational": {
                "splits": [{"name": "band", "family": "band", "vocab_size": N, "m": 1}],
                "seeds": [0, 1],
                "text_encoder": {**TINY_TEXT_ENCODER, "caption_pretraining_steps": 3},
                "model": TINY_RELATIONAL_MODEL,
                "experiments": [{"name": "baseline"}],
            }
        }
    )
    section = config["relational"]
    seeds = {run_definition(section, "baseline", "band", s)["text_encoder"]["seed"] for s in (0, 1)}
    assert len(seeds) == 2


def test_foreign_noun_pretraining_reads_no_held_out_caption(tmp_path, monkeypatch):
    """The stand-in for a language model's other reading (text_encoder.foreign_nouns) adds captions
    of nouns the study never draws, and none of the study's held-out captions."""
    names = nouns(N)
    split = {"name": "split", "family": "caption_bipartite", "vocab_size": N}
    train, test = Split.from_config(split).triples()
    write_csv(tmp_path / "train.csv", triples_frame(train, names))
    icons = tmp_path / "icons.npz"
    save_icons(icons, render_icons(N, 16), names)
    recorder = Recorder(monkeypatch, load_icons(icons)[0])
    encoder = {"name": "t5-scratch", "seed": 0, "trainable": False, **TINY_TEXT_ENCODER, "caption_pretraining_steps": 3}
    with recorder:
        pretrain_shared_encoder({**encoder, "foreign_nouns": 3}, N, tmp_path / "train.csv", tmp_path / "enc")
    foreign = nouns(N + 3)[N:]
    training_captions = {caption(names[t], names[b], r) for t, b, r in train}
    held_out = {caption(names[t], names[b], r) for t, b, r in test}
    foreign_captions = {caption(a, b, r) for a in foreign for b in foreign if a != b for r in (0, 1)}
    assert not set(recorder.texts) & held_out
    assert set(recorder.texts) == training_captions | foreign_captions
    with pytest.raises(ValueError, match="foreign_nouns applies to t5-scratch's caption pretraining only"):
        text.build_caption_encoder("t5-scratch", names, seed=0, foreign_nouns=2, **TINY_TEXT_ENCODER)


def test_every_split_family_is_checked():
    """A new family in diffcomp.relational.splits must be added to FAMILIES above (with its parameters)."""
    from diffcomp.relational.splits import FAMILIES as DEFINED

    assert {spec["family"] for spec in FAMILIES} == set(DEFINED)
