"""Training and sampling of the relational study's text-conditioned denoiser, on the shared trainer.

A run (``results/relational/runs/{experiment}/{split}/seed{seed}``) trains on its split's
training triples: each step draws triples with the data generator, stacks their icons into
2S x S images and conditions on their captions. With ``single_object_pretraining_steps`` > 0 a run starts from
a single-object pretraining run's final weights (``results/relational/pretrain/...``), trained on
"an image of a {noun}." with the icon in the top or the bottom half and the other half blank.

Sampling draws a seeded set of training and held-out triples once per run and generates them at
every checkpoint with the same initial noise, so checkpoints differ by their weights alone.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffcomp.diffusion import EpsilonLoss, ddpm_scheduler, inference_steps, sampling_scheduler
from diffcomp.packing import (
    StackedModels,
    clip_grad_norm_per_model,
    pack_definition,
    pack_generators,
    pack_training,
    packed_epsilon_losses,
)
from diffcomp.relational.config import unpackable_reason
from diffcomp.relational.contrastive import ContrastiveLosses, caption_partners, load_image_encoder, training_pairs
from diffcomp.relational.data import read_split_triples
from diffcomp.relational.icons import load_icons
from diffcomp.relational.model import RelationalDenoiser
from diffcomp.relational.projection import TextProjection
from diffcomp.relational.relations import caption, single_object_caption
from diffcomp.relational.text.build import caption_encoder
from diffcomp.training import (
    RUNTIME_KEYS,
    TrainingTask,
    load_snapshot,
    read_snapshots,
    resolve_device,
    sample_checkpoints,
    train,
)

log = logging.getLogger("diffcomp.relational")


def triple_captions(triples: np.ndarray, names: list[str]) -> list[str]:
    return [caption(names[top], names[bottom], int(relation)) for top, bottom, relation in triples]


class Conditioner:
    """Conditions for a fixed list of captions, looked up by index.

    A frozen encoder's states are computed once for the whole list (each distinct caption once);
    a trainable encoder gets the token ids and runs inside the model. With ``unconditional`` the
    empty caption "" (classifier-free guidance's null condition) follows the captions, at index
    ``null_index``; ``count`` is the number of captions without it. ``conditions`` holds, per
    caption, what the model is conditioned on: the encoder's token states (frozen) or the token ids
    (trainable); ``mask`` the caption's attention mask.
    """

    def __init__(self, encoder, captions: list[str], device: torch.device, *, unconditional: bool = False):
        self.trainable = encoder.trainable
        self.count = len(captions)
        self.null_index = len(captions) if unconditional else None
        captions = [*captions, ""] if unconditional else list(captions)
        if self.trainable:
            ids, mask = encoder.tokenize(captions)
            self.conditions = ids.to(device)
        else:
            states, mask = encoder.encode(captions)
            self.conditions = states.to(device)
        self.mask = mask.to(device)

    def __call__(self, index: torch.Tensor):
        return self.conditions[index], self.mask[index]

    def drop(self, index: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
        """``index`` with each entry replaced by the null condition's with ``probability``
        (conditioning dropout), drawn with ``generator`` on the device: no host sync."""
        if self.null_index is None:
            raise ValueError("conditioning dropout needs a Conditioner built with unconditional=True")
        dropped = torch.rand(index.shape, generator=generator, device=index.device) < probability
        return torch.where(dropped, torch.full_like(index, self.null_index), index)

    def unconditional(self, count: int):
        """The null condition repeated ``count`` times."""
        if self.null_index is None:
            raise ValueError("guidance needs a Conditioner built with unconditional=True")
        return self(torch.full((count,), self.null_index, dtype=torch.long, device=self.mask.device))


def build_model(
    run: dict, names: list[str], device: torch.device, *, split_triples=None, init=None
) -> tuple[RelationalDenoiser, object]:
    """The denoiser and the text encoder of a run (a trainable encoder is inside the model).

    ``split_triples``: the split's training triples, the only captions a caption-pretrained
    encoder reads. ``init``: a snapshot to start from (pretraining, or the base run of a
    projection). A projection run's model gets its projection after the base weights are loaded,
    and only the projection is trained.
    """
    encoder = caption_encoder(run, names, pretraining_triples=split_triples).to(device)
    model = RelationalDenoiser.from_config(
        run, text_hidden_size=encoder.hidden_size, text_encoder=encoder if encoder.trainable else None
    )
    if init is not None:
        load_snapshot(init, model)
    projection = run.get("projection")
    if projection:
        model.requires_grad_(False)
        model.projection = TextProjection(
            projection["variant"],
            encoder.hidden_size,
            window=projection["window"],
            early_steps_above=projection["early_steps_above"],
        )
    return model.to(device), encoder


@dataclass
class RunInputs:
    """A run's data, read and checked before any model is built (one run alone or in a pack)."""

    run: dict
    name: str  # for logs: the split's name, or "pretrain N{vocab}"
    icons: np.ndarray  # (vocab, S, S) in [0, 1]
    names: list[str]
    captions: list[str]  # the training captions, looked up by index
    triples: np.ndarray | None  # (top, bottom, relation) per caption; None when pretraining
    split_triples: np.ndarray | None  # the split's training triples: all the text encoder may read
    init: Path | None  # the snapshot the run starts from
    summary: dict

    @property
    def pretraining(self) -> bool:
        return self.triples is None


def read_run_inputs(run: dict, icons_npz, *, train_csv=None, init_dir=None) -> RunInputs:
    """The icons, captions, triples and initial snapshot of a pair, projection or pretraining run."""
    icons, names = load_icons(icons_npz)
    icon_size = run["icon_size"]
    if icons.shape[1:] != (icon_size, icon_size):
        raise ValueError(f"{icons_npz}: icons are {icons.shape[1:]}, the run needs {icon_size} x {icon_size}")
    # the split's training triples: the pairs' data, and the captions a caption-pretrained
    # encoder reads (a pretraining run's encoder is the one its split's pair runs will use)
    split_triples = read_split_triples(train_csv, names) if train_csv is not None else None
    if split_triples is not None and len(split_triples) == 0:
        raise ValueError(f"{train_csv}: no training triples")
    if run["stage"] == "pretrain":
        captions = [single_object_caption(n) for n in names]
        triples = None
        name = f"pretrain {run['split']['name']}" if "split" in run else f"pretrain N{len(names)}"
    else:
        if split_triples is None:
            raise ValueError(f"a {run['stage']} run needs its split's training triples (train_csv)")
        triples = split_triples
        captions = triple_captions(triples, names)
        name = run["split"]["name"]
    init = read_snapshots(init_dir)[-1][1] if init_dir is not None else None
    summary = {"stage": run["stage"], "run": name, "captions": len(set(captions))}
    return RunInputs(run, name, icons, names, captions, triples, split_triples, init, summary)


def build_run(inputs: RunInputs, batch_size: int, device: torch.device):
    """(model, conditioner, next_batch) of a run on ``device``; the model's initial weights come from
    torch's global RNG (seeded by the caller) unless the run starts from a snapshot.

    ``next_batch(generator)`` draws ``batch_size`` training captions with ``generator`` and returns
    their clean images (B, 1, 2S, S) in [-1, 1] and the captions' indices.
    """
    model, encoder = build_model(inputs.run, inputs.names, device, split_triples=inputs.split_triples, init=inputs.init)
    dropout = inputs.run["training"].get("condition_dropout", 0)
    conditioner = Conditioner(encoder, inputs.captions, device, unconditional=dropout > 0)
    icons = torch.from_numpy(inputs.icons).to(device) * 2.0 - 1.0  # [-1, 1], 1 = white
    blank = torch.ones_like(icons[0])
    count = len(inputs.captions)
    table = torch.from_numpy(inputs.triples).to(device) if inputs.triples is not None else None

    def next_batch(generator: torch.Generator):
        index = torch.randint(count, (batch_size,), generator=generator, device=device)
        if table is None:
            # pretraining: the noun's icon in the top or the bottom half, the other half blank
            on_top = torch.randint(2, (batch_size, 1, 1), generator=generator, device=device).bool()
            icon = icons[index]
            top, bottom = torch.where(on_top, icon, blank), torch.where(on_top, blank, icon)
        else:
            top, bottom = icons[table[index, 0]], icons[table[index, 1]]
        return torch.cat([top, bottom], dim=1).unsqueeze(1), index

    return model, conditioner, next_batch


def train_relational_run(
    run: dict,
    runtime: dict,
    icons_npz,
    out_dir,
    *,
    train_csv=None,
    init_dir=None,
    image_encoder_dir=None,
    stop_after_step: int | None = None,
) -> dict:
    """Train a pair run (``train_csv``, optionally from ``init_dir``'s final weights), a projection run
    (from ``init_dir``, the base run) or a pretraining run. A run with contrastive losses needs
    ``image_encoder_dir`` (diffcomp.relational.contrastive.train_image_encoder's output).

    ``run`` is diffcomp.relational.config's run_definition / pretrain_definition; ``runtime`` the
    training keys in RUNTIME_KEYS. Returns the summary written to train.json.
    """
    training = {**run["training"], **{k: runtime[k] for k in RUNTIME_KEYS}}
    inputs = read_run_inputs(run, icons_npz, train_csv=train_csv, init_dir=init_dir)
    name, triples = inputs.name, inputs.triples
    contrastive = run.get("contrastive")
    if contrastive and image_encoder_dir is None:
        raise ValueError(f"{name}: a run with contrastive losses needs the trained image encoder (image_encoder_dir)")
    image_encoder = (
        load_image_encoder(
            image_encoder_dir, run["icon_size"], len(inputs.names), run["image_encoder"], training_pairs(triples)
        )
        if contrastive
        else None
    )
    summary = dict(inputs.summary)
    if contrastive:
        partner, pair_key = caption_partners(triples, len(inputs.names))
        # triples whose other caption is also trained: the ones fake-to-fake can use
        summary["triples_with_both_captions"] = int((partner >= 0).sum())
        if contrastive["fake_to_fake"] and (partner < 0).all():
            log.warning("%s: no training triple has its other caption in the split; fake-to-fake is 0", name)

    def build(device: torch.device) -> TrainingTask:
        model, conditioner, next_batch = build_run(inputs, training["batch_size"], device)
        epsilon_loss = EpsilonLoss(ddpm_scheduler(run["diffusion"]), training["snr_gamma"], device)
        dropout = training.get("condition_dropout", 0)

        auxiliary = None
        if contrastive:
            auxiliary = ContrastiveLosses(
                contrastive,
                image_encoder.to(device),
                torch.from_numpy(partner).to(device),
                torch.from_numpy(pair_key).to(device),
            )

        def loss(forward, batch, generator):
            clean, index = batch
            if dropout:  # classifier-free guidance: some images learn the unconditional prediction
                index = conditioner.drop(index, dropout, generator)
            if auxiliary is None or not auxiliary.active:  # weights 0: exactly the baseline's loss
                return epsilon_loss(forward, clean, conditioner(index), generator)
            noisy, noise, timesteps = epsilon_loss.noised(clean, generator)
            predicted = forward(noisy, timesteps, conditioner(index))
            terms = auxiliary(
                forward, conditioner, clean, index, noisy, timesteps, predicted, epsilon_loss.clean_estimate
            )
            return epsilon_loss.regression(predicted, noise, timesteps) + auxiliary.weighted(terms)

        return TrainingTask(
            name=name,
            model=model,
            next_batch=next_batch,
            loss=loss,
            summary=summary,
            max_grad_norm=(run.get("projection") or {}).get("max_grad_norm"),
            # batches, conditions and losses (the contrastive ones too) stay on the device without
            # host syncs; a trained T5's attention mask branches on tensor values (training.cuda_graph)
            capturable=not run["text_encoder"]["trainable"],
        )

    return train(build, run, training, out_dir, stop_after_step=stop_after_step)


# --------------------------------------------------------------------------------------------
# Packs: K runs of one experiment trained as one stacked model in one job
# --------------------------------------------------------------------------------------------
# What the runs of a pack must share: the stacked models' shape, the stage and the trainer's settings;
# their text encoders differ only by seed (each run seed draws its own encoder).
PACK_SHARED_KEYS = ("stage", "icon_size", "model", "diffusion", "training", "projection")


def _check_pack_text_encoders(runs: list[dict]) -> None:
    """The runs of a pack use one encoder design: the same settings but for the seed."""

    def design(run):
        return {key: value for key, value in run["text_encoder"].items() if key != "seed"}

    if any(design(run) != design(runs[0]) for run in runs):
        raise ValueError("the runs of a pack must share their text_encoder settings (all but the seed)")


def train_relational_pack(
    runs: list[dict],
    runtime: dict,
    icons_npzs,
    out_dir,
    *,
    train_csvs=None,
    init_dirs=None,
    stop_after_step: int | None = None,
) -> dict:
    """Train K relational runs of one model shape (pair, projection or pretraining runs of one
    experiment) as one stacked, vmapped model (diffcomp.packing) in one job.

    ``icons_npzs``, ``train_csvs`` and ``init_dirs`` hold each run's files, in the order of
    ``runs`` (the runs may differ in split, vocabulary and seed). Each run keeps what it would have
    alone: its initial weights (seeded by its seed, or its init snapshot), its captions' encoder
    states, its data and noise generators (seeded as the shared trainer seeds a single run's,
    saved and restored with the pack's state) and its gradient clipping; the summed loss gives each
    model its own gradient, and AdamW and EMA are elementwise. So a packed run differs from its
    single run only by the batched kernels' rounding. ``out_dir`` gets the stacked snapshots;
    diffcomp.packing.unpack_run writes one run's train/ folder from them.
    """
    pack = pack_definition(runs, PACK_SHARED_KEYS)
    _check_pack_text_encoders(runs)
    for run in runs:
        reason = unpackable_reason(run)
        if reason:
            raise ValueError(f"run {run.get('split', {}).get('name', run['stage'])} seed {run['seed']}: {reason}")
    count = len(runs)
    train_csvs = list(train_csvs) if train_csvs is not None else [None] * count
    init_dirs = list(init_dirs) if init_dirs is not None else [None] * count
    icons_npzs = list(icons_npzs)
    if not len(icons_npzs) == len(train_csvs) == len(init_dirs) == count:
        raise ValueError(
            f"{count} runs but {len(icons_npzs)} icon files, {len(train_csvs)} training tables "
            f"and {len(init_dirs)} init folders"
        )
    training = pack_training({**runs[0]["training"], **{k: runtime[k] for k in RUNTIME_KEYS}}, log)
    inputs = [
        read_run_inputs(run, icons, train_csv=csv, init_dir=init)
        for run, icons, csv, init in zip(runs, icons_npzs, train_csvs, init_dirs, strict=True)
    ]
    names = [f"{i.name}_seed{r['seed']}".replace(" ", "_") for i, r in zip(inputs, runs, strict=True)]
    max_grad_norm = (runs[0].get("projection") or {}).get("max_grad_norm")

    def build(device: torch.device) -> TrainingTask:
        members = []
        for run, run_inputs in zip(runs, inputs, strict=True):
            torch.manual_seed(run["seed"])  # the initial weights a single run of this seed gets
            members.append(build_run(run_inputs, training["batch_size"], device))
        model = StackedModels([member_model for member_model, _, _ in members])
        data_rngs, noise_rngs, generators = pack_generators([r["seed"] for r in runs], device)
        epsilon_loss = EpsilonLoss(ddpm_scheduler(runs[0]["diffusion"]), training["snr_gamma"], device)

        def next_batch(_generator):
            return [draw(g) for (_, _, draw), g in zip(members, data_rngs, strict=True)]

        def loss(forward, batches, _generator):
            conditions = [conditioner(index) for (_, conditioner, _), (_, index) in zip(members, batches, strict=True)]
            condition = tuple(torch.stack(parts) for parts in zip(*conditions, strict=True))  # (tokens, mask)
            return packed_epsilon_losses(epsilon_loss, forward, [clean for clean, _ in batches], condition, noise_rngs)

        return TrainingTask(
            name=f"pack of {count} ({', '.join(names)})",
            model=model,
            next_batch=next_batch,
            loss=loss,
            # the runs' model state keys: what unpacking needs to name each run's weights
            summary={"stage": runs[0]["stage"], "pack": names, "state_keys": model.state_keys},
            generators=generators,
            loss_parts=len(runs),
            capturable=True,  # as a single run with a frozen encoder (training.cuda_graph)
            clip_gradients=(
                functools.partial(clip_grad_norm_per_model, max_norm=max_grad_norm) if max_grad_norm else None
            ),
        )

    return train(build, pack, training, out_dir, stop_after_step=stop_after_step)


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------
def sampling_triples(train: np.ndarray, test: np.ndarray, num_train: int, num_test: int, seed: int):
    """Triples to generate: drawn without replacement from each side while there are enough."""
    rng = np.random.default_rng(seed)
    parts, splits = [], []
    for part, pool, count in (("train", train, num_train), ("test", test, num_test)):
        if len(pool) == 0:
            continue
        parts.append(pool[rng.choice(len(pool), size=count, replace=count > len(pool))])
        splits += [part] * count
    return np.concatenate(parts), np.array(splits)


def guided_prediction(model, x, t, condition, guidance_scale: float):
    """eps of ``x`` at ``t``; with classifier-free guidance (``guidance_scale`` other than 1),
    eps("") + w (eps(c) - eps("")), both predictions in one batch of twice the size, where
    ``condition`` holds the captions' conditions followed by as many null conditions
    (:func:`with_null`)."""
    if guidance_scale == 1:
        return model(x, t, condition)
    conditional, plain = model(torch.cat([x, x]), torch.cat([t, t]), condition).chunk(2)
    return plain + guidance_scale * (conditional - plain)


def with_null(condition, null):
    """A batch's conditions followed by the null condition for each image (tokens, mask)."""
    return tuple(torch.cat([part, empty]) for part, empty in zip(condition, null, strict=True))


@torch.no_grad()
def generate(
    model, scheduler, conditioner: Conditioner, *, num_inference_steps, batch_size, seed, device, guidance_scale=1.0
):
    """Run the reverse chain for every caption of ``conditioner``; images in [0, 1], (n, 2S, S).
    A ``guidance_scale`` other than 1 needs a conditioner with the null condition."""
    model.eval()
    scheduler.set_timesteps(num_inference_steps)
    generator = torch.Generator(device=device).manual_seed(seed)
    count = conditioner.count
    images = []
    for start in range(0, count, batch_size):
        index = torch.arange(start, min(start + batch_size, count), device=device)
        condition = conditioner(index)
        if guidance_scale != 1:  # built once per batch, not at every step
            condition = with_null(condition, conditioner.unconditional(len(index)))
        x = torch.randn((len(index), 1, *model.image_shape), generator=generator, device=device)
        for t in scheduler.timesteps:
            eps = guided_prediction(model, x, t.expand(len(index)).to(device), condition, guidance_scale)
            x = scheduler.step(eps, t, x, generator=generator).prev_sample
        images.append(((x.clamp(-1, 1) + 1) / 2).squeeze(1).float().cpu().numpy())
    return np.concatenate(images)


def sample_relational_run(run: dict, sampling: dict, runtime: dict, icons_npz, train_csv, test_csv, train_dir, out_dir):
    """Sample every checkpoint of a finished run into ``out_dir/step{N}.npz``; returns the files written."""
    device = resolve_device(runtime["device"])
    torch.set_num_threads(runtime["threads"])
    _, names = load_icons(icons_npz)
    train_triples = read_split_triples(train_csv, names)
    test_triples = read_split_triples(test_csv, names)
    seed = run["seed"]
    triples, splits = sampling_triples(train_triples, test_triples, sampling["num_train"], sampling["num_test"], seed)
    model, encoder = build_model(run, names, device, split_triples=train_triples)
    guidance_scale = sampling.get("guidance_scale", 1.0)
    conditioner = Conditioner(encoder, triple_captions(triples, names), device, unconditional=guidance_scale != 1)

    def sample(step: int) -> dict:
        images = generate(
            model,
            sampling_scheduler(run["diffusion"], sampling["sampler"]),
            conditioner,
            num_inference_steps=inference_steps(run["diffusion"], sampling),
            batch_size=sampling["batch_size"],
            # the same noise at every checkpoint: differences come from the weights alone
            seed=seed * 1_000_003 + 7,
            device=device,
            guidance_scale=guidance_scale,
        )
        top, bottom, relation = triples.T
        return {
            "images": images.astype(np.float16),
            "top": top,
            "bottom": bottom,
            "relation": relation,
            "split": splits,
        }

    return sample_checkpoints(model, train_dir, out_dir, sample)
