"""Contrastive losses (2312.10854): NT-Xent, caption partners, the image encoder, and training with them."""

import copy
import math

import numpy as np
import pytest
import torch
from test_relational_train import TINY, N, assert_identical, tiny_section, weights

from diffcomp.config import ConfigError, validate_config
from diffcomp.relational.config import experiment_settings, intervention_label, intervention_parameters, run_definition
from diffcomp.relational.contrastive import (
    WEIGHTS_FILE,
    ContrastiveLosses,
    caption_partners,
    load_image_encoder,
    nt_xent,
    train_image_encoder,
    training_pairs,
)
from diffcomp.relational.icons import render_icons
from diffcomp.relational.splits import Split, all_triples
from diffcomp.relational.train import train_relational_run

ENCODER = {"width": 4, "embedding_dim": 8, "steps": 150, "batch_size": 32, "learning_rate": 0.005, "noise_max": 0.3}


def reference_nt_xent(a, b, temperature, keys, valid):
    """NT-Xent written out row by row: -log(exp(s_pos) / sum over the row's candidates)."""
    z = torch.cat([a, b]).double()
    n = len(a)
    keys2, valid2 = list(keys) * 2, list(valid) * 2
    losses = []
    for i in range(2 * n):
        if not valid2[i]:
            continue
        pos = (i + n) % (2 * n)
        candidates = [j for j in range(2 * n) if j == pos or (valid2[j] and keys2[j] != keys2[i])]
        scores = torch.stack([z[i] @ z[j] / temperature for j in candidates])
        losses.append(-(z[i] @ z[pos] / temperature - torch.logsumexp(scores, 0)))
    return torch.stack(losses).mean()


def test_nt_xent_matches_the_written_out_definition():
    generator = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(6, 5, generator=generator), dim=1)
    b = torch.nn.functional.normalize(torch.randn(6, 5, generator=generator), dim=1)
    keys = torch.tensor([0, 1, 2, 1, 3, 4])  # rows 1 and 3 show the same image: not negatives
    valid = torch.tensor([True, True, True, True, False, True])
    got = nt_xent(a, b, 0.5, keys, valid)
    assert got.item() == pytest.approx(reference_nt_xent(a, b, 0.5, keys.tolist(), valid.tolist()).item(), rel=1e-5)
    plain = nt_xent(a, b, 0.5)
    assert plain.item() == pytest.approx(reference_nt_xent(a, b, 0.5, range(6), [True] * 6).item(), rel=1e-5)


def test_nt_xent_rewards_matching_encodings_and_needs_two_images():
    a = torch.eye(4)
    assert nt_xent(a, a, 0.1).item() < 1e-3  # each row's positive is far above its negatives
    assert nt_xent(a, a.roll(1, 0), 0.1).item() > 5.0  # positives swapped for negatives
    one = torch.tensor([True, False, False, False])
    assert nt_xent(a, a.roll(1, 0), 0.1, valid=one).item() == 0.0  # no negatives: nothing to contrast


def test_caption_partners_pair_the_two_captions_of_one_image():
    train, _ = Split.from_config({"name": "b", "family": "band", "vocab_size": 6, "m": 1}).triples()
    partner, key = caption_partners(train, 6)
    has = partner >= 0
    assert has.all()  # band trains both captions of its pairs
    assert (partner[partner] == np.arange(len(train))).all()
    assert (train[partner][:, :2] == train[:, :2]).all() and (train[partner][:, 2] == 1 - train[:, 2]).all()
    assert (key == train[:, 0] * 6 + train[:, 1]).all()
    by_order, _ = Split.from_config({"name": "c", "family": "caption_by_order", "vocab_size": 6}).triples()
    assert (caption_partners(by_order, 6)[0] == -1).all()  # each image keeps only one caption


def test_image_encoder_learns_the_icons_deterministically_and_loads_checked(tmp_path):
    icons = render_icons(N, 16)
    spec = {**ENCODER, "seed": 3}
    every_pair = training_pairs(all_triples(N))
    summary = train_image_encoder(icons, every_pair, spec, tmp_path / "a")
    assert summary["accuracy_noise0.0"] == 1.0  # both nouns of every ordered pair of distinct icons
    assert summary["training_pairs"] == N * (N - 1)
    train_image_encoder(icons, every_pair, spec, tmp_path / "b")
    assert (tmp_path / "a" / WEIGHTS_FILE).read_bytes() == (tmp_path / "b" / WEIGHTS_FILE).read_bytes()
    encoder = load_image_encoder(tmp_path / "a", 16, N, spec)
    assert not any(p.requires_grad for p in encoder.parameters())
    codes = encoder.encode(torch.zeros(3, 1, 32, 16))
    assert codes.shape == (3, 8) and torch.allclose(codes.norm(dim=1), torch.ones(3))
    with pytest.raises(ValueError, match="does not match the configured encoder"):
        load_image_encoder(tmp_path / "a", 16, N, {**spec, "embedding_dim": 16})
    (tmp_path / "a" / WEIGHTS_FILE).write_bytes(b"garbage")
    with pytest.raises(ValueError, match=f"image encoder {tmp_path / 'a' / WEIGHTS_FILE} is corrupt"):
        load_image_encoder(tmp_path / "a", 16, N, spec)


def contrastive_section(tmp_path, **weights_):
    section, runtime, icons = tiny_section(tmp_path)
    section["experiments"].append({"name": "contrastive", "contrastive": {"temperature": 0.5, **weights_}})
    section["image_encoder"] = {**ENCODER, "seed": 0}
    train = Split.from_config(section["splits"][0]).triples()[0]
    train_image_encoder(render_icons(N, 16), training_pairs(train), section["image_encoder"], tmp_path / "encoder")
    return section, runtime, icons


def test_zero_weights_give_the_baseline_exactly(tmp_path):
    section, runtime, icons = contrastive_section(tmp_path, fake_to_fake=0.0, fake_to_real=0.0)
    baseline = run_definition(section, "baseline", "band", 0)
    zero = run_definition(section, "contrastive", "band", 0)
    assert zero["contrastive"] == {"fake_to_fake": 0.0, "fake_to_real": 0.0, "temperature": 0.5}
    kwargs = {"train_csv": tmp_path / "train.csv"}
    train_relational_run(baseline, runtime, icons, tmp_path / "base" / "train", **kwargs)
    train_relational_run(
        zero, runtime, icons, tmp_path / "zero" / "train", image_encoder_dir=tmp_path / "encoder", **kwargs
    )
    assert_identical(weights(tmp_path / "base" / "train"), weights(tmp_path / "zero" / "train"))
    loss = (tmp_path / "base" / "train" / "loss.csv").read_text()
    assert loss == (tmp_path / "zero" / "train" / "loss.csv").read_text()


def test_losses_at_step_zero_are_the_baseline_loss_plus_the_weighted_terms(tmp_path):
    """One batch: weights 0 give the baseline loss; weights w add w times the NT-Xent terms."""
    from diffcomp.diffusion import EpsilonLoss, ddpm_scheduler
    from diffcomp.relational.contrastive import PairImageEncoder

    torch.manual_seed(0)
    denoiser = torch.nn.Conv2d(1, 1, 3, padding=1)
    states = torch.randn(4, 3, 2)

    def forward(noisy, timesteps, condition):  # each row's caption shifts its prediction
        return denoiser(noisy) + condition[0].mean(dim=(1, 2)).view(-1, 1, 1, 1)

    clean = torch.rand(4, 1, 32, 16) * 2 - 1
    index = torch.arange(4)
    epsilon = EpsilonLoss(
        ddpm_scheduler({"num_train_timesteps": 20, "beta_schedule": "linear"}), 5.0, torch.device("cpu")
    )
    encoder = PairImageEncoder(16, N, 4, 8).requires_grad_(False)
    partner, key = torch.tensor([1, 0, -1, 2]), torch.tensor([5, 5, 6, 7])

    def total(fake_to_fake, fake_to_real):
        generator = torch.Generator().manual_seed(1)
        losses = ContrastiveLosses(
            {"fake_to_fake": fake_to_fake, "fake_to_real": fake_to_real, "temperature": 0.5}, encoder, partner, key
        )
        noisy, noise, timesteps = epsilon.noised(clean, generator)
        predicted = forward(noisy, timesteps, (states[index], None))
        terms = losses(
            forward, lambda i: (states[i], None), clean, index, noisy, timesteps, predicted, epsilon.clean_estimate
        )
        regression = epsilon.regression(predicted, noise, timesteps)
        return regression, terms, losses.weighted(terms) if terms else 0.0, (noisy, timesteps, predicted)

    base = epsilon(forward, clean, (states[index], None), torch.Generator().manual_seed(1))
    regression, terms, weighted, _ = total(0.0, 0.0)
    assert terms == {} and regression.item() == base.item()
    regression, terms, weighted, (noisy, timesteps, predicted) = total(0.2, 0.3)
    assert regression.item() == base.item()
    # the terms, rebuilt by hand: x0_hat from the epsilon prediction, clipped to [-1, 1] ...
    a = epsilon.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    x0 = ((noisy - (1 - a).sqrt() * predicted) / a.sqrt()).clamp(-1, 1)
    fake = encoder.encode(x0)
    # ... against the real images (fake-to-real) ...
    expected = nt_xent(fake, encoder.encode(clean), 0.5, key)
    assert terms["fake_to_real"].item() == pytest.approx(expected.item(), rel=1e-6)
    # ... and against the same noisy images denoised with the pair's other caption (fake-to-fake);
    # row 2 has no training partner and takes no part
    valid = torch.tensor([True, True, False, True])
    other = forward(noisy, timesteps, (states[torch.tensor([1, 0, 2, 2])], None))
    other_x0 = ((noisy - (1 - a).sqrt() * other) / a.sqrt()).clamp(-1, 1)
    expected = nt_xent(fake, encoder.encode(other_x0), 0.5, key, valid)
    assert terms["fake_to_fake"].item() == pytest.approx(expected.item(), rel=1e-6)
    own = forward(noisy, timesteps, (states[index], None))  # the row's own caption: a different loss
    own_x0 = ((noisy - (1 - a).sqrt() * own) / a.sqrt()).clamp(-1, 1)
    assert nt_xent(fake, encoder.encode(own_x0), 0.5, key, valid).item() != pytest.approx(expected.item())
    assert set(terms) == {"fake_to_fake", "fake_to_real"} and all(math.isfinite(v.item()) for v in terms.values())
    assert weighted.item() == pytest.approx(0.2 * terms["fake_to_fake"].item() + 0.3 * terms["fake_to_real"].item())
    weighted.backward()
    assert denoiser.weight.grad is not None and denoiser.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("terms", [{"fake_to_fake": 0.5}, {"fake_to_real": 0.5}], ids=["f2f", "f2r"])
def test_contrastive_run_trains_differently_and_resumes_bit_identically(tmp_path, terms):
    from diffcomp.training import TrainingInterrupted

    section, runtime, icons = contrastive_section(tmp_path, **{"fake_to_fake": 0.0, "fake_to_real": 0.0, **terms})
    run = run_definition(section, "contrastive", "band", 0)
    kwargs = {"train_csv": tmp_path / "train.csv", "image_encoder_dir": tmp_path / "encoder"}
    summary = train_relational_run(run, runtime, icons, tmp_path / "a" / "train", **kwargs)
    assert summary["triples_with_both_captions"] == summary["captions"]
    train_relational_run(
        run_definition(section, "baseline", "band", 0),
        runtime,
        icons,
        tmp_path / "base" / "train",
        train_csv=tmp_path / "train.csv",
    )
    a, base = weights(tmp_path / "a" / "train"), weights(tmp_path / "base" / "train")
    assert any(not torch.equal(a[k], base[k]) for k in a)
    with pytest.raises(TrainingInterrupted):
        train_relational_run(run, runtime, icons, tmp_path / "b" / "train", stop_after_step=5, **kwargs)
    train_relational_run(run, runtime, icons, tmp_path / "b" / "train", **kwargs)
    assert_identical(a, weights(tmp_path / "b" / "train"))


def test_contrastive_run_without_its_encoder_is_a_clear_error(tmp_path):
    section, runtime, icons = contrastive_section(tmp_path, fake_to_real=0.2)
    run = run_definition(section, "contrastive", "band", 0)
    with pytest.raises(ValueError, match="needs the trained image encoder"):
        train_relational_run(run, runtime, icons, tmp_path / "a" / "train", train_csv=tmp_path / "train.csv")


def test_intervention_labels_and_parameters():
    config = copy.deepcopy(TINY)
    config["relational"]["experiments"] = [
        {"name": "baseline"},
        {"name": "f2f", "contrastive": {}},
        {"name": "both", "contrastive": {"fake_to_real": 0.1}},
        {"name": "f2r", "contrastive": {"fake_to_fake": 0, "fake_to_real": 0.2}},
        {"name": "none", "contrastive": {"fake_to_fake": 0}},
        {"name": "wiclp", "projection": {"base": "baseline", "variant": "window"}},
    ]
    section = validate_config(config)["relational"]
    labels = {e["name"]: intervention_label(experiment_settings(section, e["name"])) for e in section["experiments"]}
    assert labels == {
        "baseline": "baseline",
        "f2f": "contrastive-fake_to_fake",
        "both": "contrastive-both",
        "f2r": "contrastive-fake_to_real",
        "none": "contrastive-none",
        "wiclp": "projection-window",
    }
    params = intervention_parameters(experiment_settings(section, "f2f"))
    assert params == "fake_to_fake=0.2 fake_to_real=0.0 temperature=0.5"  # the schema's defaults
    assert intervention_parameters(experiment_settings(section, "baseline")) == "none"
    assert "variant=window window=2" in intervention_parameters(experiment_settings(section, "wiclp"))
    assert "image_encoder" in run_definition(section, "f2f", "band", 0)
    assert "image_encoder" not in run_definition(section, "baseline", "band", 0)


@pytest.mark.parametrize(
    ("experiment", "message"),
    [
        (
            {"name": "p", "projection": {"base": "baseline", "variant": "window"}, "contrastive": {}},
            r"relational.experiments\[1\]: a projection experiment uses its base's model and encoder; "
            r"drop \['contrastive'\]",
        ),
        ({"name": "c", "contrastive": {"temperature": 0}}, r"relational.experiments\[1\].contrastive.temperature"),
        ({"name": "c", "contrastive": {"fake_to_real": -1}}, r"relational.experiments\[1\].contrastive.fake_to_real"),
        ({"name": "c", "contrastive": {"weight": 1}}, r"relational.experiments\[1\].contrastive"),
    ],
)
def test_bad_contrastive_experiments_name_the_key(experiment, message):
    config = copy.deepcopy(TINY)
    config["relational"]["experiments"].append(experiment)
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_clean_estimate_inverts_the_noising():
    from diffcomp.diffusion import EpsilonLoss, ddpm_scheduler

    epsilon = EpsilonLoss(
        ddpm_scheduler({"num_train_timesteps": 100, "beta_schedule": "squaredcos_cap_v2"}), None, torch.device("cpu")
    )
    clean = torch.rand(64, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    noisy, noise, timesteps = epsilon.noised(clean.float(), torch.Generator().manual_seed(0))
    # With the true noise, x0_hat is the clean image up to float32 rounding, which dividing by
    # sqrt(alpha_bar_t) amplifies at the noisiest t (up to 2e-4 absolute there): so the bound is
    # a few float32 ulps of the terms, scaled per sample (measured: at most 0.11 of it, 20 seeds).
    a = epsilon.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    ulp = torch.finfo(torch.float32).eps
    bound = 1e-6 + 4 * ulp * (noisy.abs() + noise.abs()) / a.sqrt()
    error = (epsilon.clean_estimate(noisy, noise, timesteps) - clean.float()).abs()
    assert (error <= bound).all(), (error / bound).max()


def test_image_encoder_trained_with_other_settings_is_refused(tmp_path):
    spec = {**ENCODER, "seed": 0, "steps": 5}
    train_image_encoder(render_icons(N, 16), training_pairs(all_triples(N)), spec, tmp_path / "enc")
    with pytest.raises(ValueError, match=r"trained with other settings than relational.image_encoder \(\['seed'\]\)"):
        load_image_encoder(tmp_path / "enc", 16, N, {**spec, "seed": 1})
    # an encoder trained on other images than the split's is refused too
    load_image_encoder(tmp_path / "enc", 16, N, spec, training_pairs(all_triples(N)))
    band = Split.from_config({"name": "b", "family": "band", "vocab_size": N, "m": 1}).triples()[0]
    with pytest.raises(ValueError, match="not trained on this split's training images"):
        load_image_encoder(tmp_path / "enc", 16, N, spec, training_pairs(band))
    (tmp_path / "enc" / "encoder.json").unlink()
    with pytest.raises(ValueError, match="encoder.json is missing or unreadable"):
        load_image_encoder(tmp_path / "enc", 16, N, spec)
