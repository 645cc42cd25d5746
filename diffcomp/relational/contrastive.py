"""Contrastive auxiliary losses for relational training (2312.10854, "The Right Losses for the Right Gains").

Both losses are NT-Xent (SimCLR's normalised temperature-scaled cross-entropy) on L2-normalised
encodings of the model's predicted clean image x0_hat (from its epsilon prediction at the
sampled timestep), by a frozen image encoder:

- **fake-to-fake**: the image "top above bottom" has two captions (relation 0 mentions the top
  noun first, relation 1 the bottom noun). Both are denoised from the same noisy image at the
  same timestep, and their x0_hat encodings are pulled together; the other images of the batch
  are the negatives. Only triples whose other caption is also a training caption take part, so
  a held-out caption is never used as a condition.
- **fake-to-real**: x0_hat's encoding is pulled toward the encoding of its real image; the other
  images of the batch are the negatives.

The image encoder (:class:`PairImageEncoder`) is a small CNN classifier of the two nouns of a
pair image, trained first by the pipeline on renders of the split's training images (the ordered
pairs of its training triples, with additive noise so that blurry, noisy x0_hat still encode
sensibly) and frozen; its penultimate layer is the encoding. It is trained once per split, on
images only, and never sees a pair the split holds out.

Rows of the batch showing the same image (the same pair drawn twice, or its other caption) are
not counted as negatives of each other.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from diffcomp.io import atomic_path, write_json

log = logging.getLogger("diffcomp.relational")

WEIGHTS_FILE = "weights.safetensors"
SUMMARY_FILE = "encoder.json"


class PairImageEncoder(nn.Module):
    """A small CNN on 2S x S pair images in [-1, 1]: an encoding and the top and bottom noun logits."""

    def __init__(self, icon_size: int, vocab_size: int, width: int = 16, embedding_dim: int = 64):
        super().__init__()
        self.icon_size, self.vocab_size = icon_size, vocab_size
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),  # keeps where things are: "top" and "bottom" must stay apart
        )
        flat = 2 * width * (-(-2 * icon_size // 4)) * (-(-icon_size // 4))
        self.embed = nn.Sequential(nn.Linear(flat, embedding_dim), nn.ReLU())
        self.top = nn.Linear(embedding_dim, vocab_size)
        self.bottom = nn.Linear(embedding_dim, vocab_size)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The penultimate layer, L2-normalised: (B, embedding_dim)."""
        return F.normalize(self.embed(self.features(images)), dim=1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.embed(self.features(images))
        return self.top(hidden), self.bottom(hidden)


def _pair_images(icons: torch.Tensor, top: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
    return torch.cat([icons[top], icons[bottom]], dim=1).unsqueeze(1)


def training_pairs(triples: np.ndarray) -> np.ndarray:
    """The distinct ordered pairs (top, bottom) of index ``triples``, sorted: the images a split
    trains on, and all the image encoder may see. int64 (n, 2)."""
    return np.unique(np.asarray(triples, dtype=np.int64)[:, :2], axis=0)


def train_image_encoder(icons_np: np.ndarray, pairs: np.ndarray, spec: dict, out_dir, *, threads: int = 1) -> dict:
    """Train the frozen image encoder of a split on its training images ``pairs`` ((top, bottom)
    index rows, :func:`training_pairs`); writes ``out_dir/{weights,encoder}`` and returns the summary.

    ``spec``: the config's ``relational.image_encoder`` (width, embedding_dim, steps, batch_size,
    learning_rate, noise_max, seed). Deterministic for a given spec, icon set and pairs (CPU).
    """
    torch.set_num_threads(threads)
    vocab_size, icon_size = len(icons_np), icons_np.shape[1]
    if vocab_size < 2:
        raise ValueError(f"the image encoder needs at least 2 icons, got {vocab_size}")
    pairs = torch.from_numpy(np.asarray(pairs, dtype=np.int64).reshape(-1, 2))
    if len(pairs) == 0:
        raise ValueError("the image encoder needs at least one training image (pair)")
    if (pairs < 0).any() or (pairs >= vocab_size).any() or (pairs[:, 0] == pairs[:, 1]).any():
        raise ValueError(f"image encoder pairs must be two distinct nouns of the {vocab_size}-noun vocabulary")
    generator = torch.Generator().manual_seed(spec["seed"])
    torch.manual_seed(spec["seed"])  # the layers' initial weights
    model = PairImageEncoder(icon_size, vocab_size, spec["width"], spec["embedding_dim"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec["learning_rate"])
    icons = torch.from_numpy(icons_np) * 2.0 - 1.0
    batch = spec["batch_size"]
    for step in range(spec["steps"]):
        top, bottom = pairs[torch.randint(len(pairs), (batch,), generator=generator)].T
        images = _pair_images(icons, top, bottom)
        sigma = spec["noise_max"] * torch.rand((batch, 1, 1, 1), generator=generator)
        images = images + sigma * torch.randn(images.shape, generator=generator)
        logits_top, logits_bottom = model(images)
        loss = F.cross_entropy(logits_top, top) + F.cross_entropy(logits_bottom, bottom)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"image encoder: the loss became {loss.item()} at step {step}")
    summary = {
        "spec": dict(spec),
        "vocab_size": vocab_size,
        "icon_size": icon_size,
        "training_pairs": len(pairs),
        "pairs": pairs.tolist(),
        "final_loss": loss.item(),
        # both nouns right on its training pairs, clean and at the largest training noise
        **{f"accuracy_noise{sd}": _accuracy(model, icons, pairs, sd, spec["seed"]) for sd in (0.0, spec["noise_max"])},
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    write_json(out / SUMMARY_FILE, summary)
    log.info("image encoder: both nouns right on %.3f of clean pairs", summary["accuracy_noise0.0"])
    return summary


@torch.no_grad()
def _accuracy(model: PairImageEncoder, icons: torch.Tensor, pairs: torch.Tensor, noise: float, seed: int) -> float:
    """Fraction of ``pairs`` whose two nouns are both classified right."""
    top, bottom = pairs.T
    images = _pair_images(icons, top, bottom)
    images = images + noise * torch.randn(images.shape, generator=torch.Generator().manual_seed(seed + 1))
    logits_top, logits_bottom = model(images)
    return float(((logits_top.argmax(1) == top) & (logits_bottom.argmax(1) == bottom)).float().mean())


def load_image_encoder(in_dir, icon_size: int, vocab_size: int, spec: dict, pairs=None) -> PairImageEncoder:
    """The trained encoder of ``in_dir``, frozen; a corrupt or mismatched file, or one trained with
    other settings than ``spec`` or (when given) on other images than ``pairs`` (the split's
    :func:`training_pairs`), is a ValueError naming it."""
    path = Path(in_dir) / WEIGHTS_FILE
    model = PairImageEncoder(icon_size, vocab_size, spec["width"], spec["embedding_dim"])
    try:
        weights = load_file(str(path))
    except Exception as err:  # safetensors raises several types for truncated or garbled files
        raise ValueError(f"image encoder {path} is corrupt or unreadable: {err}") from None
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise ValueError(f"image encoder {path} does not match the configured encoder: {err}") from None
    summary_path = Path(in_dir) / SUMMARY_FILE
    try:
        trained_with = json.loads(summary_path.read_text())["spec"]
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"image encoder summary {summary_path} is missing or unreadable: {err!r}") from None
    if trained_with != dict(spec):
        changed = sorted(k for k in {*trained_with, *spec} if trained_with.get(k) != spec.get(k))
        raise ValueError(
            f"image encoder {in_dir} was trained with other settings than relational.image_encoder ({changed}); "
            "rerun rule relational_image_encoder"
        )
    if pairs is not None:
        trained_on = json.loads(summary_path.read_text()).get("pairs")
        if trained_on != np.asarray(pairs, dtype=np.int64).reshape(-1, 2).tolist():
            raise ValueError(
                f"image encoder {in_dir} was not trained on this split's training images; "
                "rerun rule relational_image_encoder"
            )
    return model.requires_grad_(False).eval()


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float, keys=None, valid=None) -> torch.Tensor:
    """NT-Xent over the 2B encodings ``cat(a, b)``: row i of ``a`` and row i of ``b`` are positives.

    ``a``, ``b``: (B, D), L2-normalised. ``keys`` (B,): rows with equal keys show the same image
    and are not negatives of each other. ``valid`` (B,) bool: rows that take part (others are
    masked out of numerators and denominators). Returns the mean over the taking-part rows, 0 when
    fewer than two rows take part (no negatives).
    """
    n = len(a)
    z = torch.cat([a, b]).float()
    logits = z @ z.T / temperature
    index = torch.arange(2 * n, device=z.device)
    positive = (index + n) % (2 * n)
    keys = torch.arange(n, device=z.device) if keys is None else keys
    keys2 = torch.cat([keys, keys])
    excluded = keys2[:, None] == keys2[None, :]  # self and same-image rows (positives put back below)
    valid2 = torch.ones(2 * n, dtype=torch.bool, device=z.device) if valid is None else torch.cat([valid, valid])
    excluded |= ~valid2[None, :]
    # each row's positive put back (a comparison, not an assignment of a host value: CUDA-graph safe)
    excluded &= index[None, :] != positive[:, None]
    logits = logits.masked_fill(excluded, float("-inf"))
    per_row = F.cross_entropy(logits, positive, reduction="none")
    per_row = torch.where(valid2, per_row, torch.zeros_like(per_row))
    taking_part = valid2.sum() // 2
    # with fewer than two images there are no negatives and nothing to contrast (a tensor test,
    # not a Python branch, so the step has no host sync)
    return torch.where(taking_part >= 2, per_row.sum() / (2 * taking_part).clamp(min=1), per_row.sum() * 0.0)


class ContrastiveLosses:
    """The auxiliary losses of one batch, given the trained denoiser's forward and the frozen encoder.

    ``partner``: for each training caption, the index of its pair's other caption among the
    training captions (-1 when that caption is held out); ``pair_key``: one key per training
    caption naming its image (top * N + bottom).
    """

    def __init__(self, spec: dict, encoder: PairImageEncoder, partner: torch.Tensor, pair_key: torch.Tensor):
        self.fake_to_fake = spec["fake_to_fake"]
        self.fake_to_real = spec["fake_to_real"]
        self.temperature = spec["temperature"]
        self.encoder = encoder
        self.partner = partner
        self.pair_key = pair_key

    @staticmethod
    def in_range(clean_estimate: torch.Tensor) -> torch.Tensor:
        """x0_hat clipped to the images' range [-1, 1] (as diffusers' clip_sample does when sampling).

        At the noisiest timesteps x0_hat divides by sqrt(alpha_bar_t) (1/2029 at t = 99 of the
        quick schedule) and reaches values of 1e3, far from anything the encoder was trained on;
        clipped, it stays an image, and pixels outside the range pass no gradient.
        """
        return clean_estimate.clamp(-1.0, 1.0)

    @property
    def active(self) -> bool:
        return bool(self.fake_to_fake or self.fake_to_real)

    def __call__(self, forward, conditioner, clean, index, noisy, timesteps, predicted, clean_estimate) -> dict:
        """{"fake_to_fake": loss, "fake_to_real": loss} for the terms with a non-zero weight (unweighted)."""
        terms = {}
        keys = self.pair_key[index]
        fake = self.encoder.encode(self.in_range(clean_estimate(noisy, predicted, timesteps)))
        if self.fake_to_real:
            real = self.encoder.encode(clean).detach()
            terms["fake_to_real"] = nt_xent(fake, real, self.temperature, keys)
        if self.fake_to_fake:
            partner = self.partner[index]
            valid = partner >= 0
            # every row is denoised again (a fixed shape), rows without a training partner with
            # their own caption, and then masked out of the loss
            other = forward(noisy, timesteps, conditioner(torch.where(valid, partner, index)))
            other_fake = self.encoder.encode(self.in_range(clean_estimate(noisy, other, timesteps)))
            terms["fake_to_fake"] = nt_xent(fake, other_fake, self.temperature, keys, valid)
        return terms

    def weighted(self, terms: dict) -> torch.Tensor:
        return sum(getattr(self, name) * value for name, value in terms.items())


def caption_partners(triples: np.ndarray, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(partner, pair_key) of each training triple: the row of its other caption (-1 if absent), its image key."""
    row = {(int(t), int(b), int(r)): k for k, (t, b, r) in enumerate(triples)}
    partner = np.array([row.get((int(t), int(b), 1 - int(r)), -1) for t, b, r in triples], dtype=np.int64)
    pair_key = (triples[:, 0] * vocab_size + triples[:, 1]).astype(np.int64)
    return partner, pair_key
