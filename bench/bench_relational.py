"""Benchmarks of the relational study, each comparison measured within one run (the machines are shared).

    python bench/bench_relational.py [--config config.yaml] [--split band] [--steps 100] [--rounds 3]
                                     [--threads 1] [--device cpu|cuda] [--packed K] [--json OUT]

On the config's first experiment and its first split (or ``--split``), with icons and split CSVs
made in a temporary folder (no Snakemake):

1. Training throughput: the pipeline's train_relational_run (the shared trainer: LR schedule,
   EMA, logging, resumable RNG streams, one checkpoint at the end) vs a bare PyTorch loop (same
   model, batch, AdamW, EpsilonLoss, EMA and precision; no schedule, logging or checkpoints),
   interleaved in rounds (alternating which goes first) so load changes hit both alike; median
   steps/s over the rounds. A short run checkpoints once per ``--steps`` steps, a real one once per
   ``checkpoint_every``: the fixed cost of that checkpoint weighs more here than in a real run. A
   configured pretraining stage is not run: both loops start from a fresh initialisation.
2. Contrastive losses: the image encoder's training time, and the pipeline's steps/s of the
   baseline against the same run with the fake-to-real and with the fake-to-fake loss (weight
   0.2), in alternating order over the rounds.
3. Text encoder: captions/s of the configured encoder (frozen) over all 2N(N-1) captions of the
   split's vocabulary, first call (encoded) vs second call (per-caption cache); and for N = 30.
4. Evaluation: predict_nouns (template matching) images/s on noisy ground-truth pair renders.
5. Sampling per checkpoint: generating sampling.num_train + num_test samples with the configured
   sampler and step count (the first call and a second one), and the pipeline's
   sample_relational_run on the trained one-checkpoint run (model build, encoding, generation, npz).
6. (--packed K) Packs: K runs of the split (seeds 0..K-1) trained by the pipeline one after the
   other (train_relational_run K times) vs as one pack (train_relational_pack: the K models
   stacked and vmapped), in alternating rounds; aggregate model-steps/s of each.

Training (1.) also reports images/s, the achieved TFLOP/s (the training step's FLOPs, counted as
--flops counts them) and the fraction of the device's dense bf16 peak (known GPUs by name, as in
bench_bumps.py, or --peak-tflops).

--flops only counts one run's FLOPs (training, and sampling its checkpoints; on the meta device,
so the paper model too) and times nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_bumps import bf16_peak_tflops, rates  # noqa: E402 (the bump bench, next to this script)

from diffcomp.config import load_config  # noqa: E402
from diffcomp.diffusion import EpsilonLoss, ddpm_scheduler, inference_steps, sampling_scheduler  # noqa: E402
from diffcomp.ema import ForeachEMA  # noqa: E402
from diffcomp.io import write_csv  # noqa: E402
from diffcomp.relational.config import experiment_names, experiment_settings, run_definition, split_specs  # noqa: E402
from diffcomp.relational.contrastive import train_image_encoder, training_pairs  # noqa: E402
from diffcomp.relational.data import read_split_triples, triples_frame  # noqa: E402
from diffcomp.relational.evaluate import predict_nouns  # noqa: E402
from diffcomp.relational.icons import load_icons, nouns, pair_images, render_icons, save_icons  # noqa: E402
from diffcomp.relational.splits import Split, all_triples  # noqa: E402
from diffcomp.relational.text.build import caption_encoder  # noqa: E402
from diffcomp.relational.train import (  # noqa: E402
    Conditioner,
    build_model,
    generate,
    sample_relational_run,
    sampling_triples,
    train_relational_pack,
    train_relational_run,
    triple_captions,
)
from diffcomp.training import (  # noqa: E402
    RUNTIME_KEYS,
    apply_tf32,
    checkpoint_steps,
    compile_options,
    gpu_settings,
    load_snapshot,
    make_optimizer,
    read_snapshots,
    resolve_device,
    synchronize,
)


def bare_loop_seconds(
    run: dict,
    names: list[str],
    icons_np: np.ndarray,
    triples: np.ndarray,
    steps: int,
    device,
    runtime: dict,
) -> float:
    """The minimal training loop doing the same arithmetic as the pipeline: stack the icons of a batch
    of training triples, noise, predict, (Min-SNR-weighted) epsilon MSE, AdamW, EMA when configured,
    bf16 autocast, the compile mode and the GPU options as configured (the trainer's own helpers);
    no LR schedule, logging, checkpoints or resume states.
    Seconds for ``steps`` steps (set-up excluded, as the pipeline's seconds_this_job excludes it)."""
    training = {**run["training"], **runtime}
    settings = gpu_settings(training, device)
    apply_tf32(settings["tf32"])
    torch.manual_seed(run["seed"])
    model, encoder = build_model(run, names, device, split_triples=triples)
    if settings["channels_last"]:
        model.to(memory_format=torch.channels_last)
    conditioner = Conditioner(encoder, triple_captions(triples, names), device)
    icons = torch.from_numpy(icons_np).to(device) * 2.0 - 1.0
    table = torch.from_numpy(triples).to(device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(parameters, training, settings)
    ema = ForeachEMA(parameters, decay=training["ema_decay"]) if training["ema_decay"] > 0 else None
    loss_fn = EpsilonLoss(ddpm_scheduler(run["diffusion"]), training["snr_gamma"], device)
    generator = torch.Generator(device=device).manual_seed(run["seed"])
    options = compile_options(training, device)
    compiled = torch.compile(model, **options) if options is not None else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=training["precision"] == "bf16")
    batch = training["batch_size"]

    def forward(*args):
        with autocast:
            return compiled(*args)

    model.train()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        index = torch.randint(len(table), (batch,), generator=generator, device=device)
        clean = torch.cat([icons[table[index, 0]], icons[table[index, 1]]], dim=1).unsqueeze(1)
        loss = loss_fn(forward, clean, conditioner(index), generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema is not None:
            ema.step(parameters)
    loss.item()
    synchronize(device)
    return time.perf_counter() - start


def bench_training(run, runtime, names, icons_np, icons_npz, train_csv, train_triples, steps, rounds, tmp: Path):
    """Pipeline vs bare loop in alternating rounds; returns the results and the last pipeline run's folder."""
    device = resolve_device(runtime["device"])
    run = copy.deepcopy(run)
    # one checkpoint, at the end
    run["training"].update(steps=steps, checkpoint_every=steps)
    pipeline, bare, out_dir = [], [], None
    for r in range(rounds):

        def pipeline_round(r=r):
            nonlocal out_dir
            out_dir = tmp / f"round{r}" / "train"
            summary = train_relational_run(run, runtime, icons_npz, out_dir, train_csv=train_csv)
            pipeline.append(summary["seconds_this_job"])

        def bare_round():
            bare.append(bare_loop_seconds(run, names, icons_np, train_triples, steps, device, runtime))

        for job in (pipeline_round, bare_round) if r % 2 == 0 else (bare_round, pipeline_round):
            job()
    p, b = statistics.median(pipeline), statistics.median(bare)
    return {
        "device": str(device),
        "steps": steps,
        "rounds": rounds,
        "batch_size": run["training"]["batch_size"],
        "precision": run["training"]["precision"],
        "ema_decay": run["training"]["ema_decay"],
        "snr_gamma": run["training"]["snr_gamma"],
        "train_triples": len(train_triples),
        "pipeline_seconds": pipeline,
        "bare_seconds": bare,
        "pipeline_steps_per_s": steps / p,
        "bare_steps_per_s": steps / b,
        "pipeline_vs_bare": b / p,
    }, out_dir


def bench_packed(section, experiment, split, runtime, icons_npz, train_csv, steps, rounds, k, tmp: Path) -> dict:
    """K runs (seeds 0..K-1) trained by the pipeline one after the other vs as one pack, alternating
    rounds; each job checkpoints once, at the end. Median seconds of each, as aggregate model-steps/s."""
    runs = []
    for seed in range(k):
        run = copy.deepcopy(run_definition(section, experiment, split, seed))
        run["training"].update(steps=steps, checkpoint_every=steps)
        runs.append(run)
    in_turn, packed = [], []
    for r in range(rounds):

        def in_turn_round(r=r):
            seconds = 0.0
            for seed, run in enumerate(runs):
                out = tmp / f"turn{r}_{seed}" / "train"
                seconds += train_relational_run(run, runtime, icons_npz, out, train_csv=train_csv)["seconds_this_job"]
            in_turn.append(seconds)

        def packed_round(r=r):
            out = tmp / f"pack{r}" / "train"
            summary = train_relational_pack(runs, runtime, [icons_npz] * k, out, train_csvs=[train_csv] * k)
            packed.append(summary["seconds_this_job"])

        for job in (in_turn_round, packed_round) if r % 2 == 0 else (packed_round, in_turn_round):
            job()
    a, b = statistics.median(in_turn), statistics.median(packed)
    return {
        "models": k,
        "steps": steps,
        "rounds": rounds,
        "in_turn_seconds": in_turn,
        "packed_seconds": packed,
        "in_turn_aggregate_steps_per_s": k * steps / a,
        "packed_aggregate_steps_per_s": k * steps / b,
        "packed_over_in_turn": a / b,
    }


def bench_contrastive(section, split, runtime, icons_np, icons_npz, train_csv, steps, rounds, tmp: Path) -> dict:
    """Pipeline steps/s of the baseline against the same run with each contrastive loss (weight 0.2),
    in alternating order over ``rounds``; the image encoder is trained first (its seconds reported)."""
    encoder_dir = tmp / "image_encoder"
    start = time.perf_counter()
    pairs = training_pairs(read_split_triples(train_csv, load_icons(icons_npz)[1]))
    summary = train_image_encoder(icons_np, pairs, section["image_encoder"], encoder_dir, threads=runtime["threads"])
    encoder_seconds = time.perf_counter() - start
    experiment = experiment_names(section)[0]
    base = run_definition(section, experiment, split, seed=section["seeds"][0])
    base["training"].update(steps=steps, checkpoint_every=steps)
    variants = {
        "baseline": None,
        "fake_to_real": {"fake_to_fake": 0.0, "fake_to_real": 0.2, "temperature": 0.5},
        "fake_to_fake": {"fake_to_fake": 0.2, "fake_to_real": 0.0, "temperature": 0.5},
    }
    seconds = {name: [] for name in variants}
    for r in range(rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            run = copy.deepcopy(base)
            if variants[name]:
                run.update(contrastive=variants[name], image_encoder=dict(section["image_encoder"]))
            out = tmp / "contrastive" / f"{name}{r}" / "train"
            summary_run = train_relational_run(
                run, runtime, icons_npz, out, train_csv=train_csv, image_encoder_dir=encoder_dir
            )
            seconds[name].append(summary_run["seconds_this_job"])
    median = {name: statistics.median(values) for name, values in seconds.items()}
    return {
        "image_encoder_seconds": encoder_seconds,
        "image_encoder_steps": section["image_encoder"]["steps"],
        "image_encoder_accuracy": summary["accuracy_noise0.0"],
        **{f"{name}_steps_per_s": steps / median[name] for name in variants},
        **{f"{name}_vs_baseline": median["baseline"] / median[name] for name in variants if name != "baseline"},
    }


def encode_rate(run: dict, names: list[str], device: torch.device) -> dict:
    """Captions/s of the frozen encoder over every two-object caption of ``names``: uncached, then cached."""
    # its speed does not depend on its weights: no caption pretraining here
    spec = {**run["text_encoder"], "trainable": False, "caption_pretraining_steps": 0}
    encoder = caption_encoder({**run, "text_encoder": spec}, names).to(device)
    captions = triple_captions(all_triples(len(names)), names)
    seconds = []
    for _ in range(2):  # the first call encodes every caption, the second reads the cache
        synchronize(device)
        start = time.perf_counter()
        states, _ = encoder.encode(captions)
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    encoder.clear_cache()
    return {
        "vocab_size": len(names),
        "captions": len(captions),
        "hidden_size": int(states.shape[-1]),
        "max_length": int(states.shape[1]),
        "uncached_seconds": seconds[0],
        "cached_seconds": seconds[1],
        "uncached_captions_per_s": len(captions) / seconds[0],
        "cached_captions_per_s": len(captions) / seconds[1],
        "cached_speedup": seconds[0] / seconds[1],
    }


def bench_text(run: dict, names: list[str], device: torch.device, scale_vocab: int = 30) -> dict:
    out = {"encoder": run["text_encoder"]["name"], "configured": encode_rate(run, names, device)}
    if scale_vocab != len(names):
        out[f"N{scale_vocab}"] = encode_rate(run, nouns(scale_vocab), device)
    return out


def bench_prediction(icons: np.ndarray, count: int, noise: float = 0.1) -> dict:
    """predict_nouns on ``count`` ground-truth pair renders plus Gaussian noise, stored as float16 like samples."""
    rng = np.random.default_rng(0)
    triples = all_triples(len(icons))[rng.integers(0, 2 * len(icons) * (len(icons) - 1), count)]
    images = pair_images(icons, triples[:, 0], triples[:, 1])
    images = np.clip(images + rng.normal(0.0, noise, images.shape), 0.0, 1.0).astype(np.float16)
    start = time.perf_counter()
    top, bottom, _, _ = predict_nouns(images, icons)
    seconds = time.perf_counter() - start
    return {
        "images": count,
        "image_shape": list(images.shape[1:]),
        "noise_std": noise,
        "seconds": seconds,
        "images_per_s": count / seconds,
        "accuracy": float(np.mean((top == triples[:, 0]) & (bottom == triples[:, 1]))),
    }


def bench_sampling(
    run,
    sampling,
    runtime,
    names,
    icons_npz,
    train_csv,
    test_csv,
    train_triples,
    test_triples,
    train_dir: Path,
    tmp: Path,
) -> dict:
    """Generation of one checkpoint's samples with the trained weights, as sample_relational_run does it."""
    device = resolve_device(runtime["device"])
    triples, _ = sampling_triples(train_triples, test_triples, sampling["num_train"], sampling["num_test"], run["seed"])
    model, encoder = build_model(run, names, device, split_triples=train_triples)
    load_snapshot(read_snapshots(train_dir)[-1][1], model)
    conditioner = Conditioner(encoder, triple_captions(triples, names), device)
    steps = inference_steps(run["diffusion"], sampling)
    seconds = []
    for _ in range(2):
        synchronize(device)
        start = time.perf_counter()
        generate(
            model,
            sampling_scheduler(run["diffusion"], sampling["sampler"]),
            conditioner,
            num_inference_steps=steps,
            batch_size=sampling["batch_size"],
            seed=run["seed"] * 1_000_003 + 7,
            device=device,
        )
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    start = time.perf_counter()
    written = sample_relational_run(run, sampling, runtime, icons_npz, train_csv, test_csv, train_dir, tmp / "samples")
    pipeline = time.perf_counter() - start
    return {
        "sampler": sampling["sampler"],
        "inference_steps": steps,
        "batch_size": sampling["batch_size"],
        "samples": len(triples),
        "first_seconds": seconds[0],
        "seconds": seconds[1],
        "samples_per_s": len(triples) / seconds[1],
        "pipeline_run_seconds": pipeline,
        "pipeline_checkpoints": len(written),
    }


def flop_budget(run: dict, sampling: dict, names: list[str]) -> dict:
    """What one run of the config costs in FLOPs (torch's FlopCounterMode: matmuls, convolutions
    and attention; norms, elementwise work and the optimiser not counted), counted on the meta
    device so even the paper model costs nothing to count: a training step's forward and backward
    at the configured batch (a frozen encoder's caption states are cached, so only a trainable
    encoder adds to it), and the sampling of every kept checkpoint (one forward pass per sampler
    step for sampling.num_train + num_test samples)."""
    from torch.utils.flop_counter import FlopCounterMode

    meta = torch.device("meta")
    with meta:
        model, encoder = build_model(run, names, meta)
    batch = run["training"]["batch_size"]
    height, width = model.image_shape

    def condition(count: int):
        if encoder.trainable:  # token ids through the encoder inside the model
            ids = torch.zeros(count, encoder.max_length, dtype=torch.long, device=meta)
            return ids, torch.ones(count, encoder.max_length, dtype=torch.long, device=meta)
        states = torch.empty(count, encoder.max_length, encoder.hidden_size, device=meta)
        return states, torch.ones(count, encoder.max_length, dtype=torch.long, device=meta)

    def forward(count: int):
        noisy = torch.empty(count, 1, height, width, device=meta)
        return model(noisy, torch.zeros(count, dtype=torch.long, device=meta), condition(count))

    with FlopCounterMode(display=False) as counter:
        forward(batch).float().pow(2).mean().backward()
    per_step = float(counter.get_total_flops())
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        forward(1)
    per_image = float(counter.get_total_flops())
    training = run["training"]
    checkpoints = len(checkpoint_steps(training["steps"], training["checkpoint_every"]))
    samples = sampling["num_train"] + sampling["num_test"]
    per_checkpoint = per_image * samples * inference_steps(run["diffusion"], sampling)
    train_total = per_step * training["steps"]
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "trained_tensors": sum(p.requires_grad for p in model.parameters()),
        "training_tflop_per_step": per_step / 1e12,
        "training_pflop_per_run": train_total / 1e15,
        "checkpoints": checkpoints,
        "samples_per_checkpoint": samples,
        "sampling_tflop_per_checkpoint": per_checkpoint / 1e12,
        "sampling_pflop_per_run": per_checkpoint * checkpoints / 1e15,
        "sampling_over_training": per_checkpoint * checkpoints / train_total,
    }


def print_table(results: dict) -> None:
    t, x, p, s = results["training"], results["text_encoder"], results["prediction"], results["sampling"]
    rows = [
        (
            "setup",
            f"{results['experiment']}/{results['split']}, N={results['vocab_size']}, "
            f"{results['icon_size']} px icons, device {t['device']}, {results['threads']} thread(s)",
        ),
        (f"training ({t['steps']} steps x {t['rounds']} rounds, batch {t['batch_size']}, {t['precision']})", ""),
        ("  pipeline (train_relational_run)", f"{t['pipeline_steps_per_s']:10.2f} steps/s"),
        ("  bare PyTorch loop", f"{t['bare_steps_per_s']:10.2f} steps/s"),
        ("  pipeline / bare", f"{t['pipeline_vs_bare']:10.3f}"),
        ("  pipeline images/s", f"{t['images_per_s']:10.1f}"),
        ("  pipeline TFLOP/s (matmuls, convolutions, attention)", f"{t['achieved_tflops']:10.4f}"),
    ]
    if t["fraction_of_bf16_peak"] is not None:
        rows.append(("  fraction of the device's dense bf16 peak", f"{t['fraction_of_bf16_peak']:10.2%}"))
    c = results["contrastive"]
    rows += [
        (
            f"contrastive image encoder ({c['image_encoder_steps']} steps, both nouns right "
            f"{c['image_encoder_accuracy']:.2f})",
            f"{c['image_encoder_seconds']:10.2f} s",
        ),
        ("  baseline (pipeline)", f"{c['baseline_steps_per_s']:10.2f} steps/s"),
        ("  + fake-to-real loss", f"{c['fake_to_real_steps_per_s']:10.2f} steps/s"),
        ("  + fake-to-fake loss", f"{c['fake_to_fake_steps_per_s']:10.2f} steps/s"),
        ("  fake-to-real / baseline time", f"{1 / c['fake_to_real_vs_baseline']:10.3f}"),
        ("  fake-to-fake / baseline time", f"{1 / c['fake_to_fake_vs_baseline']:10.3f}"),
        (f"text encoder ({x['encoder']}, frozen)", ""),
    ]
    for key, e in x.items():
        if key == "encoder":
            continue
        rows += [
            (
                f"  N={e['vocab_size']}: {e['captions']} captions, first call",
                f"{e['uncached_captions_per_s']:10.0f} captions/s",
            ),
            (f"  N={e['vocab_size']}: second call (cached)", f"{e['cached_captions_per_s']:10.0f} captions/s"),
            (f"  N={e['vocab_size']}: cached / uncached", f"{e['cached_speedup']:10.1f} x"),
        ]
    rows += [
        (
            f"evaluation: predict_nouns, {p['images']} images {p['image_shape'][0]}x{p['image_shape'][1]}",
            f"{p['images_per_s']:10.0f} images/s",
        ),
        ("  accuracy on noisy ground truth (sanity check)", f"{p['accuracy']:10.4f}"),
        (
            f"sampling per checkpoint ({s['samples']} samples, {s['sampler']}-{s['inference_steps']})",
            f"{s['seconds']:10.2f} s",
        ),
        ("  samples/s", f"{s['samples_per_s']:10.1f}"),
        ("  first call", f"{s['first_seconds']:10.2f} s"),
        ("  sample_relational_run, 1 checkpoint (incl. set-up, npz)", f"{s['pipeline_run_seconds']:10.2f} s"),
    ]
    if "packed" in results:
        k = results["packed"]
        rows += [
            (f"packs: {k['models']} runs x {k['steps']} steps, pipeline, median of {k['rounds']} rounds", ""),
            ("  one after the other (train_relational_run)", f"{k['in_turn_aggregate_steps_per_s']:10.2f} steps/s"),
            ("  one pack (train_relational_pack)", f"{k['packed_aggregate_steps_per_s']:10.2f} steps/s"),
            ("  pack / one after the other", f"{k['packed_over_in_turn']:10.3f}"),
        ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "config.yaml")
    parser.add_argument("--split", default=None, help="split of the first experiment to train on (default: its first)")
    parser.add_argument("--steps", type=int, default=100, help="training steps per round and loop")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the runtime's training.threads)")
    parser.add_argument("--device", default=None, help="cpu, cuda, auto (default: the config's training.device)")
    parser.add_argument("--eval-images", type=int, default=20_000)
    parser.add_argument("--scale-vocab", type=int, default=30, help="also time the encoder for this vocabulary size")
    parser.add_argument("--packed", type=int, default=0, metavar="K", help="also time K runs as one pack")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak (TFLOP/s)")
    parser.add_argument(
        "--flops",
        action="store_true",
        help="only count one run's FLOPs (training, and sampling its checkpoints) on the meta device; times nothing",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    section = load_config(args.config)["relational"]
    experiment = experiment_names(section)[0]
    split = args.split or experiment_settings(section, experiment)["splits"][0]
    if split not in split_specs(section):
        parser.error(f"--split {split!r}: no such split (configured: {', '.join(split_specs(section))})")
    spec = split_specs(section)[split]
    run = run_definition(section, experiment, split, seed=section["seeds"][0])
    runtime = {k: section["training"][k] for k in RUNTIME_KEYS}
    runtime.update(threads=args.threads, device=args.device or runtime["device"])
    device = resolve_device(runtime["device"])
    torch.set_num_threads(args.threads)

    names = nouns(spec["vocab_size"])
    if args.flops:
        budget = {"config": str(args.config), "experiment": experiment, "split": split}
        budget.update(flop_budget(run, section["sampling"], names))
        print(json.dumps(budget, indent=2))
        if args.json:
            args.json.write_text(json.dumps(budget, indent=2) + "\n")
        return
    icons = render_icons(len(names), section["icon_size"])
    train_triples, test_triples = Split.from_config(spec).triples()
    results = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": args.threads,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "config": str(args.config),
        "experiment": experiment,
        "split": split,
        "vocab_size": len(names),
        "icon_size": section["icon_size"],
    }
    with tempfile.TemporaryDirectory() as work:
        tmp = Path(work)
        icons_npz, train_csv, test_csv = tmp / "icons.npz", tmp / "train.csv", tmp / "test.csv"
        save_icons(icons_npz, icons, names)
        write_csv(train_csv, triples_frame(train_triples, names))
        write_csv(test_csv, triples_frame(test_triples, names))
        icons, _ = load_icons(icons_npz)  # the uint8-rounded icons the pipeline trains on
        results["training"], train_dir = bench_training(
            run, runtime, names, icons, icons_npz, train_csv, train_triples, args.steps, args.rounds, tmp
        )
        training = results["training"]
        flops_per_step = flop_budget(run, section["sampling"], names)["training_tflop_per_step"] * 1e12
        peak = bf16_peak_tflops(device, args.peak_tflops)
        training.update(rates(flops_per_step, training["batch_size"], training["pipeline_steps_per_s"], peak))
        results["contrastive"] = bench_contrastive(
            section, split, runtime, icons, icons_npz, train_csv, args.steps, args.rounds, tmp
        )
        results["text_encoder"] = bench_text(run, names, device, args.scale_vocab)
        results["prediction"] = bench_prediction(icons, args.eval_images)
        results["sampling"] = bench_sampling(
            run,
            section["sampling"],
            runtime,
            names,
            icons_npz,
            train_csv,
            test_csv,
            train_triples,
            test_triples,
            train_dir,
            tmp,
        )
        if args.packed:
            results["packed"] = bench_packed(
                section, experiment, split, runtime, icons_npz, train_csv, args.steps, args.rounds, args.packed, tmp
            )
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
