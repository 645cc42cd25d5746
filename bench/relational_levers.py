"""Learning curves of the relational model's levers: what makes it learn the relation.

    python bench/relational_levers.py [--config config.yaml] [--split band] [--seed 0]
        [--variant NAME:key=value;key=value ...] [--jobs 2] [--json OUT] [--csv OUT]

Each variant is the config's first experiment's run on ``--split`` with dotted overrides of its
run definition (``model.cross_attention_levels=[0]``, ``training.steps=3000``,
``text_encoder.name=minilm``, ``training.condition_dropout=0.1``, ``sampling.guidance_scale=2``...;
values are YAML); ``single_object_pretraining_steps=N`` adds the single-object pretraining stage of N steps
before pair training (its seconds count as training time). Every variant
is trained with the pipeline's own trainer (``train_relational_run``), sampled at every
checkpoint by the pipeline's sampler and scored by the pipeline's evaluator, so the numbers are
those a ``snakemake`` run of the same settings would give. Variants run ``--jobs`` at a time,
each on one thread. Per checkpoint: train and test accuracy, the failure kinds, and the
training seconds so far (from the trainer's own clock), so variants compare at equal CPU time.

Two diagnostic keys change the condition rather than the model (t5-scratch only):

``diagnosis.role_alpha=A``
    adds A times a fixed random "top" vector to the top noun's token state and A times a
    "bottom" vector to the bottom noun's (both of the token states' norm), so the states carry
    each noun's role as a direction the cross-attention can read;
``diagnosis.one_caption=true``
    trains and samples only the "a {top} is on top of a {bottom}." captions, so a noun's role is
    its place in the sentence (no relation phrase to combine it with).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from diffcomp.config import load_config  # noqa: E402
from diffcomp.io import write_csv  # noqa: E402
from diffcomp.relational.config import experiment_names, run_definition, split_specs  # noqa: E402
from diffcomp.relational.data import triples_frame  # noqa: E402
from diffcomp.relational.evaluate import evaluate_checkpoint, load_samples  # noqa: E402
from diffcomp.relational.icons import load_icons, nouns, render_icons, save_icons  # noqa: E402
from diffcomp.relational.splits import Split  # noqa: E402
from diffcomp.relational.train import sample_relational_run, train_relational_run  # noqa: E402
from diffcomp.training import RUNTIME_KEYS  # noqa: E402


def parse_variant(text: str) -> tuple[str, dict]:
    """``name:key=value;key=value`` -> (name, {dotted key: value})."""
    name, _, body = text.partition(":")
    overrides = {}
    for item in filter(None, (part.strip() for part in body.split(";"))):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--variant {text!r}: {item!r} is not key=value")
        overrides[key.strip()] = yaml.safe_load(value)
    return name, overrides


def apply_overrides(run: dict, sampling: dict, overrides: dict) -> tuple[dict, dict]:
    """Copies of the run definition and the sampling section with the dotted overrides set. A
    pretraining stage (``run["init"]``) gets them too, as the pipeline gives it the experiment's
    settings, except ``training.steps`` (its own: ``single_object_pretraining_steps``)."""
    run, sampling = copy.deepcopy(run), copy.deepcopy(sampling)
    for key, value in overrides.items():
        head, *path = key.split(".")
        targets = [(sampling, path)] if head == "sampling" else [(run, [head, *path])]
        if head != "sampling" and run["init"] is not None and key != "training.steps":
            targets.append((run["init"], [head, *path]))
        for node, parts in targets:
            for part in parts[:-1]:
                node = node[part]
            node[parts[-1]] = value
    return run, sampling


# word index of the (top, bottom) noun in a t5-scratch caption of each relation (relations.caption)
ROLE_TOKENS = {"is on top of": (1, 7), "is at the bottom of": (8, 1)}


def add_role_vectors(alpha: float) -> None:
    """Make every Conditioner of this process add role vectors to the nouns' token states."""
    import torch

    from diffcomp.relational import train as relational_train

    base = relational_train.Conditioner

    class RoleConditioner(base):
        def __init__(self, encoder, captions, device, **kwargs):
            super().__init__(encoder, captions, device, **kwargs)
            if self.trainable or not encoder.word_level:
                raise SystemExit("diagnosis.role_alpha needs a frozen t5-scratch encoder")
            width = self.conditions.shape[-1]
            roles = torch.randn(2, width, generator=torch.Generator().manual_seed(123)).to(self.conditions.device)
            roles *= alpha * self.conditions.norm(dim=-1).mean() / roles.norm(dim=-1, keepdim=True)
            self.conditions = self.conditions.clone()
            for row, text in enumerate(captions):
                (top, bottom) = next(pos for phrase, pos in ROLE_TOKENS.items() if phrase in text)
                self.conditions[row, top] += roles[0]
                self.conditions[row, bottom] += roles[1]

    relational_train.Conditioner = RoleConditioner


def one_caption_tables(job: dict, work: Path) -> tuple[Path, Path]:
    """The split's tables with only the relation-0 captions ("a {top} is on top of a {bottom}.")."""
    paths = []
    for key in ("train_csv", "test_csv"):
        frame = pd.read_csv(job[key], dtype=str, keep_default_na=False)
        path = work / Path(job[key]).name
        write_csv(path, frame[frame["relation"] == "on top of"])
        paths.append(path)
    return tuple(paths)


def run_variant(job: dict) -> list[dict]:
    import torch

    torch.set_num_threads(1)
    work = Path(job["work"]) / job["name"]
    work.mkdir(parents=True)
    run, sampling, runtime, diagnosis = job["run"], job["sampling"], job["runtime"], job["diagnosis"]
    train_csv, test_csv = job["train_csv"], job["test_csv"]
    if diagnosis.get("one_caption"):
        train_csv, test_csv = one_caption_tables(job, work)
    if diagnosis.get("role_alpha"):
        add_role_vectors(float(diagnosis["role_alpha"]))
    start = time.perf_counter()
    init_dir = None
    if run["init"] is not None:  # the single-object pretraining stage
        init_dir = work / "pretrain"
        train_relational_run(run["init"], runtime, job["icons"], init_dir)
    train_relational_run(run, runtime, job["icons"], work / "train", train_csv=train_csv, init_dir=init_dir)
    train_seconds = time.perf_counter() - start
    sample_relational_run(run, sampling, runtime, job["icons"], train_csv, test_csv, work / "train", work / "samples")
    icons, _ = load_icons(job["icons"])
    steps = run["training"]["steps"]
    rows = []
    for path in sorted((work / "samples").glob("step*.npz")):
        samples = load_samples(path)
        step = int(samples["step"])
        row = {"variant": job["name"], "seed": run["seed"], "step": step}
        row["single_object_pretraining_steps"] = run["init"]["training"]["steps"] if run["init"] is not None else 0
        row["train_seconds"] = round(train_seconds * step / steps, 1)
        row["steps_per_s"] = round(steps / train_seconds, 2)
        row.update(evaluate_checkpoint(samples, icons))
        rows.append(row)
    print(
        f"{job['name']}: {steps / train_seconds:.1f} steps/s; "
        + ", ".join(f"{r['step']}: {r['train_accuracy']:.2f}/{r['test_accuracy']:.2f}" for r in rows),
        flush=True,
    )
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "config.yaml")
    parser.add_argument("--split", default="band")
    parser.add_argument("--seed", type=int, action="append", default=None)
    parser.add_argument("--variant", action="append", default=None, help="NAME:key=value;key=value (repeatable)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--csv", type=Path)
    args = parser.parse_args(argv)

    section = load_config(args.config)["relational"]
    if args.split not in split_specs(section):
        parser.error(f"--split {args.split!r}: no such split (configured: {', '.join(split_specs(section))})")
    spec = split_specs(section)[args.split]
    experiment = experiment_names(section)[0]
    runtime = {k: section["training"][k] for k in RUNTIME_KEYS}
    runtime["threads"] = 1
    variants = [parse_variant(v) for v in (args.variant or ["config:"])]
    seeds = args.seed or [section["seeds"][0]]

    names = nouns(spec["vocab_size"])
    train_triples, test_triples = Split.from_config(spec).triples()
    with tempfile.TemporaryDirectory() as work:
        tmp = Path(work)
        icons_npz, train_csv, test_csv = tmp / "icons.npz", tmp / "train.csv", tmp / "test.csv"
        save_icons(icons_npz, render_icons(len(names), section["icon_size"]), names)
        write_csv(train_csv, triples_frame(train_triples, names))
        write_csv(test_csv, triples_frame(test_triples, names))
        jobs = []
        for name, overrides in variants:
            overrides = dict(overrides)
            key = "single_object_pretraining_steps"
            stages = {key: overrides.pop(key, section[key])}
            for seed in seeds:
                run = run_definition({**section, **stages}, experiment, args.split, seed)
                diagnosis = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("diagnosis.")}
                model_overrides = {k: v for k, v in overrides.items() if not k.startswith("diagnosis.")}
                run, sampling = apply_overrides(run, section["sampling"], model_overrides)
                jobs.append(
                    {
                        "name": name if len(seeds) == 1 else f"{name}_s{seed}",
                        "run": run,
                        "sampling": sampling,
                        "diagnosis": diagnosis,
                        "runtime": runtime,
                        "icons": str(icons_npz),
                        "train_csv": str(train_csv),
                        "test_csv": str(test_csv),
                        "work": work,
                    }
                )
        # one process per variant: a diagnosis patches its process's Conditioner
        with ProcessPoolExecutor(max_workers=args.jobs, max_tasks_per_child=1) as pool:
            rows = [row for result in pool.map(run_variant, jobs) for row in result]
    frame = pd.DataFrame(rows)
    result = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "config": str(args.config),
        "split": args.split,
        "variants": dict(variants),
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=float) + "\n")
    if args.csv:
        frame.to_csv(args.csv, index=False)
    cols = ["variant", "step", "train_seconds", "steps_per_s", "train_accuracy", "test_accuracy", "train_frac_swapped"]
    print(frame[cols].to_string(index=False))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
