"""Rule bumps_train_pack: train a pack of runs as one stacked model, resuming from its last checkpoint."""

from diffcomp.bumps.train import train_pack
from diffcomp.workflow import resumable_run, run_training

run_training(
    snakemake,
    lambda log: train_pack(
        [resumable_run(snakemake, run) for run in snakemake.params.runs],
        {**snakemake.config["bumps"]["training"], "threads": snakemake.threads},
        list(snakemake.input.labels),
        snakemake.output[0],
    ),
)
