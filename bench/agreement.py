"""What is and is not bit-identical on this device: the workflow's bump trainer run with one
setting changed at a time, compared with a reference run of the same config, seed and steps.

    python bench/agreement.py [--config config.paper.yaml] [--steps 20] [--variants NAME ...] [--json OUT]

The reference is the config's run with every speed setting at its default (eager float32, compile
off, PyTorch's TF32 settings, the default AdamW, contiguous weights, no CUDA graph). Each variant
trains the same run again through ``train_run`` (or ``train_pack``) with one change:

    repeat           nothing: is a run reproducible on this device?
    resumed          stopped half-way (a resume state on disk) and finished by a second call
    tf32             training.tf32: true
    fused_optimizer  training.fused_optimizer: true
    channels_last    training.channels_last: true
    cuda_graph       training.cuda_graph: true (on a CPU the same step eagerly)
    bf16             training.precision: bf16
    pack             the run as model 0 of a pack of 2 (the second run: seed + 1)
    all_gpu_options  bf16, tf32, fused AdamW, channels-last and the CUDA graph together
    cuda_graph_resumed, pack_resumed, all_gpu_options_resumed
                     that variant stopped half-way and resumed, against its own uninterrupted run
    compile          training.compile: default (not in the default list: compiling takes minutes)

and reports, for the final raw weights and the final snapshot (the sampling weights: EMA when
configured), whether every tensor is equal bit for bit, the largest absolute difference and its
tensor, and the difference's norm relative to how far training moved the weights
(||w - w_ref|| / ||w_ref - w_init||: about 1e-7 is float32 rounding, 1e-2 bf16-sized, 1 a
different run); and the final loss of each (or, for a variant that fails, its error: e.g.
``compile`` where the trainer's compiled-gradient check refuses it). Also ForeachEMA's foreach update against EMAModel's
per-tensor loop on the config's model on this device (the trainer's EMA on CUDA), bit for bit or
not. Nothing is timed. On a CPU, tf32, fused_optimizer and channels_last are ignored and
cuda_graph runs eagerly, so those variants measure that they change nothing there.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from bench_bumps import SET_HELP, bench_data, bench_section
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file

from diffcomp.bumps.model import BumpDenoiser
from diffcomp.bumps.train import (
    RUNTIME_KEYS,
    TrainingInterrupted,
    resolve_device,
    semantic_config,
    train_pack,
    train_run,
)
from diffcomp.ema import ForeachEMA
from diffcomp.io import write_csv
from diffcomp.packing import stacked_key
from diffcomp.training import load_latest_state, preserved_tf32, read_snapshots, state_folder

# The reference's speed settings: each key's default.
DEFAULT_SPEED = {
    "precision": "fp32",
    "compile": "none",
    "tf32": None,
    "fused_optimizer": False,
    "channels_last": False,
    "cuda_graph": False,
}
ALL_GPU_OPTIONS = {
    "precision": "bf16",
    "tf32": True,
    "fused_optimizer": True,
    "channels_last": True,
    "cuda_graph": True,
}


@dataclass(frozen=True)
class Variant:
    """One comparison: the run trained with ``changes`` to the reference's training keys, stopped
    half-way and finished by a second call (``resumed``), or as model 0 of a pack of two (``pack``),
    compared with the reference, or with the variant named ``against``."""

    changes: dict = field(default_factory=dict)
    resumed: bool = False
    pack: bool = False
    against: str | None = None

    def described(self) -> dict:
        return {
            **self.changes,
            **({"resumed": True} if self.resumed else {}),
            **({"pack_size": 2} if self.pack else {}),
        }


VARIANTS = {
    "repeat": Variant(),
    "resumed": Variant(resumed=True),
    "tf32": Variant({"tf32": True}),
    "fused_optimizer": Variant({"fused_optimizer": True}),
    "channels_last": Variant({"channels_last": True}),
    "cuda_graph": Variant({"cuda_graph": True}),
    "bf16": Variant({"precision": "bf16"}),
    "pack": Variant(pack=True),
    "all_gpu_options": Variant(ALL_GPU_OPTIONS),
    # is resuming bit-identical where the step is not eager float32? each against its own uninterrupted run
    "cuda_graph_resumed": Variant({"cuda_graph": True}, resumed=True, against="cuda_graph"),
    "pack_resumed": Variant(pack=True, resumed=True, against="pack"),
    "all_gpu_options_resumed": Variant(ALL_GPU_OPTIONS, resumed=True, against="all_gpu_options"),
    "compile": Variant({"compile": "default"}),
}
DEFAULT_VARIANTS = [name for name in VARIANTS if name != "compile"]


def with_dependencies(names: list[str]) -> list[str]:
    """``names`` in VARIANTS' order, with each one's ``against`` variant added before it."""
    wanted = set(names) | {VARIANTS[name].against for name in names if VARIANTS[name].against}
    return [name for name in VARIANTS if name in wanted]


def final_weights(train_dir: Path, names: list[str], index: int | None = None) -> tuple[dict, dict]:
    """A finished run's (or pack member ``index``'s) final raw weights, from its last resume state,
    and final snapshot (the sampling weights), as {name: float tensor} over the model's ``names``."""
    run_fingerprint = json.loads((train_dir / "train.json").read_text())["fingerprint"]
    state = load_latest_state(state_folder(train_dir, run_fingerprint), run_fingerprint)
    if state is None:
        raise FileNotFoundError(f"{train_dir}: no final resume state")
    _, last_snapshot = read_snapshots(train_dir)[-1]

    def member(tensors: dict) -> dict:
        if index is None:
            return {name: tensors[name].float() for name in names}
        return {name: tensors[stacked_key(name)][index].float() for name in names}

    return member(state["model"]), member(load_file(str(last_snapshot)))


def compare(weights: dict, reference: dict, initial: dict) -> dict:
    """Bit-identity, the largest absolute difference (and where) and the difference's norm relative
    to the reference's distance from the initial weights."""
    worst_name, worst, squared, moved = None, 0.0, 0.0, 0.0
    for name, ref in reference.items():
        difference = (weights[name] - ref).abs()
        largest = difference.max().item() if difference.numel() else 0.0
        if largest > worst or worst_name is None:
            worst_name, worst = name, largest
        squared += difference.pow(2).sum().item()
        moved += (ref - initial[name]).pow(2).sum().item()
    return {
        "bit_identical": all(torch.equal(weights[name], ref) for name, ref in reference.items()),
        "max_abs_diff": worst,
        "max_abs_diff_tensor": worst_name,
        "relative_to_training": (squared**0.5) / (moved**0.5) if moved > 0 else None,
    }


def final_loss(train_dir: Path, index: int | None = None) -> float:
    """A finished run's last logged loss (a pack member's own column ``loss_{index}``)."""
    return float(pd.read_csv(train_dir / "loss.csv")["loss" if index is None else f"loss_{index}"].iloc[-1])


def train_variant(name: str, section: dict, spec: dict, steps: int, labels_csv: Path, out: Path):
    """Train variant ``name`` under ``out``; returns its train folder and the compared run's index
    in it (a pack's member index; None for a single run)."""
    variant = VARIANTS[name]
    run_section = copy.deepcopy(section)
    run_section["training"].update(DEFAULT_SPEED, **variant.changes, steps=steps, checkpoint_every=steps)
    run = semantic_config(run_section, spec, seed=0)
    runtime = {key: run_section["training"][key] for key in RUNTIME_KEYS}
    train_dir = out / name / "train"
    if variant.pack:
        runs = [run, semantic_config(run_section, spec, seed=1)]

        def train_once(**kwargs):
            return train_pack(runs, runtime, [labels_csv] * 2, train_dir, **kwargs)
    else:

        def train_once(**kwargs):
            return train_run(run, runtime, labels_csv, train_dir, **kwargs)

    with preserved_tf32():  # a variant's training.tf32 would outlast it: unset leaves the flags
        if variant.resumed:
            try:
                train_once(stop_after_step=max(1, steps // 2))
            except TrainingInterrupted:
                pass  # the state is on disk; the second call resumes it
        train_once()
    return train_dir, 0 if variant.pack else None


def ema_agreement(section: dict, device: torch.device, steps: int = 20) -> dict:
    """ForeachEMA's foreach update vs EMAModel's per-tensor loop over the config's model on ``device``
    (random weight changes between updates, seeded): bit for bit or not."""
    torch.manual_seed(0)
    model = BumpDenoiser.from_config(section).to(device)
    parameters = list(model.parameters())
    decay = section["training"]["ema_decay"] or 0.9999
    loop, foreach = EMAModel(parameters, decay=decay), ForeachEMA(parameters, foreach_update=True, decay=decay)
    generator = torch.Generator(device=device).manual_seed(1)
    with torch.no_grad():
        for _ in range(steps):
            for p in parameters:
                p.add_(torch.randn(p.shape, generator=generator, device=device, dtype=p.dtype), alpha=1e-2)
            loop.step(parameters)
            foreach.step(parameters)
    pairs = list(zip(loop.shadow_params, foreach.shadow_params, strict=True))
    return {
        "updates": steps,
        "tensors": len(pairs),
        "bit_identical": all(torch.equal(a, b) for a, b in pairs),
        "max_abs_diff": max((a.float() - b.float()).abs().max().item() for a, b in pairs),
    }


def agreement(section: dict, spec: dict, steps: int, variants: list[str], tmp: Path) -> dict:
    """Train the reference and each variant; their comparisons (see the module docstring)."""
    device = resolve_device(section["training"]["device"])
    section, table, _ = bench_data(section, spec)
    labels_csv = tmp / "labels.csv"
    write_csv(labels_csv, table)
    torch.manual_seed(0)  # the trainer's initialisation of seed 0
    initial = {name: w.float() for name, w in BumpDenoiser.from_config(section).state_dict().items()}
    names = list(initial)
    finals = {}  # name -> (raw, snapshot) final weights

    def train_and_read(name: str, out: Path) -> tuple[Path, int | None]:
        logging.getLogger("agreement").info("variant %s", name)
        train_dir, index = train_variant(name, section, spec, steps, labels_csv, out)
        finals[name] = final_weights(train_dir, names, index)
        return train_dir, index

    reference_dir, _ = train_and_read("repeat", tmp / "reference")
    finals["reference"] = finals.pop("repeat")
    results = {}
    for name in variants:
        against = VARIANTS[name].against or "reference"
        results[name] = {"changes": VARIANTS[name].described(), "against": against}
        if against not in finals:
            results[name]["error"] = f"its uninterrupted run {against!r} failed"
            continue
        try:
            train_dir, index = train_and_read(name, tmp)
        except Exception as err:  # noqa: BLE001 - a variant that fails is a result (e.g. the compile check's refusal)
            logging.getLogger("agreement").exception("variant %s failed", name)
            results[name]["error"] = f"{type(err).__name__}: {err}"
            continue
        (raw, snapshot), (against_raw, against_snapshot) = finals[name], finals[against]
        results[name].update(
            weights=compare(raw, against_raw, initial),
            snapshot=compare(snapshot, against_snapshot, initial),
            final_loss=final_loss(train_dir, index),
        )
    return {
        "device": str(device),
        "dataset": spec["name"],
        "steps": steps,
        "reference": {"settings": DEFAULT_SPEED, "final_loss": final_loss(reference_dir)},
        "variants": results,
        "ema_foreach_vs_loop": ema_agreement(section, device),
    }


def table(result: dict) -> str:
    """The comparisons as a text table."""

    def rel(value):
        return f"{value:9.2e}" if value is not None else f"{'-':>9s}"

    labels = {
        name: name if row["against"] == "reference" else f"{name} (vs {row['against']})"
        for name, row in result["variants"].items()
    }
    width = max(len("variant"), *map(len, labels.values()))
    lines = [
        f"{result['dataset']}, {result['steps']} steps on {result['device']}; reference final loss "
        f"{result['reference']['final_loss']:.6g}",
        f"{'variant':{width}s} {'identical':>9s} {'max |diff| weights':>19s} {'rel.':>9s} {'max |diff| EMA':>15s} "
        f"{'rel.':>9s} {'final loss':>11s}  largest difference in",
    ]
    for name, row in result["variants"].items():
        if "error" in row:
            lines.append(f"{labels[name]:{width}s} {'failed':>9s}  {row['error'][:300]}")
            continue
        w, s = row["weights"], row["snapshot"]
        identical = w["bit_identical"] and s["bit_identical"]
        lines.append(
            f"{labels[name]:{width}s} {'yes' if identical else 'no':>9s} "
            f"{w['max_abs_diff']:19.3e} {rel(w['relative_to_training'])} {s['max_abs_diff']:15.3e} "
            f"{rel(s['relative_to_training'])} {row['final_loss']:11.6g}  "
            f"{w['max_abs_diff_tensor'] if w['max_abs_diff'] > 0 else '-'}"
        )
    ema = result["ema_foreach_vs_loop"]
    lines.append(
        f"EMA foreach vs per-tensor loop ({ema['tensors']} tensors, {ema['updates']} updates): "
        f"{'bit-identical' if ema['bit_identical'] else 'differ'}, max |diff| {ema['max_abs_diff']:.3e}"
    )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path(__file__).resolve().parents[1] / "config.yaml")
    parser.add_argument("--dataset", default=None, help="dataset of the config to train on (default: first)")
    parser.add_argument("--steps", type=int, default=20, help="training steps of every run (at least 2)")
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS), metavar="NAME")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the resumed variant stops half-way)")
    try:
        section, spec = bench_section(args.config, args.set, args.dataset)
    except ValueError as err:
        parser.error(str(err))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        result = agreement(section, spec, args.steps, with_dependencies(args.variants), Path(tmp))
    result = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if result["device"].startswith("cuda") else None,
        "config": str(args.config),
        **result,
    }
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
