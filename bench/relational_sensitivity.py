"""How much a trained relational model's prediction depends on its caption, per noise level.

    python bench/relational_sensitivity.py --config config.medium.yaml [--results results]
        [--experiment baseline --experiment fake_to_fake ...] [--split band] [--csv OUT]

For each finished run (every seed of each experiment on ``--split``), at its final snapshot: the
training images are noised at a few timesteps t (seeded, the same noise for every run) and the
denoiser predicts eps for three conditions of each image,

- its caption c ("a i is on top of a j.");
- the swapped caption, which describes the image with i and j exchanged (the relation's order);
- the partner caption, which describes the *same* image the other way ("a j is at the bottom of a i.").

``swap`` = |eps(c) - eps(swapped)| / |eps(c)| (mean over images): how much the order of the nouns
moves the prediction; ``partner`` = |eps(c) - eps(partner)| / |eps(c)|: how far apart the two
descriptions of one image are (0 for a model that reads them as the same scene). A model that
ignores its caption has both near 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from diffcomp.config import load_config  # noqa: E402
from diffcomp.diffusion import ddpm_scheduler  # noqa: E402
from diffcomp.relational.config import experiment_settings, run_definition, run_id  # noqa: E402
from diffcomp.relational.data import read_split_triples  # noqa: E402
from diffcomp.relational.icons import load_icons, pair_images  # noqa: E402
from diffcomp.relational.train import Conditioner, build_model, triple_captions  # noqa: E402
from diffcomp.training import load_snapshot, read_snapshots  # noqa: E402

TIMESTEPS = (10, 30, 50, 70, 90)


@torch.no_grad()
def sensitivity(run: dict, icons_npz, train_csv, train_dir, timesteps=TIMESTEPS, seed: int = 0) -> list[dict]:
    """Rows (t, swap, partner) of one run's final snapshot on its training triples."""
    icons, names = load_icons(icons_npz)
    triples = read_split_triples(train_csv, names)
    model, encoder = build_model(run, names, torch.device("cpu"), split_triples=triples)
    step, path = read_snapshots(train_dir)[-1]
    load_snapshot(path, model)
    model.eval()
    swapped = triples[:, [1, 0, 2]]
    partner = triples.copy()
    partner[:, 2] = 1 - partner[:, 2]
    conditioner = Conditioner(
        encoder, [*triple_captions(triples, names), *triple_captions(swapped, names), *triple_captions(partner, names)],
        torch.device("cpu"),
    )  # fmt: skip
    count = len(triples)
    clean = torch.from_numpy(pair_images(icons, triples[:, 0], triples[:, 1])).unsqueeze(1) * 2.0 - 1.0
    scheduler = ddpm_scheduler(run["diffusion"])
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for t in timesteps:
        noise = torch.randn(clean.shape, generator=generator)
        steps = torch.full((count,), t, dtype=torch.long)
        noisy = scheduler.add_noise(clean, noise, steps)
        eps = [model(noisy, steps, conditioner(torch.arange(k * count, (k + 1) * count))) for k in range(3)]
        norm = eps[0].flatten(1).norm(dim=1)
        rows.append(
            {
                "step": step,
                "t": t,
                "swap": float(((eps[0] - eps[1]).flatten(1).norm(dim=1) / norm).mean()),
                "partner": float(((eps[0] - eps[2]).flatten(1).norm(dim=1) / norm).mean()),
            }
        )
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "config.yaml")
    parser.add_argument("--results", type=Path, default=REPO / "results")
    parser.add_argument("--experiment", action="append", default=None)
    parser.add_argument("--split", default="band")
    parser.add_argument("--csv", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    section = load_config(args.config)["relational"]
    experiments = args.experiment or [section["experiments"][0]["name"]]
    relational = args.results / "relational"
    rows = []
    for experiment in experiments:
        if args.split not in experiment_settings(section, experiment)["splits"]:
            raise SystemExit(f"experiment {experiment!r} does not train on split {args.split!r}")
        for seed in section["seeds"]:
            run = run_definition(section, experiment, args.split, seed)
            vocab = run["split"]["vocab_size"]
            icons = relational / "vocab" / f"N{vocab}_S{run['icon_size']}" / "icons.npz"
            train_dir = relational / "runs" / run_id(experiment, args.split, seed) / "train"
            for row in sensitivity(run, icons, relational / "splits" / args.split / "train.csv", train_dir):
                rows.append({"experiment": experiment, "seed": seed, **row})
    frame = pd.DataFrame(rows)
    if args.csv:
        frame.to_csv(args.csv, index=False)
    table = frame.groupby(["experiment", "t"])[["swap", "partner"]].mean().unstack("t").round(3)
    print(table.to_string())


if __name__ == "__main__":
    main()
